"""`simplegvr` command line: bench | import-wan | info.

Every failure is one line on stderr and a non-zero exit (`--debug` shows the traceback). Files are
written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


def _cmd_bench(args) -> int:
    from .bench import attention_report, cpu_times, dit_flops

    size = tuple(args.latent)
    print(f"counting FLOPs of one {args.config} DiT forward at latent {size} per attention mode (meta device) ...",
          file=sys.stderr)
    flops = dit_flops(args.config, size)
    times = None
    if not args.no_cpu:
        print("timing a small DiT on the CPU ...", file=sys.stderr)
        times = cpu_times(repeats=args.repeats)
    report = attention_report(flops, times, size, (10, 32, 48))
    print(report)
    if args.out:
        from .checkpoint import atomic_write

        atomic_write(args.out, lambda tmp: Path(tmp).write_text(report))
    return 0


def _cmd_import_wan(args) -> int:
    from .checkpoint import import_wan, save_checkpoint

    model = import_wan(args.wan, upsampler=args.upsampler, num_heads=args.num_heads,
                       latent_format=args.latent_format, attention=args.attention, seed=args.seed)
    save_checkpoint(model, args.out)
    n = model.num_parameters()
    print(f"wrote {args.out}: {model.config.latent_format} latents, DiT {n['dit'] / 1e6:.1f}M + upsampler "
          f"({args.upsampler}) {n['upsampler'] / 1e6:.2f}M parameters")
    return 0


def _cmd_info(args) -> int:
    from .checkpoint import load_checkpoint

    model = load_checkpoint(args.checkpoint)
    print(model.config.to_json())
    print({k: f"{v:,}" for k, v in model.num_parameters().items()})
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simplegvr", description="SimpleGVR: latent-cascaded video super-resolution.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="FLOPs and CPU time of the attention modes (full / temporal_units / sparse_local)")
    b.add_argument("--config", default="wan2.1-1.3b", help="named model config to count (default: wan2.1-1.3b)")
    b.add_argument("--latent", type=int, nargs=3, default=[20, 135, 240], metavar=("T", "H", "W"),
                   help="latent size to count FLOPs at (default: 20 135 240 = 77 frames at 1080p)")
    b.add_argument("--repeats", type=int, default=3, help="CPU timing repeats (median is reported)")
    b.add_argument("--no-cpu", action="store_true", help="skip the CPU wall-time measurement")
    b.add_argument("--out", help="also write the Markdown report to this file")
    b.set_defaults(func=_cmd_bench)

    w = sub.add_parser("import-wan", help="make a SimpleGVR checkpoint from a Wan 2.1 T2V transformer (.safetensors)")
    w.add_argument("--wan", required=True, help="Wan transformer weights: original, ComfyUI or diffusers key format")
    w.add_argument("--out", required=True, help="output SimpleGVR checkpoint (.safetensors)")
    w.add_argument("--upsampler", default="learned", choices=["learned", "interp", "channel_only"],
                   help="latent upsampler variant (default: learned)")
    w.add_argument("--num-heads", type=int, default=None, help="attention heads (default: known 1.3B/5B/14B sizes)")
    w.add_argument("--latent-format", default=None, help="wan21 | wan22 | cogvideox_2b | cogvideox_5b (default: by channels)")
    w.add_argument("--attention", default="full", choices=["full", "temporal_units", "sparse_local"],
                   help="attention mode stored in the config (switchable at inference)")
    w.add_argument("--seed", type=int, default=0, help="seed for the newly initialised weights")
    w.set_defaults(func=_cmd_import_wan)

    i = sub.add_parser("info", help="print a checkpoint's config and parameter counts")
    i.add_argument("checkpoint")
    i.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("simplegvr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, ValueError, OSError, RuntimeError) as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"simplegvr: error: {msg}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
