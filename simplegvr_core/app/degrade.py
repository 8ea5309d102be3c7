"""`simplegvr degrade IN OUT --mode none|flow|classic|flow+classic`: degraded (LR) copies of real
videos.

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
from pathlib import Path

from .. import seeding
from ..degrade import MODES, degrade_file, file_seed
from ..memory import GiB

EXIT_SOME_FAILED = 1


def _outputs(src: Path, out: Path) -> list[tuple[Path, Path, str]]:
    """(input, output, relative name) for a file or a folder of videos."""
    from ..degrade.video_io import VIDEO_EXTENSIONS, list_videos

    if src.is_dir():
        if out.exists() and not out.is_dir():
            raise ValueError(
                f"IN {str(src)!r} is a folder, so OUT {str(out)!r} must be a folder too, not a file"
            )
        out_abs = out.resolve()
        jobs = []
        for p in list_videos(src):
            if out_abs == p.resolve().parent or out_abs in p.resolve().parents:
                continue  # outputs of an earlier run inside IN are not inputs
            rel = p.relative_to(src)
            jobs.append((p, out / rel.with_suffix(".mp4"), rel.as_posix()))
        return jobs
    if not src.is_file():
        raise ValueError(
            f"IN {str(src)!r} does not exist: expected a video file or a folder of videos"
        )
    if src.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"IN {str(src)!r} is not a video file: expected one of {', '.join(VIDEO_EXTENSIONS)}"
        )
    if out.is_dir() or str(out).endswith(("/", "\\")):
        out = out / (src.stem + ".mp4")
    if out.suffix.lower() != ".mp4":
        raise ValueError(
            f"OUT {str(out)!r}: expected an .mp4 file name (outputs are H.264 mp4) or a folder"
        )
    if out.resolve() == src.resolve():
        raise ValueError(f"OUT {str(out)!r} is the input file: expected a different path")
    return [(src, out, src.name)]


def cmd_degrade(args) -> int:
    from ..degrade.video_io import parse_wxh
    from ..files import clean_stale_temporaries

    src, out = Path(args.input), Path(args.output)
    lr_size = parse_wxh(args.lr_size, "--lr-size") if args.lr_size else None
    seed = seeding.check_seed(args.seed, "--seed")
    max_memory = _memory_limit(args.max_memory)
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames {args.max_frames}: expected >= 1")
    jobs = _outputs(src, out)
    if not jobs:
        raise ValueError(
            f"no video files ({', '.join(('.mp4', '.mkv', '.webm', '.mov'))} ...) found in "
            f"{str(src)!r}"
        )
    from tqdm.auto import tqdm

    for folder in sorted({dst.parent for _, dst, _ in jobs}):
        # what a killed earlier run left behind (our exact names only)
        for p in clean_stale_temporaries(folder):
            print(f"removed {p}, a temporary file an interrupted run left", file=sys.stderr)
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
            n = degrade_file(
                path,
                dst,
                args.mode,
                file_seed(seed, rel) if many else seed,
                lr_size,
                args.strength,
                args.crf,
                args.max_frames,
                args.dis_preset,
                progress=not args.quiet,
                max_memory=max_memory,
                replace=args.overwrite,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        # one bad file (cv2.error, MemoryError, ...) never stops a folder run
        except Exception as e:  # noqa: BLE001
            if not many:
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, (ValueError, OSError)):
                msg = f"{type(e).__name__}: {msg}"
            failed.append(rel)
            tqdm.write(f"failed {rel}: {msg}", file=sys.stderr)
            continue
        done += 1
        if not many:
            print(f"wrote {dst} ({n} frames, {args.mode})")
    if many:
        print(
            f"degrade {args.mode}: {done} done, {skipped} skipped, {len(failed)} failed"
            + (f" ({', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''})" if failed else "")
        )
    elif skipped:
        print(f"skipped {jobs[0][2]}: {jobs[0][1]} exists (use --overwrite)")
    return EXIT_SOME_FAILED if failed else 0


def _memory_limit(gib: float | None) -> int | None:
    import math

    if gib is None:
        return None
    if not (math.isfinite(gib) and gib > 0):
        raise ValueError(f"--max-memory {gib}: expected a positive number of GiB")
    return int(gib * GiB)


def register(subparsers) -> None:
    """Add `degrade` to the `simplegvr` command line."""
    from ..degrade.flow_guided import DIS_PRESETS

    d = subparsers.add_parser(
        "degrade",
        help="degraded (LR) copies of videos: flow-guided, classic or both",
        description=__doc__.split("\n\n")[0],
    )
    d.add_argument(
        "input", metavar="IN", help="a video file (mp4/mkv/webm/mov/avi) or a folder of them"
    )
    d.add_argument(
        "output", metavar="OUT", help="an .mp4 file or a folder (a folder when IN is a folder)"
    )
    d.add_argument(
        "--mode",
        choices=MODES,
        default="flow",
        help="which degradation (default: flow; none = area resize)",
    )
    d.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; a folder derives one per file from it (default 0)",
    )
    d.add_argument(
        "--lr-size", metavar="WxH", help="output size, e.g. 848x480 (default: the input size)"
    )
    d.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="flow: multiplies blur length and bleeding weight; classic: severity in [0, 1] "
        "(values above 1 act as 1) (default 1)",
    )
    d.add_argument(
        "--crf", type=int, default=None, help="H.264 quality of the output, 0-51 (default 10)"
    )
    d.add_argument(
        "--max-frames", type=int, default=None, help="only the first N frames of each input"
    )
    d.add_argument(
        "--dis-preset",
        default="ultrafast",
        choices=list(DIS_PRESETS),
        help="OpenCV DIS optical-flow preset for flow-guided (default ultrafast)",
    )
    d.add_argument(
        "--max-memory",
        type=float,
        default=None,
        metavar="GiB",
        help="memory a video may take (default: what the machine has available; frames above "
        "8192x8192 px are refused unless this is given)",
    )
    d.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_degrade)
