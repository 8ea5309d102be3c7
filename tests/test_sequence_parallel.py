"""Sequence-parallel upscaling on CPU with gloo: `torchrun --nproc_per_node=2 -m simplegvr_core
upscale` equals one process, per attention mode, at a size whose 45 tokens split unevenly (23 + 22)
over the 2 processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import launch_env, randomize_, run_launched, torchrun_cmd
from safetensors.torch import load_file, save_file

from simplegvr_core import SimpleGVR, load_checkpoint, parallel, save_checkpoint
from simplegvr_core.config import CAUSAL_MODE
from simplegvr_core.latent_io import load_latent, save_latent
from simplegvr_core.parallel import SEQUENCE_PARALLEL_MODES
from simplegvr_core.pipeline import build_condition, sample
from simplegvr_core.plan import plan_sampling

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--scale", "2", "--steps", "3", "--cfg", "2", "--seed", "5"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sp")
    # 4 heads
    save_checkpoint(
        randomize_(SimpleGVR.from_config("tiny"), seed=1, std=0.1), d / "tiny.safetensors"
    )
    g = torch.Generator().manual_seed(0)
    # -> 3x6x10 latent, 3x3x5 tokens
    save_latent(torch.randn(1, 16, 3, 3, 5, generator=g), d / "lr.latent")
    save_file(
        {"positive": torch.randn(6, 32, generator=g), "negative": torch.randn(4, 32, generator=g)},
        str(d / "emb.safetensors"),
    )
    return d


def upscale_args(d: Path, out: Path, mode: str) -> list[str]:
    return [
        "-m",
        "simplegvr_core",
        "upscale",
        "--checkpoint",
        str(d / "tiny.safetensors"),
        "--latent",
        str(d / "lr.latent"),
        "--out",
        str(out),
        "--prompt-embeds",
        str(d / "emb.safetensors"),
        "--attention",
        mode,
        *ARGS,
    ]


@pytest.mark.parametrize("mode", SEQUENCE_PARALLEL_MODES)
def test_two_processes_equal_one(files, mode, tmp_path):
    model = load_checkpoint(files / "tiny.safetensors").eval()
    emb = load_file(str(files / "emb.safetensors"))
    cond = build_condition(model, load_latent(files / "lr.latent"), scale=2, seed=5)
    plan = plan_sampling(model, cond.c.shape, attention=mode)
    # one DiT call on all 45 tokens
    assert plan.calls_per_step == 1 and plan.window_shape == (3, 6, 10)
    ref = sample(
        model,
        cond,
        plan,
        context=emb["positive"],
        negative_context=emb["negative"],
        steps=3,
        cfg=2.0,
        seed=5,
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = run_launched(
        torchrun_cmd(2) + upscale_args(files, out_dir / "hr.latent", mode), timeout=180
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # rank 0 alone writes
    assert r.stdout.count("wrote ") == 1 and "2 processes, sequence-parallel" in r.stdout
    # one file, no temporaries left
    assert sorted(p.name for p in out_dir.iterdir()) == ["hr.latent"]
    hr = load_latent(out_dir / "hr.latent")
    assert hr.shape == ref.shape == (1, 16, 3, 6, 10)
    assert float((hr - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max())), float(
        (hr - ref).abs().max()
    )


def test_split_dit_is_exact_and_sends_what_the_formula_says(tmp_path):
    """All modes in fp32 and bf16, batch 2 (CFG), uneven split: the DiT output and the bytes
    sent."""
    out = tmp_path / "rows.jsonl"
    r = run_launched(
        torchrun_cmd(2) + [str(ROOT / "tests" / "sp_worker.py"), str(out)], timeout=180
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * len(SEQUENCE_PARALLEL_MODES)
    for row in rows:
        assert row["diff"] <= 1e-5 * row["scale"], row  # (bit for bit here: the same per-head math)
        assert row["bounds"] == [0, 23]
        # the formula is exact for even splits
        assert row["sent"] == pytest.approx(row["formula"], rel=0.02), row


def test_wrong_number_of_processes_is_refused_in_one_line(files, tmp_path):
    out = tmp_path / "hr.latent"
    # 4 heads do not split 3 ways
    r = run_launched(torchrun_cmd(3) + upscale_args(files, out, "full"), timeout=120)
    msg = (
        "simplegvr: error: sequence parallelism over 3 processes needs the model's 4 attention "
        "heads to split evenly"
    )
    assert r.returncode != 0 and r.stderr.count(msg) == 1, r.stderr[-3000:]
    assert "use --nproc_per_node in [1, 2, 4]" in r.stderr and "(exitcode: 2)" in r.stderr
    assert "[rank0]" not in r.stderr and not out.exists()  # no worker traceback, no output
    # what torchrun gives rank 0
    env = launch_env() | {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}
    direct = subprocess.run(
        [sys.executable] + upscale_args(files, out, "full"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == 2 and direct.stderr.strip().splitlines() == [
        msg + ": use --nproc_per_node in [1, 2, 4]"
    ]
    other = subprocess.run(
        [sys.executable] + upscale_args(files, out, "full"),
        env=env | {"RANK": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 2 and other.stderr.strip() == ""  # rank 0 says it, once


def test_the_streaming_mode_is_refused_in_one_line_before_any_process_joins(files, tmp_path):
    """Ultra Flash's streaming mode does not split (its groups run one after another): refused up
    front, as a wrong process count is, with the modes that do."""
    out = tmp_path / "hr.latent"
    env = launch_env() | {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    r = subprocess.run(
        [sys.executable] + upscale_args(files, out, CAUSAL_MODE),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert f"the '{CAUSAL_MODE}' attention mode does not run sequence-parallel" in lines[0]
    assert str(list(SEQUENCE_PARALLEL_MODES)) in lines[0] and not out.exists()


def test_memory_estimate_counts_a_share_of_the_tokens():
    model = SimpleGVR.from_config("wan2.1-1.3b", device="meta")
    plan = plan_sampling(model, (1, 16, 21, 135, 240), attention="temporal_units")
    one = plan.memory(model, guidance=5.0, dtype=torch.bfloat16)

    class Split:
        world = 4

    model.dit.sequence_parallel = Split()
    four = plan.memory(model, guidance=5.0, dtype=torch.bfloat16)
    assert 0.2 * one < four < 0.35 * one
    with pytest.raises(
        ValueError,
        match="12 attention heads to split evenly: use --nproc_per_node in "
        r"\[1, 2, 3, 4, 6, 12\]",
    ):
        parallel.check_world(12, 5)
    assert parallel.split_sizes(45, 2) == [23, 22] and parallel.split_sizes(7, 3) == [3, 2, 2]
