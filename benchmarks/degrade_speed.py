"""Frames per second of the flow-guided and classic degradations on this machine's CPU.

    python benchmarks/degrade_speed.py [--frames 24] [--repeats 3] [--video PATH] [--no-write]

Clips (uint8 RGB, made here, seeded) at 960x540 and 512x512:
  pan      the whole frame moves 6 px/frame (one blur direction everywhere)
  objects  four textured squares moving in different directions over a static background
  zoom     a 2 %/frame zoom: every direction and length at once (the flow-guided worst case)
  video    --video PATH: a real clip, centre-cropped and resized to the size (its first frames)
flow-guided: `flow_guided` with the default FlowGuidedConfig (DIS preset and alias check shown),
whole clip, median of `--repeats` runs, after one warm-up run on two frames. DIS alone, and DIS plus
the alias check (`dealias_flow`, what flow-guided computes per frame pair), are timed on the same
frame pairs. classic: `classic_degrade` to half the size (480x270 / 256x256), median over
`--repeats` x 3 seeds: its cost depends on the random draw (an up-scale before video compression
costs several times more). Results go to the `degrade_speed` section of BENCHMARKS.md. The machine
is shared: its load average is printed beside the figures.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simplegvr_core.bench import update_section  # noqa: E402
from simplegvr_core.degrade.classic import classic_degrade  # noqa: E402
from simplegvr_core.degrade.flow_guided import (
    FlowGuidedConfig,
    compute_flow,
    flow_guided,
    make_dis,
    to_gray,
)  # noqa: E402

SIZES = ((960, 540), (512, 512))
TARGET_FPS = 20.0  # issue #5: flow-guided at >= 20 fps at 960x540 on a 2-core machine


def _texture(h, w, rng, sigma=2.0):
    x = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.float32), (0, 0), sigma)
    return np.clip((x - x.mean()) / (x.std() + 1e-6) * 50 + 128, 0, 255).astype(np.uint8)


def pan_clip(t, w, h, seed=0, speed=6):
    big = _texture(h, w + speed * t + 8, np.random.default_rng(seed))
    return np.stack([big[:, i * speed : i * speed + w] for i in range(t)])


def objects_clip(t, w, h, seed=0):
    rng = np.random.default_rng(seed)
    bg = _texture(h, w, rng)
    side = min(h, w) // 4
    squares = [
        (_texture(side, side, rng, 1.0), rng.integers(0, h - side), rng.integers(0, w - side), v)
        for v in ((5, 0), (-4, 3), (0, -6), (3, 3))
    ]
    frames = []
    for i in range(t):
        f = bg.copy()
        for sq, y, x, (vx, vy) in squares:
            yy = int(np.clip(y + vy * i, 0, h - side))
            xx = int(np.clip(x + vx * i, 0, w - side))
            f[yy : yy + side, xx : xx + side] = sq
        frames.append(f)
    return np.stack(frames)


def zoom_clip(t, w, h, seed=0, rate=0.02):
    base = _texture(h, w, np.random.default_rng(seed))
    return np.stack(
        [
            cv2.warpAffine(
                base,
                cv2.getRotationMatrix2D((w / 2, h / 2), 0, 1 + rate * i),
                (w, h),
                borderMode=cv2.BORDER_REFLECT,
            )
            for i in range(t)
        ]
    )


def video_clip(path, t, w, h):
    from simplegvr_core.degrade.video_io import iter_frames

    out = []
    for f in iter_frames(path, t):
        fh, fw = f.shape[:2]
        s = max(w / fw, h / fh)
        f = cv2.resize(
            f, (max(w, round(fw * s)), max(h, round(fh * s))), interpolation=cv2.INTER_AREA
        )
        y, x = (f.shape[0] - h) // 2, (f.shape[1] - w) // 2
        out.append(f[y : y + h, x : x + w])
    if len(out) < t:
        raise ValueError(f"{path} has {len(out)} frames, fewer than --frames {t}")
    return np.stack(out)


def _median_fps(fn, n_frames, repeats):
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(n_frames / (time.perf_counter() - t0))
    return statistics.median(runs)


def bench_flow(clip, repeats, cfg):
    flow_guided(clip[:2], cfg, seed=0)  # warm-up (DIS allocation, OpenCV thread pool)
    fps = _median_fps(lambda: flow_guided(clip, cfg, seed=0), len(clip), repeats)
    dis = make_dis(cfg.dis_preset)
    grays = [to_gray(f) for f in clip]

    def flows(search):
        return [
            compute_flow(grays[i], grays[i - 1], dis, alias_search=search)
            for i in range(1, len(grays))
        ]

    dis_fps = _median_fps(lambda: flows(0), len(grays) - 1, repeats)
    checked_fps = _median_fps(
        lambda: flows(cfg.alias_search if cfg.alias_check else 0), len(grays) - 1, repeats
    )
    return fps, dis_fps, checked_fps


def bench_classic(clip, repeats, lr):
    classic_degrade(clip[:2], lr, seed=0)
    runs = []
    for seed in range(3):
        runs.append(
            _median_fps(lambda s=seed: classic_degrade(clip, lr, seed=s), len(clip), repeats)
        )
    return statistics.median(runs), min(runs), max(runs)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--video", help="also time a real video file (centre crop + resize to each size)"
    )
    ap.add_argument("--no-classic", action="store_true", help="time only flow-guided")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    cfg = FlowGuidedConfig()
    load0 = os.getloadavg()[0]
    kinds = [("pan", pan_clip), ("objects", objects_clip), ("zoom", zoom_clip)]
    if args.video:
        kinds.append(("video", lambda t, w, h: video_clip(args.video, t, w, h)))
    flow_rows, classic_rows, met, missed = [], [], [], []
    for w, h in SIZES:
        for name, make in kinds:
            clip = make(args.frames, w, h)
            fps, dis_fps, checked_fps = bench_flow(clip, args.repeats, cfg)
            flow_rows.append(
                f"| {w}x{h} | {name} | {fps:.1f} | {dis_fps:.1f} | {checked_fps:.1f} |"
            )
            if (w, h) == (960, 540):
                (met if fps >= TARGET_FPS else missed).append(f"{name} {fps:.1f}")
            print(flow_rows[-1], flush=True)
        if not args.no_classic:
            lr = (w // 2, h // 2)
            clip = (
                objects_clip(args.frames, w, h)
                if not args.video
                else video_clip(args.video, args.frames, w, h)
            )
            med, lo, hi = bench_classic(clip, args.repeats, lr)
            classic_rows.append(
                f"| {w}x{h} -> {lr[0]}x{lr[1]} | {'video' if args.video else 'objects'} | "
                f"{med:.1f} | {lo:.1f}-{hi:.1f} |"
            )
            print(classic_rows[-1], flush=True)
    load1 = os.getloadavg()[0]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, OpenCV {cv2.__version__} "
        f"({cv2.getNumThreads()} threads), load average {load0:.1f} -> {load1:.1f} during the run "
        f"(the machine is shared)"
    )
    video_note = ""
    if args.video:
        from simplegvr_core.degrade.video_io import probe_video

        info = probe_video(args.video)
        video_note = (
            f" `video` is the first {args.frames} frames of `{Path(args.video).name}` (a real "
            f"clip, {info.width}x{info.height} at {float(info.fps):g} fps, {info.codec}), "
            f"centre-cropped and resized."
        )
    text = "\n".join(
        [
            "## Degradation speed (`benchmarks/degrade_speed.py`)",
            "",
            f"Machine: {machine}.",
            "",
            f"flow-guided, default `FlowGuidedConfig` (DIS preset `{cfg.dis_preset}`, alias check "
            f"{'on, ' + str(cfg.alias_search) + ' px search' if cfg.alias_check else 'off'}, "
            f"{cfg.block_size}px blocks, {cfg.blur_angles} directions), {args.frames}-frame "
            f"clips, median of {args.repeats} runs, frames per second. `DIS alone` is the optical "
            f"flow by itself on the same frame pairs, `DIS + check` adds the alias check "
            f"(`dealias_flow`: block matching along the flow where DIS's warp residual is "
            f"high).{video_note}",
            "",
            "| size | clip | flow-guided fps | DIS alone fps | DIS + check fps |",
            "|---|---|---|---|---|",
            *flow_rows,
            "",
            f"Target >= {TARGET_FPS:g} fps at 960x540: met by {', '.join(met) or 'none'}; "
            f"missed by {', '.join(missed) or 'none'}.",
            "",
        ]
    )
    if classic_rows:
        text += "\n" + "\n".join(
            [
                f"classic (RealBasicVSR second order, all stages, to half the size), median over "
                f"3 seeds x {args.repeats} runs; the range is over seeds (an up-scale before "
                f"video compression is the slow draw).",
                "",
                "| size | clip | classic fps | range over seeds |",
                "|---|---|---|---|",
                *classic_rows,
                "",
            ]
        )
    print(text)
    if not args.no_write:
        update_section(Path(__file__).resolve().parents[1] / "BENCHMARKS.md", "degrade_speed", text)


if __name__ == "__main__":
    main()
