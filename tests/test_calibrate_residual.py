"""The residual scale of a `residual_x0` model (x0 = c + alpha * D) and its choice on validation
(training/calibrate_residual.py, the last stage of the one-step demo model)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR, demo, get_config, load_checkpoint, save_checkpoint
from simplegvr_core.weights import read_safetensors

ROOT = Path(__file__).resolve().parents[1]
VAE = demo.ASSETS / demo.VAE_FILE


def tiny(prediction="residual_x0", seed=0):
    cfg = get_config("tiny").to_dict()
    cfg["prediction"] = prediction
    return randomize_(SimpleGVR.from_config(cfg), seed=seed, std=0.05).eval()


def x0(model, z, c, sigma):
    t = torch.full((1,), sigma * 1000.0)
    ctx = torch.randn(1, 5, model.config.dit.text_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return z - sigma * model.velocity(z, c, t, ctx, 0.0)


@pytest.mark.parametrize("sigma", [1.0, 0.4])
def test_scaling_the_residual_scales_x0_minus_c_exactly(sigma):
    m = tiny()
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(1, 16, 3, 8, 12, generator=g), torch.randn(1, 16, 3, 8, 12, generator=g)
    before = x0(m, z, c, sigma)
    # a residual that is not zero, so the check means something
    assert (before - c).abs().mean() > 1e-2
    m.scale_residual_(0.6)
    torch.testing.assert_close(x0(m, z, c, sigma) - c, 0.6 * (before - c), rtol=1e-5, atol=1e-5)
    m.scale_residual_(0.5)  # scales compose
    torch.testing.assert_close(x0(m, z, c, sigma) - c, 0.3 * (before - c), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf"), True, "0.5"])
def test_bad_residual_scales_are_refused_and_change_nothing(alpha):
    m = tiny()
    w = m.dit.head.head.weight.clone()
    with pytest.raises(ValueError, match="residual scale"):
        m.scale_residual_(alpha)
    assert torch.equal(m.dit.head.head.weight, w)


@pytest.mark.parametrize("prediction", ["hr", "residual"])
def test_only_an_x0_residual_model_has_a_residual_scale(prediction):
    with pytest.raises(ValueError, match="residual_x0"):
        tiny(prediction).scale_residual_(0.5)


@pytest.mark.skipif(not VAE.is_file(), reason="the demo codec is not committed in this checkout")
def test_calibrate_writes_the_model_with_the_best_validation_scale(tmp_path, monkeypatch):
    from training import calibrate_residual

    m = tiny()
    src = save_checkpoint(m, tmp_path / "clean.safetensors")
    head0 = m.dit.head.head.weight.clone()
    seen = []

    # PSNR peaks at 0.7 of the trained residual: read off the weights
    def fake_evaluate(model, vae, clips, **kw):
        alpha = (model.dit.head.head.weight * head0).sum().item() / (head0 * head0).sum().item()
        seen.append((round(alpha, 4), clips, kw["steps"]))
        return {"summary": {"simplegvr": {"psnr": 20.0 - (alpha - 0.7) ** 2}}}

    monkeypatch.setattr(demo, "evaluate", fake_evaluate)
    monkeypatch.setattr(
        demo, "load_clips", lambda paths, log=None: ([(Path(p).name, None) for p in paths], [])
    )
    r = calibrate_residual.calibrate(
        src,
        VAE,
        tmp_path / "cal.safetensors",
        scales=[1.0, 0.5, 0.7, 0.9],
        clips=2,
        log=lambda *_: None,
    )
    assert r["residual_scale"] == 0.7
    # each scale evaluated once, on the same clips
    assert [a for a, _, _ in seen] == [0.5, 0.7, 0.9, 1.0]
    assert all(len(cl) == 2 and steps == 1 for _, cl, steps in seen)
    from simplegvr_core.demo.clips import TEST

    assert not {name for _, cl, _ in seen for name, _ in cl} & set(TEST)  # validation clips only
    out = load_checkpoint(tmp_path / "cal.safetensors")
    torch.testing.assert_close(out.dit.head.head.weight, 0.7 * head0)
    torch.testing.assert_close(out.dit.head.head.bias, 0.7 * m.dit.head.head.bias)
    for k, v in m.dit.state_dict().items():  # nothing else moved
        if not k.startswith("head.head."):
            assert torch.equal(out.dit.state_dict()[k], v), k
    meta = read_safetensors(tmp_path / "cal.safetensors")[1]
    assert meta["residual_scale"] == "0.7" and set(
        json.loads(meta["residual_scale_validation_psnr_db"])
    ) == {"0.5", "0.7", "0.9", "1"}


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "training/calibrate_residual.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    hr = save_checkpoint(tiny("hr"), tmp_path / "hr.safetensors")
    x = save_checkpoint(tiny(), tmp_path / "x.safetensors")
    cases = [
        (["--model", str(tmp_path / "missing.safetensors"), "--vae", str(VAE)], "missing"),
        (["--model", str(hr), "--vae", str(VAE)], "residual_x0"),
        (["--model", str(x), "--vae", str(VAE), "--scales", "0.5,abc"], "--scales"),
        (["--model", str(x), "--vae", str(VAE), "--scales", "0,1"], "(0, 2]"),
        (["--model", str(x), "--vae", str(VAE), "--clips", "0"], "--clips"),
    ]
    for args, expected in cases:
        r = run_cli(*args, "--out", str(tmp_path / "out.safetensors"))
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("calibrate_residual: error:") and expected in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out.safetensors").exists()
