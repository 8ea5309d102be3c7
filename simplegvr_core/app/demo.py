"""`simplegvr demo`: the whole cascade on real AI-generated clips with the embedded demo weights."""

from __future__ import annotations

import sys
from pathlib import Path

from ..console import CLIError


def _rebuild(args) -> None:
    """--retrain: the lab's demo stage (`python -m training.demo`), which lives in a clone of the
    repository, not in the installed package."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "training" / "demo" / "rebuild.py").is_file():
        raise CLIError(
            "--retrain needs a clone of the repository (its training/ folder): run `python -m "
            "training.demo` there, or install the pack from a clone with `pip install -e .`"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from training.demo.rebuild import retrain

    manifest = retrain(args.assets, args.work, quick=args.quick)
    print(f"rebuilt the demo weights in {manifest['seconds']:.0f} s")


DEMO_THREADS = 1  # the demo's tensors are tiny (an 8x8 LR latent): more threads only synchronise


def _set_threads(n: int) -> None:
    """PyTorch's and OpenCV's threads for the demo run. One by default: on 2 idle cores the run
    takes as long with one thread as with two (10-12 s), and on a busy 2-core machine two threads
    oversubscribe it (46-66 s against 15-22 s with one; README: Demo)."""
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def _cmd_demo(args) -> int:
    from .. import demo
    from ..demo.clips import list_media

    if args.steps is not None and not 1 <= args.steps <= 10_000:
        raise CLIError(f"--steps {args.steps}: expected 1 to 10000")
    if args.clips is not None and args.clips < 1:
        raise CLIError(f"--clips {args.clips}: expected at least 1 clip")
    if args.threads < 1:
        raise CLIError(f"--threads {args.threads}: expected at least 1")
    if args.retrain:
        _rebuild(args)
    _set_threads(args.threads)
    # the codec and weights, read once
    model, vae, chosen = demo.load_model(args.assets, teacher=args.teacher)
    steps = args.steps or chosen["steps"]
    shift = args.shift if args.shift is not None else chosen["shift"]
    noise = args.noise_level if args.noise_level is not None else chosen["noise_level"]

    def log(msg):
        print(msg, file=sys.stderr)

    clips, skipped = None, []
    if args.videos:
        paths = list_media(args.videos, exclude=args.out)  # the demo's own outputs are not inputs
        if len(paths) > demo.MAX_VIDEOS and args.clips is None:
            raise CLIError(
                f"--videos: {len(paths)} videos found; the demo takes at most {demo.MAX_VIDEOS} "
                f"at a time: pass --clips N to run the first N"
            )
        clips = demo.iter_clips(paths[: args.clips] if args.clips else paths, skipped, log)
    elif args.clips:
        from ..demo.clips import split_files

        clips = demo.iter_clips(split_files("test")[: args.clips], skipped, log)
    # refused here, before any clip is computed, if --out cannot be a folder
    writer = demo.OutputWriter(args.out)
    try:
        results = demo.evaluate(
            model,
            vae,
            clips,
            steps=steps,
            shift=shift,
            noise_level=noise,
            seed=args.seed,
            lr_mode=args.lr_mode,
            role=chosen["model"],
            log=log,
            keep_videos=False,
            on_clip=writer.add,
            skipped=skipped,
        )
        files = writer.finish(results)
    except BaseException:
        writer.abort()
        raise
    st = results["settings"]
    print(
        f"SimpleGVR demo: {st['clips']} clips ({st['source']}), {demo.FRAMES} frames, "
        f"{demo.LR_SIZE}x{demo.LR_SIZE} -> {demo.HR_SIZE}x{demo.HR_SIZE} "
        f"({'clean area downscale' if args.lr_mode == 'area' else 'flow-guided T2V artefacts'}), "
        f"{steps} Euler steps (shift {shift}, noise level {noise}); model: the {chosen['model']}"
        + (
            " (the one-step SimpleGVR; --teacher runs the multi-step flow model)"
            if chosen["model"] == "student"
            else ""
        )
    )
    print(demo.format_table(results))
    print()
    print(demo.format_comparisons(results))
    if results["skipped"]:  # each named with its reason when skipped (stderr), and in results.json
        n = len(results["skipped"])
        print(
            f"skipped {n} unreadable video{'' if n == 1 else 's'} (each named above with its "
            "reason)"
        )
    print(f"wrote {files['video']} ({files['frames']} frames), {files['grid']}, {files['json']}")
    return 0


def register(sub) -> None:
    """Add this module's subcommands to the `simplegvr` parser."""
    from ..demo import LR_MODES

    d = sub.add_parser(
        "demo",
        help="run the whole cascade on real AI-generated clips (the test split) with the embedded "
        "demo weights",
        description="Upscale the test split of the demo clips (real text/image-to-video output, "
        "17 frames, 64x64 -> 128x128) in latent space with the embedded demo SimpleGVR and its "
        "Wan-contract codec, and compare with decode + bicubic and latent bilinear + decode: PSNR "
        "/ SSIM against the HR clip, temporal warp error, detail (HF energy ratio), blockiness, "
        "seconds per clip, and 95% paired bootstrap intervals over clips. Writes "
        "side_by_side.mp4, grid.png and results.json to --out.",
    )
    d.add_argument(
        "--out", default="simplegvr_demo", help="output folder (default ./simplegvr_demo/)"
    )
    d.add_argument(
        "--videos",
        nargs="+",
        default=None,
        metavar="PATH",
        help="your own videos (mp4/mkv/webm/mov/animated WebP, or folders of them) instead of the "
        "test split, cut and scaled exactly as the test split is",
    )
    d.add_argument(
        "--clips",
        type=int,
        default=None,
        help="only the first N test clips (default: all 14), or the first N of --videos",
    )
    d.add_argument(
        "--lr-mode",
        choices=LR_MODES,
        default=LR_MODES[0],
        help="the LR: a clean 2x area downscale (default), or the paper's setting with "
        "flow-guided T2V artefacts",
    )
    d.add_argument(
        "--teacher",
        action="store_true",
        help="run the teacher (the flow-matching model) even where a distilled student "
        "is the default",
    )
    d.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the chosen model's)"
    )
    d.add_argument("--shift", type=float, default=None, help="flow shift (default: the manifest's)")
    d.add_argument(
        "--noise-level",
        type=float,
        default=None,
        help="condition noise level (default: the manifest's)",
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--threads",
        type=int,
        default=DEMO_THREADS,
        help="CPU threads for PyTorch and OpenCV during the run (default 1: the demo's "
        "tensors are tiny, and more threads slow it down on a busy machine)",
    )
    d.add_argument(
        "--retrain",
        action="store_true",
        help="rebuild the demo codec, the teacher and the one-step model from scratch first "
        "(27 minutes measured on 2 CPU cores; README: Demo)",
    )
    d.add_argument(
        "--quick",
        action="store_true",
        help="with --retrain: a shortened run (tests; weights are poor)",
    )
    d.add_argument("--assets", default=None, help="weights folder (default: the package's assets/)")
    d.add_argument(
        "--work",
        default="runs/demo",
        help="with --retrain: scratch folder for the train list, pairs and checkpoints",
    )
    d.set_defaults(func=_cmd_demo)
