"""benchmarks/gpu_throughput.py runs in its CPU mode (what CI can check of the GPU benchmark)."""

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_cpu_mode_measures_every_mode_and_kernel(bench, capsys):
    assert bench.main(["--cpu-small"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    cases = [(r[0].strip(), r[1].strip()) for r in rows]
    assert cases == bench.cases(bench.flex_available())
    assert ("sparse_local", "flex") in cases and ("temporal_units", "flex") in cases
    for r in rows:
        step, up, fps = (float(v) for v in r[2:5])
        assert step > 0 and up > 0 and math.isclose(fps, 81 / (step + up), rel_tol=0.05, abs_tol=0.1)


def test_cpu_mode_is_windowed_for_real(bench):
    """The small size still cuts the clip into units (5 + 2 frames) and each frame into two 12x9 blocks, so the
    windowed kernels are exercised, not the whole-clip fallback."""
    from simplegvr_core.models.attention import unit_bounds

    t, h, w = bench.CPU_LR[0], *bench.CPU_HR
    assert unit_bounds(t, 5, False) == [(0, 5), (5, 7)]
    assert (math.ceil(h / 2 / 9), math.ceil(w / 2 / 12)) == (2, 1)


def test_projection_states_its_mfu(bench):
    text = bench.projection()
    assert f"assumed MFU of {bench.ASSUMED_MFU:.0%}" in text
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")][1:] == [
        "full", "temporal_units", "sparse_local"]
