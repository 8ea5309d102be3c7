"""Distributed training on CPU with gloo: 2 processes (DDP, FSDP2) compute what 1 process computes.

The runs use pair shards (no video decoding, no VAE) and a randomised tiny model (fresh models have
zero-initialised projections whose gradients are rounding noise), at the default learning rate 5e-5
(the paper's): Adam turns every gradient element into a step of about lr, so an element whose
gradient is rounding noise differs by up to ~lr x noise / eps between two reduction orders; at 5e-5
the largest weight difference seen is ~5e-7, far inside 1e-5, while 3 steps move weights by ~1e-4.
"""

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    accelerate_cmd,
    finish_launched,
    launched_pids,
    randomize_,
    run_launched,
    start_launched,
)
from safetensors.torch import load_file

from simplegvr_core import SimpleGVR, load_checkpoint, save_checkpoint
from training.config import load_config
from training.data import StepSampler, write_shard
from training.losses import sample_draws
from training.train import train

pytest.importorskip("accelerate")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [str(ROOT / "training" / "train.py")]
TOL = 1e-5
STEPS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Pair shards of random latents and captions, a randomised tiny init checkpoint, a config:
    global batch 4."""
    d = tmp_path_factory.mktemp("dist")
    g = torch.Generator().manual_seed(0)
    n = 10  # 9 for training, 1 held out
    write_shard(
        d / "shards" / "pairs-00000.safetensors",
        torch.randn(n, 16, 3, 4, 4, generator=g),
        torch.randn(n, 16, 3, 2, 2, generator=g),
        [torch.randn(3 + i % 4, 32, generator=g) for i in range(n)],
        [f"c{i}" for i in range(n)],
        "wan21",
    )
    save_checkpoint(
        randomize_(SimpleGVR.from_config("tiny"), seed=3, std=0.1), d / "init.safetensors"
    )
    cfg = d / "cfg.toml"
    cfg.write_text(f"""[model]
init = "{d / "init.safetensors"}"
[data]
kind = "shards"
path = "{d / "shards"}"
[train]
steps = {STEPS}
batch_size = 4
warmup_steps = 2
ema_decay = 0.9
mixed_precision = "no"
[log]
tracker = "none"
validate_every = 0
checkpoint_every = 1000
""")
    return d, cfg


def one_process(cfg: Path, out: Path, *over: str) -> Path:
    train(load_config(cfg, [f"log.output_dir={out}", *over]), progress=False)
    return out


@pytest.fixture(scope="module")
def reference(setup):
    d, cfg = setup
    return one_process(cfg, d / "one")


def two_processes(
    cfg: Path, out: Path, *over: str, extra: tuple = (), timeout: float = 300
) -> Path:
    r = run_launched(
        accelerate_cmd(2) + TRAIN + ["--config", str(cfg), f"log.output_dir={out}", *over, *extra],
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "losses.jsonl").read_text().splitlines()]


def weights(run: Path, step: int, name: str) -> dict:
    return load_file(str(run / "checkpoints" / f"step-{step:07d}" / f"{name}.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def assert_same_run(run: Path, ref: Path, step: int = STEPS, tol: float = TOL):
    la, lb = losses(run), losses(ref)
    assert len(la) == len(lb) == step
    assert max(abs(x - y) for x, y in zip(la, lb)) < tol, (la, lb)
    for name in ("model", "ema"):
        d = max_diff(weights(run, step, name), weights(ref, step, name))
        assert d < tol, f"{name}: max |difference| {d:.3g}"


def test_samples_and_draws_are_a_function_of_the_global_index():
    """Each rank draws different samples and different sigma/noise; together they are what one
    process draws."""
    one = iter(StepSampler(9, 4, seed=5, world=1, rank=0))
    ranks = [iter(StepSampler(9, 2, seed=5, world=2, rank=r)) for r in range(2)]
    accum = iter(StepSampler(9, 1, seed=5, world=2, rank=1, grad_accum=2))
    for _ in range(3):
        single = next(one)
        r0, r1 = next(ranks[0]), next(ranks[1])
        assert r0 + r1 == single and r0 != r1
        # rank 1's two micro-batches of size 1
        assert next(accum) + next(accum) == [single[1], single[3]]
    assert StepSampler(9, 2, seed=5, world=2, rank=1).sample_indices(3) == [14, 15]
    assert StepSampler(9, 1, seed=5, world=2, rank=1, grad_accum=2).sample_indices(3, micro=1) == [
        15
    ]
    from simplegvr_core.timesteps import TimestepSampler

    tcfg = load_config(None, [])["train"]
    draws = [
        sample_draws(0, j, (16, 3, 4, 4), (16, 3, 2, 2), tcfg, TimestepSampler())
        for j in (0, 1, 2, 0)
    ]
    # sample 0 draws the same wherever it runs
    assert all(torch.equal(draws[0][k], draws[3][k]) for k in draws[0])
    assert (
        not torch.equal(draws[0]["eps"], draws[1]["eps"]) and draws[0]["sigma"] != draws[2]["sigma"]
    )


def test_the_tolerance_tells_runs_apart(setup, reference):
    """A run with another global batch, or trained a step less, is far outside the tolerance: the
    equality tests mean something."""
    d, cfg = setup
    half = one_process(cfg, d / "half", "train.batch_size=2")
    assert max_diff(weights(half, STEPS, "model"), weights(reference, STEPS, "model")) > 10 * TOL
    init = {f"{k}": v for k, v in load_checkpoint(d / "init.safetensors").state_dict().items()}
    assert max_diff(weights(reference, STEPS, "model"), init) > 5 * TOL


@pytest.mark.parametrize(
    "split",
    [["train.batch_size=2"], ["train.batch_size=1", "train.grad_accum=2"]],
    ids=["ddp", "ddp_grad_accum"],
)
def test_ddp_two_processes_equal_one(setup, reference, split, tmp_path):
    _, cfg = setup
    assert_same_run(two_processes(cfg, tmp_path / "run", *split), reference)


def test_fsdp_full_checkpoints_export_and_exact_resume(setup, reference, tmp_path):
    _, cfg = setup
    a = two_processes(
        cfg,
        tmp_path / "a",
        "train.fsdp=true",
        "train.batch_size=1",
        "train.grad_accum=2",
        "log.checkpoint_every=2",
        extra=("--export", str(tmp_path / "a" / "export.safetensors")),
    )
    assert_same_run(a, reference)
    full = SimpleGVR.from_config("tiny").state_dict()
    for step in (2, 3):  # full tensors, not rank 0's shard
        model = load_checkpoint(a / "checkpoints" / f"step-{step:07d}" / "model.safetensors")
        ema = weights(a, step, "ema")
        assert {k: v.shape for k, v in model.state_dict().items()} == {
            k: v.shape for k, v in full.items()
        }
        assert {k: v.shape for k, v in ema.items()} == {k: v.shape for k, v in full.items()}
        state = torch.load(a / "checkpoints" / f"step-{step:07d}" / "state.pt", weights_only=True)
        assert set(state["optimizer"]["state"]) == set(full)
        assert all(
            v["exp_avg"].shape == full[k].shape for k, v in state["optimizer"]["state"].items()
        )
    exported = load_checkpoint(tmp_path / "a" / "export.safetensors").state_dict()
    # the exported EMA is the full, right one
    assert max_diff(exported, weights(reference, STEPS, "ema")) < TOL

    b = tmp_path / "b"
    shutil.copytree(a / "checkpoints" / "step-0000002", b / "checkpoints" / "step-0000002")
    two_processes(
        cfg,
        b,
        "train.fsdp=true",
        "train.batch_size=1",
        "train.grad_accum=2",
        "log.checkpoint_every=2",
        extra=("--resume",),
    )
    assert losses(b) == losses(a)[2:]  # the resumed step is bit for bit the uninterrupted one
    for name in ("model", "ema"):
        wa, wb = weights(a, 3, name), weights(b, 3, name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    sa = torch.load(a / "checkpoints" / "step-0000003" / "state.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / "step-0000003" / "state.pt", weights_only=True)
    assert all(
        torch.equal(
            sa["optimizer"]["state"][k]["exp_avg_sq"], sb["optimizer"]["state"][k]["exp_avg_sq"]
        )
        for k in full
    )


def test_fsdp_needs_several_processes(setup, tmp_path):
    _, cfg = setup
    with pytest.raises(ValueError, match="train.fsdp = true needs several processes"):
        one_process(cfg, tmp_path / "x", "train.fsdp=true")


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the worker of rank 1 through /proc"
)
def test_kill_9_of_one_rank_leaves_only_complete_checkpoints_and_resume_matches(setup, tmp_path):
    """FSDP run; rank 1 is killed with SIGKILL after the step-2 checkpoint. What is in checkpoints/
    is complete (nothing half-written), and --resume on 2 processes finishes the run as one
    uninterrupted process would."""
    d, cfg = setup
    steps = [
        "train.steps=12",
        "log.checkpoint_every=2",
        "log.keep_checkpoints=0",
        "train.fsdp=true",
        "train.batch_size=2",
    ]
    run = tmp_path / "killed"
    p = start_launched(
        accelerate_cmd(2) + TRAIN + ["--config", str(cfg), f"log.output_dir={run}", *steps]
    )
    deadline = time.time() + 180
    while (
        not (run / "checkpoints" / "step-0000002" / "state.pt").exists()
        and time.time() < deadline
        and p.poll() is None
    ):
        time.sleep(0.01)
    pids = launched_pids(p.mark, "LOCAL_RANK=1")
    assert len(pids) == 1 and p.poll() is None, "the run ended before rank 1 could be killed"
    os.kill(pids[0], signal.SIGKILL)
    r = finish_launched(p, timeout=120)
    assert r.returncode != 0
    ckpts = sorted((run / "checkpoints").iterdir())
    assert ckpts, "no checkpoint written"
    last = 0
    for c in ckpts:
        # a temporary of the interrupted writer: ignored and removed by the next run
        if c.name.startswith("."):
            continue
        assert re.fullmatch(r"step-\d{7}", c.name), c.name
        load_checkpoint(c / "model.safetensors")
        load_file(str(c / "ema.safetensors"))
        state = torch.load(c / "state.pt", weights_only=True)
        assert state["step"] == int(c.name[5:])
        last = max(last, state["step"])
    assert 2 <= last < 12
    two_processes(cfg, run, *steps, extra=("--resume",))
    assert not [c for c in (run / "checkpoints").iterdir() if c.name.startswith(".")]
    ref = one_process(cfg, d / "ref12", "train.steps=12", "log.checkpoint_every=1000")
    d_model = max_diff(weights(run, 12, "model"), weights(ref, 12, "model"))
    assert d_model < TOL, d_model


def test_make_pairs_one_launch_covers_every_rank(tmp_path):
    """`torchrun --nproc_per_node 2 training/make_pairs.py ...` (no --shard): each process makes its
    shard files from its RANK/WORLD_SIZE, and together they are what one process makes (the same
    clips, degradations and captions; the VAE's float rounding differs with the thread count)."""
    from training.data import make_synthetic_videos
    from training.make_pairs import main as make_pairs

    clips = make_synthetic_videos(tmp_path / "clips", 4, 11, (32, 32), seed=0)
    args = [
        "--videos",
        str(clips),
        "--per-shard",
        "2",
        "--frames",
        "9",
        "--hr-size",
        "32x32",
        "--lr-size",
        "16x16",
        "--degradation",
        "flow",
        "--vae",
        "tiny",
        "--text",
        "byte",
        "--text-dim",
        "32",
    ]
    from helpers import torchrun_cmd

    r = run_launched(
        torchrun_cmd(2)
        + [str(ROOT / "training" / "make_pairs.py"), "--out", str(tmp_path / "two"), *args],
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        "shard 0/2: 1 of 2 shard files" in r.stdout and "shard 1/2: 1 of 2 shard files" in r.stdout
    )
    assert make_pairs(["--out", str(tmp_path / "one"), *args]) == 0
    for k in range(2):
        a = load_file(str(tmp_path / "one" / f"pairs-{k:05d}.safetensors"))
        b = load_file(str(tmp_path / "two" / f"pairs-{k:05d}.safetensors"))
        assert a.keys() == b.keys() and torch.equal(a["context"], b["context"])
        assert all(torch.allclose(a[n], b[n], rtol=0, atol=1e-5) for n in ("hr", "lr"))
