"""Shared test helpers."""

import torch


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter random values: fresh models have zero-initialised heads and projections
    that would make different code paths look equal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def free_port() -> int:
    """A TCP port that was free a moment ago (for a launcher's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MARK = "SIMPLEGVR_TEST_LAUNCH"


def launch_env(mark: str = "") -> dict:
    """The environment of a multi-process test run: one thread per process (CI has 2 cores), this
    worktree first on the path, no GPU, and a marker that every worker inherits
    (`launched_pids`)."""
    import os
    from pathlib import Path

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=root + os.pathsep + env.get("PYTHONPATH", ""),
        **{MARK: mark},
    )
    return env


def launched_pids(mark: str, extra: str | None = None) -> list[int]:
    """Pids of the processes carrying `mark` in their environment (and `extra`, e.g.
    'LOCAL_RANK=1'), from /proc. torch's launchers start every worker in a session of its own, so a
    process group does not reach them."""
    from pathlib import Path

    found = []
    needles = [f"{MARK}={mark}".encode()] + ([extra.encode()] if extra else [])
    for p in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(n in env for n in needles):
            found.append(int(p.name))
    return found


def kill_launched(p) -> None:
    """SIGKILL a launcher and every worker it started."""
    import os
    import signal

    for pid in [p.pid] + launched_pids(p.mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start_launched(cmd: list[str], cwd=None):
    """Start a launcher (torchrun, accelerate launch) with a fresh marker in its environment."""
    import secrets
    import subprocess

    mark = secrets.token_hex(8)
    p = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=launch_env(mark),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    p.mark = mark
    return p


def finish_launched(p, timeout: float):
    """Wait for a launcher; past `timeout` seconds kill it and all its workers (no test can hang)
    and fail. Workers still alive after their launcher exited are killed too."""
    import subprocess

    import pytest

    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_launched(p)
        out, err = p.communicate()
        pytest.fail(f"{' '.join(p.args[:4])} ... did not finish in {timeout} s\n{err[-3000:]}")
    finally:
        kill_launched(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def run_launched(cmd: list[str], timeout: float = 240, cwd=None):
    return finish_launched(start_launched(cmd, cwd), timeout)


def accelerate_cmd(n: int = 2) -> list[str]:
    """`accelerate launch` of n processes on one machine. On a machine without GPUs it has to be
    --multi_gpu: accelerate's
    --cpu launcher starts ONE process whatever --num_processes says (more need mpirun); the trainer
    then runs on the CPU with gloo."""
    import sys

    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(n),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]


def torchrun_cmd(n: int = 2) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(n),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
    ]
