"""`simplegvr degrade IN OUT --mode flow|classic|flow+classic`: degraded (LR) copies of real videos.

IN is a video file (OUT: an .mp4 file, or a folder to put <name>.mp4 in) or a folder (OUT: a folder;
the tree below IN is mirrored, every output is .mp4). Existing outputs are skipped (`--overwrite`
redoes them); a broken input is reported and the others continue; a summary ends a folder run and
the exit status is non-zero when anything failed. Every output is written under a temporary name
and renamed when complete.

Order of operations: flow-guided runs on the input frames; then either the classic chain (which
ends at the LR size) or, for `flow`, an area resize to the LR size. The LR size defaults to the
input size. Seeds: file i of a folder uses a seed derived from (--seed, its relative path), so a
rerun or a partial rerun reproduces every file exactly.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

MODES = ("flow", "classic", "flow+classic")
EXIT_SOME_FAILED = 1


def parse_size(text: str) -> tuple[int, int]:
    """'848x480' -> (848, 480) (width, height)."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"--lr-size {text!r}: expected WIDTHxHEIGHT, e.g. 848x480") from None
    if w < 2 or h < 2:
        raise ValueError(f"--lr-size {text!r}: expected a width and height of at least 2")
    return w, h


def file_seed(seed: int, rel: str) -> int:
    """A per-file seed from the run seed and the file's path relative to IN (stable across runs and machines)."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(rel.encode())]).generate_state(1)[0])


def degrade_file(src, dst, mode: str = "flow", seed: int = 0, lr_size: tuple[int, int] | None = None,
                 strength: float = 1.0, crf: int | None = None, max_frames: int | None = None,
                 dis_preset: str = "ultrafast", progress: bool = False) -> int:
    """Degrade one video file into an H.264 mp4 at `dst` (written atomically). Returns the frame count."""
    import cv2
    import numpy as np
    from tqdm.auto import tqdm

    from . import degrade_frames
    from .flow_guided import FlowGuidedConfig, iter_flow_guided
    from .video_io import DEFAULT_CRF, VideoWriter, iter_frames, probe_video

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    if strength < 0:
        raise ValueError(f"strength={strength}: expected >= 0")
    info = probe_video(src)
    total = min(info.frames, max_frames) if info.frames and max_frames else (info.frames or max_frames or None)
    rng = np.random.default_rng(seed)
    flow_cfg = FlowGuidedConfig(strength=strength, dis_preset=dis_preset)
    bar = tqdm(total=total, desc=Path(src).name, unit="frame", disable=not progress, leave=False, file=sys.stderr)
    n = 0
    try:
        with VideoWriter(dst, info.fps, crf=DEFAULT_CRF if crf is None else crf) as writer:
            if mode == "flow":  # streams: one frame of look-ahead, constant memory
                for frame in iter_flow_guided(iter_frames(src, max_frames), flow_cfg, rng):
                    if lr_size is not None and (frame.shape[1], frame.shape[0]) != tuple(lr_size):
                        frame = cv2.resize(frame, tuple(lr_size), interpolation=cv2.INTER_AREA)
                    writer.write(frame)
                    n += 1
                    bar.update(1)
            else:
                frames = np.stack(list(iter_frames(src, max_frames)))
                bar.set_postfix_str("degrading")
                for frame in degrade_frames(frames, mode, lr_size, rng, strength, flow_config=flow_cfg):
                    writer.write(frame)
                    n += 1
                    bar.update(1)
    finally:
        bar.close()
    return n


def _outputs(src: Path, out: Path) -> list[tuple[Path, Path, str]]:
    """(input, output, relative name) for a file or a folder of videos."""
    from .video_io import VIDEO_EXTENSIONS, list_videos

    if src.is_dir():
        if out.exists() and not out.is_dir():
            raise ValueError(f"IN {str(src)!r} is a folder, so OUT {str(out)!r} must be a folder too, not a file")
        out_abs = out.resolve()
        jobs = []
        for p in list_videos(src):
            if out_abs == p.resolve().parent or out_abs in p.resolve().parents:
                continue  # outputs of an earlier run inside IN are not inputs
            rel = p.relative_to(src)
            jobs.append((p, out / rel.with_suffix(".mp4"), rel.as_posix()))
        return jobs
    if not src.is_file():
        raise ValueError(f"IN {str(src)!r} does not exist: expected a video file or a folder of videos")
    if src.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"IN {str(src)!r} is not a video file: expected one of {', '.join(VIDEO_EXTENSIONS)}")
    if out.is_dir() or str(out).endswith(("/", "\\")):
        out = out / (src.stem + ".mp4")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"OUT {str(out)!r}: expected an .mp4 file name (outputs are H.264 mp4) or a folder")
    if out.resolve() == src.resolve():
        raise ValueError(f"OUT {str(out)!r} is the input file: expected a different path")
    return [(src, out, src.name)]


def cmd_degrade(args) -> int:
    src, out = Path(args.input), Path(args.output)
    lr_size = parse_size(args.lr_size) if args.lr_size else None
    jobs = _outputs(src, out)
    if not jobs:
        raise ValueError(f"no video files ({', '.join(('.mp4', '.mkv', '.webm', '.mov'))} ...) found in {str(src)!r}")
    from tqdm.auto import tqdm

    done = skipped = 0
    failed: list[str] = []
    many = len(jobs) > 1 or src.is_dir()
    bar = tqdm(jobs, desc="videos", unit="video", disable=not many or args.quiet, file=sys.stderr)
    for path, dst, rel in bar:
        if dst.exists() and not args.overwrite:
            skipped += 1
            if many:
                tqdm.write(f"skipped {rel}: {dst} exists", file=sys.stderr)
            continue
        try:
            n = degrade_file(path, dst, args.mode, file_seed(args.seed, rel) if many else args.seed, lr_size,
                             args.strength, args.crf, args.max_frames, args.dis_preset, progress=not args.quiet)
        except (ValueError, OSError, RuntimeError) as e:
            if not many:
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            failed.append(rel)
            tqdm.write(f"failed {rel}: {msg}", file=sys.stderr)
            continue
        done += 1
        if not many:
            print(f"wrote {dst} ({n} frames, {args.mode})")
    if many:
        print(f"degrade {args.mode}: {done} done, {skipped} skipped, {len(failed)} failed" +
              (f" ({', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''})" if failed else ""))
    elif skipped:
        print(f"skipped {jobs[0][2]}: {jobs[0][1]} exists (use --overwrite)")
    return EXIT_SOME_FAILED if failed else 0


def register(subparsers) -> None:
    """Add `degrade` to the `simplegvr` command line."""
    d = subparsers.add_parser("degrade", help="degraded (LR) copies of videos: flow-guided, classic or both",
                              description=__doc__.split("\n\n")[0])
    d.add_argument("input", metavar="IN", help="a video file (mp4/mkv/webm/mov/avi) or a folder of them")
    d.add_argument("output", metavar="OUT", help="an .mp4 file or a folder (a folder when IN is a folder)")
    d.add_argument("--mode", choices=MODES, default="flow", help="which degradation (default: flow)")
    d.add_argument("--seed", type=int, default=0, help="random seed; a folder derives one per file from it (default 0)")
    d.add_argument("--lr-size", metavar="WxH", help="output size, e.g. 848x480 (default: the input size)")
    d.add_argument("--strength", type=float, default=1.0,
                   help="flow: multiplies blur length and bleeding weight; classic: severity in [0, 1] "
                        "(values above 1 act as 1) (default 1)")
    d.add_argument("--crf", type=int, default=None, help="H.264 quality of the output, 0-51 (default 10)")
    d.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each input")
    d.add_argument("--dis-preset", default="ultrafast", choices=["ultrafast", "fast", "medium"],
                   help="OpenCV DIS optical-flow preset for flow-guided (default ultrafast)")
    d.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_degrade)
