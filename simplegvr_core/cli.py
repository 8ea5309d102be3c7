"""`simplegvr` command line: upscale | degrade | bench | import-wan | download-wan | download-cogvideox |
convert-cogvideox | analyze-detail | info.

Every failure is one line on stderr and a non-zero exit (`--debug` shows the traceback). Files are
written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


def _cmd_bench(args) -> int:
    from .bench import attention_report, cpu_times, dit_flops
    from .files import check_output

    if args.out:
        check_output(args.out, overwrite=args.overwrite, what="--out")
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
        from .files import atomic_write

        atomic_write(args.out, lambda tmp: Path(tmp).write_text(report), replace=args.overwrite)
    return 0


def _cmd_import_wan(args) -> int:
    from .checkpoint import IMPORTED_METADATA, import_wan, save_checkpoint
    from .files import check_output

    check_output(args.out, overwrite=args.overwrite, inputs=[args.wan], what="--out")
    model = import_wan(args.wan, config=args.config, upsampler=args.upsampler, num_heads=args.num_heads,
                       latent_format=args.latent_format, attention=args.attention, seed=args.seed)
    save_checkpoint(model, args.out, extra_metadata=IMPORTED_METADATA, replace=args.overwrite)  # marked untrained
    n = model.num_parameters()
    print(f"wrote {args.out}: config {model.config.name}, {model.config.latent_format} latents, DiT {n['dit'] / 1e6:.1f}M + "
          f"upsampler ({model.config.upsampler.mode}) {n['upsampler'] / 1e6:.2f}M parameters")
    return 0


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
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'auto' or a whole number of steps") from None


def resolve_device(name: str | None) -> str:
    """The torch device for --device (default: cuda if this torch has it, else cpu); CLIError if unusable."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name!r}: not a torch device (expected cpu, cuda, cuda:1, mps ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: this torch ({torch.__version__}) has no usable CUDA device; use --device cpu")
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

    from . import parallel
    from .checkpoint import checkpoint_config, load_checkpoint, read_metadata, read_safetensors, untrained_warning
    from .files import check_output, clean_stale_temporaries
    from .latent_formats import read_latent
    from .latent_io import load_latent, save_latent
    from .pipeline import aspect_warning, auto_plan, available_memory, build_condition, sample, sampling_sigmas

    world, rank = parallel.env_world(), parallel.env_rank()
    if world > 1:  # under torchrun: refused before any process joins the group, the same way on every one
        parallel.check_world(checkpoint_config(args.checkpoint).dit.num_heads, world)
    sizes = [name for name, v in (("--width/--height", args.width if args.width is not None else args.height),
                                  ("--scale", args.scale), ("--short-edge", args.short_edge),
                                  ("--long-edge", args.long_edge)) if v is not None]
    if (args.width is None) != (args.height is None):
        raise CLIError("give both --width and --height (pixels), or --short-edge / --long-edge / --scale")
    if len(sizes) > 1:
        raise CLIError(f"give one of --width/--height, --scale, --short-edge or --long-edge, not {' and '.join(sizes)}")
    out = check_output(args.out, overwrite=args.overwrite, what="--out",
                       inputs=[p for p in (args.latent, args.checkpoint, args.prompt_embeds) if p])
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
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        warning = untrained_warning(read_metadata(args.checkpoint), Path(args.checkpoint).name)
        if warning:
            say(f"warning: {warning}")
        model = load_checkpoint(args.checkpoint, device=device, dtype=dtype).eval()
        parallel.enable(model.dit, sp)
        shift = 5.0 if args.shift is None else args.shift
        sampling_sigmas(model, args.steps, shift)  # refuse bad --steps / --shift before the condition is built
        lr = read_latent(load_latent(args.latent), model.latent_format, args.latent_scale, "LR latent")
        if args.latent_scale == "auto":
            say(f"{Path(args.latent).name}: {lr.note}")
        positive = negative = None
        if args.prompt_embeds:
            emb, _ = read_safetensors(args.prompt_embeds)
            if "positive" not in emb:
                raise CLIError(f"{args.prompt_embeds!r} has no 'positive' tensor (keys: {sorted(emb)})")
            positive, negative = emb["positive"], emb.get("negative")
        # Every process builds the same condition and runs the same ODE; the DiT's tokens are split among them.
        manual = args.chunk_frames is not None or args.tile is not None
        cond = build_condition(model, lr, width=args.width, height=args.height, scale=args.scale,
                               short_edge=args.short_edge, long_edge=args.long_edge, noise_level=args.noise_level,
                               seed=args.seed, chunk_frames=8 if manual else "auto", memory_budget=budget)
        stretched = aspect_warning(model, tuple(lr.raw.shape[-2:]), tuple(cond.c.shape[-2:]))
        if stretched:
            say(f"warning: {stretched}")
        plan = None
        if not manual:
            limit = available_memory(device) if budget == "auto" else budget
            plan = auto_plan(model, tuple(cond.c.shape), limit, cfg=args.cfg, dtype=dtype, attention=args.attention)
            say(f"memory auto ({limit / 1024**3:.1f} GiB): {plan.describe()}")
        if args.steps == "auto":
            r = model.sampling
            say(f"steps auto: {r.steps} (the checkpoint's recommendation, "
                f"{'its timesteps' if r.timesteps else f'shift {r.shift:g}'})"
                + ("; --shift applies to explicit --steps only" if args.shift is not None else ""))
        hr = sample(model, cond, context=positive, negative_context=negative, steps=args.steps, cfg=args.cfg,
                    shift=shift, seed=args.seed, attention=args.attention, sampler=args.sampler,
                    chunk_frames=args.chunk_frames if args.chunk_frames is not None else "auto",
                    tile_size=_parse_tile(args.tile), plan=plan, colour_fix=args.colour_fix, progress=rank == 0,
                    memory_budget=budget)
        if rank == 0:  # one output, written atomically
            save_latent(hr.cpu(), out, metadata={"simplegvr": f"upscaled from {Path(args.latent).name}"},
                        replace=args.overwrite)
            print(f"wrote {out}: {tuple(lr.raw.shape)} -> {tuple(hr.shape)}"
                  + (f" ({world} processes, sequence-parallel)" if sp is not None else ""))
        if sp is not None:
            import torch.distributed as dist

            dist.barrier()
    finally:
        if sp is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _load_lr_latents(folder: str, limit: int | None) -> list:
    """Raw LR latents from a folder of ComfyUI .latent files or of training pair shards."""
    from .checkpoint import read_safetensors
    from .latent_formats import get_format
    from .latent_io import load_latent

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
    from .checkpoint import load_checkpoint
    from .files import check_output
    from .timesteps import analyze_detail

    check_output(args.out, overwrite=args.overwrite, inputs=[args.checkpoint], what="--out")
    model = load_checkpoint(args.checkpoint).eval()
    latents = _load_lr_latents(args.latents, args.limit)
    print(f"analyzing {len(latents)} LR latents with {args.steps} steps ...", file=sys.stderr)
    curve = analyze_detail(model, latents, steps=args.steps, shift=args.shift, scale=args.scale,
                           noise_level=args.noise_level, cutoff=args.cutoff, floor=args.floor, seed=args.seed,
                           source=str(args.checkpoint), progress=True)
    curve.save(args.out, replace=args.overwrite)
    peak = max(range(len(curve.density)), key=lambda i: curve.density[i])
    print(f"wrote {args.out}: density over {len(curve.density)} sigma bins, peak at sigma "
          f"[{curve.edges[peak]:.3f}, {curve.edges[peak + 1]:.3f}]")
    return 0


# What `download-wan` / `download-cogvideox` fetch: the diffusers-format repositories training reads (VAE, text
# encoder, tokenizer; the transformer for `import-wan` / `convert-cogvideox`). Downloads run only on these commands.
WAN_REPOS = {"wan2.1-1.3b": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan2.2-ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers"}
WAN_DIFFUSERS_REPO = WAN_REPOS["wan2.1-1.3b"]
COGVIDEOX_REPOS = {"cogvideox-5b": "THUDM/CogVideoX-5b", "cogvideox-2b": "THUDM/CogVideoX-2b"}
REPO_PARTS = ("vae", "text_encoder", "tokenizer", "transformer", "scheduler")


def _snapshot(repo: str, out: str, parts: list[str]) -> int:
    bad = [p for p in parts if p not in REPO_PARTS]
    if bad:
        raise CLIError(f"--parts {' '.join(bad)}: expected subfolders among {' '.join(REPO_PARTS)}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CLIError("downloading needs huggingface-hub: pip install 'simplegvr[train]'") from None
    patterns = ["model_index.json"] + [f"{p}/*" for p in parts]
    print(f"downloading {', '.join(parts)} of {repo} to {out} ...", file=sys.stderr)
    path = snapshot_download(repo_id=repo, local_dir=out, allow_patterns=patterns)
    print(f"wrote {path}")
    return 0


def _cmd_download_wan(args) -> int:
    return _snapshot(args.repo or WAN_REPOS[args.model], args.out, args.parts)


def _cmd_download_cogvideox(args) -> int:
    return _snapshot(args.repo or COGVIDEOX_REPOS[args.model], args.out, args.parts)


def _cmd_convert_cogvideox(args) -> int:
    import torch

    from .checkpoint import convert_cogvideox
    from .files import check_output

    out = check_output(args.out, overwrite=args.overwrite, inputs=[args.transformer], what="--out")
    dtype = {"keep": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    path = convert_cogvideox(args.transformer, out, dtype=dtype, replace=args.overwrite)
    print(f"wrote {path} (ComfyUI's CogVideoX key names: put it in ComfyUI/models/diffusion_models/)")
    return 0


def _cmd_demo(args) -> int:
    from . import demo
    from .clips import list_media

    if args.steps is not None and not 1 <= args.steps <= 10_000:
        raise CLIError(f"--steps {args.steps}: expected 1 to 10000")
    if args.clips is not None and args.clips < 1:
        raise CLIError(f"--clips {args.clips}: expected at least 1 clip")
    if args.retrain:
        manifest = demo.retrain(args.assets, args.work, quick=args.quick)
        print(f"rebuilt the demo weights in {manifest['seconds']:.0f} s")
    model, vae, chosen = demo.load_model(args.assets, teacher=args.teacher)  # the codec and weights, read once
    steps = args.steps or chosen["steps"]
    shift = args.shift if args.shift is not None else chosen["shift"]
    noise = args.noise_level if args.noise_level is not None else chosen["noise_level"]

    def log(msg):
        print(msg, file=sys.stderr)

    clips, skipped = None, []
    if args.videos:
        paths = list_media(args.videos, exclude=args.out)  # the demo's own outputs are not inputs
        if len(paths) > demo.MAX_VIDEOS and args.clips is None:
            raise CLIError(f"--videos: {len(paths)} videos found; the demo takes at most {demo.MAX_VIDEOS} at a time: "
                           "pass --clips N to run the first N")
        clips = demo.iter_clips(paths[:args.clips] if args.clips else paths, skipped, log)
    elif args.clips:
        from .clips import split_files

        clips = demo.iter_clips(split_files("test")[:args.clips], skipped, log)
    writer = demo.OutputWriter(args.out)  # refused here, before any clip is computed, if --out cannot be a folder
    try:
        results = demo.evaluate(model, vae, clips, steps=steps, shift=shift, noise_level=noise, seed=args.seed,
                                lr_mode=args.lr_mode, role=chosen["model"], log=log, keep_videos=False,
                                on_clip=writer.add, skipped=skipped)
        files = writer.finish(results)
    except BaseException:
        writer.abort()
        raise
    st = results["settings"]
    print(f"SimpleGVR demo: {st['clips']} clips ({st['source']}), {demo.FRAMES} frames, {demo.LR_SIZE}x{demo.LR_SIZE} -> "
          f"{demo.HR_SIZE}x{demo.HR_SIZE} ({'clean area downscale' if args.lr_mode == 'area' else 'flow-guided T2V artefacts'}),"
          f" {steps} Euler steps (shift {shift}, noise level {noise}); model: the {chosen['model']}"
          + (" (the one-step SimpleGVR; --teacher runs the multi-step flow model)" if chosen["model"] == "student" else ""))
    print(demo.format_table(results))
    print()
    print(demo.format_comparisons(results))
    if results["skipped"]:
        print(f"skipped {len(results['skipped'])}: " + "; ".join(results["skipped"]))
    print(f"wrote {files['video']} ({files['frames']} frames), {files['grid']}, {files['json']}")
    return 0


def _cmd_info(args) -> int:
    from .checkpoint import TRAINED_STEPS_KEY, load_checkpoint, read_metadata, untrained_warning

    model = load_checkpoint(args.checkpoint)
    meta = read_metadata(args.checkpoint)
    print(model.config.to_json())
    print({k: f"{v:,}" for k, v in model.num_parameters().items()})
    print(f"trained steps: {meta.get(TRAINED_STEPS_KEY, 'not recorded')}")
    warning = untrained_warning(meta, Path(args.checkpoint).name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simplegvr", description="SimpleGVR: latent-cascaded video super-resolution.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    u = sub.add_parser("upscale", help="upscale a ComfyUI .latent file (e.g. from SaveLatent) with a SimpleGVR checkpoint",
                       description="Upscale a ComfyUI .latent file. Under `torchrun --nproc_per_node=N -m simplegvr_core "
                       "upscale ...` the DiT's tokens are split across the N processes (sequence parallelism; N must "
                       "divide the model's attention heads, 12 for Wan 1.3B: 2, 3, 4, 6 or 12) and rank 0 writes the "
                       "one output file.")
    u.add_argument("--checkpoint", required=True, help="SimpleGVR checkpoint (.safetensors)")
    u.add_argument("--latent", required=True, help="input LR latent: a ComfyUI .latent file in raw VAE scale")
    u.add_argument("--out", required=True, help="output HR .latent file (LoadLatent reads it)")
    u.add_argument("--width", type=int, help="target width in pixels (with --height), e.g. 1920")
    u.add_argument("--height", type=int, help="target height in pixels (with --width), e.g. 1080")
    u.add_argument("--scale", type=float, help="target scale instead of a size (default 2.25: 480p -> 1080p)")
    u.add_argument("--short-edge", type=int, help="pixels of the output's short side, keeping the aspect ratio (e.g. 1080)")
    u.add_argument("--long-edge", type=int, help="pixels of the output's long side, keeping the aspect ratio (e.g. 1920)")
    u.add_argument("--latent-scale", choices=["auto", "raw", "normalised"], default="raw",
                   help="scale of the input latent: raw (SaveLatent files, the default), normalised (model space), or "
                        "auto (decided from its channel statistics); the output is always raw")
    u.add_argument("--steps", type=_parse_steps, default="auto",
                   help="sampling steps, or auto (the default): the checkpoint's recommendation and its schedule "
                        "(50 for a teacher, e.g. 1 for a distilled model)")
    u.add_argument("--cfg", type=float, default=5.0, help="text guidance scale; 1 = one forward per step (default 5)")
    u.add_argument("--shift", type=float, default=None,
                   help="flow time shift for explicit --steps (default 5, Wan's); auto steps use the checkpoint's")
    u.add_argument("--noise-level", type=float, default=0.4, help="condition noise level s in [0,1] (default 0.4)")
    u.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    u.add_argument("--attention", choices=["full", "temporal_units", "sparse_local"], default=None,
                   help="attention mode (default: the checkpoint's)")
    u.add_argument("--sampler", choices=["euler", "heun"], default="euler", help="ODE sampler (default euler)")
    u.add_argument("--chunk-frames", type=int, default=None,
                   help="DiT temporal window in latent frames (default: auto, planned for the free memory; with --tile "
                        "alone: the trained length for full, the whole clip otherwise)")
    u.add_argument("--tile", default=None, help="spatial DiT tiles HxW in latent pixels, e.g. 68x120 (default: auto)")
    u.add_argument("--colour-fix", choices=["none", "latent AdaIN"], default="none",
                   help="match each HR latent channel's clip mean/std to the upsampled LR latent's (default none)")
    u.add_argument("--prompt-embeds", default=None,
                   help="safetensors with 'positive' (and optional 'negative') umt5 features [L,4096]; default: null prompt")
    u.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    u.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="model dtype (default fp32)")
    u.add_argument("--max-memory", type=float, default=None, metavar="GiB",
                   help="memory the run may plan for (default: what the device has available now): auto memory "
                        "picks temporal windows and tiles that fit it; runs whose estimate exceeds it are refused "
                        "before anything large is allocated")
    u.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    u.set_defaults(func=_cmd_upscale)

    d = sub.add_parser("demo", help="run the whole cascade on real AI-generated clips (the test split) with the embedded "
                       "demo weights", description="Upscale the test split of the demo clips (real text/image-to-video "
                       "output, 17 frames, 64x64 -> 128x128) in latent space with the embedded demo SimpleGVR and its "
                       "Wan-contract codec, and compare with decode + bicubic and latent bilinear + decode: PSNR / SSIM "
                       "against the HR clip, temporal warp error, detail (HF energy ratio), blockiness, seconds per clip, "
                       "and 95% paired bootstrap intervals over clips. Writes side_by_side.mp4, grid.png and "
                       "results.json to --out.")
    d.add_argument("--out", default="simplegvr_demo", help="output folder (default ./simplegvr_demo/)")
    d.add_argument("--videos", nargs="+", default=None, metavar="PATH",
                   help="your own videos (mp4/mkv/webm/mov/animated WebP, or folders of them) instead of the test split, "
                        "cut and scaled exactly as the test split is")
    d.add_argument("--clips", type=int, default=None,
                   help="only the first N test clips (default: all 14), or the first N of --videos")
    d.add_argument("--lr-mode", choices=["area", "flow"], default="area",
                   help="the LR: a clean 2x area downscale (default), or the paper's setting with flow-guided T2V artefacts")
    d.add_argument("--teacher", action="store_true",
                   help="run the teacher (the flow-matching model) even where a distilled student is the default")
    d.add_argument("--steps", type=int, default=None, help="sampling steps (default: the chosen model's)")
    d.add_argument("--shift", type=float, default=None, help="flow shift (default: the manifest's)")
    d.add_argument("--noise-level", type=float, default=None, help="condition noise level (default: the manifest's)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--retrain", action="store_true",
                   help="rebuild the demo codec, the teacher and the one-step model from scratch first (under 45 minutes "
                        "on 2 CPU cores)")
    d.add_argument("--quick", action="store_true", help="with --retrain: a shortened run (tests; weights are poor)")
    d.add_argument("--assets", default=None, help="weights folder (default: the package's assets/)")
    d.add_argument("--work", default="runs/demo", help="with --retrain: scratch folder for the train list, pairs and checkpoints")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="FLOPs and CPU time of the attention modes (full / temporal_units / sparse_local)")
    b.add_argument("--config", default="wan2.1-1.3b", help="named model config to count (default: wan2.1-1.3b)")
    b.add_argument("--latent", type=int, nargs=3, default=[20, 135, 240], metavar=("T", "H", "W"),
                   help="latent size to count FLOPs at (default: 20 135 240 = 77 frames at 1080p)")
    b.add_argument("--repeats", type=int, default=3, help="CPU timing repeats (median is reported)")
    b.add_argument("--no-cpu", action="store_true", help="skip the CPU wall-time measurement")
    b.add_argument("--out", help="also write the Markdown report to this file")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    b.set_defaults(func=_cmd_bench)

    w = sub.add_parser("import-wan", help="make a SimpleGVR checkpoint from a Wan 2.1 / 2.2 T2V transformer")
    w.add_argument("--wan", required=True, help="Wan transformer weights (.safetensors file, or a folder of shards): "
                                                "original, ComfyUI or diffusers key format")
    w.add_argument("--out", required=True, help="output SimpleGVR checkpoint (.safetensors)")
    w.add_argument("--config", default=None,
                   help="named target config, checked against the weights: wan2.1-1.3b, wan2.2-ti2v-5b, or cogvideox-1.3b "
                        "(from Wan 2.1 1.3B weights); default: inferred from the weights' shapes")
    w.add_argument("--upsampler", default=None, choices=["learned", "interp", "channel_only"],
                   help="latent upsampler variant (default: the config's, learned)")
    w.add_argument("--num-heads", type=int, default=None, help="attention heads (default: known 1.3B/5B/14B sizes)")
    w.add_argument("--latent-format", default=None, help="wan21 | wan22 | cogvideox_2b | cogvideox_5b (default: the "
                                                         "config's, else by channels)")
    w.add_argument("--attention", default=None, choices=["full", "temporal_units", "sparse_local"],
                   help="attention mode stored in the config, switchable at inference (default: the config's, else full)")
    w.add_argument("--seed", type=int, default=0, help="seed for the newly initialised weights")
    w.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never one of the inputs)")
    w.set_defaults(func=_cmd_import_wan)

    a = sub.add_parser("analyze-detail", help="measure where sampling creates detail: the detail-aware timestep curve")
    a.add_argument("--checkpoint", required=True, help="a SimpleGVR checkpoint trained with the uniform sampler")
    a.add_argument("--latents", required=True, help="folder of LR .latent files (raw scale) or training pair shards")
    a.add_argument("--out", required=True, help="output curve (.json) for train.detail_curve")
    a.add_argument("--steps", type=int, default=50, help="sampling steps (default 50, as the paper)")
    a.add_argument("--shift", type=float, default=5.0)
    a.add_argument("--scale", type=float, default=None, help="upscale factor (default 2.25)")
    a.add_argument("--noise-level", type=float, default=0.4)
    a.add_argument("--cutoff", type=float, default=0.5, help="high band: DCT frequencies with u/H + v/W > cutoff")
    a.add_argument("--floor", type=float, default=0.1, help="uniform mixture weight of the density")
    a.add_argument("--limit", type=int, default=None, help="use at most this many latents (default all)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    a.set_defaults(func=_cmd_analyze_detail)

    dw = sub.add_parser("download-wan", help="download Wan 2.1 T2V 1.3B or Wan 2.2 TI2V 5B (diffusers format) from the "
                                             "Hugging Face hub")
    dw.add_argument("--out", required=True, help="target folder")
    dw.add_argument("--model", default="wan2.1-1.3b", choices=sorted(WAN_REPOS),
                    help=f"which Wan (default wan2.1-1.3b): {', '.join(f'{k} = {v}' for k, v in WAN_REPOS.items())}")
    dw.add_argument("--repo", default=None, help="another hub repository in the same layout (overrides --model)")
    dw.add_argument("--parts", nargs="+", default=["vae", "text_encoder", "tokenizer", "transformer"],
                    help="subfolders to fetch (default: vae text_encoder tokenizer transformer)")
    dw.set_defaults(func=_cmd_download_wan)

    dc = sub.add_parser("download-cogvideox", help="download CogVideoX's VAE and T5-XXL text encoder (diffusers format) "
                                                   "from the Hugging Face hub, for training")
    dc.add_argument("--out", required=True, help="target folder")
    dc.add_argument("--model", default="cogvideox-5b", choices=sorted(COGVIDEOX_REPOS),
                    help=f"which CogVideoX (default cogvideox-5b; both share the VAE and T5): "
                         f"{', '.join(f'{k} = {v}' for k, v in COGVIDEOX_REPOS.items())}")
    dc.add_argument("--repo", default=None, help="another hub repository in the same layout (overrides --model)")
    dc.add_argument("--parts", nargs="+", default=["vae", "text_encoder", "tokenizer"],
                    help="subfolders to fetch (default: vae text_encoder tokenizer; add transformer for "
                         "convert-cogvideox)")
    dc.set_defaults(func=_cmd_download_cogvideox)

    cc = sub.add_parser("convert-cogvideox", help="write a diffusers CogVideoX transformer in ComfyUI's key names (one "
                                                  "file for UNETLoader)")
    cc.add_argument("--transformer", required=True,
                    help="the diffusers transformer: a folder of shards (download-cogvideox ... --parts transformer) or "
                         "a .safetensors file")
    cc.add_argument("--out", required=True, help="output .safetensors, e.g. ComfyUI/models/diffusion_models/"
                                                 "cogvideox_5b_transformer_bf16.safetensors")
    cc.add_argument("--dtype", default="keep", choices=["keep", "bf16", "fp16", "fp32"],
                    help="cast the weights (default: keep; CogVideoX-5b is published in bf16)")
    cc.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    cc.set_defaults(func=_cmd_convert_cogvideox)

    i = sub.add_parser("info", help="print a checkpoint's config and parameter counts")
    i.add_argument("checkpoint")
    i.set_defaults(func=_cmd_info)
    from .degrade.cli import register as register_degrade
    register_degrade(sub)
    return p


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler, `kill`) and SIGHUP (a closing terminal or SSH session) stop a run as Ctrl-C does:
    temporaries are removed, nothing half-written is left. Only the main thread can install handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):  # SIGHUP does not exist on Windows
            signal.signal(getattr(signal, name), handler)


def _message_prefix() -> str | None:
    """How this process signs its error line: '' alone or as rank 0; ' [rank r]' for another rank once the process
    group exists (its failure is its own); None for another rank before that, whose error is the one rank 0 prints
    (the same arguments and files give every rank the same error)."""
    from . import parallel

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
    except (CLIError, ValueError, OSError, RuntimeError, MemoryError) as e:
        if args.debug:
            raise
        prefix = _message_prefix()
        if prefix is not None:
            print(f"simplegvr{prefix}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR


def report_errors(prog: str, fn, debug: bool = False) -> int:
    """Run `fn()` for a script's main: 0 when it returns; a ValueError / OSError / MemoryError becomes one line on
    stderr (`prog: error: ...`) and exit code 2, or is re-raised with `debug` (the scripts' --debug)."""
    try:
        fn()
    except (ValueError, OSError, MemoryError) as e:
        if debug:
            raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


def one_line(e: BaseException) -> str:
    """The first line of an error's message (its type when it has none; MemoryError says what it is)."""
    if isinstance(e, MemoryError):
        return "out of memory" + (f" ({str(e).strip().splitlines()[0]})" if str(e).strip() else "") + \
            ": use smaller sizes, tiles or chunks"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
