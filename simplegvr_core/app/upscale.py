"""`simplegvr upscale`: a ComfyUI .latent file to an HR .latent file, on one process or several
(`torchrun -m simplegvr_core upscale`, sequence-parallel).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..console import CLIError


def _parse_tile(text: str | None):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CLIError(f"--tile {text!r}: expected HxW in latent pixels, e.g. 68x120") from None
    return h, w


def _parse_steps(text: str):
    """--steps: 'auto' (the checkpoint's recommended steps) or a whole number of steps."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 'auto' or a whole number of steps"
        ) from None


def _parse_auto_number(text: str):
    """--cfg / --noise-level: 'auto' (the checkpoint's recipe) or a number."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'auto' or a number") from None


def resolve_device(name: str | None) -> str:
    """The torch device for --device (default: cuda if this torch has it, else cpu); CLIError if
    unusable."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(
            f"--device {name!r}: not a torch device (expected cpu, cuda, cuda:1, mps ...)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(
            f"--device {name}: this torch ({torch.__version__}) has no usable CUDA device; use "
            f"--device cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: MPS is not available in this torch")
    return str(dev)


def memory_budget(gib: float | None):
    """--max-memory GiB -> bytes; default 'auto' (what the device has available now)."""
    import math

    if gib is None:
        return "auto"
    if not (math.isfinite(gib) and gib > 0):
        raise CLIError(f"--max-memory {gib}: expected a positive number of GiB")
    return int(gib * 1024**3)


def _cmd_upscale(args) -> int:
    import torch

    from .. import parallel
    from ..checkpoint import checkpoint_config, checkpoint_warning, load_checkpoint
    from ..files import check_output, clean_stale_temporaries
    from ..latent_formats import read_latent
    from ..latent_io import load_latent, save_latent
    from ..memory import available_memory, format_bytes
    from ..model import DTYPES
    from ..pipeline import (
        DEFAULT_SHIFT,
        build_condition,
        plan_condition,
        resolve_guidance,
        sample,
        sampling_sigmas,
    )
    from ..plan import auto_plan, plan_sampling
    from ..weights import read_metadata, read_safetensors

    world, rank = parallel.env_world(), parallel.env_rank()
    # under torchrun: refused before any process joins the group, the same way on every one
    if world > 1:
        config = checkpoint_config(args.checkpoint)
        parallel.check_world(config.dit.num_heads, world)
        parallel.check_mode(args.attention or config.dit.attention, world)
    sizes = [
        name
        for name, v in (
            ("--width/--height", args.width if args.width is not None else args.height),
            ("--scale", args.scale),
            ("--short-edge", args.short_edge),
            ("--long-edge", args.long_edge),
        )
        if v is not None
    ]
    if (args.width is None) != (args.height is None):
        raise CLIError(
            "give both --width and --height (pixels), or --short-edge / --long-edge / --scale"
        )
    if len(sizes) > 1:
        raise CLIError(
            f"give one of --width/--height, --scale, --short-edge or --long-edge, not "
            f"{' and '.join(sizes)}"
        )
    out = check_output(
        args.out,
        overwrite=args.overwrite,
        what="--out",
        inputs=[p for p in (args.latent, args.checkpoint, args.prompt_embeds) if p],
    )
    device = resolve_device(args.device)
    sp = None
    if world > 1:
        if torch.device(device).type == "cuda" and torch.device(device).index is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        parallel.init_process_group(device)
        sp = parallel.SequenceParallel()
    say = (lambda msg: print(msg, file=sys.stderr)) if rank == 0 else (lambda msg: None)
    if rank == 0:
        for p in clean_stale_temporaries(out.parent):
            say(f"removed {p.name}, a temporary file an interrupted run left")
    try:
        budget = memory_budget(args.max_memory)
        dtype = DTYPES[args.dtype]
        warning = checkpoint_warning(read_metadata(args.checkpoint), Path(args.checkpoint).name)
        if warning:
            say(f"warning: {warning}")
        model = load_checkpoint(args.checkpoint, device=device, dtype=dtype).eval()
        parallel.enable(model.dit, sp)
        shift = DEFAULT_SHIFT if args.shift is None else args.shift
        # refuse bad --steps / --shift before the condition is built
        sampling_sigmas(model, args.steps, shift)
        lr = read_latent(
            load_latent(args.latent), model.latent_format, args.latent_scale, "LR latent"
        )
        if args.latent_scale == "auto":
            say(f"{Path(args.latent).name}: {lr.note}")
        positive = negative = None
        if args.prompt_embeds:
            emb, _ = read_safetensors(args.prompt_embeds)
            if "positive" not in emb:
                raise CLIError(
                    f"{args.prompt_embeds!r} has no 'positive' tensor (keys: {sorted(emb)})"
                )
            positive, negative = emb["positive"], emb.get("negative")
        # Every process builds the same condition and runs the same ODE; the DiT's tokens are split
        # among them.
        manual = args.chunk_frames is not None or args.tile is not None
        cplan = plan_condition(
            model,
            lr.raw.shape,
            width=args.width,
            height=args.height,
            scale=args.scale,
            short_edge=args.short_edge,
            long_edge=args.long_edge,
            chunk_frames=8 if manual else "auto",
            memory_budget=budget,
        )
        for warning in cplan.warnings:
            say(f"warning: {warning}")
        cond = build_condition(model, lr, cplan, noise_level=args.noise_level, seed=args.seed)
        shape = tuple(cond.c.shape)
        if manual:
            plan = plan_sampling(
                model,
                shape,
                attention=args.attention,
                chunk_frames=args.chunk_frames if args.chunk_frames is not None else "auto",
                tile_size=_parse_tile(args.tile),
            )
        else:
            limit = available_memory(device) if budget == "auto" else budget
            plan = auto_plan(
                model,
                shape,
                limit,
                guidance=resolve_guidance(model, args.cfg),
                dtype=dtype,
                attention=args.attention,
            )
            say(f"memory auto ({format_bytes(limit)}): {plan.describe()}")
        if args.steps == "auto":
            r = model.sampling
            say(
                f"steps auto: {r.steps} (the checkpoint's recommendation, "
                f"{'its timesteps' if r.timesteps else f'shift {r.shift:g}'})"
                + ("; --shift applies to explicit --steps only" if args.shift is not None else "")
            )
        hr = sample(
            model,
            cond,
            plan,
            context=positive,
            negative_context=negative,
            steps=args.steps,
            cfg=args.cfg,
            shift=shift,
            seed=args.seed,
            sampler=args.sampler,
            colour_fix=args.colour_fix,
            progress=rank == 0,
            memory_budget=budget if manual else None,
        )
        if rank == 0:  # one output, written atomically
            save_latent(
                hr.cpu(),
                out,
                metadata={"simplegvr": f"upscaled from {Path(args.latent).name}"},
                replace=args.overwrite,
            )
            print(
                f"wrote {out}: {tuple(lr.raw.shape)} -> {tuple(hr.shape)}"
                + (f" ({world} processes, sequence-parallel)" if sp is not None else "")
            )
        if sp is not None:
            import torch.distributed as dist

            dist.barrier()
    finally:
        if sp is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def register(sub) -> None:
    """Add this module's subcommands to the `simplegvr` parser."""
    from ..colour import COLOUR_FIXES
    from ..config import ATTENTION_MODES
    from ..latent_formats import LATENT_SCALES
    from ..model import DTYPES
    from ..pipeline import AUTO, DEFAULT_GUIDANCE, DEFAULT_NOISE_LEVEL, DEFAULT_SCALE, DEFAULT_SHIFT
    from ..sampling import SAMPLERS

    u = sub.add_parser(
        "upscale",
        help="upscale a ComfyUI .latent file (e.g. from SaveLatent) with a SimpleGVR checkpoint",
        description="Upscale a ComfyUI .latent file. Under `torchrun --nproc_per_node=N -m "
        "simplegvr_core upscale ...` the DiT's tokens are split across the N processes (sequence "
        "parallelism; N must divide the model's attention heads, 12 for Wan 1.3B: 2, 3, 4, 6 or "
        "12) and rank 0 writes the one output file.",
    )
    u.add_argument("--checkpoint", required=True, help="SimpleGVR checkpoint (.safetensors)")
    u.add_argument(
        "--latent", required=True, help="input LR latent: a ComfyUI .latent file in raw VAE scale"
    )
    u.add_argument("--out", required=True, help="output HR .latent file (LoadLatent reads it)")
    u.add_argument("--width", type=int, help="target width in pixels (with --height), e.g. 1920")
    u.add_argument("--height", type=int, help="target height in pixels (with --width), e.g. 1080")
    u.add_argument(
        "--scale",
        type=float,
        help=f"target scale instead of a size (default {DEFAULT_SCALE:g}: 480p -> 1080p)",
    )
    u.add_argument(
        "--short-edge",
        type=int,
        help="pixels of the output's short side, keeping the aspect ratio (e.g. 1080)",
    )
    u.add_argument(
        "--long-edge",
        type=int,
        help="pixels of the output's long side, keeping the aspect ratio (e.g. 1920)",
    )
    u.add_argument(
        "--latent-scale",
        choices=[AUTO, *LATENT_SCALES],
        default="raw",
        help="scale of the input latent: raw (SaveLatent files, the default), normalised (model "
        "space), or auto (decided from its channel statistics); the output is always raw",
    )
    u.add_argument(
        "--steps",
        type=_parse_steps,
        default=AUTO,
        help="sampling steps, or auto (the default): the checkpoint's recommendation and its "
        "schedule (50 for a teacher, e.g. 1 for a distilled model)",
    )
    u.add_argument(
        "--cfg",
        type=_parse_auto_number,
        default=AUTO,
        help=f"text guidance scale, or auto (the default): the checkpoint's recipe, else "
        f"{DEFAULT_GUIDANCE:g} (an Ultra Flash model: 1); 1 = one forward per step",
    )
    u.add_argument(
        "--shift",
        type=float,
        default=None,
        help=f"flow time shift for explicit --steps (default {DEFAULT_SHIFT:g}, Wan's); auto "
        f"steps use the checkpoint's",
    )
    u.add_argument(
        "--noise-level",
        type=_parse_auto_number,
        default=AUTO,
        help=f"condition noise level s in [0,1], or auto (the default): the checkpoint's recipe, "
        f"else {DEFAULT_NOISE_LEVEL:g} (an Ultra Flash model: 0)",
    )
    u.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    u.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default=None,
        help="attention mode (default: the checkpoint's)",
    )
    u.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=SAMPLERS[0],
        help=f"ODE sampler (default {SAMPLERS[0]})",
    )
    u.add_argument(
        "--chunk-frames",
        type=int,
        default=None,
        help="DiT temporal window in latent frames (default: auto, planned for the free memory; "
        "with --tile alone: the trained length for full, the whole clip otherwise)",
    )
    u.add_argument(
        "--tile",
        default=None,
        help="spatial DiT tiles HxW in latent pixels, e.g. 68x120 (default: auto)",
    )
    u.add_argument(
        "--colour-fix",
        choices=COLOUR_FIXES,
        default="none",
        help="match each HR latent channel's clip mean/std to the upsampled LR latent's "
        "(default none)",
    )
    u.add_argument(
        "--prompt-embeds",
        default=None,
        help="safetensors with 'positive' (and optional 'negative') umt5 features [L,4096]; "
        "default: null prompt",
    )
    u.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    u.add_argument(
        "--dtype", choices=list(DTYPES), default="fp32", help="model dtype (default fp32)"
    )
    u.add_argument(
        "--max-memory",
        type=float,
        default=None,
        metavar="GiB",
        help="memory the run may plan for (default: what the device has available now): auto "
        "memory picks temporal windows and tiles that fit it; runs whose estimate exceeds it are "
        "refused before anything large is allocated",
    )
    u.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    u.set_defaults(func=_cmd_upscale)
