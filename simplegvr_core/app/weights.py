"""Weights in and out: `import-wan`, `convert-cogvideox`, `download-wan`, `download-cogvideox`,
`info`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..console import CLIError


def _cmd_import_wan(args) -> int:
    from ..checkpoint import IMPORTED_METADATA, save_checkpoint
    from ..files import check_output
    from ..weights import import_wan

    check_output(args.out, overwrite=args.overwrite, inputs=[args.wan], what="--out")
    model = import_wan(
        args.wan,
        config=args.config,
        upsampler=args.upsampler,
        num_heads=args.num_heads,
        latent_format=args.latent_format,
        attention=args.attention,
        seed=args.seed,
    )
    # marked untrained
    save_checkpoint(model, args.out, extra_metadata=IMPORTED_METADATA, replace=args.overwrite)
    n = model.num_parameters()
    print(
        f"wrote {args.out}: config {model.config.name}, {model.config.latent_format} latents, DiT "
        f"{n['dit'] / 1e6:.1f}M + upsampler ({model.config.upsampler.mode}) "
        f"{n['upsampler'] / 1e6:.2f}M parameters"
    )
    return 0


WAN_REPOS = {
    "wan2.1-1.3b": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    "wan2.2-ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
}
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
        raise CLIError(
            "downloading needs huggingface-hub: pip install 'simplegvr[train]'"
        ) from None
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
    from ..files import check_output
    from ..model import DTYPES
    from ..weights import convert_cogvideox

    out = check_output(args.out, overwrite=args.overwrite, inputs=[args.transformer], what="--out")
    dtype = None if args.dtype == "keep" else DTYPES[args.dtype]
    path = convert_cogvideox(args.transformer, out, dtype=dtype, replace=args.overwrite)
    print(
        f"wrote {path} (ComfyUI's CogVideoX key names: put it in ComfyUI/models/diffusion_models/)"
    )
    return 0


def _cmd_info(args) -> int:
    from ..checkpoint import CODEC_KEY, TRAINED_STEPS_KEY, checkpoint_warning, load_checkpoint
    from ..weights import read_metadata

    model = load_checkpoint(args.checkpoint)
    meta = read_metadata(args.checkpoint)
    print(model.config.to_json())
    print({k: f"{v:,}" for k, v in model.num_parameters().items()})
    print(f"trained steps: {meta.get(TRAINED_STEPS_KEY, 'not recorded')}")
    if meta.get(CODEC_KEY):
        print(f"codec: {meta[CODEC_KEY]}")
    warning = checkpoint_warning(meta, Path(args.checkpoint).name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _cmd_import_ultraflash(args) -> int:
    from ..checkpoint import save_checkpoint
    from ..files import check_output
    from ..weights import ULTRAFLASH_METADATA, import_ultraflash

    check_output(
        args.out, overwrite=args.overwrite, inputs=[args.dit, args.upsampler], what="--out"
    )
    model = import_ultraflash(args.dit, args.upsampler, num_heads=args.num_heads)
    meta = {
        **ULTRAFLASH_METADATA,
        "source_files": f"{Path(args.dit).name}, {Path(args.upsampler).name}",
    }
    save_checkpoint(model, args.out, extra_metadata=meta, replace=args.overwrite)
    n = model.num_parameters()
    print(
        f"wrote {args.out}: Ultra Flash's one-step SR model, DiT {n['dit'] / 1e6:.1f}M + "
        f"upsampler {n['upsampler'] / 1e6:.2f}M parameters ({next(model.parameters()).dtype}); it "
        f"samples in one step, upscaling Wan 2.1 latents 2x (832x480 -> 1664x960)"
    )
    return 0


def register(sub) -> None:
    """Add this module's subcommands to the `simplegvr` parser."""
    from ..config import ATTENTION_MODES, UPSAMPLER_MODES
    from ..model import DTYPES

    w = sub.add_parser(
        "import-wan", help="make a SimpleGVR checkpoint from a Wan 2.1 / 2.2 T2V transformer"
    )
    w.add_argument(
        "--wan",
        required=True,
        help="Wan transformer weights (.safetensors file, or a folder of shards): "
        "original, ComfyUI or diffusers key format",
    )
    w.add_argument("--out", required=True, help="output SimpleGVR checkpoint (.safetensors)")
    w.add_argument(
        "--config",
        default=None,
        help="named target config, checked against the weights: wan2.1-1.3b, wan2.2-ti2v-5b, or "
        "cogvideox-1.3b (from Wan 2.1 1.3B weights); default: inferred from the weights' shapes",
    )
    w.add_argument(
        "--upsampler",
        default=None,
        choices=UPSAMPLER_MODES,
        help="latent upsampler variant (default: the config's, learned)",
    )
    w.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads (default: known 1.3B/5B/14B sizes)",
    )
    w.add_argument(
        "--latent-format",
        default=None,
        help="wan21 | wan22 | cogvideox_2b | cogvideox_5b (default: the "
        "config's, else by channels)",
    )
    w.add_argument(
        "--attention",
        default=None,
        choices=ATTENTION_MODES,
        help="attention mode stored in the config, switchable at inference (default: the "
        "config's, else full)",
    )
    w.add_argument("--seed", type=int, default=0, help="seed for the newly initialised weights")
    w.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (never one of the inputs)",
    )
    w.set_defaults(func=_cmd_import_wan)

    u = sub.add_parser(
        "import-ultraflash",
        help="make a SimpleGVR checkpoint from Ultra Flash's published one-step "
        "weights (sr_dit_sparse.pth + latent_upsampler.pth)",
        description="Write Ultra Flash's one-step Wan 2.1 super-resolution weights "
        "(huggingface.co/xin1u/UltraFlash, apache-2.0) as one SimpleGVR checkpoint the nodes and "
        "`simplegvr upscale` load. The .pth files are read with torch.load(weights_only=True) "
        "only (a pickle that would run code is refused); every key must be there with its shape.",
    )
    u.add_argument("--dit", required=True, help="sr_dit_sparse.pth (or .safetensors): the SR DiT")
    u.add_argument(
        "--upsampler",
        required=True,
        help="latent_upsampler.pth (or .safetensors): the latent upsampler",
    )
    u.add_argument(
        "--out",
        required=True,
        help="output SimpleGVR checkpoint (.safetensors), e.g. "
        "ComfyUI/models/simplegvr/ultraflash_1k.safetensors",
    )
    u.add_argument(
        "--num-heads", type=int, default=None, help="attention heads (default: 12 at dim 1536)"
    )
    u.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (never one of the inputs)",
    )
    u.set_defaults(func=_cmd_import_ultraflash)
    dw = sub.add_parser(
        "download-wan",
        help="download Wan 2.1 T2V 1.3B or Wan 2.2 TI2V 5B (diffusers format) from the "
        "Hugging Face hub",
    )
    dw.add_argument("--out", required=True, help="target folder")
    dw.add_argument(
        "--model",
        default="wan2.1-1.3b",
        choices=sorted(WAN_REPOS),
        help=f"which Wan (default wan2.1-1.3b): "
        f"{', '.join(f'{k} = {v}' for k, v in WAN_REPOS.items())}",
    )
    dw.add_argument(
        "--repo", default=None, help="another hub repository in the same layout (overrides --model)"
    )
    dw.add_argument(
        "--parts",
        nargs="+",
        default=["vae", "text_encoder", "tokenizer", "transformer"],
        help="subfolders to fetch (default: vae text_encoder tokenizer transformer)",
    )
    dw.set_defaults(func=_cmd_download_wan)
    dc = sub.add_parser(
        "download-cogvideox",
        help="download CogVideoX's VAE and T5-XXL text encoder (diffusers format) "
        "from the Hugging Face hub, for training",
    )
    dc.add_argument("--out", required=True, help="target folder")
    dc.add_argument(
        "--model",
        default="cogvideox-5b",
        choices=sorted(COGVIDEOX_REPOS),
        help=f"which CogVideoX (default cogvideox-5b; both share the VAE and T5): "
        f"{', '.join(f'{k} = {v}' for k, v in COGVIDEOX_REPOS.items())}",
    )
    dc.add_argument(
        "--repo", default=None, help="another hub repository in the same layout (overrides --model)"
    )
    dc.add_argument(
        "--parts",
        nargs="+",
        default=["vae", "text_encoder", "tokenizer"],
        help="subfolders to fetch (default: vae text_encoder tokenizer; add transformer for "
        "convert-cogvideox)",
    )
    dc.set_defaults(func=_cmd_download_cogvideox)
    cc = sub.add_parser(
        "convert-cogvideox",
        help="write a diffusers CogVideoX transformer in ComfyUI's key names (one "
        "file for UNETLoader)",
    )
    cc.add_argument(
        "--transformer",
        required=True,
        help="the diffusers transformer: a folder of shards (download-cogvideox ... --parts "
        "transformer) or a .safetensors file",
    )
    cc.add_argument(
        "--out",
        required=True,
        help="output .safetensors, e.g. ComfyUI/models/diffusion_models/"
        "cogvideox_5b_transformer_bf16.safetensors",
    )
    cc.add_argument(
        "--dtype",
        default="keep",
        choices=["keep", *DTYPES],
        help="cast the weights (default: keep; CogVideoX-5b is published in bf16)",
    )
    cc.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    cc.set_defaults(func=_cmd_convert_cogvideox)
    i = sub.add_parser("info", help="print a checkpoint's config and parameter counts")
    i.add_argument("checkpoint")
    i.set_defaults(func=_cmd_info)
