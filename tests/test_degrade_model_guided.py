"""Model-guided (SDEdit) degradation on latents (paper §4.2.2): x_α = (1−α)x0 + αε, Euler to σ =
0."""

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

from simplegvr_core.config import DiTConfig
from simplegvr_core.degrade.model_guided import dit_velocity, sample_alpha, sdedit
from simplegvr_core.models.dit import SimpleGVRDiT
from simplegvr_core.sampling import shift_sigma
from simplegvr_core.weights import import_wan_t2v


def oracle(x0):
    """The exact velocity of the straight path through x0: v = ε − x0 = (x − x0) / σ."""
    return lambda x, t, context: (x - x0) / (t / 1000.0).view(-1, 1, 1, 1, 1)


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (7, 1.0), (12, 5.0)])
def test_oracle_velocity_returns_x0(steps, shift):
    x0 = torch.randn(2, 4, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    out = sdedit(
        x0,
        oracle(x0),
        alpha=0.37,
        steps=steps,
        shift=shift,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_alpha_zero_returns_the_input():
    x0 = torch.randn(1, 4, 2, 3, 3)
    calls = []
    out = sdedit(x0, lambda x, t, c: calls.append(t) or x, alpha=0.0)
    assert torch.equal(out, x0) and out is not x0 and not calls


def test_starts_from_the_noised_latent_at_sigma_alpha():
    x0, eps = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    ts = []

    def still(x, t, context):  # v = 0: the sampler must return its starting point untouched
        ts.append(t.clone())
        return torch.zeros_like(x)

    out = sdedit(x0, still, alpha=0.35, steps=4, noise=eps)
    torch.testing.assert_close(out, 0.65 * x0 + 0.35 * eps)
    t = torch.cat(ts)
    # 1000σ on linspace(α, 0, k+1)
    torch.testing.assert_close(t, torch.tensor([350.0, 262.5, 175.0, 87.5]))
    ts.clear()
    sdedit(x0, still, alpha=0.35, steps=4, noise=eps, shift=5.0)
    t = torch.cat(ts) / 1000
    assert t[0].item() == pytest.approx(0.35)  # α is the noise actually added, for any shift
    u = t[0] / (5 - 4 * t[0])  # the un-shifted start
    torch.testing.assert_close(t, shift_sigma(torch.linspace(u.item(), 0, 5)[:-1], 5.0))


def test_alpha_is_drawn_in_the_paper_range_reproducibly():
    draws = [sample_alpha(torch.Generator().manual_seed(s)) for s in range(50)]
    assert all(0.3 <= a <= 0.4 for a in draws) and max(draws) - min(draws) > 0.05
    assert sample_alpha(torch.Generator().manual_seed(3)) == draws[3]
    x0 = torch.randn(1, 4, 2, 3, 3)
    v = lambda x, t, c: x * 0.1  # noqa: E731
    a = sdedit(x0, v, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, sdedit(x0, v, generator=torch.Generator().manual_seed(9)))
    assert not torch.equal(a, sdedit(x0, v, generator=torch.Generator().manual_seed(10)))


def tiny_wan_t2v(tmp_path):
    cfg = DiTConfig(
        dim=32,
        ffn_dim=64,
        num_heads=2,
        num_layers=2,
        in_dim=16,
        out_dim=16,
        freq_dim=16,
        text_dim=24,
        noise_level_embed=False,
    )
    ref = randomize_(SimpleGVRDiT(cfg), seed=2, std=0.1).eval()
    path = tmp_path / "wan_t2v.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return import_wan_t2v(str(path), num_heads=2).eval()


@torch.no_grad()
def test_works_with_a_plain_t2v_dit_loaded_from_wan_weights(tmp_path):
    dit = tiny_wan_t2v(tmp_path)
    x0, eps = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    ctx = torch.randn(1, 5, 24)
    out = sdedit(x0, dit_velocity(dit), ctx, alpha=0.3, steps=3, noise=eps)
    x = 0.7 * x0 + 0.3 * eps  # the same Euler steps by hand, calling the DiT as a T2V model
    sig = torch.linspace(0.3, 0.0, 4)
    for i in range(3):
        x = x + (sig[i + 1] - sig[i]) * dit(x, None, torch.tensor([1000.0 * sig[i]]), ctx)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)
    assert (
        out.shape == x0.shape
        and torch.isfinite(out).all()
        and not torch.allclose(out, x0, atol=1e-3)
    )


@torch.no_grad()
def test_guidance_mixes_conditional_and_negative(tmp_path):
    dit = tiny_wan_t2v(tmp_path)
    x, t = torch.randn(1, 16, 2, 4, 4), torch.tensor([300.0])
    pos, neg = torch.randn(1, 5, 24), torch.randn(1, 3, 24)
    v = dit_velocity(dit, negative_context=neg, guidance=3.0)(x, t, pos)
    v_pos = dit(x, None, t, pos)
    # Wan zero-pads text to one length
    v_neg = dit(x, None, t, torch.nn.functional.pad(neg, (0, 0, 0, 2)))
    torch.testing.assert_close(v, v_neg + 3.0 * (v_pos - v_neg), rtol=1e-4, atol=1e-5)


def test_inputs_are_validated(tmp_path):
    x0 = torch.randn(1, 4, 2, 3, 3)
    with pytest.raises(ValueError, match="alpha=1.5"):
        sdedit(x0, oracle(x0), alpha=1.5)
    with pytest.raises(ValueError, match="expected a float latent"):
        sdedit(torch.zeros(4, 3, 3), oracle(x0), alpha=0.3)
    with pytest.raises(ValueError, match="steps"):
        sdedit(x0, oracle(x0), alpha=0.3, steps=0)
    with pytest.raises(ValueError, match="noise has shape"):
        sdedit(x0, oracle(x0), alpha=0.3, noise=torch.zeros(1, 4, 2, 3, 4))
    with pytest.raises(ValueError, match="alpha_range"):
        sample_alpha(None, (0.5, 0.2))
    conditioned = SimpleGVRDiT(
        DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, freq_dim=16, text_dim=24)
    )
    with pytest.raises(ValueError, match="plain\\s+T2V"):
        dit_velocity(conditioned)
    with pytest.raises(ValueError, match="negative_context"):
        dit_velocity(tiny_wan_t2v(tmp_path), guidance=2.0)
