import pytest
import torch

from simplegvr_core.sampling import (
    cfg_velocity,
    flow_sigmas,
    get_sampler,
    noise_latent,
    sample_euler,
    sample_heun,
    shift_sigma,
    unshift_sigma,
)


def test_shift_matches_wan_formula_and_inverts():
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(shift_sigma(s, 5.0), 5 * s / (1 + 4 * s))
    torch.testing.assert_close(unshift_sigma(shift_sigma(s, 5.0), 5.0), s)
    sig = flow_sigmas(50, shift=5.0)
    assert sig.shape == (51,) and sig[0] == 1.0 and sig[-1] == 0.0
    assert torch.all(sig[1:] < sig[:-1])
    torch.testing.assert_close(sig[25], torch.tensor(5 * 0.5 / (1 + 4 * 0.5)))
    partial = flow_sigmas(4, shift=5.0, start=0.35)  # SDEdit-style start on the shifted grid
    assert abs(float(partial[0]) - 0.35) < 1e-7 and partial[-1] == 0


@pytest.mark.parametrize("sampler", [sample_euler, sample_heun])
@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_oracle_velocity_recovers_x0(sampler, shift):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)

    def oracle(x, sigma):  # returns eps - x0 on the straight path through (x0, eps)
        return (x - x0) / sigma.view(-1, 1, 1, 1, 1).to(x.dtype)

    sig = flow_sigmas(10, shift).double()
    out = sampler(oracle, noise_latent(x0, eps, 1.0), sig)
    assert (out - x0).abs().max() < 1e-5


def test_callback_sees_every_step_and_can_stop_sampling():
    calls = []

    def model_fn(x, sigma):
        calls.append(float(sigma[0]))
        return torch.ones_like(x)

    seen = []
    sample_euler(model_fn, torch.zeros(1, 2), flow_sigmas(5), callback=lambda d: seen.append(d))
    assert [d["i"] for d in seen] == [0, 1, 2, 3, 4] and set(seen[0]) >= {
        "i",
        "sigma",
        "x",
        "denoised",
    }
    # x - sigma*v at sigma=1
    torch.testing.assert_close(seen[0]["denoised"], torch.zeros(1, 2) - 1.0)

    class Stop(Exception):
        pass

    calls.clear()

    def stop(d):
        raise Stop

    with pytest.raises(Stop):
        sample_euler(model_fn, torch.zeros(1, 2), flow_sigmas(50), callback=stop)
    assert len(calls) == 1  # stopped within one step


def test_cfg_one_is_a_single_forward_and_cfg_mixes_passes():
    calls = []

    class FakeDiT:
        def __call__(self, x, cond, t, ctx, nl, attention=None):
            calls.append(x.shape[0])
            return ctx.mean(dim=(1, 2)).view(-1, 1) * torch.ones_like(x) + cond

    pos, neg = torch.full((1, 3, 4), 2.0), torch.full((1, 3, 4), 1.0)
    x, cond = torch.zeros(1, 5), torch.zeros(1, 5)
    v1 = cfg_velocity(FakeDiT(), pos, neg, 1.0, 0.4)(x, cond, torch.ones(1))
    assert calls == [1] and torch.equal(v1, torch.full((1, 5), 2.0))
    v = cfg_velocity(FakeDiT(), pos, neg, 5.0, 0.4)(x, cond, torch.ones(1))
    assert calls[-1] == 2  # positive and negative in one batched forward
    torch.testing.assert_close(v, torch.full((1, 5), 1.0 + 5.0 * (2.0 - 1.0)))
    with pytest.raises(ValueError, match="needs a negative context"):
        cfg_velocity(FakeDiT(), pos, None, 5.0, 0.4)
    with pytest.raises(ValueError, match="sampler 'dpm'"):
        get_sampler("dpm")
