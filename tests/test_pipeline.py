import subprocess
import sys

import pytest
import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR, get_config, save_checkpoint
from simplegvr_core.latent_io import load_latent, save_latent
from simplegvr_core.pipeline import build_condition, upscale
from simplegvr_core.plan import blended, windows


def tiny_model(seed=0, **dit):
    cfg = get_config("tiny").to_dict()
    cfg["dit"].update(dit)
    return randomize_(SimpleGVR.from_config(cfg), seed=seed, std=0.05).eval()


def lr_latent(t=4, h=6, w=8, seed=0):
    return torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


KW = dict(scale=2.0, steps=3, cfg=3.0, noise_level=0.4)


def test_same_seed_is_bit_identical_and_seeds_differ():
    m, lr = tiny_model(), lr_latent()
    a = upscale(m, lr, seed=1, **KW)
    b = upscale(m, lr, seed=1, **KW)
    c = upscale(m, lr, seed=2, **KW)
    assert a.shape == (1, 16, 4, 12, 16)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_oracle_model_returns_the_known_hr_latent_in_raw_scale_and_input_layout():
    m, lr = tiny_model(), lr_latent()
    hr_raw = torch.randn(1, 16, 4, 12, 16, generator=torch.Generator().manual_seed(5)) * 3 + 1
    x0 = m.latent_format.normalise(hr_raw)
    m.dit.forward = lambda x, cond, t, ctx, nl, attention=None: (
        (x - x0) / (t.view(-1, 1, 1, 1, 1) / 1000)
    )
    out = upscale(m, lr, scale=2.0, steps=8, cfg=4.0, chunk_frames=None)
    torch.testing.assert_close(out, hr_raw, rtol=0, atol=1e-4)
    out_btchw = upscale(
        m, lr.permute(0, 2, 1, 3, 4), scale=2.0, steps=8, cfg=1.0, chunk_frames=None
    )
    assert out_btchw.shape == (1, 4, 16, 12, 16)  # wrapper-pack layout comes back as it went in
    torch.testing.assert_close(out_btchw.permute(0, 2, 1, 3, 4), hr_raw, rtol=0, atol=1e-4)


def test_cfg_one_equals_a_single_pass_euler_loop():
    m, lr = tiny_model(), lr_latent()
    ctx = torch.randn(1, 5, 32)
    got = upscale(m, lr, scale=2.0, steps=3, cfg=1.0, context=ctx, seed=3, chunk_frames=None)
    # The same thing by hand: condition, noise, 3 Euler steps with one forward each.
    cond = build_condition(m, lr, scale=2.0, noise_level=0.4, seed=3)
    from simplegvr_core import seeding
    from simplegvr_core.pipeline import prepare_context
    from simplegvr_core.sampling import flow_sigmas

    x = torch.randn(cond.c.shape, generator=seeding.torch_generator(3, seeding.SAMPLING_NOISE))
    c512 = prepare_context(m, ctx, 1)
    sig = flow_sigmas(3, 5.0)
    with torch.no_grad():
        for i in range(3):
            v = m.dit(x, cond.c, sig[i].expand(1) * 1000, c512, 0.4)
            x = x + (sig[i + 1] - sig[i]) * v
    torch.testing.assert_close(got, m.latent_format.denormalise(x), rtol=0, atol=1e-5)


def test_callback_raising_stops_after_one_step():
    m, lr = tiny_model(), lr_latent()
    seen = []

    def cb(d):
        seen.append(d["i"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale(m, lr, callback=cb, **KW)
    assert seen == [0]


def test_chunked_full_equals_unchunked_when_chunk_covers_clip():
    m, lr = tiny_model(), lr_latent(t=6)
    whole = upscale(m, lr, attention="full", chunk_frames=None, seed=4, **KW)
    covering = upscale(m, lr, attention="full", chunk_frames=6, seed=4, **KW)
    assert torch.equal(whole, covering)
    chunked = upscale(m, lr, attention="full", chunk_frames=3, chunk_overlap=1, seed=4, **KW)
    assert chunked.shape == whole.shape and torch.isfinite(chunked).all()
    assert not torch.equal(chunked, whole)  # windows of 3 really ran


def test_blending_is_exact_for_a_pointwise_function():
    x = torch.randn(1, 2, 11, 9, 13)
    c = torch.randn_like(x)
    out = blended(
        lambda a, b: 2 * a + b,
        x,
        c,
        windows(11, 4, 2),
        windows(9, 5, 2),
        windows(13, 6, 3),
        (2, 2, 3),
    )
    torch.testing.assert_close(out, 2 * x + c)
    assert windows(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (7, 11)]
    assert windows(5, 8, 1) == [(0, 5)]


def test_tiled_sampling_runs_and_is_seam_free_for_pointwise_models():
    m, lr = tiny_model(), lr_latent()
    out = upscale(m, lr, tile_size=(8, 8), tile_overlap=4, seed=0, **KW)
    assert out.shape == (1, 16, 4, 12, 16) and torch.isfinite(out).all()


def test_condition_built_in_chunks_equals_whole_clip():
    m, lr = tiny_model(), lr_latent(t=20)
    whole = build_condition(m, lr, scale=2.0, noise_level=0.3, seed=0, chunk_frames=None)
    chunks = build_condition(m, lr, scale=2.0, noise_level=0.3, seed=0, chunk_frames=3)
    torch.testing.assert_close(chunks.c, whole.c, rtol=0, atol=1e-5)


def test_long_video_with_temporal_units_runs_in_one_pass():
    m, lr = tiny_model(), lr_latent(t=13, h=4, w=4)
    out = upscale(m, lr, attention="temporal_units", **KW)
    assert out.shape == (1, 16, 13, 8, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(lr=torch.randn(1, 48, 2, 4, 4)),
            r"48 channels \(a wan22 latent\?\).*'wan21' latents with 16 channels",
        ),
        (
            dict(latent_format="wan22"),
            "latent format 'wan22' does not match the checkpoint's latent format 'wan21'",
        ),
        (
            dict(context=torch.randn(1, 7, 4096)),
            r"context has shape \(1, 7, 4096\): expected \[B, L, 32\]",
        ),
        (dict(scale=0.5), r"is smaller than the input .*only upscales"),
        (
            dict(width=32, height=24),
            r"target 32x24 px \(latent 3x4\) is smaller than the input 64x48 px",
        ),
        (dict(lr=torch.full((1, 16, 2, 6, 8), float("nan"))), "contains NaN or Inf"),
        (dict(lr=torch.zeros(1, 16, 0, 6, 8)), r"it is empty \(0 batch, frames, rows or columns\)"),
        (dict(lr=torch.full((1, 16, 2, 6, 8), 1e30)), r"values up to 1e\+30.*not one"),
        (dict(shift=float("nan")), r"shift=nan: expected a finite number"),
        (dict(cfg=float("inf")), r"cfg=inf: expected a finite number"),
        (dict(scale=float("inf")), r"scale=inf: expected a finite number"),
        (dict(steps=10**9), r"steps=1000000000: expected an int in \[1, 10000\]"),
        (dict(seed=2**64), r"seed=18446744073709551616: expected an integer in \[0, 2\*\*64 - 1\]"),
        (dict(seed=-1), r"seed=-1: expected an integer"),
        (
            dict(width=100000, height=100000),
            r"width=100000: expected a whole number of pixels in \[1, 32768\]",
        ),
        (dict(scale=3000.0), r"larger than 4096 latent pixels"),
        (
            dict(lr=torch.zeros(16, 6, 8)),
            "4-D tensor is an image latent|expected a 5-D video latent",
        ),
        (dict(noise_level=1.5), r"noise_level=1.5: expected a finite number in \[0, 1\]"),
        (dict(attention="swin"), "attention mode 'swin'"),
    ],
)
def test_mismatches_fail_before_compute(kwargs, message):
    m = tiny_model()
    calls = []
    orig = m.dit.forward
    m.dit.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    lr = kwargs.pop("lr", lr_latent())
    args = dict(steps=2, cfg=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        upscale(m, lr, **args)
    assert not calls


def test_latent_file_round_trip(tmp_path):
    x = torch.randn(1, 16, 3, 4, 5)
    p = save_latent(x, tmp_path / "a.latent")
    assert torch.equal(load_latent(p), x)
    from safetensors.torch import load_file

    raw = load_file(str(p))
    assert (
        set(raw) == {"latent_tensor", "latent_format_version_0"}
        and raw["latent_format_version_0"].numel() == 0
    )
    from safetensors.torch import save_file

    save_file({"latent_tensor": x}, str(tmp_path / "legacy.latent"))
    with pytest.raises(ValueError, match="legacy SD1 latent"):
        load_latent(tmp_path / "legacy.latent")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "simplegvr_core.app", *args], capture_output=True, text=True
    )


def test_cli_upscale_round_trip_and_one_line_errors(tmp_path):
    ckpt = save_checkpoint(tiny_model(), tmp_path / "gvr.safetensors")
    save_latent(lr_latent(t=2), tmp_path / "lr.latent")
    r = _cli(
        "upscale",
        "--checkpoint",
        str(ckpt),
        "--latent",
        str(tmp_path / "lr.latent"),
        "--out",
        str(tmp_path / "hr.latent"),
        "--width",
        "128",
        "--height",
        "96",
        "--steps",
        "2",
        "--cfg",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert load_latent(tmp_path / "hr.latent").shape == (1, 16, 2, 12, 16)
    save_latent(torch.randn(1, 48, 2, 4, 4), tmp_path / "wan22.latent")
    r = _cli(
        "upscale",
        "--checkpoint",
        str(ckpt),
        "--latent",
        str(tmp_path / "wan22.latent"),
        "--out",
        str(tmp_path / "bad.latent"),
        "--steps",
        "2",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert (
        "48 channels (a wan22 latent?)" in r.stderr
        and "'wan21' latents with 16 channels" in r.stderr
    )
    assert not (tmp_path / "bad.latent").exists()
    r = _cli(
        "upscale",
        "--checkpoint",
        str(tmp_path / "missing.safetensors"),
        "--latent",
        str(tmp_path / "lr.latent"),
        "--out",
        str(tmp_path / "x.latent"),
    )
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_cli_interrupt_leaves_no_output(tmp_path, monkeypatch, capsys):
    from simplegvr_core import app as cli
    from simplegvr_core import pipeline

    ckpt = save_checkpoint(tiny_model(), tmp_path / "gvr.safetensors")
    save_latent(lr_latent(t=2), tmp_path / "lr.latent")
    real = pipeline.get_sampler

    def interrupting(name):
        sampler = real(name)

        def run(model_fn, x, sigmas, callback=None, disable=True):
            def cb(d):
                raise KeyboardInterrupt  # Ctrl-C during the first step

            return sampler(model_fn, x, sigmas, callback=cb, disable=disable)

        return run

    monkeypatch.setattr(pipeline, "get_sampler", interrupting)
    rc = cli.main(
        [
            "upscale",
            "--checkpoint",
            str(ckpt),
            "--latent",
            str(tmp_path / "lr.latent"),
            "--out",
            str(tmp_path / "hr.latent"),
            "--steps",
            "3",
        ]
    )
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gvr.safetensors", "lr.latent"]


def test_text_features_are_padded_and_cut_to_the_models_text_len_as_in_training():
    from simplegvr_core.pipeline import prepare_context
    from training.data import pad_contexts

    m = tiny_model()
    assert m.config.dit.text_len == 512  # Wan's length is the default
    ctx = torch.randn(1, 5, 32)
    padded = prepare_context(m, ctx, 2)
    assert (
        padded.shape == (2, 512, 32)
        and torch.equal(padded[:, :5], ctx.expand(2, -1, -1))
        and not padded[:, 5:].any()
    )
    short = tiny_model(text_len=8)
    long_ctx = torch.randn(1, 20, 32)
    assert torch.equal(prepare_context(short, long_ctx, 1), long_ctx[:, :8])
    assert torch.equal(prepare_context(short, None, 3), torch.zeros(3, 8, 32))
    train_side = pad_contexts([ctx[0], long_ctx[0]], 32, "cpu", 8)
    assert torch.equal(train_side[0], prepare_context(short, ctx, 1)[0])
    assert torch.equal(train_side[1], prepare_context(short, long_ctx, 1)[0])
    with pytest.raises(ValueError, match="text_len=0"):
        tiny_model(text_len=0)


def test_interrupt_stops_sampling_within_one_block():
    """A host's Cancel (interrupt() raising) is answered between DiT blocks, not at the end of a
    step: with 2 blocks per call, 3 windows per step and 4 steps, asking to stop after the 3rd block
    runs exactly 3 blocks."""
    from simplegvr_core.pipeline import sample
    from simplegvr_core.plan import plan_sampling

    class Stop(Exception):
        pass

    m = tiny_model()
    cond = build_condition(m, lr_latent(t=7), scale=2.0)
    plan = plan_sampling(m, cond.c.shape, attention="full", chunk_frames=3)
    assert plan.calls_per_step == 3 and len(m.dit.blocks) == 2
    blocks = []

    def interrupt():
        blocks.append(1)
        if len(blocks) == 3:
            raise Stop

    with pytest.raises(Stop):
        sample(m, cond, plan, steps=4, cfg=1.0, interrupt=interrupt)
    assert len(blocks) == 3 and m.dit.interrupt is None  # and the hook is gone afterwards
