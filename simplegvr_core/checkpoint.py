"""SimpleGVR checkpoints (one safetensors file) and the import of Wan 2.1 T2V weights.

A checkpoint holds `dit.*` and `upsampler.*` tensors; its metadata holds
`{"format": "simplegvr", "version": "1", "config": <SimpleGVRConfig JSON>, "latent_format": name}`.
Only safetensors is read: no file is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import DiTConfig, SimpleGVRConfig, UpsamplerConfig
from .files import atomic_write
from .latent_formats import get_format
from .model import SimpleGVR

FORMAT_NAME = "simplegvr"
FORMAT_VERSION = "1"
SUPPORTED_VERSIONS = ("1",)
# Metadata of a checkpoint that `simplegvr import-wan` made and nobody trained: `training/train.py --export` writes
# the number of steps it trained instead.
TRAINED_STEPS_KEY = "trained_steps"
IMPORTED_METADATA = {TRAINED_STEPS_KEY: "0", "origin": "simplegvr import-wan (Wan 2.1 T2V weights, untrained)"}


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; ValueError for a missing or broken file."""
    with open_safetensors(path) as f:
        meta = dict(f.metadata() or {})
        return _read_all(f, path), meta


def _read_all(f, path) -> dict[str, torch.Tensor]:
    try:
        return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - SafetensorError on a corrupt payload
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e})") from None


class open_safetensors:
    """`safe_open` on the CPU as a context manager whose failures are ValueErrors naming the file. The header
    (names, shapes, dtypes, metadata) is read without loading any tensor."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self):
        if not self.path.is_file():
            raise ValueError(f"checkpoint {str(self.path)!r} does not exist or is not a file")
        try:
            self._cm = safe_open(str(self.path), framework="pt", device="cpu")
            return self._cm.__enter__()
        except Exception as e:  # noqa: BLE001 - SafetensorError: truncated file, bad header, not safetensors at all
            raise ValueError(f"{str(self.path)!r} is not a readable safetensors file ({type(e).__name__}: {e})") from None

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# --- SimpleGVR checkpoints ---------------------------------------------------------------------
def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, from its header only (no tensor is read)."""
    with open_safetensors(path) as f:
        return dict(f.metadata() or {})


def untrained_warning(metadata: dict[str, str], name: str = "this checkpoint") -> str | None:
    """The warning for a checkpoint whose metadata says it was never trained (`import-wan`); None otherwise."""
    if metadata.get(TRAINED_STEPS_KEY) != "0":
        return None
    return (f"{name} is an untrained SimpleGVR: `simplegvr import-wan` widened the Wan T2V weights, which ignore the "
            "condition until trained, so it generates a new video from the prompt instead of upscaling this one. "
            "Train it first (README: Training).")


def save_checkpoint(model: SimpleGVR, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write `model` to one safetensors file atomically (temporary file + rename)."""
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"save_checkpoint expects a SimpleGVR model, got {type(model).__name__}")
    tensors = {}
    for prefix, module in (("dit.", model.dit), ("upsampler.", model.upsampler)):
        for k, v in module.state_dict().items():
            if v.device.type == "meta":
                raise ValueError(f"cannot save {prefix}{k}: it is on the meta device (no data)")
            tensors[prefix + k] = v.detach().to("cpu").contiguous()
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": model.config.to_json(),
            "latent_format": model.config.latent_format}
    meta.update(extra_metadata or {})
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SimpleGVR:
    """Rebuild a SimpleGVR from a checkpoint. Nothing large is allocated before the file is known to be sound:
    format and version, then the config's types and ranges (config.LIMITS), the metadata's latent format, then
    every tensor name, shape and dtype of the header against the model built on `meta`; only then are the
    weights read, and they must be finite."""
    name = str(path)
    with open_safetensors(path) as f:
        meta = dict(f.metadata() or {})
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{name!r} is not a SimpleGVR checkpoint: metadata format={meta.get('format')!r}, "
                             f"expected {FORMAT_NAME!r} (import Wan weights with `simplegvr import-wan`)")
        if meta.get("version") not in SUPPORTED_VERSIONS:
            raise ValueError(f"{name!r} has checkpoint version {meta.get('version')!r}: this SimpleGVR reads "
                             f"{SUPPORTED_VERSIONS}")
        try:
            config = SimpleGVRConfig.from_dict(json.loads(meta["config"]))
        except (KeyError, json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{name!r} has no valid config in its metadata: {e}") from None
        stated = meta.get("latent_format", config.latent_format)
        try:
            stated_fmt = get_format(stated).name
        except ValueError as e:
            raise ValueError(f"{name!r}: metadata latent_format: {e}") from None
        if stated_fmt != config.latent_format:
            raise ValueError(f"{name!r}: metadata latent_format {stated!r} disagrees with its config's "
                             f"{config.latent_format!r}")
        with torch.device("meta"):
            model = SimpleGVR(config)
        expected = {f"dit.{k}": v for k, v in model.dit.state_dict().items()}
        expected.update({f"upsampler.{k}": v for k, v in model.upsampler.state_dict().items()})
        keys = set(f.keys())
        missing = sorted(set(expected) - keys)
        extra = sorted(keys - set(expected))
        if missing or extra:
            raise ValueError(f"{name!r} does not match its config: missing keys {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected keys {extra[:5]}{'...' if len(extra) > 5 else ''}")
        for k, ref in expected.items():
            sl = f.get_slice(k)
            shape = tuple(sl.get_shape())
            if shape != tuple(ref.shape):
                raise ValueError(f"{name!r}: tensor {k} has shape {shape}, expected {tuple(ref.shape)}")
            if sl.get_dtype() not in _FLOAT_DTYPES:
                raise ValueError(f"{name!r}: tensor {k} has dtype {sl.get_dtype()}, expected a floating type")
        tensors = _read_all(f, path)
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise ValueError(f"{name!r}: tensor {k} contains NaN or Inf (a diverged or corrupt checkpoint)")
    model.dit.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dit.")}, assign=True)
    model.upsampler.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("upsampler.")}, assign=True)
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


# --- Wan 2.1 import -----------------------------------------------------------------------------
# diffusers WanTransformer3DModel -> original Wan names (loaders/single_file_utils.py, inverted).
_DIFFUSERS_TO_WAN = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.to_([qkv])\.", r"blocks.\1.self_attn.\2."),
    (r"^blocks\.(\d+)\.attn2\.to_([qkv])\.", r"blocks.\1.cross_attn.\2."),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.self_attn.norm_\2."),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])\.", r"blocks.\1.cross_attn.norm_\2."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),  # diffusers swaps norm2/norm3
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
]
_KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
# Released Wan 2.x T2V sizes: dim -> heads (head_dim 128).
KNOWN_HEADS = {1536: 12, 3072: 24, 5120: 40}


def wan_state_dict_to_original(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Normalise a Wan transformer state dict to the original Wan key names; returns (sd, source format)."""
    for prefix in _KNOWN_PREFIXES:  # ComfyUI / full-checkpoint prefixes
        if any(k.startswith(prefix + "patch_embedding.") for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    if "patch_embedding.weight" not in sd:
        raise ValueError("not a Wan 2.1 transformer state dict: no 'patch_embedding.weight' key "
                         f"(first keys: {sorted(sd)[:5]})")
    if "condition_embedder.time_proj.weight" not in sd and "proj_out.weight" not in sd:
        return dict(sd), "wan"
    out = {}
    for k, v in sd.items():
        new = k
        for pat, rep in _DIFFUSERS_TO_WAN:
            new, n = re.subn(pat, rep, new)
            if n:
                break
        out[new] = v
    return out, "diffusers"


def infer_wan_dit_config(sd: dict[str, torch.Tensor], num_heads: int | None = None) -> DiTConfig:
    """Wan DiT hyper-parameters from tensor shapes (original key names); heads from the arg or known sizes."""
    def need(key):
        if key not in sd:
            raise ValueError(f"Wan state dict lacks {key!r}: expected a complete Wan 2.1 transformer")
        return sd[key]

    pe = need("patch_embedding.weight")
    dim, in_dim = pe.shape[0], pe.shape[1]
    patch = tuple(int(p) for p in pe.shape[2:])
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"Wan state dict has blocks {layers[:3]}...{layers[-3:]}: expected 0..N-1")
    if any(k.startswith("img_emb.") for k in sd) or any(".cross_attn.k_img." in k for k in sd):
        raise ValueError("this is a Wan image-to-video transformer (img_emb/k_img keys): expected a T2V model")
    if num_heads is None:
        if dim not in KNOWN_HEADS:
            raise ValueError(f"Wan dim={dim} is not a released size {sorted(KNOWN_HEADS)}: pass --num-heads")
        num_heads = KNOWN_HEADS[dim]
    head_w = need("head.head.weight")
    out_dim = head_w.shape[0] // (patch[0] * patch[1] * patch[2])
    if in_dim != out_dim:
        raise ValueError(f"Wan patch_embedding has in_dim={in_dim} but the head gives out_dim={out_dim}: expected a T2V model")
    return DiTConfig(
        dim=dim, ffn_dim=need("blocks.0.ffn.0.weight").shape[0], num_heads=num_heads, num_layers=len(layers),
        in_dim=in_dim, out_dim=out_dim, patch_size=patch, freq_dim=need("time_embedding.0.weight").shape[1],
        text_dim=need("text_embedding.0.weight").shape[1], qk_norm="blocks.0.self_attn.norm_q.weight" in sd,
        cross_attn_norm="blocks.0.norm3.weight" in sd,
    )


def import_wan(sd_or_path, *, upsampler: str = "learned", num_heads: int | None = None,
               latent_format: str | None = None, attention: str = "full", upsampler_hidden: int = 128,
               seed: int = 0) -> SimpleGVR:
    """Build a SimpleGVR from a Wan 2.1 T2V transformer (original, ComfyUI or diffusers keys).

    `patch_embedding` is widened with zeros for the condition channels and the noise-level embedding's
    last projection is zero, so the returned DiT outputs exactly what the T2V model outputs, for any
    condition. New weights (upsampler, first noise-level layer) are drawn from `seed`.
    """
    if isinstance(sd_or_path, (str, os.PathLike)):
        sd, _ = read_safetensors(sd_or_path)
    else:
        sd = dict(sd_or_path)
    sd, _source = wan_state_dict_to_original(sd)
    base = infer_wan_dit_config(sd, num_heads)
    fmt = get_format(latent_format) if latent_format else {16: get_format("wan21"), 48: get_format("wan22")}.get(base.out_dim)
    if fmt is None:
        raise ValueError(f"Wan model has {base.out_dim} latent channels: pass latent_format explicitly")
    dit_cfg = DiTConfig(**{**base.__dict__, "in_dim": 2 * base.out_dim, "attention": attention})
    cfg = SimpleGVRConfig(name="wan-import", latent_format=fmt.name, dit=dit_cfg,
                          upsampler=UpsamplerConfig(mode=upsampler, channels=base.out_dim, hidden=upsampler_hidden))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SimpleGVR(cfg)
    target = model.dit.state_dict()
    pe = sd["patch_embedding.weight"]
    wide = torch.zeros(target["patch_embedding.weight"].shape, dtype=pe.dtype)
    wide[:, : base.in_dim] = pe
    sd = {**sd, "patch_embedding.weight": wide}
    wan_keys = {k for k in target if not k.startswith("noise_level_embedding.")}
    missing = sorted(wan_keys - set(sd))
    extra = sorted(set(sd) - wan_keys)
    if missing or extra:
        raise ValueError(f"Wan state dict does not match a Wan 2.1 T2V transformer: missing {missing[:5]}, unexpected {extra[:5]}")
    for k in wan_keys:
        if tuple(sd[k].shape) != tuple(target[k].shape):
            raise ValueError(f"Wan tensor {k} has shape {tuple(sd[k].shape)}, expected {tuple(target[k].shape)}")
    dtype = pe.dtype if pe.is_floating_point() else torch.float32
    model = model.to(dtype)
    model.dit.load_state_dict({k: sd[k].to(dtype) for k in wan_keys}, strict=False)
    return model


def import_wan_t2v(sd_or_path, num_heads: int | None = None) -> torch.nn.Module:
    """A plain Wan T2V transformer (in_dim = C, no noise-level embedding) as a SimpleGVRDiT, e.g. for
    model-guided degradation."""
    from .models import SimpleGVRDiT

    sd = read_safetensors(sd_or_path)[0] if isinstance(sd_or_path, (str, os.PathLike)) else dict(sd_or_path)
    sd, _ = wan_state_dict_to_original(sd)
    cfg = DiTConfig(**{**infer_wan_dit_config(sd, num_heads).__dict__, "noise_level_embed": False})
    with torch.device("meta"):
        dit = SimpleGVRDiT(cfg)
    dit.load_state_dict(sd, strict=True, assign=True)
    return dit
