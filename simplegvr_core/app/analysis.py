"""Measuring a model: `bench` (FLOPs and CPU time of the attention modes) and `analyze-detail`
(where sampling creates detail: the detail-aware timestep curve).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..console import CLIError


def _cmd_bench(args) -> int:
    from ..bench import attention_report, cpu_times, dit_flops
    from ..files import check_output

    if args.out:
        check_output(args.out, overwrite=args.overwrite, what="--out")
    size = tuple(args.latent)
    print(
        f"counting FLOPs of one {args.config} DiT forward at latent {size} per attention mode "
        f"(meta device) ...",
        file=sys.stderr,
    )
    flops = dit_flops(args.config, size)
    times = None
    if not args.no_cpu:
        print("timing a small DiT on the CPU ...", file=sys.stderr)
        times = cpu_times(repeats=args.repeats)
    report = attention_report(flops, times, size, (10, 32, 48))
    print(report)
    if args.out:
        from ..files import atomic_write

        atomic_write(args.out, lambda tmp: Path(tmp).write_text(report), replace=args.overwrite)
    return 0


def _load_lr_latents(folder: str, limit: int | None) -> list:
    """Raw LR latents from a folder of ComfyUI .latent files or of training pair shards."""
    from ..latent_formats import get_format
    from ..latent_io import load_latent
    from ..weights import read_safetensors

    d = Path(folder)
    if not d.is_dir():
        raise CLIError(f"--latents {folder!r} is not a folder")
    out = []
    for f in sorted(d.iterdir()):
        if f.suffix == ".latent":
            out.append(load_latent(f))
        elif f.suffix == ".safetensors":
            tensors, meta = read_safetensors(f)
            if meta.get("kind") == "simplegvr-pairs":
                fmt = get_format(meta.get("latent_format", "wan21"))
                out += [fmt.denormalise(x[None].float()) for x in tensors["lr"]]
        if limit and len(out) >= limit:
            break
    if not out:
        raise CLIError(f"no .latent files or pair shards in {folder!r}")
    return out[:limit] if limit else out


def _cmd_analyze_detail(args) -> int:
    from ..checkpoint import load_checkpoint
    from ..files import check_output
    from ..timesteps import analyze_detail

    check_output(args.out, overwrite=args.overwrite, inputs=[args.checkpoint], what="--out")
    model = load_checkpoint(args.checkpoint).eval()
    latents = _load_lr_latents(args.latents, args.limit)
    print(f"analyzing {len(latents)} LR latents with {args.steps} steps ...", file=sys.stderr)
    curve = analyze_detail(
        model,
        latents,
        steps=args.steps,
        shift=args.shift,
        scale=args.scale,
        noise_level=args.noise_level,
        cutoff=args.cutoff,
        floor=args.floor,
        seed=args.seed,
        source=str(args.checkpoint),
        progress=True,
    )
    curve.save(args.out, replace=args.overwrite)
    peak = max(range(len(curve.density)), key=lambda i: curve.density[i])
    print(
        f"wrote {args.out}: density over {len(curve.density)} sigma bins, peak at sigma "
        f"[{curve.edges[peak]:.3f}, {curve.edges[peak + 1]:.3f}]"
    )
    return 0


def register(sub) -> None:
    """Add this module's subcommands to the `simplegvr` parser."""
    b = sub.add_parser(
        "bench",
        help="FLOPs and CPU time of the attention modes (full / temporal_units / sparse_local)",
    )
    b.add_argument(
        "--config", default="wan2.1-1.3b", help="named model config to count (default: wan2.1-1.3b)"
    )
    b.add_argument(
        "--latent",
        type=int,
        nargs=3,
        default=[20, 135, 240],
        metavar=("T", "H", "W"),
        help="latent size to count FLOPs at (default: 20 135 240 = 77 frames at 1080p)",
    )
    b.add_argument("--repeats", type=int, default=3, help="CPU timing repeats (median is reported)")
    b.add_argument("--no-cpu", action="store_true", help="skip the CPU wall-time measurement")
    b.add_argument("--out", help="also write the Markdown report to this file")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    b.set_defaults(func=_cmd_bench)
    a = sub.add_parser(
        "analyze-detail",
        help="measure where sampling creates detail: the detail-aware timestep curve",
    )
    a.add_argument(
        "--checkpoint",
        required=True,
        help="a SimpleGVR checkpoint trained with the uniform sampler",
    )
    a.add_argument(
        "--latents",
        required=True,
        help="folder of LR .latent files (raw scale) or training pair shards",
    )
    a.add_argument("--out", required=True, help="output curve (.json) for train.detail_curve")
    a.add_argument(
        "--steps", type=int, default=50, help="sampling steps (default 50, as the paper)"
    )
    a.add_argument("--shift", type=float, default=5.0)
    a.add_argument("--scale", type=float, default=None, help="upscale factor (default 2.25)")
    a.add_argument("--noise-level", type=float, default=0.4)
    a.add_argument(
        "--cutoff",
        type=float,
        default=0.5,
        help="high band: DCT frequencies with u/H + v/W > cutoff",
    )
    a.add_argument("--floor", type=float, default=0.1, help="uniform mixture weight of the density")
    a.add_argument(
        "--limit", type=int, default=None, help="use at most this many latents (default all)"
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    a.set_defaults(func=_cmd_analyze_detail)
