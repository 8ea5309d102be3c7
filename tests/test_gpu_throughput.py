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
    rows = [
        line.split("|")[1:-1]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ][1:]
    cases = [(r[0].strip(), r[1].strip()) for r in rows]
    assert cases == bench.cases(bench.flex_available())
    assert ("sparse_local", "flex") in cases and ("temporal_units", "flex") in cases
    for r in rows:
        step, up, fps = (float(v) for v in r[2:5])
        assert (
            step > 0 and up > 0 and math.isclose(fps, 81 / (step + up), rel_tol=0.05, abs_tol=0.1)
        )


def test_cpu_mode_is_windowed_for_real(bench):
    """The small size still cuts the clip into units (5 + 2 frames) and each frame into two 12x9
    blocks, so the windowed kernels are exercised, not the whole-clip fallback."""
    from simplegvr_core.models.attention import unit_bounds

    t, h, w = bench.CPU_LR[0], *bench.CPU_HR
    assert unit_bounds(t, 5, False) == [(0, 5), (5, 7)]
    assert (math.ceil(h / 2 / 9), math.ceil(w / 2 / 12)) == (2, 1)


def test_projection_states_its_mfu(bench):
    text = bench.projection()
    assert f"assumed MFU of {bench.ASSUMED_MFU:.0%}" in text
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")][
        1:
    ] == ["full", "temporal_units", "sparse_local"]


# --- Ultra Flash: the streaming cascade, its FLOPs and the projection -----------------------------
def test_ultraflash_model_is_what_the_importer_builds_from_their_files(bench):
    """The benchmark's 1.3B model is `ultraflash_config` of their files' key tables at full size."""
    import torch
    import ultraflash_tiny as uft

    from simplegvr_core.weights import ULTRAFLASH_RECIPE, ultraflash_config

    case = uft.tiny_configs()["shipped"]
    case["dit"].update(dim=1536, num_heads=12, num_layers=30, ffn_dim=8960, text_dim=4096)
    case["upsampler"].update(mid_channels=128, num_blocks=8)
    with torch.device("meta"):
        dit_sd = {k: torch.empty(s) for k, s, _ in uft.dit_key_table(case)}
        up_sd = {k: torch.empty(s) for k, s, _ in uft.upsampler_key_table(case)}
    model = bench.ultraflash_model(device="meta")
    assert model.config.to_dict() == ultraflash_config(dit_sd, up_sd).to_dict()
    assert model.num_parameters()["dit"] == 1_419_095_104
    assert model.num_parameters()["upsampler"] == 4_814_352
    assert model.sampling == ULTRAFLASH_RECIPE
    assert model.upsampler.native_size(bench.UF_LR[1:]) == bench.UF_HR


@pytest.fixture(scope="module")
def uf_small(bench):
    return bench.ultraflash_cpu_small(1)


def test_ultraflash_small_cpu_run_streams_the_whole_cascade(bench, uf_small):
    """The small CPU run goes through the path the GPU run takes: groups 6/6/6/3, 81 frames."""
    text, row = uf_small
    assert row["groups"] == [6, 6, 6, 3] and row["frames"] == 81
    assert row["out"] == (1, 3, 81, 8 * 2 * bench.UF_SMALL_LR[1], 8 * 2 * bench.UF_SMALL_LR[2])
    parts = ("upsampler_s", "dit_s", "decode_s")
    assert all(row[k] > 0 for k in parts)
    assert math.isclose(row["fps"], 81 / sum(row[k] for k in parts), rel_tol=1e-9)
    assert "| DiT, groups 6/6/6/3, 1 step |" in text and "(measured)" in text


@pytest.fixture(scope="module")
def uf_flops(bench):
    return bench.ultraflash_flops({"measured, test": [30.0, 30.0, 30.0, 30.0]})


def test_ultraflash_flops_count_every_stage_at_the_real_size(bench, uf_flops):
    geom = uf_flops["geometry"]
    assert [g["frames"] for g in geom] == [6, 6, 6, 3]
    assert [g["cached"] for g in geom] == [0, 3, 3, 3]
    assert [g["tq"] for g in geom] == [3, 3, 3, 2] and {g["spatial"] for g in geom} == {(8, 13)}
    assert {g["top_k"] for g in geom} == {2704}  # their rule at 60x104 tokens
    # 2705 of a slab's 104 rows x (window) key blocks: the top-k bites in every group
    assert all(math.isclose(v, 2705 / 104) for v in uf_flops["densities"]["rule"])
    dense = uf_flops["dit_dense"]
    assert dense[0] == dense[1] == dense[2] and math.isclose(dense[3] / dense[0], 0.5, rel_tol=0.01)
    assert 300e12 < sum(dense) < 400e12  # ~2.6 GFLOPs per token (30 layers) x 131,040 tokens
    att = uf_flops["attention"]
    # 4 T^2 d per pair, 12 heads, 30 layers: linear in the density, plus the block scores
    one = 4 * 128 * 128 * 128 * 12 * 30
    for g, r, m in zip(geom, att["rule"], att["measured, test"]):
        qb = g["tq"] * 104
        assert math.isclose(m - r, (30.0 - 2705 / 104) * qb * one, rel_tol=1e-6)
    assert 4e12 < uf_flops["upsampler"] < 6e12 and uf_flops["frames"] == 81
    assert math.isclose(uf_flops["decoder"], 45.44e12, rel_tol=0.01)  # BENCHMARKS.md tiny_decoder


def test_ultraflash_projection_states_its_assumptions(bench, uf_flops):
    text = bench.ultraflash_projection(uf_flops)
    assert f"assumed MFU of {bench.ASSUMED_MFU:.0%}" in text
    assert "H100 SXM 989 TFLOP/s" in text and "B200 2250 TFLOP/s" in text
    assert "**Counted**" in text and "**Projected**" in text
    rows = [r for r in text.splitlines() if r.startswith(("| top-k rule", "| measured"))]
    assert len(rows) == 2


def test_ultraflash_section_without_a_gpu(bench, uf_flops, uf_small, monkeypatch, capsys):
    """--ultraflash --cpu-small: the small measured run, the counted FLOPs and the projection."""
    monkeypatch.setattr(bench, "ultraflash_flops", lambda measured: uf_flops)
    monkeypatch.setattr(bench, "ultraflash_cpu_small", lambda repeats: uf_small)
    assert bench.main(["--ultraflash", "--cpu-small"]) == 0
    out = capsys.readouterr().out
    assert "No GPU was available" in out and "(measured)" in out and "**Projected**" in out
    assert "One-step throughput" not in out  # only the Ultra Flash section
    achieved = bench.achieved(uf_small[1], uf_flops)  # what a GPU run adds
    assert [r.split("|")[1].strip() for r in achieved.splitlines() if r.startswith("| ")][1:] == [
        "latent upsampler",
        "DiT",
        "tiny decoder",
    ]
