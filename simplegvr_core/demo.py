"""`simplegvr demo`: the whole cascade on a laptop CPU, on embedded weights, on video real T2V models made.

The demo world (DESIGN.md): the real AI-generated clips of `comfyui-workflow-templates-media-video` with a fixed
train / validation / test split by file (`clips.py`); the HR clip is a clip's centred 17-frame window, centre-
cropped to a square and area-downscaled to 128x128; the "T2V output" is that clip area-downscaled 2x to 64x64
(the LR the cascade starts from; a T2V model's 480p output is likewise a clean, slightly soft picture of its
scene), or, in the paper's setting, the same after the flow-guided degradation (T2V-like motion artefacts). A
linear lapped codec with Wan 2.1's latent contract fitted on the train split (`vae.LappedVideoCodec`) stands in
for the Wan VAE, and a small SimpleGVR (learned upsampler + DiT with temporal units) is trained with
`training/train.py` on LR/HR latent pairs of train-split crops. Both weights live in `simplegvr_core/assets/` with
the commands that made them.

`simplegvr demo` runs LR latent -> Latent Upsampler -> SimpleGVR sampling -> decode on the test split (or the
user's `--videos`), and compares it with what a user would otherwise do: decoding the LR video and upscaling it
with bicubic, and bilinear interpolation of the latent followed by decoding; every margin comes with its 95%
paired bootstrap interval over clips.
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
STUDENT_FILE = "demo_student.safetensors"  # the 1-step model (benchmarks/onestep_results.py), when built
MANIFEST = "demo_manifest.json"
FRAMES, HR_SIZE, LR_SIZE = 17, 128, 64
LR_MODES = ("area", "flow")  # the demo's LR: a clean 2x area downscale, or the paper's flow-guided T2V artefacts first
# The demo model's recipe (`--retrain`): random crops of the train split (TRAIN_REPEATS per file), the LR drawn per
# clip from a clean area resize (as the demo's LR) or the paper's flow-guided degradation, TRAIN_STEPS steps.
TRAIN_REPEATS, DEGRADATION, TRAIN_STEPS = 24, "none,flow", 3000
STUDENT_STEPS = 1500  # each of the one-step default model's two regression stages (`student_commands`)
METHODS = ("simplegvr", "latent_bilinear", "pixel_bicubic")
BASELINES = ("latent_bilinear", "pixel_bicubic")
METRICS = ("psnr", "ssim", "warp_error", "hf_ratio", "blockiness", "seconds")
LABELS = {"hr": "HR (reference)", "vae_ceiling": "HR through the codec", "simplegvr": "SimpleGVR (ours)",
          "latent_bilinear": "latent bilinear + decode", "pixel_bicubic": "decode + bicubic"}


def lr_clip(hr: np.ndarray, mode: str = "area", seed: int = 0) -> np.ndarray:
    """The demo's stand-in for a T2V model's low-resolution output: the HR clip at half size (area), after the
    flow-guided degradation when mode='flow' (the paper's setting: the artefacts of a base T2V model)."""
    from . import degrade

    if mode not in LR_MODES:
        raise ValueError(f"LR mode {mode!r}: expected one of {LR_MODES}")
    return degrade.degrade_frames(hr, "none" if mode == "area" else "flow", (LR_SIZE, LR_SIZE), seed)


ASSET_FILES = (VAE_FILE, MODEL_FILE, STUDENT_FILE)  # the set the manifest vouches for, by SHA-256


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(assets: str | os.PathLike | None = None) -> dict:
    """The assets folder's manifest ({} when it has none), after checking that every file it lists by hash is the
    file it lists: ValueError for a mixed set (an interrupted rebuild, a hand-copied file)."""
    from .files import parse_json

    a = Path(assets) if assets else ASSETS
    path = a / MANIFEST
    if not path.is_file():
        return {}
    manifest = parse_json(path.read_text(), f"demo manifest {str(path)!r}")
    if not isinstance(manifest, dict):
        raise ValueError(f"demo manifest {str(path)!r} is not a JSON object")
    for name, digest in (manifest.get("files") or {}).items():
        f = a / name
        if not f.is_file() or file_sha256(f) != digest:
            raise ValueError(f"the demo weights in {str(a)!r} are not the set their manifest records: {name} "
                             f"{'is missing' if not f.is_file() else 'differs'} (an interrupted rebuild?); rebuild "
                             "them with `simplegvr demo --retrain`, or restore the folder")
    return manifest


def load_assets(assets: str | os.PathLike | None = None):
    """(model, vae, manifest) from the assets folder; ValueError naming what is missing or does not belong."""
    from .checkpoint import load_checkpoint
    from .vae import VideoVAE

    a = Path(assets) if assets else ASSETS
    for name in (VAE_FILE, MODEL_FILE):
        if not (a / name).is_file():
            raise ValueError(f"demo weights {str(a / name)!r} are missing: rebuild them with `simplegvr demo --retrain`")
    manifest = read_manifest(a)
    return load_checkpoint(a / MODEL_FILE).eval(), VideoVAE.load("file", a / VAE_FILE), manifest


def install_assets(assets: str | os.PathLike | None, files: dict[str, str | os.PathLike], manifest: dict) -> dict:
    """Put new weights into the assets folder as one set: each file of `files` ({asset name: source path}) is copied
    beside its place under a temporary name, then all are renamed into place with the manifest last - recording
    every asset's SHA-256 - while SIGINT/SIGTERM/SIGHUP wait. An interruption before the renames leaves the old
    set whole; a set that still ends up mixed (a SIGKILL between two renames) is refused by `read_manifest`."""
    import shutil
    import signal

    from .files import commit, remove_temporary, temp_path

    a = Path(assets) if assets else ASSETS
    a.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(files) - set(ASSET_FILES))
    if unknown:
        raise ValueError(f"not demo assets: {unknown} (expected names among {ASSET_FILES})")
    staged: list[tuple[Path, Path]] = []
    try:
        for name, src in files.items():
            tmp = temp_path(a / name)
            shutil.copyfile(src, tmp)
            staged.append((tmp, a / name))
        hashes = {dst.name: file_sha256(tmp) for tmp, dst in staged}
        for name in ASSET_FILES:
            if name not in hashes and (a / name).is_file():
                hashes[name] = file_sha256(a / name)
        manifest = {**manifest, "files": hashes}
        tmp = temp_path(a / MANIFEST)
        tmp.write_text(json.dumps(manifest, indent=1))
        staged.append((tmp, a / MANIFEST))
        blocked = {getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked) if hasattr(signal, "pthread_sigmask") else None
        try:
            for tmp, dst in staged:
                commit(tmp, dst, replace=True)
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                remove_temporary(tmp)
    return manifest


def load_model(assets: str | os.PathLike | None = None, teacher: bool = False):
    """(model, vae, sampling) that `simplegvr demo` runs: the one-step student when the manifest names it the
    default (`benchmarks/onestep_results.py` builds it, chosen on the validation split) and `teacher` is False, else the
    teacher with the sampling settings `tune` chose. sampling = {"model": "student" | "teacher", "steps", "shift",
    "noise_level"}."""
    from .checkpoint import load_checkpoint

    a = Path(assets) if assets else ASSETS
    teacher_model, vae, manifest = load_assets(a)
    st = manifest.get("student") or {}
    if not teacher and st.get("default") and (a / STUDENT_FILE).is_file():
        return load_checkpoint(a / STUDENT_FILE).eval(), vae, {"model": "student", "steps": int(st["steps"]),
                                                               "shift": float(st["shift"]),
                                                               "noise_level": float(st.get("noise_level", 0.0))}
    return teacher_model, vae, {"model": "teacher", "steps": int(manifest.get("steps", 2)),
                                "shift": float(manifest.get("shift", 3.0)),
                                "noise_level": float(manifest.get("noise_level", 0.0))}


def iter_clips(paths, skipped: list[str], log=print):
    """(name, HR clip) for each readable video of `paths` in turn, read only when its turn comes (the demo's HR:
    `clips.read_demo_clip`: probed first, one source frame in memory); the reasons for the others are appended
    to `skipped`; the names are the file names."""
    from .clips import read_demo_clip

    for p in paths:
        try:
            clip = read_demo_clip(p, FRAMES, HR_SIZE)
        except (ValueError, OSError, MemoryError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            skipped.append(f"{Path(p).name}: {msg}")
            log(f"skipping {Path(p).name}: {msg}")
            continue
        yield Path(p).name, clip


def load_clips(paths, log=print) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """(name, HR clip) for every readable video of `paths` (`iter_clips`), and the reasons the others were
    skipped."""
    skipped: list[str] = []
    return list(iter_clips(paths, skipped, log)), skipped


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
def evaluate(model, vae, clips=None, *, split: str = "test", steps: int = 2, shift: float = 3.0,
             noise_level: float = 0.0, seed: int = 0, lr_mode: str = "area", progress: bool = True,
             keep_videos: bool = True, role: str = "teacher", log=print, on_clip=None,
             skipped: list[str] | None = None) -> dict:
    """Run the cascade and the baselines on `clips` ((name, HR clip) pairs, a list or an `iter_clips` stream taken
    one clip at a time; default: the `split` of the demo clips) and measure each against HR; summary means, per-clip
    rows and paired bootstrap intervals of SimpleGVR's margin over each baseline. Each clip's videos go to
    `on_clip(dict)` (e.g. `OutputWriter.add`) and, with `keep_videos`, into the result. `skipped`: the list the
    clip stream appends its skip reasons to. `role` ("teacher" or "student") is recorded in the settings."""
    from tqdm.auto import tqdm

    from . import metrics
    from .clips import split_files
    from .pipeline import build_condition, sample

    skipped = [] if skipped is None else skipped
    if clips is None:
        clips = iter_clips(split_files(split), skipped, log)
        source = f"{split} split"
    else:
        source = "your videos"
    rows, videos = [], []
    total = len(clips) if hasattr(clips, "__len__") else None
    for k, (name, hr) in enumerate(tqdm(clips, desc="demo clips", total=total, disable=not progress)):
        lr_lat = vae.encode(torch.from_numpy(lr_clip(hr, lr_mode, seed + k))[None])  # raw latent, as a sampler hands it
        out, secs = {}, {}
        t0 = time.perf_counter()
        cond = build_condition(model, lr_lat, scale=HR_SIZE / LR_SIZE, noise_level=noise_level, seed=seed + k)
        hr_lat = sample(model, cond, steps=steps, cfg=1.0, shift=shift, seed=seed + k)
        out["simplegvr"] = vae.decode(hr_lat)[0].numpy()
        secs["simplegvr"] = time.perf_counter() - t0
        for m, (frames, seconds) in baselines(vae, lr_lat).items():
            out[m], secs[m] = frames, seconds
        out["vae_ceiling"] = vae.decode(vae.encode(torch.from_numpy(hr)[None]))[0].numpy()
        flows = metrics.reference_flows(hr)
        row = {"clip": name, "hr_warp_error": metrics.warp_error(hr, flows), "hr_blockiness": metrics.blockiness(hr)}
        for m in (*METHODS, "vae_ceiling"):
            row[m] = {"psnr": metrics.psnr(out[m], hr), "ssim": metrics.ssim(out[m], hr),
                      "warp_error": metrics.warp_error(out[m], flows), "hf_ratio": metrics.hf_energy_ratio(out[m], hr),
                      "blockiness": metrics.blockiness(out[m]), "seconds": secs.get(m, 0.0)}
        rows.append(row)
        video = {"name": name, "hr": hr, **out}
        if on_clip is not None:
            on_clip(video)
        if keep_videos:
            videos.append(video)
    if not rows:
        raise ValueError(f"none of the {len(skipped)} videos given could be used ({skipped[0]})" if skipped
                         else "no readable video to run the demo on")
    summary = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in METRICS} for m in (*METHODS, "vae_ceiling")}
    summary["hr"] = {"warp_error": float(np.mean([r["hr_warp_error"] for r in rows])),
                     "blockiness": float(np.mean([r["hr_blockiness"] for r in rows]))}
    comparisons = {}
    if len(rows) >= 2:
        for b in BASELINES:
            comparisons[b] = {k: metrics.paired_bootstrap([r["simplegvr"][k] for r in rows], [r[b][k] for r in rows])
                              for k in ("psnr", "ssim", "warp_error", "hf_ratio")}
    return {"summary": summary, "comparisons": comparisons, "clips": rows, "videos": videos, "skipped": skipped,
            "settings": {"source": source, "clips": len(rows), "frames": FRAMES, "lr_size": LR_SIZE, "hr_size": HR_SIZE,
                         "lr_mode": lr_mode, "steps": steps, "shift": shift, "noise_level": noise_level, "seed": seed,
                         "nfe": steps, "model": role}}


def format_table(results: dict) -> str:
    s = results["summary"]
    lines = ["| method | PSNR (dB) | SSIM | warp error | HF energy ratio | blockiness | seconds / clip |",
             "|---|---|---|---|---|---|---|"]
    for m in (*METHODS, "vae_ceiling"):
        r = s[m]
        sec = f"{r['seconds']:.2f}" if m != "vae_ceiling" else "-"
        lines.append(f"| {LABELS[m]} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['warp_error']:.4f} | {r['hf_ratio']:.2f} | "
                     f"{r['blockiness']:.3f} | {sec} |")
    lines.append(f"| {LABELS['hr']} | - | - | {s['hr']['warp_error']:.4f} | 1.00 | {s['hr']['blockiness']:.3f} | - |")
    return "\n".join(lines)


def format_comparisons(results: dict) -> str:
    """SimpleGVR minus each baseline, mean over clips with its 95% paired bootstrap interval."""
    c = results["comparisons"]
    if not c:
        return "(one clip: no intervals)"
    lines = ["| SimpleGVR minus | PSNR (dB) | SSIM | warp error | HF energy ratio |", "|---|---|---|---|---|"]
    for b in BASELINES:
        cells = [f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]{'' if v['resolved'] else ' (unresolved)'}"
                 for v in (c[b][k] for k in ("psnr", "ssim", "warp_error", "hf_ratio"))]
        lines.append(f"| {LABELS[b]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(img: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    bar = np.full((height, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (2, height - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], 0)


def _zoom(img: np.ndarray) -> np.ndarray:
    """The central half of a frame at 2x (nearest), so single pixels and fine detail are visible."""
    h, w = img.shape[:2]
    crop = img[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_NEAREST)


GRID_ORDER = ("hr", "simplegvr", "latent_bilinear", "pixel_bicubic")
GRID_NAMES = {"hr": "HR", "simplegvr": "SimpleGVR", "latent_bilinear": "latent bilinear", "pixel_bicubic": "bicubic"}


MAX_VIDEOS = 500  # `--videos` files in one run without --clips: more is a mistake (one clip takes seconds)
GRID_CLIPS = 24  # rows of grid.png at most (the first clips); side_by_side.mp4 shows every clip
OUTPUT_FILES = ("side_by_side.mp4", "grid.png", "results.json")


class OutputWriter:
    """The demo's output folder, filled clip by clip so memory stays flat over any number of clips:
    side_by_side.mp4 (HR | SimpleGVR | latent bilinear | bicubic, clips one after another) streams to a temporary
    file, grid.png keeps the first GRID_CLIPS clips (each clip's middle frame and, below it, its centre zoomed 2x,
    under the clip's file name), results.json comes last. The folder is the demo's: these three files in it are
    replaced, nothing else is touched; each appears only when complete."""

    def __init__(self, out_dir: str | os.PathLike):
        from .degrade.video_io import VideoWriter
        from .files import check_output_folder

        self.out = check_output_folder(out_dir, "--out")
        self.video = VideoWriter(self.out / "side_by_side.mp4", fps=8)
        self.rows: list[np.ndarray] = []
        self.frames = 0

    def add(self, v: dict) -> None:
        for t in range(v["hr"].shape[0]):
            self.video.write(np.concatenate([_label(v[m][t], GRID_NAMES[m]) for m in GRID_ORDER], 1))
            self.frames += 1
        if len(self.rows) < GRID_CLIPS:
            mid = v["hr"].shape[0] // 2
            panel = np.concatenate([np.concatenate([_label(v[m][mid], GRID_NAMES[m]), _zoom(v[m][mid])], 0)
                                    for m in GRID_ORDER], 1)
            self.rows.append(_label(panel, v["name"], height=16))

    def finish(self, results: dict) -> dict:
        from .files import atomic_write

        self.video.close()
        ok, png = cv2.imencode(".png", np.ascontiguousarray(np.concatenate(self.rows, 0)[..., ::-1]))
        if not ok:
            raise ValueError("could not encode the demo grid as PNG")
        atomic_write(self.out / "grid.png", lambda tmp: Path(tmp).write_bytes(png.tobytes()))
        data = {k: v for k, v in results.items() if k != "videos"}
        atomic_write(self.out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))
        return {"video": self.out / "side_by_side.mp4", "grid": self.out / "grid.png",
                "json": self.out / "results.json", "frames": self.frames}

    def abort(self) -> None:
        self.video.abort()


def write_outputs(results: dict, out_dir: str | os.PathLike) -> dict:
    """The demo's output files (`OutputWriter`) for results that kept their videos (`evaluate(keep_videos=True)`)."""
    writer = OutputWriter(out_dir)
    try:
        for v in results["videos"]:
            writer.add(v)
        return writer.finish(results)
    except BaseException:
        writer.abort()
        raise


# --- rebuilding the weights ------------------------------------------------------------------------
def write_train_list(folder: Path, repeats: int) -> Path:
    """`folder/captions.jsonl` listing every train-split clip `repeats` times (each row is one random crop,
    window and degradation in `make_pairs`); captions are empty: the demo runs with the null prompt."""
    from .clips import split_files
    from .files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"video": str(p), "caption": ""}) for _ in range(repeats) for p in split_files("train")]
    return atomic_write(folder / "captions.jsonl", lambda tmp: Path(tmp).write_text("\n".join(rows) + "\n"))


def retrain_commands(assets: Path, work: Path, quick: bool = False) -> list[list[str]]:
    """The exact commands that rebuild the demo codec and teacher (run from the repository root); they read the train
    split only (train_vae.py reports on the validation split)."""
    py = sys.executable
    vae_args, steps = (["--crops", "8", "--steps", "20"], "4") if quick else ([], str(TRAIN_STEPS))
    return [
        [py, "training/train_vae.py", "--out", str(assets / VAE_FILE), *vae_args],
        _pairs_command(assets, work, "pairs", DEGRADATION),
        [py, "training/train.py", "--config", "training/configs/demo.toml", f"data.path={work / 'pairs'}",
         f"log.output_dir={work / 'run'}", f"train.steps={steps}", "--export", str(assets / MODEL_FILE)],
    ]


def _pairs_command(assets: Path, work: Path, name: str, degradation: str) -> list[str]:
    return [sys.executable, "training/make_pairs.py", "--videos", str(work / "videos"), "--frames", str(FRAMES),
            "--per-shard", "64", "--hr-size", f"{HR_SIZE}x{HR_SIZE}", "--lr-size", f"{LR_SIZE}x{LR_SIZE}", "--vae",
            "file", "--vae-path", str(assets / VAE_FILE), "--text", "byte", "--text-dim", "32", "--out",
            str(work / name), "--degradation", degradation]


def student_commands(assets: Path, work: Path, out: Path, quick: bool = False) -> list[tuple[Path, list[str]]]:
    """(output, command) of each stage of the one-step default model (training/configs/demo_onestep.toml; run from
    the repository root after `retrain_commands`, whose codec and none,flow pairs it reads): shards of clean LR, the
    fitted linear base, STUDENT_STEPS steps of one-step regression to HR on the none,flow pairs and as many on the
    clean ones (the upsampler frozen, the loss in pixels through the codec), then the residual's scale chosen on the
    validation split (training/calibrate_residual.py). Outputs go to `out`; the last one is the model."""
    py = sys.executable
    steps = "4" if quick else str(STUDENT_STEPS)
    train = [py, "training/train.py", "--config", "training/configs/demo_distill.toml", f"train.steps={steps}",
             "distill.method=regress_hr", "distill.teacher=", "train.lr=5e-4", "train.warmup_steps=50",
             "train.ema_decay=0.998", f"train.pixel_metric={assets / VAE_FILE}", "log.tracker=none",
             "log.checkpoint_every=250", 'train.freeze=["upsampler"]']
    return [
        (work / "pairs_clean", _pairs_command(assets, work, "pairs_clean", "none")),
        (out / "init.safetensors", [py, "training/fit_upsampler.py", "--config", "training/configs/demo_onestep.toml",
                                    f"data.path={work / 'pairs'}", "--out", str(out / "init.safetensors")]),
        (out / "mixed.safetensors", train + [f"data.path={work / 'pairs'}", f"model.init={out / 'init.safetensors'}",
                                             f"log.output_dir={out / 'mixed'}", "--export", str(out / "mixed.safetensors")]),
        (out / "clean.safetensors", train + [f"data.path={work / 'pairs_clean'}", f"model.init={out / 'mixed.safetensors'}",
                                             f"log.output_dir={out / 'clean'}", "--export", str(out / "clean.safetensors")]),
        (out / "calibrated.safetensors", [py, "training/calibrate_residual.py", "--model", str(out / "clean.safetensors"),
                                          "--vae", str(assets / VAE_FILE), "--out", str(out / "calibrated.safetensors"),
                                          *(["--clips", "2", "--scales", "0.5,1"] if quick else [])]),
    ]


STUDENT_SAMPLING = {"steps": 1, "shift": 1.0, "noise_level": 0.0}


def student_entry(validation_psnr_db: float, commands: list[str], residual_scale: float) -> dict:
    """The manifest's `student` entry: the one-step default model, how it is sampled (1 step, no noise) and the
    residual scale chosen on validation (already folded into its weights: recorded, not applied again)."""
    return {"file": STUDENT_FILE, "default": True, "r_embedding": False, **STUDENT_SAMPLING, "timesteps": None,
            "validation_psnr_db": round(validation_psnr_db, 3), "residual_scale": residual_scale,
            "recipe": "training/configs/demo_onestep.toml (benchmarks/onestep_results.py)", "commands": commands}


TUNE_GRID = [(st, sh, nl) for st in (1, 2, 4, 10) for sh in (1.0, 3.0) for nl in (0.0, 0.1)]


def tune(model, vae, grid=None, clips=None, log=print) -> dict:
    """Pick steps / shift / noise level by PSNR on the validation split (never the test split)."""
    from .clips import split_files

    if clips is None:
        clips, _ = load_clips(split_files("validation"), log)
    best = None
    for st, sh, nl in grid or TUNE_GRID:
        r = evaluate(model, vae, clips, steps=st, shift=sh, noise_level=nl, progress=False, keep_videos=False)
        p = r["summary"]["simplegvr"]["psnr"]
        log(f"  validation: steps {st}, shift {sh}, noise level {nl}: PSNR {p:.2f} dB")
        if best is None or p > best[0]:
            best = (p, st, sh, nl)
    return {"steps": best[1], "shift": best[2], "noise_level": best[3], "validation_psnr_db": round(best[0], 3)}


def record_test_margins(results: dict, role: str, assets: str | os.PathLike | None = None) -> dict:
    """Write `evaluate`'s mean PSNR / SSIM margins over each baseline on the test split into the manifest
    (`test_margins`, and `test_margins_model`: which model they measure), for tests/test_demo.py."""
    from .files import atomic_write

    a = Path(assets) if assets else ASSETS
    manifest = read_manifest(a)
    manifest["test_margins"] = {b: {k: round(results["comparisons"][b][k]["diff"], 4) for k in ("psnr", "ssim")}
                                for b in BASELINES}
    manifest["test_margins_model"] = role
    atomic_write(a / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return manifest


def retune(assets: str | os.PathLike | None = None, log=print) -> dict:
    """Re-run `tune` on existing weights and update the manifest's sampling settings."""
    from .files import atomic_write

    a = Path(assets) if assets else ASSETS
    model, vae, manifest = load_assets(a)
    manifest.update(tune(model, vae, log=log))
    atomic_write(a / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return manifest


def _clips_version() -> str:
    from importlib import metadata

    from .clips import DISTRIBUTION

    try:
        return f"{DISTRIBUTION}=={metadata.version(DISTRIBUTION)}"
    except metadata.PackageNotFoundError:
        return "not installed"


def _relative(arg: str, root: Path) -> str:
    """A command argument with paths inside the repository written relative to it (also in key=value)."""
    key, sep, value = arg.rpartition("=") if "=" in arg and not arg.startswith("-") else ("", "", arg)
    if os.path.isabs(value) and value.startswith(str(root)):
        value = os.path.relpath(value, root)
    return key + sep + value


def command_line(cmd: list[str], root: Path) -> str:
    """A command as the manifest records it: `python script ...`, paths inside the repository relative to it."""
    return " ".join(["python"] + [_relative(c, root) for c in cmd[1:]])


WORK_MARKER = ".simplegvr_demo_work"


def fresh_work_folder(work: Path) -> Path:
    """Empty the scratch folder of an earlier `--retrain` (clips, pairs and checkpoints left there would be
    reused silently); a folder that holds anything else is refused rather than touched (`files.empty_private_folder`)."""
    from .files import empty_private_folder, write_marker

    empty_private_folder(work, WORK_MARKER, "--work", "a demo scratch folder")
    return write_marker(work, WORK_MARKER, "scratch folder of `simplegvr demo --retrain`: emptied by the next --retrain\n")


def retrain(assets: str | os.PathLike | None = None, work: str | os.PathLike = "runs/demo", quick: bool = False,
            log=print) -> dict:
    """Rebuild the demo codec, the teacher (its sampling tuned on validation) and the one-step default model with the
    training scripts (they live in the repository's training/); the student's validation PSNR goes in the manifest.
    Everything is built in `work`/assets and swapped into `assets` as one set at the end (`install_assets`): an
    interrupted rebuild leaves the old set whole. The test split is never read: benchmarks/onestep_results.py
    measures it."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "training" / "train.py").is_file():
        raise ValueError(f"--retrain needs the repository's training/ folder next to {root / 'simplegvr_core'} "
                         "(install from a git clone with `pip install -e .`)")
    a = Path(assets) if assets else ASSETS
    w = fresh_work_folder(Path(work).resolve())
    stage = w / "assets"  # the new set is built here, beside nothing the user owns
    stage.mkdir()
    write_train_list(w / "videos", 1 if quick else TRAIN_REPEATS)
    cmds = retrain_commands(stage, w, quick)
    stages = student_commands(stage, w, w / "onestep", quick)
    t0 = time.time()
    for cmd in cmds + [c for _, c in stages]:
        log("$ " + " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)))
        r = subprocess.run(cmd, cwd=root)
        if r.returncode != 0:
            raise ValueError(f"retraining step failed (exit {r.returncode}): {' '.join(cmd[1:3])}")
    from .checkpoint import read_metadata
    from .clips import split_files

    vmeta = read_metadata(stage / VAE_FILE)
    model, vae, _ = load_assets(stage)
    grid = [(2, 3.0, 0.0)] if quick else None
    val, _ = load_clips(split_files("validation"), log)
    settings = tune(model, vae, grid=grid, clips=val, log=log)
    smeta = read_metadata(stages[-1][0])  # its last stage scored it on validation (training/calibrate_residual.py)
    scale = float(smeta["residual_scale"])
    student_psnr = json.loads(smeta["residual_scale_validation_psnr_db"])[smeta["residual_scale"]]
    manifest = {**settings, "codec_validation_psnr_db": float(vmeta.get("validation_psnr_db", "nan")),
                "codec_validation_blockiness": float(vmeta.get("validation_blockiness", "nan")),
                "seconds": round(time.time() - t0, 1), "quick": quick,
                "clips_package": _clips_version(),
                "commands": [command_line(cmd, root) for cmd in cmds],
                "student": student_entry(student_psnr, [command_line(cmd, root) for _, cmd in stages], scale)}
    return install_assets(a, {VAE_FILE: stage / VAE_FILE, MODEL_FILE: stage / MODEL_FILE,
                              STUDENT_FILE: stages[-1][0]}, manifest)
