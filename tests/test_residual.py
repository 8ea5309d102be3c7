"""prediction = "residual": the DiT runs the flow of HR minus the upsampler's condition c
(`SimpleGVR.velocity`)."""

import pytest
import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR, get_config, load_checkpoint, save_checkpoint, seeding
from simplegvr_core.pipeline import build_condition, prepare_context, sample, upscale
from simplegvr_core.plan import plan_sampling
from simplegvr_core.sampling import flow_sigmas


def tiny(prediction="residual", seed=0):
    cfg = get_config("tiny").to_dict()
    cfg["prediction"] = prediction
    return randomize_(SimpleGVR.from_config(cfg), seed=seed, std=0.05).eval()


def lr_latent(seed=0):
    return torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def test_sampling_runs_the_residual_flow_and_adds_the_condition_back():
    m = tiny()
    lr, ctx = lr_latent(), torch.randn(1, 5, 32)
    got = upscale(
        m,
        lr,
        scale=2.0,
        steps=3,
        cfg=1.0,
        shift=3.0,
        context=ctx,
        seed=4,
        noise_level=0.2,
        chunk_frames=None,
    )
    # By hand: Euler on y = x0 - c from the same noise with the DiT's own output, then x0 = y + c.
    cond = build_condition(m, lr, scale=2.0, noise_level=0.2, seed=4)
    y = torch.randn(cond.c.shape, generator=seeding.torch_generator(4, seeding.SAMPLING_NOISE))
    sig = flow_sigmas(3, 3.0)
    with torch.no_grad():
        for i in range(3):
            y = y + (sig[i + 1] - sig[i]) * m.dit(
                y, cond.c, sig[i].expand(1) * 1000, prepare_context(m, ctx, 1), 0.2
            )
    torch.testing.assert_close(got, m.latent_format.denormalise(y + cond.c), rtol=0, atol=1e-5)
    # The same weights read as an "hr" model give another result: the flag changes what the DiT
    # means.
    hr_model = tiny("hr")
    assert not torch.allclose(
        upscale(
            hr_model,
            lr,
            scale=2.0,
            steps=3,
            cfg=1.0,
            shift=3.0,
            context=ctx,
            seed=4,
            noise_level=0.2,
            chunk_frames=None,
        ),
        got,
        atol=1e-3,
    )


def test_a_dit_that_predicts_the_noise_returns_the_condition():
    """x0 - c = 0 for every sample: the residual model's answer is the upsampler's estimate, through
    cfg too."""
    m = tiny()
    lr = lr_latent(1)
    # y_σ = σ ε
    m.dit.forward = lambda x, c, t, ctx, nl, attention=None: x / (t.view(-1, 1, 1, 1, 1) / 1000)
    cond = build_condition(m, lr, scale=2.0, noise_level=0.0, seed=0)
    out = sample(
        m,
        cond,
        plan_sampling(m, cond.c.shape, chunk_frames=None),
        steps=4,
        cfg=3.0,
        negative_context=torch.zeros(1, 1, 32),
    )
    torch.testing.assert_close(out, m.latent_format.denormalise(cond.c), rtol=0, atol=1e-4)


def test_flow_loss_does_not_move_the_upsampler_through_the_base():
    m = tiny()
    g = torch.Generator().manual_seed(2)
    z, c = (
        torch.randn(2, 16, 3, 8, 12, generator=g),
        torch.randn(2, 16, 3, 8, 12, generator=g).requires_grad_(),
    )
    t, ctx = torch.tensor([300.0, 800.0]), torch.randn(2, 5, 32, generator=g)
    m.velocity(z, c, t, ctx, torch.zeros(2)).square().sum().backward()
    grad = c.grad.clone()
    # c's gradient is the DiT condition input's alone: the same as feeding the shifted input as a
    # constant.
    c2 = c.detach().clone().requires_grad_()
    shifted = z - (1 - t.view(-1, 1, 1, 1, 1) / 1000) * c.detach()
    (m.dit(shifted, c2, t, ctx, torch.zeros(2)) - c.detach()).square().sum().backward()
    torch.testing.assert_close(grad, c2.grad, rtol=1e-5, atol=1e-6)


def test_checkpoints_keep_the_prediction_and_old_configs_mean_hr(tmp_path):
    m = tiny()
    save_checkpoint(m, tmp_path / "r.safetensors")
    back = load_checkpoint(tmp_path / "r.safetensors")
    assert back.config.prediction == "residual"
    lr = lr_latent(2)
    torch.testing.assert_close(
        upscale(back, lr, scale=2.0, steps=2, cfg=1.0), upscale(m, lr, scale=2.0, steps=2, cfg=1.0)
    )
    old = get_config("tiny").to_dict()
    del old["prediction"]  # a checkpoint written before the field existed
    assert get_config(old).prediction == "hr"
    with pytest.raises(
        ValueError, match=r"prediction='x0'.*expected one of \('hr', 'residual', 'residual_x0'\)"
    ):
        get_config({**old, "prediction": "x0"})


def test_bf16_residual_model_samples_close_to_float32():
    m = tiny()
    lr = lr_latent(3)
    ref = upscale(m, lr, scale=2.0, steps=2, cfg=1.0, chunk_frames=None)
    low = upscale(m.to(torch.bfloat16), lr, scale=2.0, steps=2, cfg=1.0, chunk_frames=None)
    assert low.dtype == ref.dtype and torch.isfinite(low).all()
    assert float((low - ref).norm() / ref.norm()) < 2e-2


def test_residual_training_lowers_its_loss_and_exports_a_residual_checkpoint(tmp_path):
    pytest.importorskip("accelerate")
    import numpy as np

    from training.config import load_config
    from training.data import make_synthetic_videos
    from training.train import train

    clips = make_synthetic_videos(tmp_path / "clips", 3, 13, (32, 32), seed=0)
    cfg = load_config(
        None,
        [
            "model.config=tiny",
            'model.overrides.prediction="residual"',
            "data.kind=videos",
            f"data.path={clips}",
            "data.frames=9",
            "data.hr_size=[32, 32]",
            "data.lr_size=[16, 16]",
            "data.degradation=none",
            "vae.kind=tiny",
            "text.kind=byte",
            "train.batch_size=2",
            "train.lr=2e-3",
            "train.mixed_precision=no",
            "train.ema_decay=0.9",
            "train.steps=150",
            "train.overfit=true",
            "train.null_prompt_prob=0.0",
            "train.upsampler_weight=1.0",
            f"log.output_dir={tmp_path / 'run'}",
            "log.tracker=none",
            "log.validate_every=0",
            "log.checkpoint_every=1000",
        ],
    )
    out = train(cfg, export=str(tmp_path / "res.safetensors"), progress=False)
    losses = [v for _, v in out["losses"]]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:3])
    model = load_checkpoint(tmp_path / "res.safetensors")
    assert model.config.prediction == "residual"
    hr = upscale(model, torch.randn(1, 16, 3, 2, 2), scale=2.0, steps=2, cfg=1.0)
    assert hr.shape == (1, 16, 3, 4, 4) and torch.isfinite(hr).all()


# --- prediction = "residual_x0": the DiT's output is the estimate of x0 - c -----------------------
def test_residual_x0_velocity_and_a_fresh_model_returns_the_condition():
    fresh = SimpleGVR.from_config(
        {**get_config("tiny").to_dict(), "prediction": "residual_x0"}
    ).eval()
    assert not fresh.dit.head.head.weight.any() and not fresh.dit.head.head.bias.any()
    lr = lr_latent(3)
    cond = build_condition(fresh, lr, scale=2.0, noise_level=0.1, seed=0)
    for steps in (1, 4):
        out = sample(
            fresh,
            cond,
            plan_sampling(fresh, cond.c.shape, chunk_frames=None),
            steps=steps,
            cfg=1.0,
            shift=3.0,
            seed=5,
        )
        torch.testing.assert_close(out, fresh.latent_format.denormalise(cond.c), rtol=0, atol=1e-5)
    # With weights: v = (z_t - c - D) / σ, D being the DiT's output on the residual flow's input z_t
    # - (1-σ) c.
    m = tiny("residual_x0", seed=2)
    g = torch.Generator().manual_seed(3)
    z, c = torch.randn(2, 16, 3, 8, 12, generator=g), torch.randn(2, 16, 3, 8, 12, generator=g)
    t, ctx, s = torch.tensor([1000.0, 250.0]), torch.randn(2, 5, 32, generator=g), torch.zeros(2)
    with torch.no_grad():
        sig = (t / 1000).view(-1, 1, 1, 1, 1)
        d = m.dit(z - (1 - sig) * c, c, t, ctx, s)
        torch.testing.assert_close(
            m.velocity(z, c, t, ctx, s), (z - c - d) / sig, rtol=1e-5, atol=1e-5
        )
    # One Euler step from σ = 1 lands on c + D: the x0 estimate itself.
    with torch.no_grad():
        v = m.velocity(z[:1], c[:1], t[:1], ctx[:1], s[:1])
        torch.testing.assert_close(
            z[:1] - v, c[:1] + m.dit(z[:1], c[:1], t[:1], ctx[:1], s[:1]), rtol=0, atol=1e-5
        )


def test_residual_x0_survives_a_checkpoint(tmp_path):
    m = tiny("residual_x0", seed=4)
    save_checkpoint(m, tmp_path / "x0.safetensors")
    back = load_checkpoint(tmp_path / "x0.safetensors")
    assert back.config.prediction == "residual_x0"
    lr = lr_latent(5)
    a = upscale(m, lr, scale=2.0, steps=2, cfg=1.0, seed=1, chunk_frames=None)
    torch.testing.assert_close(
        upscale(back, lr, scale=2.0, steps=2, cfg=1.0, seed=1, chunk_frames=None), a, rtol=0, atol=0
    )
