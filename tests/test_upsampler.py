import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_

from simplegvr_core.config import UpsamplerConfig
from simplegvr_core.models.upsampler import LatentUpsampler
from simplegvr_core.sampling import add_condition_noise


def make(mode="learned", hidden=8, seed=0, random=True):
    up = LatentUpsampler(UpsamplerConfig(mode=mode, channels=16, hidden=hidden))
    return randomize_(up, seed, 0.1) if random and mode != "interp" else up


@pytest.mark.parametrize("mode", ["learned", "interp", "channel_only"])
def test_non_integer_factor_480p_to_1080p_shape(mode):
    c0 = torch.randn(1, 16, 2, 60, 104)
    out = make(mode, hidden=4)(
        add_condition_noise(c0, 0.4, generator=torch.Generator().manual_seed(0)), size=(135, 240)
    )
    assert out.shape == (1, 16, 2, 135, 240)
    assert torch.isfinite(out).all()


def test_time_expansion_is_causal_one_plus_four_frames():
    up = make()
    c = torch.randn(2, 16, 5, 6, 7)
    h = up.expand(c)
    # 5 latent frames -> 17 frames, as the VAE decodes
    assert h.shape == (2, 8, 1 + 4 * (5 - 1), 6, 7)
    # Expanded frame 0 belongs to latent frame 0 alone; frames 4i-3..4i to latent frame i.
    c2 = c.clone()
    c2[:, :, 2] += 1.0
    h2 = up.expand(c2)
    assert torch.equal(h[:, :, :5], h2[:, :, :5])  # frames of latent 0 and 1 untouched
    assert not torch.allclose(h[:, :, 5:9], h2[:, :, 5:9])  # latent 2's four frames change


@pytest.mark.parametrize("mode", ["learned", "channel_only"])
def test_output_frame_never_depends_on_later_input_frames(mode):
    up = make(mode)
    c = torch.randn(1, 16, 4, 6, 6)
    out = up(c, size=(9, 9))
    for j in range(4):
        c2 = c.clone()
        c2[:, :, j] += torch.randn_like(c2[:, :, j])
        out2 = up(c2, size=(9, 9))
        assert torch.equal(out[:, :, :j], out2[:, :, :j]), f"frames before {j} changed"
        assert not torch.allclose(out[:, :, j], out2[:, :, j])


def test_interp_equals_f_interpolate():
    c = torch.randn(2, 16, 3, 60, 104)
    out = make("interp")(c, size=(135, 240))
    ref = F.interpolate(c, size=(3, 135, 240), mode="trilinear", align_corners=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_fresh_learned_upsampler_starts_as_interpolation():
    up = LatentUpsampler(UpsamplerConfig(mode="learned", channels=16, hidden=8))
    c = torch.randn(1, 16, 3, 10, 12)
    ref = make("interp")(c, size=(23, 27))
    assert torch.equal(up(c, size=(23, 27)), ref)
    assert up(c, size=(23, 27)).shape == (1, 16, 3, 23, 27)


def test_noise_augmentation_formula_and_seed():
    c0 = torch.randn(2, 16, 3, 4, 4)
    cs = add_condition_noise(c0, 0.4, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(c0.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(cs, 0.6 * c0 + 0.4 * eps)
    per_sample = add_condition_noise(
        c0, torch.tensor([0.0, 1.0]), generator=torch.Generator().manual_seed(7)
    )
    assert torch.equal(per_sample[0], c0[0])
    torch.testing.assert_close(per_sample[1], eps[1])
    # a given noise is the same formula
    assert torch.equal(add_condition_noise(c0, 0.4, noise=eps), cs)
    assert add_condition_noise(c0, 0.0) is c0  # s = 0: the clean latent itself
    with pytest.raises(ValueError, match=r"noise_level must lie in \[0, 1\]"):
        add_condition_noise(c0, 1.5)
    with pytest.raises(ValueError, match="condition noise has shape"):
        add_condition_noise(c0, 0.4, noise=eps[:1])


def test_upsampler_input_errors():
    up = make("interp")
    with pytest.raises(ValueError, match=r"expected \[B,16,T,H,W\]"):
        up(torch.randn(1, 48, 2, 4, 4), size=(8, 8))
    with pytest.raises(ValueError, match="NaN or Inf"):
        up(torch.full((1, 16, 2, 4, 4), float("nan")), size=(8, 8))
    with pytest.raises(ValueError, match="positive"):
        up(torch.randn(1, 16, 2, 4, 4), size=(0, 8))
