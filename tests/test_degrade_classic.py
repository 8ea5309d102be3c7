"""Classic RealBasicVSR second-order degradation (reference-facts.md §4), written without
basicsr/mmagic."""

import dataclasses
import math

import cv2
import numpy as np
import pytest

from simplegvr_core.degrade.classic import (
    KERNEL_TYPES,
    STAGES,
    ClassicConfig,
    bessel_j1,
    classic_degrade,
    make_kernel,
    video_compress,
)


def clip(t=9, h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.float32), (0, 0), 1.2)
    x = np.clip((x - x.mean()) / x.std() * 50 + 128, 0, 255).astype(np.uint8)
    return np.stack([np.roll(x, i, axis=1) for i in range(t)])


def always(cfg: ClassicConfig) -> ClassicConfig:
    """Every enabled stage fires (prob 1) and resizes never pick 'keep'."""
    out = dataclasses.replace(cfg)
    for name in STAGES:
        st = dataclasses.replace(getattr(cfg, name), prob=1.0)
        if name.startswith("resize"):
            st = dataclasses.replace(st, mode_prob=(0.0, 1.0, 0.0))
        setattr(out, name, st)
    out.shuffle_final = False
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_output_has_the_lr_size_and_uint8(seed):
    frames = clip()
    out = classic_degrade(frames, (24, 32), seed=seed)  # lr_size is (H, W)
    assert out.shape == (9, 24, 32, 3) and out.dtype == np.uint8
    # default: keep the input size
    assert classic_degrade(frames, None, seed=seed).shape == frames.shape


def test_all_stages_off_is_the_identity_up_to_resize():
    frames = clip()
    off = ClassicConfig().without(*STAGES)
    assert np.array_equal(classic_degrade(frames, None, off, seed=3), frames)
    out = classic_degrade(frames, (24, 40), off, seed=3)
    refs = [
        np.stack([cv2.resize(f, (40, 24), interpolation=m) for f in frames])
        for m in (cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC)
    ]
    assert any(np.array_equal(out, r) for r in refs)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_acts_alone_and_switches_off(stage):
    frames = clip(t=5, h=48, w=48)
    alone = always(ClassicConfig()).only(stage)
    out = classic_degrade(frames, None, alone, seed=4)
    assert out.shape == frames.shape
    assert np.abs(out.astype(int) - frames).mean() > 0.5, f"{stage} alone changed nothing"
    assert np.array_equal(classic_degrade(frames, None, alone.without(stage), seed=4), frames)


def test_seed_reproduces_and_differs():
    frames = clip()
    a = classic_degrade(frames, (32, 32), seed=7)
    assert np.array_equal(a, classic_degrade(frames, (32, 32), seed=7))
    assert not np.array_equal(a, classic_degrade(frames, (32, 32), seed=8))


def test_parameters_drift_from_frame_to_frame():
    still = np.repeat(clip(t=1)[0][None], 9, 0)
    blur = always(ClassicConfig()).only("blur")
    blur.blur = dataclasses.replace(
        blur.blur, kernels=("aniso",), kernel_prob=(1.0,), sigma_step=0.3
    )
    out = classic_degrade(still, None, blur, seed=1)
    assert not np.array_equal(out[0], out[-1])  # the kernel walked
    frozen = dataclasses.replace(
        blur,
        blur=dataclasses.replace(
            blur.blur,
            sigma_step=0.0,
            rotate_angle_step=0.0,
            beta_gaussian_step=0.0,
            beta_plateau_step=0.0,
            omega_step=0.0,
        ),
    )
    out = classic_degrade(still, None, frozen, seed=1)
    assert all(np.array_equal(out[0], f) for f in out)


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_kernels_are_normalised_and_centred(kind):
    k = make_kernel(kind, 15, 2.0, 0.8, 0.6, 1.5, 1.5, math.pi / 3)
    assert k.shape == (15, 15) and k.dtype == np.float32
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    yy, xx = np.mgrid[-7:8, -7:8]
    assert abs((k * xx).sum()) < 1e-5 and abs((k * yy).sum()) < 1e-5  # point-symmetric: no shift
    assert np.unravel_index(np.argmax(k), k.shape) == (7, 7)


def test_anisotropic_kernel_is_rotated():
    k0 = make_kernel("aniso", 21, 3.0, 0.5, 0.0, 1, 1, 1)
    k90 = make_kernel("aniso", 21, 3.0, 0.5, math.pi / 2, 1, 1, 1)
    np.testing.assert_allclose(k90, k0.T, atol=1e-7)
    assert k0[10, 16] > 50 * k0[16, 10]  # long along x


def test_bessel_j1_and_sinc_kernel():
    # J1 at 1, 5 and 10 (Abramowitz & Stegun table 9.1)
    np.testing.assert_allclose(
        bessel_j1(np.array([0.0, 1.0, 5.0, 10.0])),
        [0.0, 0.4400505857, -0.3275791376, 0.0434727462],
        atol=1e-9,
    )
    k = make_kernel("sinc", 21, 1, 1, 0, 1, 1, math.pi / 3)
    spectrum = np.abs(np.fft.fft2(np.pad(k, ((0, 43), (0, 43)))))  # 64 x 64
    f = np.fft.fftfreq(64) * 2 * math.pi
    radius = np.hypot(*np.meshgrid(f, f))
    assert spectrum[radius < 0.7 * math.pi / 3].min() > 0.85  # passes below the cut-off
    assert spectrum[radius > 1.5 * math.pi / 3].max() < 0.15  # stops above it


def test_video_compression_keeps_count_and_odd_sizes():
    frames = list(clip(t=6, h=47, w=63))
    for codec in ("libx264", "mpeg4"):
        out = video_compress(frames, codec, 2e4)
        assert len(out) == 6 and out[0].shape == (47, 63, 3)
        assert 0 < np.abs(np.stack(out).astype(int) - np.stack(frames)).mean() < 60


def test_strength_scales_towards_mild():
    mild = ClassicConfig().scaled(0.0)
    assert mild.noise.gaussian_sigma == (1.0, 1.0) and mild.jpeg.quality == (95.0, 95.0)
    assert mild.blur.sigma_x == (0.2, 0.2) and mild.resize.scale == (1.0, 1.5)
    assert ClassicConfig().scaled(1.0) == ClassicConfig()
    with pytest.raises(ValueError, match="severity"):
        ClassicConfig().scaled(1.5)


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="unknown stages"):
        ClassicConfig().without("sharpen")
    with pytest.raises(ValueError, match="kernel_prob"):
        ClassicConfig(blur={"kernel_prob": (0.5, 0.5)})
    with pytest.raises(ValueError, match="lr_size"):
        classic_degrade(clip(t=2), (1, 64))
    with pytest.raises(ValueError, match="dtype"):
        classic_degrade(clip(t=2).astype(np.float32))
