"""The distillation stage (training/distill.py): a teacher becomes a 1-4 step student inside the
trainer."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from simplegvr_core import load_checkpoint, seeding
from simplegvr_core.checkpoint import checkpoint_sampling
from simplegvr_core.pipeline import upscale
from simplegvr_core.sampling import SamplingRecipe, flow_sigmas
from simplegvr_core.weights import read_safetensors
from training import distill
from training.config import load_config
from training.data import make_synthetic_videos
from training.train import train

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Four procedural clips and a briefly trained tiny teacher (flow matching, 40 steps)."""
    root = tmp_path_factory.mktemp("distill")
    clips = make_synthetic_videos(root / "clips", 4, 9, (32, 32), seed=0)
    teacher = root / "teacher.safetensors"
    train(cfg(root / "t", clips, ["train.steps=40"]), export=str(teacher), progress=False)
    return clips, teacher


def cfg(out, clips, extra=()):
    return load_config(
        None,
        [
            "model.config=tiny",
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
            f"log.output_dir={out / 'run'}",
            "log.tracker=none",
            "log.validate_every=0",
            "log.checkpoint_every=1000",
            *extra,
        ],
    )


def distill_cfg(out, clips, teacher, method, extra=()):
    return cfg(
        out,
        clips,
        [
            f"model.init={teacher}",
            f"distill.method={method}",
            f"distill.teacher={teacher}",
            "distill.teacher_steps=4",
            *extra,
        ],
    )


def test_student_schedule_is_the_samplers_grid():
    for steps, shift in ((1, 1.0), (4, 3.0)):
        s = distill.StudentSchedule(steps, shift)
        assert torch.allclose(s.sigmas.float(), flow_sigmas(steps, shift)[:-1])
        drawn = s.sample(400, torch.Generator().manual_seed(0))
        assert set(np.round(drawn.numpy(), 6)) == set(np.round(s.sigmas.float().numpy(), 6))


def test_teacher_solution_is_what_the_sampler_computes(setup):
    """The teacher target in training equals `pipeline.sample` of the teacher from the same noise
    (cfg 1, null prompt)."""
    from simplegvr_core.pipeline import build_condition, sample

    _, teacher_path = setup
    teacher = load_checkpoint(teacher_path).eval()
    fmt = teacher.latent_format
    lr_raw = torch.randn(1, 16, 3, 4, 4) * 0.5
    cond = build_condition(teacher, lr_raw, scale=2.0, noise_level=0.0, seed=0)
    ref = fmt.normalise(sample(teacher, cond, steps=4, cfg=1.0, shift=3.0, seed=5))
    # the sampler's
    eps = torch.randn(cond.c.shape, generator=seeding.torch_generator(5, seeding.SAMPLING_NOISE))
    ctx = torch.zeros(1, teacher.config.dit.text_len, teacher.config.dit.text_dim)
    got = distill.teacher_solution(
        teacher, eps, fmt.normalise(lr_raw), ctx, torch.zeros(1), steps=4, shift=3.0
    )
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()


@pytest.mark.parametrize("method", distill.METHODS)
def test_distillation_lowers_its_objective_and_exports_a_student(tmp_path, setup, method):
    clips, teacher = setup
    c = distill_cfg(
        tmp_path,
        clips,
        teacher,
        method,
        ["train.steps=60", "train.overfit=true", "train.null_prompt_prob=0.0"],
    )
    out = train(c, export=str(tmp_path / "student.safetensors"), progress=False)
    losses = [v for _, v in out["losses"]]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:3]), (losses[:3], losses[-10:])
    _, meta = read_safetensors(tmp_path / "student.safetensors")
    assert meta["distill_method"] == method
    # one step; guidance 1 recorded: no prompt was dropped (null_prompt_prob 0), so there is no
    # unconditional branch
    assert checkpoint_sampling(tmp_path / "student.safetensors") == SamplingRecipe(
        steps=1, shift=1.0, guidance=1.0
    )
    student = load_checkpoint(tmp_path / "student.safetensors")
    # a teacher keeps 50
    assert student.sampling.steps == 1 and checkpoint_sampling(setup[1]).steps == 50
    # the recipe: 1 step
    hr = upscale(student, torch.randn(1, 16, 3, 2, 2), scale=2.0, steps="auto", cfg=1.0)
    assert hr.shape == (1, 16, 3, 4, 4) and torch.isfinite(hr).all()


def test_teacher_target_moves_the_student_towards_the_teacher(tmp_path, setup):
    """regress_teacher's loss at the start is the distance between one student step and the
    teacher's solution."""
    clips, teacher = setup
    c = distill_cfg(
        tmp_path, clips, teacher, "regress_teacher", ["train.steps=1", "train.lr=1e-12"]
    )
    first = train(c, progress=False)["losses"][0][1]
    c2 = distill_cfg(
        tmp_path / "b", clips, teacher, "regress_hr", ["train.steps=1", "train.lr=1e-12"]
    )
    to_hr = train(c2, progress=False)["losses"][0][1]
    # the two methods regress to different targets
    assert first != to_hr and first > 0 and to_hr > 0


def test_distillation_resumes_bit_exactly(tmp_path, setup):
    clips, teacher = setup
    extra = ["train.steps=4", "log.checkpoint_every=2", "distill.steps=4", "distill.shift=3.0"]
    a = train(distill_cfg(tmp_path / "a", clips, teacher, "regress_teacher", extra), progress=False)
    b_cfg = distill_cfg(
        tmp_path / "b", clips, teacher, "regress_teacher", [*extra, "train.stop_at_step=2"]
    )
    b1 = train(b_cfg, progress=False)
    b_cfg["train"]["stop_at_step"] = 0
    b2 = train(b_cfg, resume="auto", progress=False)
    assert b1["losses"] + b2["losses"] == a["losses"]
    for name in ("model.safetensors", "ema.safetensors"):
        wa = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "step-0000004" / name))
        wb = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "step-0000004" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_distillation_tables_are_refused(tmp_path, setup):
    clips, teacher = setup
    with pytest.raises(ValueError, match="distill.method='dmd'"):
        distill_cfg(tmp_path, clips, teacher, "dmd")
    with pytest.raises(ValueError, match="model.init"):
        cfg(tmp_path, clips, ["distill.method=regress_hr"])
    with pytest.raises(ValueError, match=r"distill.steps=9"):
        distill_cfg(tmp_path, clips, teacher, "regress_hr", ["distill.steps=9"])
    for name in ("demo_distill", "stage4_distill"):
        c = load_config(f"training/configs/{name}.toml")
        assert c["distill"]["method"] in distill.METHODS and c["distill"]["steps"] == 1


def test_ssim_loss_blur_is_opencvs_gaussian_blur_with_reflected_borders():
    """PixelMetric.ssim blurs with a matrix (fast on CPU); it must be metrics.ssim's
    cv2.GaussianBlur (11, 1.5, BORDER_REFLECT) exactly, borders included, on odd, even and
    non-square frames."""
    import cv2

    from training.losses import PixelMetric

    rng = np.random.default_rng(0)
    for h, w in ((16, 16), (37, 24), (128, 128)):
        z = rng.random((h, w), dtype=np.float32)
        ref = cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
        got = PixelMetric.blur_matrix(h) @ torch.from_numpy(z) @ PixelMetric.blur_matrix(w).t()
        np.testing.assert_allclose(got.numpy(), ref, atol=2e-6)
        # a blur keeps constants
        assert torch.allclose(PixelMetric.blur_matrix(w).sum(1), torch.ones(w))


def test_ssim_loss_measures_what_metrics_ssim_measures_and_needs_a_codec():
    """train.ssim_weight: PixelMetric.ssim is metrics.ssim of the decoded frames (up to their uint8
    rounding), it has gradients, and the loss term x0 = x_σ - σ v is the model's HR estimate."""
    from simplegvr_core import metrics
    from simplegvr_core.demo import ASSETS, VAE_FILE
    from simplegvr_core.latent_formats import WAN21
    from simplegvr_core.vae import VideoVAE
    from training.losses import PixelMetric

    path = ASSETS / VAE_FILE  # the demo codec, committed
    m, vae = PixelMetric(str(path), WAN21, "cpu"), VideoVAE.load("file", path)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 16, 3, 8, 8, generator=g) * 0.5
    b = a + 0.3 * torch.randn(a.shape, generator=g)
    got = m.ssim(a, b)
    for i in range(2):
        ref = metrics.ssim(
            vae.decode(WAN21.denormalise(a[i : i + 1]))[0].numpy(),
            vae.decode(WAN21.denormalise(b[i : i + 1]))[0].numpy(),
        )
        assert abs(float(got[i]) - ref) < 2e-3, (float(got[i]), ref)
    assert torch.allclose(m.ssim(b, b), torch.ones(2), atol=1e-5)
    a.requires_grad_(True)
    (1 - m.ssim(a, b)).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="train.ssim_weight=0.5"):
        load_config(None, ["train.ssim_weight=0.5"])
    # In the loss: flow_loss adds ssim_weight * (1 - SSIM) of the x0 estimate x_σ - σ v against HR.
    from simplegvr_core import SimpleGVR
    from simplegvr_core.timesteps import TimestepSampler
    from training.losses import flow_loss, sample_draws

    model = SimpleGVR.from_config("tiny").eval()
    hr, lr, ctx = (
        torch.randn(2, 16, 2, 8, 8, generator=g),
        torch.randn(2, 16, 2, 4, 4, generator=g),
        torch.randn(2, 4, 32),
    )
    tcfg = {"noise_level": [0.0, 0.3], "null_prompt_prob": 0.0}
    draws = [
        sample_draws(0, j, hr.shape[1:], lr.shape[1:], tcfg, TimestepSampler("uniform"))
        for j in range(2)
    ]
    with torch.no_grad():
        plain, with_ssim = (
            flow_loss(model, hr, lr, ctx, draws, metric=m),
            flow_loss(model, hr, lr, ctx, draws, metric=m, ssim_weight=0.5),
        )
        sigma = torch.cat([d["sigma"] for d in draws]).view(-1, 1, 1, 1, 1)
        x = (1 - sigma) * hr + sigma * torch.stack([d["eps"] for d in draws])
        from simplegvr_core.sampling import add_condition_noise

        c_s = add_condition_noise(
            lr,
            torch.cat([d["s"] for d in draws]),
            noise=torch.stack([d["cond_eps"] for d in draws]),
        )
        v = model(x, c_s, sigma.flatten() * 1000, ctx, torch.cat([d["s"] for d in draws]))
        torch.testing.assert_close(
            with_ssim - plain, 0.5 * (1 - m.ssim(x - sigma * v, hr)), rtol=1e-4, atol=1e-5
        )


def test_pixel_metric_scores_latent_errors_as_the_decoder_turns_them_into_pixels(tmp_path):
    """train.pixel_metric: the squared error of the decoded frames (the codec is linear, so the
    error decodes on its own), scaled so a unit normal error scores about 1; channels the decoder
    amplifies weigh more."""
    from simplegvr_core.latent_formats import WAN21
    from simplegvr_core.vae import LappedVideoCodec, VideoVAE
    from training.losses import PixelMetric

    torch.manual_seed(0)
    codec = LappedVideoCodec()
    with torch.no_grad():
        # channel 15 decodes 15x louder
        codec.dec.weight.mul_(torch.linspace(0.2, 3.0, 16).view(16, 1, 1, 1, 1))
    from safetensors.torch import save_file

    path = tmp_path / "codec.safetensors"
    save_file(
        {k: v.contiguous() for k, v in codec.state_dict().items()},
        str(path),
        metadata={"vae_config": json.dumps(codec.config())},
    )
    m = PixelMetric(str(path), WAN21, "cpu")
    e = torch.randn(4, 16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert 0.7 < float(m(e).mean()) < 1.3
    one = torch.zeros(1, 16, 1, 4, 4)
    lo, hi = one.clone(), one.clone()
    lo[0, 0, 0, 2, 2], hi[0, 15, 0, 2, 2] = 1.0, 1.0
    assert float(m(hi)) > 50 * float(m(lo))
    # against decoding: the interior of the decoded difference
    loaded = VideoVAE.load("file", path).vae
    base, err = torch.randn(1, 16, 2, 6, 6), e[:1, :, :2, :6, :6]
    with torch.no_grad():
        diff = loaded.decode(WAN21.denormalise(base + err)) - loaded.decode(WAN21.denormalise(base))
        px = loaded._unblocks(
            torch.nn.functional.conv_transpose3d(err * m.gain, loaded.decoder_weight())
        )
    # the decoder's crop: frames 3.., 4 px borders
    assert torch.allclose(px[:, :, 3:, 4:-4, 4:-4], diff, atol=1e-4)
    bad = tmp_path / "tiny.safetensors"
    tiny = VideoVAE.load("tiny").vae
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(bad))
    with pytest.raises(ValueError, match="linear lapped codec"):
        PixelMetric(str(bad), WAN21, "cpu")
