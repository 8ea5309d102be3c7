"""The size rule (pipeline.target_size / aspect_warning): the short or long edge keeps the input's
aspect ratio, an explicit width x height that stretches the picture is flagged, and latent frames in
= latent frames out."""

import pytest
import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR, get_config
from simplegvr_core.pipeline import aspect_warning, target_size, upscale


@pytest.fixture(scope="module")
def m():
    return randomize_(SimpleGVR.from_config(get_config("tiny")), std=0.05).eval()


@pytest.mark.parametrize(
    "lr_hw, edge, expected",
    [
        ((60, 104), ("short_edge", 1080), (135, 234)),  # 832x480 -> 1872x1080
        # portrait 240x416 -> 1080x1872 (was stretched to 135x240)
        ((52, 30), ("short_edge", 1080), (234, 135)),
        ((40, 40), ("short_edge", 1080), (135, 135)),  # square stays square
        ((52, 30), ("long_edge", 1920), (240, 138)),
        ((60, 104), ("long_edge", 1920), (138, 240)),
    ],
)
def test_edges_keep_the_aspect_ratio(m, lr_hw, edge, expected):
    hr = target_size(m, lr_hw, **{edge[0]: edge[1]})
    assert hr == expected
    assert aspect_warning(m, lr_hw, hr) is None
    # only the latent grid's rounding
    assert abs((hr[1] / hr[0]) / (lr_hw[1] / lr_hw[0]) - 1) < 0.5 / hr[0] + 0.5 / hr[1]


@pytest.mark.parametrize(
    "config, lr_hw, edge, expected",
    [
        # Wan 2.2 (/16): 1080 is 67.5 latent pixels, and rounds up to 68 = 1088 px; 1280x704 ->
        # 1968x1088
        ("tiny-wan22", (44, 80), ("short_edge", 1080), (68, 123)),
        ("tiny-wan22", (80, 44), ("short_edge", 1080), (123, 68)),  # portrait
        ("tiny-wan22", (44, 80), ("long_edge", 1920), (66, 120)),  # 1920x1056: x1.5 exactly
        # 5:3: both sides halves (67.5, 112.5), both up
        ("tiny-wan22", (12, 20), ("short_edge", 1080), (68, 113)),
        # CogVideoX (/8): 720x480 -> 1620 px is 202.5 latent pixels wide, rounded up to 203 = 1624
        # px
        ("tiny-cogvideox", (60, 90), ("short_edge", 1080), (135, 203)),
        ("tiny-cogvideox", (60, 90), ("long_edge", 1920), (160, 240)),
    ],
)
def test_edges_on_each_familys_latent_grid(config, lr_hw, edge, expected):
    fm = SimpleGVR.from_config(config, device="meta")
    hr = target_size(fm, lr_hw, **{edge[0]: edge[1]})
    assert hr == expected
    assert aspect_warning(fm, lr_hw, hr) is None
    r = fm.latent_format.spatial_ratio
    short = min(hr) * r if edge[0] == "short_edge" else max(hr) * r
    assert abs(short - edge[1]) <= r / 2  # the edge asked for, to the nearest grid line


def test_an_explicit_1080p_size_stretches_wan22s_704p_and_warns():
    """Why the Wan 2.2 workflow uses the short edge: 1920x1080 on the /16 grid is 1920x1088, 2.9%
    narrower than 1280x704."""
    fm = SimpleGVR.from_config("tiny-wan22", device="meta")
    hr = target_size(fm, (44, 80), width=1920, height=1080)
    assert hr == (68, 120)
    assert "1920x1088 px changes the aspect ratio of the 1280x704 px input" in aspect_warning(
        fm, (44, 80), hr
    )


def test_an_explicit_size_that_stretches_warns(m):
    hr = target_size(m, (52, 30), width=1920, height=1080)
    assert hr == (135, 240)
    msg = aspect_warning(m, (52, 30), hr)
    assert (
        msg
        and "1920x1080 px changes the aspect ratio of the 240x416 px input" in msg
        and "short edge" in msg
    )
    assert "wider" in msg
    assert aspect_warning(m, (60, 104), target_size(m, (60, 104), width=1872, height=1080)) is None
    assert "2.6% wider" in aspect_warning(
        m, (60, 104), target_size(m, (60, 104), width=1920, height=1080)
    )


def test_one_size_rule_at_a_time_and_only_upscaling(m):
    with pytest.raises(
        ValueError,
        match="give one of width/height, scale, short_edge or long_edge, not scale and short_edge",
    ):
        target_size(m, (10, 10), scale=2.0, short_edge=1080)
    with pytest.raises(ValueError, match=r"short_edge=0: expected a whole number of pixels"):
        target_size(m, (10, 10), short_edge=0)
    with pytest.raises(ValueError, match="SimpleGVR only upscales"):
        target_size(m, (200, 300), short_edge=1080)  # 2400x1600 input
    assert target_size(m, (60, 104)) == (135, 234)  # no size: scale 2.25


@pytest.mark.parametrize("frames", [1, 2, 5, 21])
def test_latent_frames_in_equal_latent_frames_out(m, frames):
    lr = torch.randn(1, 16, frames, 6, 4, generator=torch.Generator().manual_seed(frames))
    # portrait 32x48 -> 64x96 px
    out = upscale(m, lr, short_edge=64, steps=1, cfg=1.0, attention="temporal_units")
    assert out.shape == (1, 16, frames, 12, 8) and torch.isfinite(out).all()
    # windows for full
    btchw = upscale(m, lr.transpose(1, 2), short_edge=64, steps=1, cfg=1.0, attention="full")
    assert btchw.shape == (1, frames, 16, 12, 8)


def test_cli_keeps_the_aspect_ratio_plans_memory_and_warns_on_a_stretch(m, tmp_path):
    import subprocess
    import sys

    from simplegvr_core import save_checkpoint
    from simplegvr_core.latent_io import load_latent, save_latent

    ckpt = save_checkpoint(m, tmp_path / "gvr.safetensors")
    save_latent(torch.randn(1, 16, 3, 6, 4), tmp_path / "portrait.latent")
    base = [
        sys.executable,
        "-m",
        "simplegvr_core.app",
        "upscale",
        "--checkpoint",
        str(ckpt),
        "--latent",
        str(tmp_path / "portrait.latent"),
        "--steps",
        "1",
        "--cfg",
        "1",
    ]
    r = subprocess.run(
        base + ["--out", str(tmp_path / "a.latent"), "--short-edge", "64"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert load_latent(tmp_path / "a.latent").shape == (1, 16, 3, 12, 8)
    assert (
        "memory auto (" in r.stderr
        and "DiT call(s) per step" in r.stderr
        and "stretched" not in r.stderr
    )
    r = subprocess.run(
        base + ["--out", str(tmp_path / "b.latent"), "--width", "128", "--height", "96"],
        capture_output=True,
        text=True,
    )
    assert (
        r.returncode == 0
        and "warning: 128x96 px changes the aspect ratio of the 32x48 px input" in r.stderr
    )
    r = subprocess.run(
        base + ["--out", str(tmp_path / "c.latent"), "--short-edge", "64", "--scale", "2"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "not --scale and --short-edge" in r.stderr
