"""Pre-compute training pairs as shards: HR latent, LR latent (any degradation, incl. model-guided),
caption features.

    python training/make_pairs.py --videos DIR --out SHARDS [--shard i/n] [--per-shard 64]
        [--degradation classic|flow|flow+classic|none|model|none,flow,...] [--frames 17] [--hr-size
            1920x1088] [--lr-size 848x480]
        [--latent-format wan21|wan22|cogvideox_2b --vae wan21|wan22|cogvideox --vae-path DIR]
            [--text umt5|t5 --text-path DIR]
        [--wan WAN_T2V.safetensors --alpha 0.3 0.4 --mg-steps 8 --mg-shift 1.0]   # model-guided
            (paper §4.2.2)

The input list (DIR/captions.jsonl) is cut into shards of --per-shard videos; shard k goes to
process k mod n, so a cluster launcher spreads the work with --shard i/n; under `torchrun` /
`accelerate launch` the process's RANK and WORLD_SIZE are used when --shard is omitted (and each
process takes the GPU of its LOCAL_RANK), so one command covers every rank of every node:

    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        training/make_pairs.py --videos DIR --out SHARDS --degradation flow+classic

A shard file that exists is finished and skipped, so re-running resumes (with any number of
processes). Broken or too-short videos are reported and left out. Latents are stored in model space
(normalised by the latent format); caption features once per caption.

--out is a new or empty folder, or one that holds only this script's files (shards, text caches): a
folder holding anything else is refused unless --overwrite, which writes the shards beside those
files. Nothing in the folder is ever removed or replaced (a shard that appears while it is written,
by another process, is left as it is).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simplegvr_core import seeding  # noqa: E402
from simplegvr_core.console import exit_process, one_line  # noqa: E402
from simplegvr_core.degrade import check_modes  # noqa: E402
from simplegvr_core.degrade.video_io import parse_wxh  # noqa: E402
from simplegvr_core.files import OutputExistsError  # noqa: E402
from simplegvr_core.latent_formats import get_format  # noqa: E402
from simplegvr_core.text import TEXT_KINDS  # noqa: E402
from simplegvr_core.vae import VAE_CHOICES  # noqa: E402
from training import data as D  # noqa: E402


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return rank, world
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/8") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: expected 0 <= i < n")
    return i, n


def pick_device(name: str | None) -> str:
    """--device, or CUDA (the GPU of this process's LOCAL_RANK under a launcher, so 8 processes use
    8 GPUs), or CPU."""
    if name:
        return name
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


def parse_degradation(text: str) -> str:
    if text == "model":
        return text
    try:
        check_modes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--videos", required=True, help="folder with the videos and captions.jsonl")
    ap.add_argument("--captions", default="captions.jsonl")
    ap.add_argument(
        "--out", required=True, help="folder for the shard files (new, empty, or this script's own)"
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that holds other files too (they are left as they are)",
    )
    ap.add_argument(
        "--synthesize",
        type=int,
        default=0,
        help="first write this many procedural clips (+ captions.jsonl) into --videos "
        "if it has none",
    )
    ap.add_argument(
        "--shard",
        default=None,
        help="i/n: this process's slice (default: from accelerate/torchrun env)",
    )
    ap.add_argument("--per-shard", type=int, default=64, help="videos per shard file")
    ap.add_argument(
        "--degradation",
        default="classic",
        type=parse_degradation,
        help="none | classic | flow | flow+classic | model, or several of the first four joined "
        "by commas (one drawn per clip, e.g. none,flow)",
    )
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument(
        "--hr-size",
        default="128x128",
        help="HR crop WIDTHxHEIGHT in pixels (multiples of 8), e.g. 1920x1088",
    )
    ap.add_argument(
        "--lr-size",
        default="64x64",
        help="LR size WIDTHxHEIGHT in pixels (multiples of 8), e.g. 848x480",
    )
    ap.add_argument("--latent-format", default="wan21")
    ap.add_argument(
        "--vae",
        default="tiny",
        choices=list(VAE_CHOICES),
        help="the VAE of --latent-format's family: wan21/wan22/cogvideox (diffusers folders), "
        "their tiny_* random versions (tiny = Wan 2.1), or file",
    )
    ap.add_argument("--vae-path", default=None)
    ap.add_argument(
        "--text",
        default="byte",
        choices=list(TEXT_KINDS),
        help="umt5 (Wan), t5 (CogVideoX), their tiny_* random versions, or byte",
    )
    ap.add_argument("--text-path", default=None)
    ap.add_argument(
        "--text-dim", type=int, default=4096, help="feature width for the tiny and byte encoders"
    )
    ap.add_argument(
        "--wan", default=None, help="Wan 2.1 / 2.2 T2V transformer for --degradation model"
    )
    ap.add_argument("--wan-num-heads", type=int, default=None)
    ap.add_argument(
        "--alpha", type=float, nargs=2, default=[0.3, 0.4], help="model-guided noise ratio range"
    )
    ap.add_argument("--mg-steps", type=int, default=8, help="model-guided Euler steps")
    ap.add_argument(
        "--mg-shift", type=float, default=1.0, help="model-guided sigma shift (1 = plain linspace)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(
            "make_pairs: interrupted (finished shard files are kept; rerun to resume)",
            file=sys.stderr,
        )
        return 130
    except (ValueError, OSError, MemoryError) as e:
        print(f"make_pairs: error: {one_line(e)}", file=sys.stderr)
        return 2


def run(args) -> int:
    from tqdm.auto import tqdm

    from simplegvr_core.text import TextCache, make_text_encoder
    from simplegvr_core.vae import VideoVAE

    seeding.check_seed(args.seed, "--seed")
    rank, world = parse_shard(args.shard)
    # (H, W)
    hr_size, lr_size = parse_wxh(args.hr_size, "--hr-size"), parse_wxh(args.lr_size, "--lr-size")
    fmt = get_format(args.latent_format)
    device = pick_device(args.device)
    if args.per_shard < 1:
        raise ValueError(f"--per-shard {args.per_shard}: expected at least 1")
    out = check_out_folder(args.out, args.videos, args.overwrite)
    if args.synthesize and not (Path(args.videos) / args.captions).exists():
        print(f"writing {args.synthesize} procedural clips to {args.videos}")
        D.make_synthetic_videos(
            args.videos, args.synthesize, args.frames + 8, hr_size, seed=args.seed
        )
    items = D.read_captions(args.videos, args.captions)
    n_shards = math.ceil(len(items) / args.per_shard)
    mine = [k for k in range(n_shards) if k % world == rank]
    todo = [k for k in mine if not (out / f"pairs-{k:05d}.safetensors").exists()]
    print(
        f"shard {rank}/{world}: {len(mine)} of {n_shards} shard files, {len(mine) - len(todo)} "
        f"already done"
    )
    if not todo:
        return 0
    vae = VideoVAE.load(args.vae, args.vae_path, device=device)
    vae.check_format(fmt)
    for name, (h, w) in (("--hr-size", hr_size), ("--lr-size", lr_size)):
        if h % vae.spatial_ratio or w % vae.spatial_ratio:
            raise ValueError(
                f"{name} {w}x{h}: the {vae.family} VAE needs multiples of {vae.spatial_ratio}"
            )
    text_dim = 4096 if args.text in ("umt5", "t5") else args.text_dim
    enc = make_text_encoder(args.text, text_dim, args.text_path, device=device, family=fmt.family)
    cache = TextCache(out / f"text_cache-{rank}.safetensors", enc, f"{args.text}:{text_dim}")
    base = None
    if args.degradation == "model":
        if not args.wan:
            raise ValueError(
                "--degradation model needs --wan (a Wan 2.1 / 2.2 T2V transformer .safetensors)"
            )
        if not fmt.family.startswith("Wan"):
            raise ValueError(
                f"--degradation model runs the base T2V model of the latents, here "
                f"{fmt.family}'s, which is not Wan-shaped: use flow, classic or flow+classic for "
                f"CogVideoX pairs"
            )
        from simplegvr_core.weights import import_wan_t2v

        base = import_wan_t2v(args.wan, args.wan_num_heads).to(device).eval()
        if base.config.out_dim != fmt.channels:
            raise ValueError(
                f"--wan has {base.config.out_dim} latent channels but --latent-format {fmt.name} "
                f"has {fmt.channels}"
            )
    failed = 0
    for k in tqdm(todo, desc="shards"):
        rows = items[k * args.per_shard : (k + 1) * args.per_shard]
        hrs, lrs, ctxs, caps = [], [], [], []
        for r, (path, caption) in enumerate(rows):
            rng = seeding.numpy_rng(args.seed, seeding.FILE, k, r)
            try:
                # model-guided works on latents
                mode = "none" if args.degradation == "model" else args.degradation
                hr, lr = D.clip_pair(path, args.frames, hr_size, lr_size, mode, rng)
            except (KeyboardInterrupt, SystemExit):
                raise
            # one bad video (cv2.error, MemoryError, ...) never stops the run
            except Exception as e:  # noqa: BLE001
                failed += 1
                print(
                    f"skipping {path}: {type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                    file=sys.stderr,
                )
                continue
            hr_lat = fmt.normalise(vae.encode(torch.from_numpy(hr)[None]))
            lr_lat = fmt.normalise(vae.encode(torch.from_numpy(lr)[None]))
            cache.encode_all([caption] if caption else [])
            ctx = cache[caption] if caption else torch.zeros(1, text_dim)
            if base is not None:
                lr_lat = model_guided(base, lr_lat, ctx, rng, args, device)
            hrs.append(hr_lat.cpu())
            lrs.append(lr_lat.cpu())
            ctxs.append(ctx)
            caps.append(caption)
        if not hrs:
            print(f"shard {k}: no usable videos", file=sys.stderr)
            continue
        try:
            D.write_shard(
                out / f"pairs-{k:05d}.safetensors",
                torch.cat(hrs),
                torch.cat(lrs),
                ctxs,
                caps,
                fmt.name,
                replace=False,
                extra={
                    "degradation": args.degradation,
                    "frames": args.frames,
                    **({D.CODEC_KEY: vae.codec} if vae.codec else {}),
                },
            )
        except OutputExistsError:
            print(
                f"shard {k}: pairs-{k:05d}.safetensors appeared meanwhile (another process?); "
                "left as it is",
                file=sys.stderr,
            )
    print(f"done: {len(todo)} shard files written, {failed} videos skipped")
    return 0


OWN_FILES = re.compile(r"^(pairs-[0-9]{5,}|text_cache-[0-9]+)\.safetensors$")


def check_out_folder(out: str, videos: str, overwrite: bool) -> Path:
    """--out as a folder (created if needed) before any work: refused when it is a file, when it is
    the --videos folder, and when it holds files this script does not write (unless `overwrite`: the
    shards go beside them, and nothing there is ever removed)."""
    from simplegvr_core.files import check_output_folder, is_temporary

    p = Path(out)
    if p.is_dir() and Path(videos).is_dir() and os.path.samefile(p, videos):
        raise ValueError(
            f"--out {out!r} is the --videos folder: choose another folder for the shards"
        )
    p = check_output_folder(p, "--out")
    foreign = sorted(
        f.name for f in p.iterdir() if not OWN_FILES.match(f.name) and not is_temporary(f)
    )
    if foreign and not overwrite:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ValueError(
            f"--out {out!r} holds files make_pairs did not write "
            f"({', '.join(foreign[:3])}{more}): give a new or empty folder, or pass "
            "--overwrite to write the shards beside them (nothing is removed)"
        )
    return p


@torch.no_grad()
def model_guided(
    base, lr_latent: torch.Tensor, ctx: torch.Tensor, rng: np.random.Generator, args, device
) -> torch.Tensor:
    """SDEdit the LR latent with the base T2V model (paper §4.2.2): x_α = (1-α) c0 + α ε, Euler to
    0."""
    from simplegvr_core.degrade.model_guided import sdedit
    from simplegvr_core.pipeline import pad_text

    alpha = float(rng.uniform(*args.alpha))
    context = pad_text(ctx[None].float(), base.config.text_len).to(device)

    def velocity(x, t, c):
        return base(x, None, t, c)

    g = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    return sdedit(
        lr_latent.to(device),
        velocity,
        context,
        alpha=alpha,
        steps=args.mg_steps,
        shift=args.mg_shift,
        generator=g,
    )


if __name__ == "__main__":
    exit_process(main())  # launched as N processes, each ends cleanly (console.exit_process)
