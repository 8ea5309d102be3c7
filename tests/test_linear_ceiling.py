"""experiments/linear_ceiling.py scores a linear map from the noised condition exactly as `simplegvr
demo` would score a model whose condition is that map and whose DiT adds nothing."""

import importlib.util
from pathlib import Path

import pytest
import torch

from simplegvr_core import SimpleGVR, demo
from simplegvr_core.demo.clips import split_files

ROOT = Path(__file__).resolve().parents[1]
HAVE_ASSETS = (demo.ASSETS / demo.MODEL_FILE).is_file() and (demo.ASSETS / demo.VAE_FILE).is_file()


@pytest.mark.skipif(not HAVE_ASSETS, reason="needs the committed demo weights and codec")
def test_the_ceiling_is_what_the_demo_measures_for_that_base_alone():
    spec = importlib.util.spec_from_file_location(
        "linear_ceiling", ROOT / "experiments" / "linear_ceiling.py"
    )
    lc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lc)
    committed, vae, _ = demo.load_assets()
    cfg = committed.config.to_dict()
    cfg["upsampler"]["base"], cfg["prediction"] = "linear", "residual_x0"  # x0 = c + D
    torch.manual_seed(0)
    model = SimpleGVR.from_config(cfg).eval()  # the demo model's shape, on a linear base
    clips, _ = demo.load_clips(split_files("validation")[:2], log=lambda *_: None)
    up = model.upsampler
    k, f, c = up.config.base_kernel, up.config.base_factor, up.config.channels
    # the model's condition becomes its base alone, and its DiT adds nothing: x0 = c
    with torch.no_grad():
        up.proj_out.weight.zero_()
        up.proj_out.bias.zero_()
        model.dit.head.head.weight.zero_()
        model.dit.head.head.bias.zero_()
        up.base.conv.weight.mul_(1.1)  # a map that is not the fresh base's bilinear
        w = up.base.conv.weight.double().reshape(c * f * f, c * k * k)
        a = torch.cat([w.T, up.base.conv.bias.double()[None]])
    r = lc.score({"base": (a, 1, True)}, model.latent_format, vae, clips, 0.6, f, k)
    e = demo.evaluate(
        model,
        vae,
        clips,
        steps=1,
        noise_level=0.6,
        progress=False,
        keep_videos=False,
        log=lambda *_: None,
    )
    for m, ours in (("simplegvr", "base"), ("latent_bilinear", "latent_bilinear")):
        theirs = [row[m]["psnr"] for row in e["clips"]]
        # exact here; a pixel of rounding elsewhere
        assert r[ours]["psnr"] == pytest.approx(theirs, abs=1e-3), m
        assert r[ours]["ssim"] == pytest.approx([row[m]["ssim"] for row in e["clips"]], abs=1e-4), m
    # two different estimates
    assert r["base"]["psnr"] != pytest.approx(r["latent_bilinear"]["psnr"], abs=0.05)
