"""What `simplegvr demo` runs on each clip: the cascade against the baselines, the metrics, the
output files.

LR latent -> Latent Upsampler -> SimpleGVR sampling -> decode, on the test split (or the user's
`--videos`), compared with what a user would otherwise do: decoding the LR video and upscaling it
with bicubic, and bilinear interpolation of the latent followed by decoding; every margin comes with
its 95% paired bootstrap interval over clips. Clips are read one at a time and the output video
streams to disk, so memory stays flat over any number of clips.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .clips import FRAMES, HR_SIZE, LR_SIZE, lr_clip

METHODS = ("simplegvr", "latent_bilinear", "pixel_bicubic")


BASELINES = ("latent_bilinear", "pixel_bicubic")


METRICS = ("psnr", "ssim", "warp_error", "hf_ratio", "blockiness", "seconds")


# Fewer clips than this get no interval. A paired bootstrap resamples the clips' differences: all
# n draws land on the clip with the smallest (largest) difference with probability n^-n, 1/4 at
# n = 2 and 1/27 at 3, above 2.5%, so its 95% interval is exactly the range of the values there; at
# 4 it still spans 74% of the range on average, at 5 62%, at 14 (the test split) 29% (normal
# draws). Below 5 it is a range, not an interval.
MIN_INTERVAL_CLIPS = 5


LABELS = {
    "hr": "HR (reference)",
    "vae_ceiling": "HR through the codec",
    "simplegvr": "SimpleGVR (ours)",
    "latent_bilinear": "latent bilinear + decode",
    "pixel_bicubic": "decode + bicubic",
}


def iter_clips(paths, skipped: list[str], log=print):
    """(name, HR clip) for each readable video of `paths` in turn, read only when its turn comes
    (the demo's HR: `clips.read_demo_clip`: probed first, one source frame in memory); the reasons
    for the others are appended to `skipped`; the names are the file names."""
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
    """(name, HR clip) for every readable video of `paths` (`iter_clips`), and the reasons the
    others were skipped."""
    skipped: list[str] = []
    return list(iter_clips(paths, skipped, log)), skipped


@torch.no_grad()
def baselines(vae, lr_lat: torch.Tensor) -> dict:
    """What a user would do without SimpleGVR, as {name: (HR frames [T,H,W,3] uint8, seconds)}:
    bilinear interpolation of the latent then decoding, and decoding then bicubic upscaling."""
    out = {}
    t0 = time.perf_counter()
    t, h, w = lr_lat.shape[2:]
    size = (t, h * HR_SIZE // LR_SIZE, w * HR_SIZE // LR_SIZE)
    interp = torch.nn.functional.interpolate(lr_lat, size=size, mode="trilinear")
    out["latent_bilinear"] = (vae.decode(interp)[0].numpy(), time.perf_counter() - t0)
    t0 = time.perf_counter()
    dec = vae.decode(lr_lat)[0].numpy()
    bicubic = np.stack(
        [cv2.resize(f, (HR_SIZE, HR_SIZE), interpolation=cv2.INTER_CUBIC) for f in dec]
    )
    out["pixel_bicubic"] = (bicubic, time.perf_counter() - t0)
    return out


@torch.no_grad()
def evaluate(
    model,
    vae,
    clips=None,
    *,
    split: str = "test",
    steps: int = 2,
    shift: float = 3.0,
    noise_level: float = 0.0,
    seed: int = 0,
    lr_mode: str = "area",
    progress: bool = True,
    keep_videos: bool = True,
    role: str = "teacher",
    log=print,
    on_clip=None,
    skipped: list[str] | None = None,
) -> dict:
    """Run the cascade and the baselines on `clips` ((name, HR clip) pairs, a list or an
    `iter_clips` stream taken one clip at a time; default: the `split` of the demo clips) and
    measure each against HR; summary means, per-clip rows and paired bootstrap intervals of
    SimpleGVR's margin over each baseline. Each clip's videos go to `on_clip(dict)` (e.g.
    `OutputWriter.add`) and, with `keep_videos`, into the result. `skipped`: the list the clip
    stream appends its skip reasons to. `role` ("teacher" or "student") is recorded in the
    settings."""
    from tqdm.auto import tqdm

    from .. import metrics
    from ..pipeline import build_condition, sample
    from .clips import split_files

    skipped = [] if skipped is None else skipped
    if clips is None:
        clips = iter_clips(split_files(split), skipped, log)
        source = f"{split} split"
    else:
        source = "your videos"
    rows, videos = [], []
    total = len(clips) if hasattr(clips, "__len__") else None
    for k, (name, hr) in enumerate(
        tqdm(clips, desc="demo clips", total=total, disable=not progress)
    ):
        # raw latent, as a sampler hands it
        lr_lat = vae.encode(torch.from_numpy(lr_clip(hr, lr_mode, seed + k))[None])
        out, secs = {}, {}
        t0 = time.perf_counter()
        cond = build_condition(
            model, lr_lat, scale=HR_SIZE / LR_SIZE, noise_level=noise_level, seed=seed + k
        )
        hr_lat = sample(model, cond, steps=steps, cfg=1.0, shift=shift, seed=seed + k)
        out["simplegvr"] = vae.decode(hr_lat)[0].numpy()
        secs["simplegvr"] = time.perf_counter() - t0
        for m, (frames, seconds) in baselines(vae, lr_lat).items():
            out[m], secs[m] = frames, seconds
        out["vae_ceiling"] = vae.decode(vae.encode(torch.from_numpy(hr)[None]))[0].numpy()
        flows = metrics.reference_flows(hr)
        row = {
            "clip": name,
            "hr_warp_error": metrics.warp_error(hr, flows),
            "hr_blockiness": metrics.blockiness(hr),
        }
        for m in (*METHODS, "vae_ceiling"):
            row[m] = {
                "psnr": metrics.psnr(out[m], hr),
                "ssim": metrics.ssim(out[m], hr),
                "warp_error": metrics.warp_error(out[m], flows),
                "hf_ratio": metrics.hf_energy_ratio(out[m], hr),
                "blockiness": metrics.blockiness(out[m]),
                "seconds": secs.get(m, 0.0),
            }
        rows.append(row)
        video = {"name": name, "hr": hr, **out}
        if on_clip is not None:
            on_clip(video)
        if keep_videos:
            videos.append(video)
    if not rows:  # each skipped video's reason went to `log` when it was skipped: not repeated here
        raise ValueError(
            f"none of the {len(skipped)} videos given could be used (each is named "
            "above with its reason)"
            if skipped
            else "no readable video to run the demo on"
        )
    summary = {
        m: {k: float(np.mean([r[m][k] for r in rows])) for k in METRICS}
        for m in (*METHODS, "vae_ceiling")
    }
    summary["hr"] = {
        "warp_error": float(np.mean([r["hr_warp_error"] for r in rows])),
        "blockiness": float(np.mean([r["hr_blockiness"] for r in rows])),
    }
    comparisons = compare(rows)
    return {
        "summary": summary,
        "comparisons": comparisons,
        "clips": rows,
        "videos": videos,
        "skipped": skipped,
        "settings": {
            "source": source,
            "clips": len(rows),
            "frames": FRAMES,
            "lr_size": LR_SIZE,
            "hr_size": HR_SIZE,
            "lr_mode": lr_mode,
            "steps": steps,
            "shift": shift,
            "noise_level": noise_level,
            "seed": seed,
            "nfe": steps,
            "model": role,
        },
    }


COMPARED = ("psnr", "ssim", "warp_error", "hf_ratio")


def compare(rows: list[dict]) -> dict:
    """{baseline: {metric: paired_bootstrap of SimpleGVR minus it over the clips}} from `evaluate`'s
    per-clip rows; {} for fewer than MIN_INTERVAL_CLIPS clips (too few for an interval)."""
    from .. import metrics

    if len(rows) < MIN_INTERVAL_CLIPS:
        return {}
    return {
        b: {
            k: metrics.paired_bootstrap([r["simplegvr"][k] for r in rows], [r[b][k] for r in rows])
            for k in COMPARED
        }
        for b in BASELINES
    }


def format_table(results: dict) -> str:
    s = results["summary"]
    lines = [
        "| method | PSNR (dB) | SSIM | warp error | HF energy ratio | blockiness | "
        "seconds / clip |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in (*METHODS, "vae_ceiling"):
        r = s[m]
        sec = f"{r['seconds']:.2f}" if m != "vae_ceiling" else "-"
        lines.append(
            f"| {LABELS[m]} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['warp_error']:.4f} | "
            f"{r['hf_ratio']:.2f} | {r['blockiness']:.3f} | {sec} |"
        )
    lines.append(
        f"| {LABELS['hr']} | - | - | {s['hr']['warp_error']:.4f} | 1.00 | "
        f"{s['hr']['blockiness']:.3f} | - |"
    )
    return "\n".join(lines)


def format_comparisons(results: dict) -> str:
    """SimpleGVR minus each baseline, mean over clips with its 95% paired bootstrap interval; below
    MIN_INTERVAL_CLIPS clips the mean only, and a line saying they are too few for an interval."""
    c, rows = results["comparisons"], results["clips"]
    lines = [
        "| SimpleGVR minus | PSNR (dB) | SSIM | warp error | HF energy ratio |",
        "|---|---|---|---|---|",
    ]
    for b in BASELINES:
        if c:
            cells = [
                f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"
                f"{'' if v['resolved'] else ' (unresolved)'}"
                for v in (c[b][k] for k in COMPARED)
            ]
        else:
            cells = [
                f"{np.mean([r['simplegvr'][k] - r[b][k] for r in rows]):+.3f}" for k in COMPARED
            ]
        lines.append(f"| {LABELS[b]} | " + " | ".join(cells) + " |")
    if not c:
        n = len(rows)
        lines.append(
            f"({n} clip{'' if n == 1 else 's'}: too few clips for an interval; the 95% "
            f"paired bootstrap interval needs at least {MIN_INTERVAL_CLIPS})"
        )
    return "\n".join(lines)


def _label(img: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    bar = np.full((height, img.shape[1], 3), 255, np.uint8)
    cv2.putText(
        bar, text, (2, height - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA
    )
    return np.concatenate([bar, img], 0)


def _fit_width(img: np.ndarray, width: int) -> np.ndarray:
    """img padded on the right with white (or cut) to `width` pixels."""
    if img.shape[1] >= width:
        return img[:, :width]
    return np.concatenate([img, np.full((img.shape[0], width - img.shape[1], 3), 255, np.uint8)], 1)


def _zoom(img: np.ndarray) -> np.ndarray:
    """The central half of a frame at 2x (nearest), so single pixels and fine detail are visible."""
    h, w = img.shape[:2]
    crop = img[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_NEAREST)


def largest_difference_window(a: np.ndarray, b: np.ndarray, size: int) -> tuple[int, int, float]:
    """(y, x, mean |a - b| there, per pixel and channel) of the size x size window of frames a and b
    (uint8 [H, W, 3]) where they differ most on average; the first in raster order on a tie. A rule
    that looks for where two methods differ, not for where either is right."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1)
    c = np.pad(d.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), float(sums[y, x] / size**2)


DIFF_WINDOW, DIFF_ZOOM = 32, 4  # grid.png's difference crop: a 32x32 window of the middle frame, 4x


DIFF_TITLE = "largest difference vs bicubic: where they differ most, not where SimpleGVR is best"


def difference_band(v: dict, t: int) -> np.ndarray:
    """grid.png's band under a clip: the DIFF_WINDOW window of frame t where SimpleGVR and decode +
    bicubic differ most (`largest_difference_window`), marked on HR, then HR / SimpleGVR / bicubic
    there, zoomed DIFF_ZOOM x (nearest), under a title saying how it was chosen and the numbers."""
    s, k = DIFF_WINDOW, DIFF_ZOOM
    y, x, there = largest_difference_window(v["simplegvr"][t], v["pixel_bicubic"][t], s)
    whole = float(np.abs(v["simplegvr"][t].astype(np.float64) - v["pixel_bicubic"][t]).mean())
    where = np.ascontiguousarray(v["hr"][t]).copy()
    cv2.rectangle(where, (x, y), (x + s - 1, y + s - 1), (255, 0, 0), 1)
    big = (s * k, s * k)
    cells = [_label(cv2.resize(where, big, interpolation=cv2.INTER_NEAREST), "where (HR)")]
    for m in ("hr", "simplegvr", "pixel_bicubic"):
        crop = np.ascontiguousarray(v[m][t][y : y + s, x : x + s])
        cells.append(
            _label(cv2.resize(crop, big, interpolation=cv2.INTER_NEAREST), f"{GRID_NAMES[m]} {k}x")
        )
    band = np.concatenate(cells, 1)
    note = (
        f"middle frame, {s}x{s} window at x {x}, y {y}: mean |SimpleGVR - bicubic| "
        f"{there:.1f}/255 there, {whole:.1f}/255 over the frame"
    )
    return _label(_label(band, note), DIFF_TITLE)


GRID_ORDER = ("hr", "simplegvr", "latent_bilinear", "pixel_bicubic")


GRID_NAMES = {
    "hr": "HR",
    "simplegvr": "SimpleGVR",
    "latent_bilinear": "latent bilinear",
    "pixel_bicubic": "bicubic",
}


# `--videos` files in one run without --clips: more is a mistake (one clip takes seconds)
MAX_VIDEOS = 500


GRID_CLIPS = 24  # rows of grid.png at most (the first clips); side_by_side.mp4 shows every clip


OUTPUT_FILES = ("side_by_side.mp4", "grid.png", "results.json")


class OutputWriter:
    """The demo's output folder, filled clip by clip so memory stays flat over any number of clips:
    side_by_side.mp4 (HR | SimpleGVR | latent bilinear | bicubic, clips one after another) streams
    to a temporary file, grid.png keeps the first GRID_CLIPS clips (each clip's middle frame, below
    it its centre zoomed 2x, then `difference_band`: the 32x32 window where SimpleGVR and bicubic
    differ most, zoomed 4x; under the clip's file name), results.json comes last. The folder is the
    demo's: these three files in it are replaced, nothing else is touched; each appears only when
    complete."""

    def __init__(self, out_dir: str | os.PathLike):
        from ..degrade.video_io import VideoWriter
        from ..files import check_output_folder

        self.out = check_output_folder(out_dir, "--out")
        self.video = VideoWriter(self.out / "side_by_side.mp4", fps=8)
        self.rows: list[np.ndarray] = []
        self.frames = 0

    def add(self, v: dict) -> None:
        for t in range(v["hr"].shape[0]):
            self.video.write(
                np.concatenate([_label(v[m][t], GRID_NAMES[m]) for m in GRID_ORDER], 1)
            )
            self.frames += 1
        if len(self.rows) < GRID_CLIPS:
            mid = v["hr"].shape[0] // 2
            panel = np.concatenate(
                [
                    np.concatenate([_label(v[m][mid], GRID_NAMES[m]), _zoom(v[m][mid])], 0)
                    for m in GRID_ORDER
                ],
                1,
            )
            panel = np.concatenate([panel, _fit_width(difference_band(v, mid), panel.shape[1])], 0)
            self.rows.append(_label(panel, v["name"], height=16))

    def finish(self, results: dict) -> dict:
        from ..files import atomic_write

        self.video.close()
        ok, png = cv2.imencode(
            ".png", np.ascontiguousarray(np.concatenate(self.rows, 0)[..., ::-1])
        )
        if not ok:
            raise ValueError("could not encode the demo grid as PNG")
        atomic_write(self.out / "grid.png", lambda tmp: Path(tmp).write_bytes(png.tobytes()))
        data = {k: v for k, v in results.items() if k != "videos"}
        atomic_write(
            self.out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1))
        )
        return {
            "video": self.out / "side_by_side.mp4",
            "grid": self.out / "grid.png",
            "json": self.out / "results.json",
            "frames": self.frames,
        }

    def abort(self) -> None:
        self.video.abort()


def write_outputs(results: dict, out_dir: str | os.PathLike) -> dict:
    """The demo's output files (`OutputWriter`) for results that kept their videos
    (`evaluate(keep_videos=True)`)."""
    writer = OutputWriter(out_dir)
    try:
        for v in results["videos"]:
            writer.add(v)
        return writer.finish(results)
    except BaseException:
        writer.abort()
        raise
