"""Colour correction (simplegvr_core/colour.py): latent AdaIN sets the statistics, the wavelet fix
keeps the HR frames' high band and takes the LR frames' low band."""

import pytest
import torch
import torch.nn.functional as F

from simplegvr_core.colour import (
    adain,
    channel_stats,
    colour_fix_frames,
    pixel_adain,
    wavelet_bands,
    wavelet_colour_fix,
)


def test_latent_adain_matches_each_channels_clip_wide_mean_and_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 5, 6, 7, generator=g) * torch.rand(2, 16, 1, 1, 1, generator=g) * 3 + 2
    mean = torch.randn(2, 16, generator=g, dtype=torch.float64)
    std = torch.rand(2, 16, generator=g, dtype=torch.float64) + 0.1
    y = adain(x, mean, std)
    m, s = channel_stats(y)
    torch.testing.assert_close(m, mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(s, std, rtol=1e-5, atol=1e-6)
    # one affine map per channel for the whole clip: the pattern inside a channel is kept exactly
    xc, yc = x[0, 3].flatten().double(), y[0, 3].flatten().double()
    assert torch.corrcoef(torch.stack([xc, yc]))[0, 1] > 1 - 1e-9
    assert y.shape == x.shape and y.dtype == x.dtype


def test_latent_adain_of_a_constant_channel_takes_the_reference_mean():
    x = torch.randn(1, 2, 3, 4, 4)
    x[:, 1] = 5.0
    y = adain(x, torch.tensor([0.0, -1.0]), torch.tensor([1.0, 2.0]))
    assert torch.allclose(y[:, 1], torch.tensor(-1.0)) and torch.isfinite(y).all()


def test_latent_adain_refuses_stats_that_do_not_fit():
    with pytest.raises(ValueError, match="do not fit a latent with batch 1 and 16 channels"):
        adain(torch.randn(1, 16, 2, 3, 3), torch.zeros(3, 16), torch.ones(3, 16))
    with pytest.raises(ValueError, match="finite"):
        adain(torch.randn(1, 2, 2, 3, 3), torch.tensor([0.0, float("nan")]), torch.ones(2))


def test_channel_stats_in_chunks_equal_the_whole_clip():
    x = torch.randn(1, 4, 11, 5, 6) * 2 + 1
    whole = channel_stats(x, chunk_frames=11)
    chunks = channel_stats(x, chunk_frames=3)
    torch.testing.assert_close(whole[0], chunks[0])
    torch.testing.assert_close(whole[1], chunks[1])
    torch.testing.assert_close(whole[1][0], x[0].double().flatten(1).std(1, unbiased=False))


def _checker(n, h, w, amp=0.1):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((yy + xx) % 2) * 2 - 1).float().mul(amp).view(1, h, w, 1).expand(n, h, w, 3)


def test_wavelet_fix_keeps_the_hr_high_band_and_takes_the_lr_low_band_exactly_inside():
    """HR = a colour A + a 2-px checkerboard (all high band); LR = another colour B. Away from the
    borders (the 5 blurs reach 31 px) the result is exactly B + the checkerboard."""
    n, h, w = 2, 96, 80
    a, b = torch.tensor([0.3, 0.5, 0.2]), torch.tensor([0.45, 0.4, 0.3])
    d = _checker(n, h, w)
    hr = a + d
    lr = b.expand(n, h // 2, w // 2, 3).clone()
    out = wavelet_colour_fix(hr, lr)
    inner = (slice(None), slice(32, -32), slice(32, -32))
    torch.testing.assert_close(out[inner], (b + d)[inner], rtol=0, atol=1e-6)
    # and by construction everywhere: out - LR low band == HR high band
    high_hr, _ = wavelet_bands(hr.permute(0, 3, 1, 2))
    _, low_lr = wavelet_bands(b.expand(n, h, w, 3).permute(0, 3, 1, 2))
    torch.testing.assert_close(
        out.permute(0, 3, 1, 2), (high_hr + low_lr).clamp(0, 1), rtol=0, atol=1e-6
    )


def test_wavelet_fix_removes_a_tint_and_keeps_detail_on_a_smooth_scene():
    g = torch.Generator().manual_seed(1)
    n, h, w = 3, 96, 96
    smooth = F.interpolate(
        torch.rand(n, 3, 5, 5, generator=g), size=(h, w), mode="bicubic", align_corners=False
    )
    smooth = smooth.permute(0, 2, 3, 1).clamp(0.1, 0.9) * 0.6 + 0.2
    detail = _checker(n, h, w, amp=0.08)
    tint = torch.tensor([0.08, -0.05, 0.06])
    hr = (smooth + detail + tint).clamp(0, 1)  # what a drifting upscaler gives: detail, but tinted
    lr = F.interpolate(smooth.permute(0, 3, 1, 2), size=(h // 2, w // 2), mode="area").permute(
        0, 2, 3, 1
    )
    out = wavelet_colour_fix(hr, lr)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    before = (hr - smooth - detail)[inner].abs().mean()
    after = (out - smooth - detail)[inner].abs().mean()
    assert before > 0.06 and after < 0.002, (float(before), float(after))
    mean_err = (out.mean((0, 1, 2)) - lr.mean((0, 1, 2))).abs().max()
    assert mean_err < 0.01
    # the 2-px detail survives untouched: its band in the output is the HR's
    high_out, _ = wavelet_bands(out.permute(0, 3, 1, 2), levels=1)
    high_hr, _ = wavelet_bands(hr.permute(0, 3, 1, 2), levels=1)
    inner_band = (..., slice(16, -16), slice(16, -16))
    assert (
        torch.corrcoef(
            torch.stack([high_out[inner_band].flatten(), high_hr[inner_band].flatten()])
        )[0, 1]
        > 0.99
    )


def test_pixel_adain_matches_the_lr_colour_statistics():
    g = torch.Generator().manual_seed(2)
    hr = torch.rand(4, 32, 32, 3, generator=g) * 0.5 + 0.4
    lr = torch.rand(4, 16, 16, 3, generator=g) * 0.3 + 0.2
    out = pixel_adain(hr, lr)
    as5 = lambda x: x.permute(3, 0, 1, 2)[None]  # noqa: E731
    torch.testing.assert_close(
        channel_stats(as5(out))[0], channel_stats(as5(lr))[0], rtol=0, atol=1e-5
    )
    torch.testing.assert_close(colour_fix_frames("AdaIN", hr, lr), out)


def test_colour_fix_refuses_frames_that_do_not_belong_together():
    with pytest.raises(ValueError, match=r"do not match the HR frames \(5, 32, 32, 3\)"):
        wavelet_colour_fix(torch.rand(5, 32, 32, 3), torch.rand(4, 16, 16, 3))
    with pytest.raises(ValueError, match=r"expected frames \[N, H, W, 3\]"):
        wavelet_colour_fix(torch.rand(5, 32, 32), torch.rand(5, 16, 16))
    with pytest.raises(ValueError, match="NaN or Inf"):
        wavelet_colour_fix(torch.full((1, 8, 8, 3), float("nan")), torch.rand(1, 4, 4, 3))
    with pytest.raises(ValueError, match="expected one of"):
        colour_fix_frames("histogram", torch.rand(1, 8, 8, 3), torch.rand(1, 4, 4, 3))


def test_sampler_latent_adain_gives_the_upsampled_lr_latents_statistics():
    """sample(colour_fix="latent AdaIN"): the HR latent's per-channel clip statistics are those of
    the clean LR latent upsampled bilinearly (the colours of the input), whatever the DiT did;
    "none" leaves them alone."""
    from helpers import randomize_

    from simplegvr_core import SimpleGVR, get_config
    from simplegvr_core.models.upsampler import resize_frames
    from simplegvr_core.pipeline import build_condition, sample

    m = randomize_(SimpleGVR.from_config(get_config("tiny")), std=0.05).eval()
    lr = torch.randn(1, 16, 5, 6, 8, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    cond = build_condition(m, lr, scale=2.0, noise_level=0.4, seed=1)
    ref = channel_stats(resize_frames(m.latent_format.normalise(lr), (12, 16)))
    torch.testing.assert_close(cond.reference[0], ref[0])
    torch.testing.assert_close(cond.reference[1], ref[1])
    kw = dict(steps=2, cfg=1.0, seed=2)
    fixed = m.latent_format.normalise(sample(m, cond, colour_fix="latent AdaIN", **kw))
    plain = m.latent_format.normalise(sample(m, cond, **kw))
    mean, std = channel_stats(fixed)
    torch.testing.assert_close(mean, ref[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(std, ref[1], rtol=1e-4, atol=1e-4)
    assert (channel_stats(plain)[0] - ref[0]).abs().max() > 1e-2  # it did change something
    with pytest.raises(ValueError, match="colour_fix 'wavelet': expected one of"):
        sample(m, cond, colour_fix="wavelet", **kw)
