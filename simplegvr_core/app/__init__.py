"""The `simplegvr` command: upscale | demo | import-wan | convert-cogvideox | download-wan |
download-cogvideox | info | bench | analyze-detail | degrade (one module a group of subcommands,
each with its `register`).

Shipped with the package, above the library: the library never imports it. Every failure is one line
on stderr and a non-zero exit (`--debug` shows the traceback; `console`); files are written to a
temporary name and renamed when complete (`files`).
"""

from __future__ import annotations

import argparse
import sys

from ..console import ERRORS, EXIT_ERROR, EXIT_INTERRUPTED, CLIError, one_line, sigterm_as_interrupt
from . import analysis, degrade, demo, upscale, weights

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simplegvr", description="SimpleGVR: latent-cascaded video super-resolution."
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (upscale, demo, weights, analysis, degrade):
        group.register(sub)
    return p


def _message_prefix() -> str | None:
    """How this process signs its error line: '' alone or as rank 0; ' [rank r]' for another rank
    once the process group exists (its failure is its own); None for another rank before that, whose
    error is the one rank 0 prints (the same arguments and files give every rank the same error)."""
    from .. import parallel

    rank = parallel.env_rank()
    if rank == 0:
        return ""
    import torch.distributed as dist

    return f" [rank {rank}]" if dist.is_available() and dist.is_initialized() else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sigterm_as_interrupt()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if _message_prefix() == "":
            print("simplegvr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, *ERRORS) as e:
        if args.debug:
            raise
        prefix = _message_prefix()
        if prefix is not None:
            print(f"simplegvr{prefix}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
