"""`simplegvr demo`: the whole cascade on a laptop CPU, on embedded weights, with no downloads.

The demo world: procedural clips (17 frames, 128x128 HR; the "T2V output" is the same clip at 64x64),
a compact codec with Wan 2.1's latent contract fitted to such clips (`vae.PatchPCAVideoVAE`), and a small SimpleGVR (learned
upsampler + DiT with temporal units) trained with `training/train.py` on LR/HR latent pairs made with
the project's degradations. Both weights live in `simplegvr_core/assets/` with the commands that made them.

The demo takes held-out clips (seeds never used in training), runs LR latent -> Latent Upsampler ->
SimpleGVR sampling -> decode, and compares it with what a user would otherwise do: bicubic upscaling
of the decoded LR video, and bilinear interpolation of the latent followed by decoding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent / "assets"
VAE_FILE = "demo_vae.safetensors"
MODEL_FILE = "demo_simplegvr.safetensors"
MANIFEST = "demo_manifest.json"
FRAMES, HR_SIZE, LR_SIZE = 17, 128, 64
HELD_OUT_SEED = 1_000_000  # held-out test clips: training clips use seeds 0..N-1
VALIDATION_SEED = 3_000_000  # clips for choosing the sampling settings (never the test clips)
# The demo model's recipe (`--retrain`): procedural training clips, the degradations drawn per clip (clean
# area resize, as the demo's LR, or the paper's flow-guided T2V artifacts), and the training steps that fit
# the 30-minute budget on 2 CPU cores.
TRAIN_CLIPS, DEGRADATION, TRAIN_STEPS = 1024, "none,flow", 2400
METHODS = ("simplegvr", "latent_bilinear", "pixel_bicubic")
LABELS = {"hr": "HR (reference)", "vae_ceiling": "HR through the VAE", "simplegvr": "SimpleGVR (ours)",
          "latent_bilinear": "latent bilinear + decode", "pixel_bicubic": "decode + bicubic"}


def lr_clip(hr: np.ndarray) -> np.ndarray:
    """The demo's stand-in for a T2V model's low-resolution output: the clip at half size (area)."""
    return np.stack([cv2.resize(f, (LR_SIZE, LR_SIZE), interpolation=cv2.INTER_AREA) for f in hr])


def load_assets(assets: str | os.PathLike | None = None):
    """(model, vae, manifest) from the assets folder; ValueError naming what is missing."""
    from .checkpoint import load_checkpoint
    from .vae import VideoVAE

    a = Path(assets) if assets else ASSETS
    for name in (VAE_FILE, MODEL_FILE):
        if not (a / name).is_file():
            raise ValueError(f"demo weights {str(a / name)!r} are missing: rebuild them with `simplegvr demo --retrain`")
    manifest = json.loads((a / MANIFEST).read_text()) if (a / MANIFEST).is_file() else {}
    return load_checkpoint(a / MODEL_FILE).eval(), VideoVAE.load("file", a / VAE_FILE), manifest


@torch.no_grad()
def baselines(vae, lr_lat: torch.Tensor) -> dict:
    """What a user would do without SimpleGVR, as {name: (HR frames [T,H,W,3] uint8, seconds)}: bilinear
    interpolation of the latent then decoding, and decoding then bicubic upscaling."""
    out = {}
    t0 = time.perf_counter()
    t, h, w = lr_lat.shape[2:]
    size = (t, h * HR_SIZE // LR_SIZE, w * HR_SIZE // LR_SIZE)
    interp = torch.nn.functional.interpolate(lr_lat, size=size, mode="trilinear")
    out["latent_bilinear"] = (vae.decode(interp)[0].numpy(), time.perf_counter() - t0)
    t0 = time.perf_counter()
    dec = vae.decode(lr_lat)[0].numpy()
    bicubic = np.stack([cv2.resize(f, (HR_SIZE, HR_SIZE), interpolation=cv2.INTER_CUBIC) for f in dec])
    out["pixel_bicubic"] = (bicubic, time.perf_counter() - t0)
    return out


@torch.no_grad()
def evaluate(model, vae, clips: int = 4, steps: int = 20, shift: float = 3.0, noise_level: float = 0.3, seed: int = 0,
             progress: bool = True, first_clip: int = HELD_OUT_SEED) -> dict:
    """Run the cascade and the baselines on `clips` held-out clips; returns metrics and the frames."""
    from tqdm.auto import tqdm

    from . import metrics
    from .pipeline import upscale
    from .procedural import clip_caption, make_clip
    from .text import ByteTextEncoder

    text = ByteTextEncoder(model.config.dit.text_dim)
    rows, videos = [], []
    for k in tqdm(range(clips), desc="demo clips", disable=not progress):
        s = first_clip + k
        hr = make_clip(s, FRAMES, HR_SIZE, HR_SIZE)
        lr_lat = vae.encode(torch.from_numpy(lr_clip(hr))[None])  # raw latent, as a T2V sampler hands it
        out, secs = {}, {}
        t0 = time.perf_counter()
        hr_lat = upscale(model, lr_lat, scale=HR_SIZE / LR_SIZE, context=text(clip_caption(s)), steps=steps, cfg=1.0,
                         shift=shift, noise_level=noise_level, seed=seed + k)
        out["simplegvr"] = vae.decode(hr_lat)[0].numpy()
        secs["simplegvr"] = time.perf_counter() - t0
        for name, (frames, seconds) in baselines(vae, lr_lat).items():
            out[name], secs[name] = frames, seconds
        out["vae_ceiling"] = vae.decode(vae.encode(torch.from_numpy(hr)[None]))[0].numpy()
        flows = metrics.reference_flows(hr)
        row = {"clip": s, "hr_warp_error": metrics.warp_error(hr, flows)}
        for m in (*METHODS, "vae_ceiling"):
            row[m] = {"psnr": metrics.psnr(out[m], hr), "ssim": metrics.ssim(out[m], hr),
                      "warp_error": metrics.warp_error(out[m], flows), "hf_ratio": metrics.hf_energy_ratio(out[m], hr),
                      "seconds": secs.get(m, 0.0)}
        rows.append(row)
        videos.append({"hr": hr, **out})
    summary = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]} for m in (*METHODS, "vae_ceiling")}
    summary["hr"] = {"warp_error": float(np.mean([r["hr_warp_error"] for r in rows]))}
    return {"summary": summary, "clips": rows, "videos": videos,
            "settings": {"clips": clips, "steps": steps, "shift": shift, "noise_level": noise_level, "seed": seed}}


def format_table(results: dict) -> str:
    s = results["summary"]
    lines = ["| method | PSNR (dB) | SSIM | warp error | HF energy ratio | seconds / clip |", "|---|---|---|---|---|---|"]
    for m in (*METHODS, "vae_ceiling"):
        r = s[m]
        sec = f"{r['seconds']:.2f}" if m != "vae_ceiling" else "-"
        lines.append(f"| {LABELS[m]} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['warp_error']:.4f} | {r['hf_ratio']:.2f} | {sec} |")
    lines.append(f"| {LABELS['hr']} | - | - | {s['hr']['warp_error']:.4f} | 1.00 | - |")
    return "\n".join(lines)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((14, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], 0)


def write_outputs(results: dict, out_dir: str | os.PathLike) -> dict:
    """side_by_side.mp4 (HR | SimpleGVR | latent bilinear | bicubic, clips one after another), grid.png
    (middle frame of every clip), results.json. Each file is written under a temporary name first."""
    from .degrade.video_io import write_video
    from .files import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = ("hr", "simplegvr", "latent_bilinear", "pixel_bicubic")
    names = {"hr": "HR", "simplegvr": "SimpleGVR", "latent_bilinear": "latent bilinear", "pixel_bicubic": "bicubic"}
    frames = []
    for v in results["videos"]:
        for t in range(v["hr"].shape[0]):
            frames.append(np.concatenate([_label(v[m][t], names[m]) for m in order], 1))
    write_video(out / "side_by_side.mp4", np.stack(frames), fps=8)
    rows = [np.concatenate([_label(v[m][FRAMES // 2], names[m]) for m in order], 1) for v in results["videos"]]
    grid = np.concatenate(rows, 0)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(grid[..., ::-1]))
    if not ok:
        raise ValueError("could not encode the demo grid as PNG")
    atomic_write(out / "grid.png", lambda tmp: Path(tmp).write_bytes(png.tobytes()))
    data = {k: v for k, v in results.items() if k != "videos"}
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))
    return {"video": out / "side_by_side.mp4", "grid": out / "grid.png", "json": out / "results.json",
            "frames": len(frames)}


# --- rebuilding the weights ------------------------------------------------------------------------
def retrain_commands(assets: Path, work: Path, quick: bool = False) -> list[list[str]]:
    """The exact commands that rebuild the demo weights (run from the repository root)."""
    py = sys.executable
    vae_clips, clips, steps = ("20", "4", "4") if quick else ("200", str(TRAIN_CLIPS), str(TRAIN_STEPS))
    return [
        [py, "training/train_vae.py", "--out", str(assets / VAE_FILE), "--clips", vae_clips],
        [py, "training/make_pairs.py", "--videos", str(work / "videos"), "--synthesize", clips, "--frames", str(FRAMES),
         "--out", str(work / "pairs"), "--per-shard", "64", "--degradation", DEGRADATION, "--hr-size",
         f"{HR_SIZE}x{HR_SIZE}", "--lr-size", f"{LR_SIZE}x{LR_SIZE}", "--vae", "file", "--vae-path", str(assets / VAE_FILE),
         "--text", "byte", "--text-dim", "32"],
        [py, "training/train.py", "--config", "training/configs/demo.toml", f"data.path={work / 'pairs'}",
         f"log.output_dir={work / 'run'}", f"train.steps={steps}", "--export", str(assets / MODEL_FILE)],
    ]


def tune(model, vae, clips: int = 4, grid=None, log=print) -> dict:
    """Pick steps / shift / noise level by PSNR on validation clips (not the held-out test clips)."""
    # Few steps approach the posterior mean (best PSNR); more steps sample detail (sharper, lower PSNR).
    grid = grid or [(st, sh, nl) for st in (1, 2, 4, 10, 20) for sh in (1.0, 3.0) for nl in (0.0, 0.15)]
    best = None
    for st, sh, nl in grid:
        r = evaluate(model, vae, clips=clips, steps=st, shift=sh, noise_level=nl, progress=False, first_clip=VALIDATION_SEED)
        p = r["summary"]["simplegvr"]["psnr"]
        log(f"  validation: steps {st}, shift {sh}, noise level {nl}: PSNR {p:.2f} dB")
        if best is None or p > best[0]:
            best = (p, st, sh, nl)
    return {"steps": best[1], "shift": best[2], "noise_level": best[3], "validation_psnr_db": round(best[0], 3)}


def retune(assets: str | os.PathLike | None = None, log=print) -> dict:
    """Re-run `tune` on existing weights and update the manifest's sampling settings."""
    from .files import atomic_write

    a = Path(assets) if assets else ASSETS
    model, vae, manifest = load_assets(a)
    manifest.update(tune(model, vae, log=log))
    atomic_write(a / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return manifest


def _relative(arg: str, root: Path) -> str:
    """A command argument with paths inside the repository written relative to it (also in key=value)."""
    key, sep, value = arg.rpartition("=") if "=" in arg and not arg.startswith("-") else ("", "", arg)
    if os.path.isabs(value) and value.startswith(str(root)):
        value = os.path.relpath(value, root)
    return key + sep + value


WORK_MARKER = ".simplegvr_demo_work"


def fresh_work_folder(work: Path) -> Path:
    """Empty the scratch folder of an earlier `--retrain` (clips, pairs and checkpoints left there would be
    reused silently); a folder that holds anything else is refused rather than touched."""
    import shutil

    marker = work / WORK_MARKER
    if work.exists() and (not work.is_dir() or (any(work.iterdir()) and not marker.is_file())):
        raise ValueError(f"--work {str(work)!r} exists and is not a demo scratch folder (no {WORK_MARKER}): "
                         "give a new or empty folder")
    for sub in ("videos", "pairs", "run"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text("scratch folder of `simplegvr demo --retrain`: emptied by the next --retrain\n")
    return work


def retrain(assets: str | os.PathLike | None = None, work: str | os.PathLike = "runs/demo", quick: bool = False,
            log=print) -> dict:
    """Rebuild the demo VAE and model with the training scripts (they live in the repository's training/)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "training" / "train.py").is_file():
        raise ValueError(f"--retrain needs the repository's training/ folder next to {root / 'simplegvr_core'} "
                         "(install from a git clone with `pip install -e .`)")
    a = Path(assets) if assets else ASSETS
    w = fresh_work_folder(Path(work).resolve())
    a.mkdir(parents=True, exist_ok=True)
    cmds = retrain_commands(a.resolve(), w, quick)
    t0 = time.time()
    for cmd in cmds:
        log("$ " + " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)))
        r = subprocess.run(cmd, cwd=root)
        if r.returncode != 0:
            raise ValueError(f"retraining step failed (exit {r.returncode}): {' '.join(cmd[1:3])}")
    from .checkpoint import read_safetensors
    from .files import atomic_write

    _, vmeta = read_safetensors(a / VAE_FILE)
    model, vae, _ = load_assets(a)
    grid = [(2, 3.0, 0.3)] if quick else None
    settings = tune(model, vae, clips=1 if quick else 4, grid=grid, log=log)
    manifest = {**settings, "vae_psnr_db": float(vmeta.get("psnr_db", "nan")), "seconds": round(time.time() - t0, 1),
                "quick": quick,
                "commands": [" ".join(["python"] + [_relative(c, root) for c in cmd[1:]]) for cmd in cmds]}
    atomic_write(a / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return manifest
