"""benchmarks/streaming_memory.py: its child process runs, and its reading follows the numbers."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "streaming_memory.py"
MB = 2**20


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("streaming_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_streaming_case_runs_in_its_own_process(bench):
    r = bench.run_case("block_sparse_causal", 7, 16, 16)
    assert "error" not in r, r
    assert r["calls"] == 2 and r["shape"] == [1, 16, 7, 16, 16] and r["extra"] > 0
    assert r["cache"] > 0 and r["estimate"] > r["cache"]


def _row(mode, frames, extra, estimate=100 * MB, cache=2 * MB):
    return {
        "mode": mode,
        "frames": frames,
        "extra": extra,
        "estimate": estimate,
        "cache": cache,
        "calls": 1,
        "seconds": 1.0,
    }


def test_the_reading_says_flat_only_when_the_rest_is(bench):
    h, w = 48, 64
    lat = {f: bench.latent_bytes(f, h, w) for f in (21, 84)}
    grow = {f: lat[f]["lr"] + 3 * lat[f]["hr"] for f in (21, 84)}
    flat = [_row("block_sparse_causal", f, 200 * MB + grow[f]) for f in (21, 84)]
    text = bench.report(flat, h, w)
    assert "is flat" in text and "not flat" not in text
    slope = (grow[84] - grow[21]) / 63 / (16 * h * w * 4)  # LR + 3 HR: 3.25 copies a frame
    assert f"**{slope:.1f} HR latent copies**" in text
    growing = [
        _row("block_sparse_causal", 21, 200 * MB + grow[21]),
        _row("block_sparse_causal", 84, 400 * MB + grow[84]),
    ]
    assert "**the rest is not flat**" in bench.report(growing, h, w)
    small = flat + [_row("block_sparse_causal:16", f, 80 * MB + grow[f]) for f in (21, 84)]
    assert "is 60% of that rest" in bench.report(small, h, w)
