"""`simplegvr demo`: the committed demo weights must beat latent interpolation; --retrain must rebuild them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from simplegvr_core import demo
from simplegvr_core.degrade.video_io import read_video

pytest.importorskip("diffusers")

HAVE_ASSETS = (demo.ASSETS / demo.MODEL_FILE).is_file() and (demo.ASSETS / demo.VAE_FILE).is_file()
# The committed weights on the 8 held-out clips of RESULTS.md (seeded, so the figure is exact on one machine):
# MEASURED_MARGIN_DB over latent bilinear + decode; the test allows NOISE_DB for other CPUs / BLAS builds.
MEASURED_MARGIN_DB, NOISE_DB = 0.73, 0.25


@pytest.mark.skipif(not HAVE_ASSETS, reason="demo weights not built (simplegvr demo --retrain)")
def test_committed_demo_beats_latent_interpolation():
    model, vae, manifest = demo.load_assets()
    res = demo.evaluate(model, vae, clips=8, steps=manifest["steps"], shift=manifest["shift"],
                        noise_level=manifest["noise_level"], progress=False)
    s = res["summary"]
    margin = s["simplegvr"]["psnr"] - s["latent_bilinear"]["psnr"]
    assert margin > MEASURED_MARGIN_DB - NOISE_DB, f"margin {margin:.2f} dB\n" + demo.format_table(res)
    assert s["simplegvr"]["hf_ratio"] > s["latent_bilinear"]["hf_ratio"]  # and it restores more detail


@pytest.mark.skipif(not HAVE_ASSETS, reason="demo weights not built (simplegvr demo --retrain)")
def test_demo_cli_writes_the_promised_outputs(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "simplegvr_core.cli", "demo", "--clips", "1", "--steps", "4", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| SimpleGVR (ours) |" in r.stdout and "| latent bilinear + decode |" in r.stdout
    frames, fps = read_video(out / "side_by_side.mp4")
    assert frames.shape == (demo.FRAMES, demo.HR_SIZE + 14, 4 * demo.HR_SIZE, 3) and fps == 8
    import cv2

    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape == (demo.HR_SIZE + 14, 4 * demo.HR_SIZE, 3)
    data = json.loads((out / "results.json").read_text())
    assert set(data["summary"]) >= {"simplegvr", "latent_bilinear", "pixel_bicubic", "vae_ceiling", "hr"}


def test_demo_retrain_quick_rebuilds_loadable_weights(tmp_path):
    assets, work = tmp_path / "assets", tmp_path / "work"
    manifest = demo.retrain(assets, work, quick=True, log=lambda *_: None)
    assert (assets / demo.VAE_FILE).is_file() and (assets / demo.MODEL_FILE).is_file()
    assert manifest["quick"] and len(manifest["commands"]) == 3 and "training/train.py" in manifest["commands"][2]
    model, vae, _ = demo.load_assets(assets)
    assert model.config.dit.attention == "temporal_units" and model.config.upsampler.mode == "learned"
    res = demo.evaluate(model, vae, clips=1, steps=2, progress=False)
    v = res["videos"][0]
    for m in ("simplegvr", "latent_bilinear", "pixel_bicubic"):
        assert v[m].shape == (demo.FRAMES, demo.HR_SIZE, demo.HR_SIZE, 3) and v[m].dtype == np.uint8
    files = demo.write_outputs(res, tmp_path / "out")
    assert files["frames"] == demo.FRAMES


def test_retrain_empties_its_own_scratch_folder_and_refuses_any_other(tmp_path):
    work = tmp_path / "work"
    demo.fresh_work_folder(work)
    (work / "pairs").mkdir()
    (work / "pairs" / "pairs-00000.safetensors").write_bytes(b"stale")  # from an earlier recipe
    demo.fresh_work_folder(work)
    assert not (work / "pairs").exists() and (work / demo.WORK_MARKER).is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a demo scratch folder"):
        demo.fresh_work_folder(other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_missing_assets_give_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="simplegvr demo --retrain"):
        demo.load_assets(tmp_path)


def test_demo_codec_keeps_wans_latent_contract():
    from simplegvr_core.latent_formats import WAN21
    from simplegvr_core.procedural import make_clip
    from simplegvr_core.vae import PatchPCAVideoVAE, frames_to_vae

    v = PatchPCAVideoVAE()
    clips = frames_to_vae(torch.from_numpy(np.stack([make_clip(s, 9, 64, 64) for s in range(6)])))
    v.fit(v._pack(clips)[0])
    x = frames_to_vae(torch.from_numpy(make_clip(99, 17, 64, 64)[None]))
    z = v.encode(x).mode()
    assert z.shape == (1, 16, 5, 8, 8)  # 17 frames -> 1 + 16/4 latent frames, /8 space, 16 channels
    assert v.decode(z).shape == (1, 3, 17, 64, 64)
    x2 = x.clone()
    x2[:, :, 9:] += 0.5  # frames 9.. belong to latent frames 3 and 4 (causal grouping)
    z2 = v.encode(x2).mode()
    assert torch.equal(z[:, :, :2], z2[:, :, :2]) and not torch.allclose(z[:, :, 3], z2[:, :, 3])
    fitted = v.encode(clips).mode()  # raw latents carry Wan 2.1's statistics, so the wan21 format applies
    torch.testing.assert_close(fitted.mean(dim=(0, 2, 3, 4)), torch.tensor(WAN21.mean), atol=0.05, rtol=0)
    torch.testing.assert_close(fitted.std(dim=(0, 2, 3, 4)), torch.tensor(WAN21.std), atol=0.05, rtol=0.05)
    # Decoding then encoding reproduces a latent exactly (latent frame 0 decodes to one of its 4 slots only).
    assert torch.allclose(v.encode(v.decode(z)).mode()[:, :, 1:], z[:, :, 1:], atol=1e-4)
