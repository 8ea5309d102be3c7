import pytest
import torch

from simplegvr_core.latent_formats import (
    COGVIDEOX_2B,
    COGVIDEOX_5B,
    WAN21,
    WAN22,
    formats_for_channels,
    from_bcthw,
    get_format,
    to_bcthw,
)


def test_wan21_normalise_matches_comfyui_process_in_and_round_trips():
    x = torch.randn(2, 16, 3, 4, 5) * 3
    z = WAN21.normalise(x)
    mean = torch.tensor(WAN21.mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21.std).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(z, (x - mean) / std)
    assert WAN21.mean[0] == -0.7571 and WAN21.std[15] == 1.9160
    torch.testing.assert_close(WAN21.denormalise(z), x)


def test_wan22_has_48_channels_and_16x_spatial():
    assert WAN22.channels == 48 and len(WAN22.mean) == 48 and len(WAN22.std) == 48
    assert WAN22.spatial_ratio == 16
    x = torch.randn(1, 48, 2, 3, 3)
    torch.testing.assert_close(WAN22.denormalise(WAN22.normalise(x)), x)


def test_cogvideox_scalar_scales():
    x = torch.randn(1, 16, 2, 3, 3)
    torch.testing.assert_close(COGVIDEOX_2B.normalise(x), x * 1.15258426)
    torch.testing.assert_close(COGVIDEOX_5B.normalise(x), x * 0.7)
    torch.testing.assert_close(COGVIDEOX_5B.denormalise(COGVIDEOX_5B.normalise(x)), x)


def test_frame_and_size_arithmetic():
    assert (
        WAN21.latent_frames(77) == 20
        and WAN21.latent_frames(17) == 5
        and WAN21.latent_frames(1) == 1
    )
    assert WAN21.pixel_frames(20) == 77 and WAN21.pixel_frames(5) == 17
    assert WAN21.latent_size(1080, 1920) == (135, 240)
    assert WAN21.latent_size(480, 832) == (60, 104)
    assert WAN22.latent_size(704, 1280) == (44, 80)
    # halves round up: 67.5 -> 68, 68.5 -> 69 (not to the even 68)
    assert WAN22.latent_size(1080, 1096) == (68, 69)
    assert WAN21.latent_size(1080, 1620) == (135, 203) and WAN21.latent_size(3, 4) == (1, 1)


def test_layout_detection():
    x = torch.randn(1, 16, 5, 4, 4)
    y, layout = to_bcthw(x, 16)
    assert layout == "BCTHW" and y is x
    xt = x.permute(0, 2, 1, 3, 4).contiguous()  # [B,T,C,H,W] as wrapper packs hand it
    y, layout = to_bcthw(xt, 16)
    assert layout == "BTCHW" and torch.equal(y, x)
    assert torch.equal(from_bcthw(y, layout), xt)


def test_clear_errors():
    with pytest.raises(ValueError, match="no known latent format has 7 channels"):
        formats_for_channels(7)
    with pytest.raises(ValueError, match="unknown latent format 'sdxl'"):
        get_format("sdxl")
    with pytest.raises(ValueError, match="4-D tensor is an image latent"):
        to_bcthw(torch.randn(1, 16, 8, 8), 16)
    with pytest.raises(
        ValueError, match=r"expected 16 channels in dim 1 \(\[B,C,T,H,W\]\) or dim 2"
    ):
        to_bcthw(torch.randn(1, 12, 3, 8, 8), 16)
    with pytest.raises(ValueError, match="expected 16 channels .* 'wan21'"):
        WAN21.normalise(torch.randn(1, 48, 2, 4, 4))
    assert [f.name for f in formats_for_channels(48)] == ["wan22"]
    assert get_format("Wan2.1") is WAN21


# --- latent_scale=auto ----------------------------------------------------------------------------
def _raw_like(fmt, shape=(1, 5, 12, 16), spread=1.0, shift=0.0, seed=0):
    """A latent whose channel c has mean fmt.mean[c] + shift*std[c] and std spread*std[c] (raw VAE
    scale)."""
    g = torch.Generator().manual_seed(seed)
    b, t, h, w = shape
    z = torch.randn(b, fmt.channels, t, h, w, generator=g) * spread + shift
    return fmt.denormalise(z)


@pytest.mark.parametrize("fmt", [WAN21, WAN22])
def test_detect_latent_scale_tells_raw_from_normalised_wan_latents(fmt):
    from simplegvr_core.latent_formats import detect_latent_scale, latent_scale_distances

    raw = _raw_like(fmt)
    assert detect_latent_scale(raw, fmt) == "raw"
    assert detect_latent_scale(fmt.normalise(raw), fmt) == "normalised"
    d = latent_scale_distances(raw, fmt)
    assert d["raw"] < 0.05 < 0.3 < d["normalised"]


def test_detect_latent_scale_survives_a_calm_wan21_video():
    from simplegvr_core.latent_formats import detect_latent_scale

    # half the usual spread and means off by 0.3 std: still raw, and its normalised version (what
    # kijai's WanVideoWrapper hands on) still normalised. (Wan 2.2's stds are ~0.5, so there a video
    # this calm is ambiguous: the node logs the distances and latent_scale can be set by hand.)
    calm = _raw_like(WAN21, spread=0.5, shift=0.3, seed=1)
    assert detect_latent_scale(calm, WAN21) == "raw"
    assert detect_latent_scale(WAN21.normalise(calm), WAN21) == "normalised"


def test_detect_latent_scale_accepts_wrapper_layout_and_cogvideox_scale():
    from simplegvr_core.latent_formats import detect_latent_scale

    raw = _raw_like(WAN21)
    assert detect_latent_scale(raw.permute(0, 2, 1, 3, 4), WAN21) == "raw"  # [B,T,C,H,W]
    # CogVideoX 2b and 5b share one VAE: raw latents have its std (1/1.1526) for both; the 5b works
    # in 0.7 x that
    g = torch.Generator().manual_seed(0)
    raw_cog = torch.randn(1, 16, 5, 12, 16, generator=g) * COGVIDEOX_5B.raw_std
    assert detect_latent_scale(raw_cog, COGVIDEOX_5B) == "raw"
    # std 0.61
    assert detect_latent_scale(COGVIDEOX_5B.normalise(raw_cog), "cogvideox_5b") == "normalised"
    assert detect_latent_scale(raw_cog, COGVIDEOX_2B) == "raw"
    # std 1
    assert detect_latent_scale(COGVIDEOX_2B.normalise(raw_cog), COGVIDEOX_2B) == "normalised"


def test_detect_latent_scale_errors_name_the_problem():
    from simplegvr_core.latent_formats import detect_latent_scale

    with pytest.raises(ValueError, match="4-D tensor is an image latent"):
        detect_latent_scale(torch.zeros(1, 16, 8, 8), WAN21)
    with pytest.raises(ValueError, match="expected 16 channels"):
        detect_latent_scale(torch.zeros(1, 48, 2, 8, 8), WAN21)
    with pytest.raises(ValueError, match="floating-point"):
        detect_latent_scale(torch.zeros(1, 16, 2, 8, 8, dtype=torch.int64), WAN21)


# --- which VAE made it: CogVideoX and Wan 2.1 latents both have 16 channels -----------------------
def _cogvideox_raw(shape=(1, 16, 5, 12, 16), seed=0):
    """A raw CogVideoX latent as ComfyUI's CogVideoX KSampler / VAE Encode hand it on: [B,C,T,H,W],
    the VAE's scale."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * COGVIDEOX_2B.raw_std


@pytest.mark.parametrize("fmt", [COGVIDEOX_2B, COGVIDEOX_5B])
def test_a_core_cogvideox_latent_is_read_raw_by_a_cogvideox_model(fmt):
    from simplegvr_core.latent_formats import read_latent

    x = _cogvideox_raw()
    lr = read_latent(x, fmt, "auto")
    assert (lr.layout, lr.scale) == ("BCTHW", "raw") and torch.equal(lr.raw, x)
    # a wrapper's [B,T,C,H,W], scaled
    wrapped = read_latent(fmt.normalise(x).permute(0, 2, 1, 3, 4), fmt, "auto")
    assert (wrapped.layout, wrapped.scale) == ("BTCHW", "normalised")
    torch.testing.assert_close(wrapped.raw, x)
    # the model space the T2V model itself uses
    torch.testing.assert_close(fmt.normalise(lr.raw), x * fmt.scale)


def test_a_cogvideox_latent_into_a_wan21_model_is_named_in_the_error():
    from simplegvr_core.latent_formats import read_latent

    with pytest.raises(ValueError) as e:
        read_latent(_cogvideox_raw(), WAN21, "auto", "LR latent")
    msg = str(e.value)
    assert msg.startswith("LR latent of shape (1, 16, 5, 12, 16) looks like a raw CogVideoX latent")
    assert "'wan21' (Wan 2.1 VAE: 16 channels, /8 spatial) latents" in msg
    assert (
        "trained for 'cogvideox_2b' / 'cogvideox_5b' latents" in msg and "set latent_scale" in msg
    )
    # the user's word wins: an explicit scale is not second-guessed
    assert read_latent(_cogvideox_raw(), WAN21, "raw").scale == "raw"


@pytest.mark.parametrize("fmt", [COGVIDEOX_2B, COGVIDEOX_5B])
def test_a_wan21_latent_into_a_cogvideox_model_is_named_in_the_error(fmt):
    from simplegvr_core.latent_formats import read_latent

    with pytest.raises(
        ValueError,
        match=rf"looks like a raw Wan 2\.1 latent .* works in '{fmt.name}' \(CogVideoX VAE"
        r".* trained for 'wan21' latents",
    ):
        read_latent(_raw_like(WAN21), fmt, "auto")


def test_normalised_wan21_latents_are_still_wan21_not_cogvideox():
    from simplegvr_core.latent_formats import other_family_distances, read_latent

    # kijai's WanVideoWrapper hands model-space latents
    x = WAN21.normalise(_raw_like(WAN21, seed=4))
    lr = read_latent(x, WAN21, "auto")
    assert lr.scale == "normalised"
    d = other_family_distances(x, WAN21)
    # close (std 1 vs 0.87), but farther than normalised Wan
    assert set(d) == {"CogVideoX"} and d["CogVideoX"] > 0.01


def test_channel_count_mismatches_name_the_candidate_formats():
    from simplegvr_core.latent_formats import read_latent

    with pytest.raises(
        ValueError, match=r"48 channels \(a wan22 latent\?\).*'wan21' latents with 16 channels"
    ):
        read_latent(torch.zeros(1, 48, 2, 4, 4), WAN21)
    with pytest.raises(
        ValueError, match=r"16 channels \(a wan21 / cogvideox_2b / cogvideox_5b latent\?\).*'wan22'"
    ):
        read_latent(torch.zeros(1, 16, 2, 4, 4), WAN22)
    assert WAN22.describe() == "'wan22' (Wan 2.2 VAE: 48 channels, /16 spatial)"
    assert (
        COGVIDEOX_5B.family == COGVIDEOX_2B.family == "CogVideoX"
        and COGVIDEOX_5B.raw_stats()[1][0] == COGVIDEOX_2B.raw_std
    )
