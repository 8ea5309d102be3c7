"""Weights in: reading weight files safely, and the weights of other projects as SimpleGVR models.

- Reading: one safetensors file or a folder of shards (`read_weights`), headers without tensors
  (`open_safetensors`, `read_metadata`); every failure is a ValueError naming the file, and only
  safetensors is read here (no file is ever unpickled). What a file holds, from its tensor names
  alone (`weights_kind`).
- Wan 2.1 / 2.2 T2V transformers (original, ComfyUI or diffusers key names) into a SimpleGVR whose
  step 0 is the T2V model (`import_wan`), or as a plain T2V DiT (`import_wan_t2v`, model-guided
  degradation).
- CogVideoX transformers from diffusers' names into ComfyUI's (`convert_cogvideox`).
SimpleGVR's own file format is `checkpoint.py`.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import CAUSAL_MODE, DiTConfig, SimpleGVRConfig, UpsamplerConfig, get_config
from .files import atomic_write, check_input_file, parse_json
from .latent_formats import get_format
from .model import SimpleGVR
from .models import LatentUpsampler
from .models.tiny_decoder import TinyDecoder, check_dtype, tiny_decoder_state_dict
from .sampling import SamplingRecipe


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; ValueError for a missing or broken
    file."""
    with open_safetensors(path) as f:
        meta = dict(f.metadata() or {})
        return read_all(f, path), meta


def read_all(f, path) -> dict[str, torch.Tensor]:
    try:
        return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - SafetensorError on a corrupt payload
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e})"
        ) from None


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a model's weights: one safetensors file, or a folder of shards as diffusers
    and the Hugging Face hub write them (`*.safetensors.index.json` names the shards; else every
    .safetensors file of the folder)."""
    p = Path(path)
    if not p.is_dir():
        return read_safetensors(p)[0]
    index = sorted(p.glob("*.safetensors.index.json"))
    if index:
        try:
            weight_map = parse_json(index[0].read_text(), f"safetensors index {str(index[0])!r}")[
                "weight_map"
            ]
            files = sorted({p / f for f in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{str(index[0])!r} is not a safetensors index ({type(e).__name__}: {e})"
            ) from None
    else:
        files = sorted(p.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{str(p)!r} holds no .safetensors weights")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        part = read_safetensors(f)[0]
        twice = sorted(set(part) & set(out))
        if twice:
            raise ValueError(f"{str(p)!r}: tensors {twice[:3]} are in more than one shard")
        out.update(part)
    return out


class open_safetensors:
    """`safe_open` on the CPU as a context manager whose failures are ValueErrors naming the file.
    The header (names, shapes, dtypes, metadata) is read without loading any tensor."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self):
        check_input_file(self.path, "checkpoint")
        try:
            self._cm = safe_open(str(self.path), framework="pt", device="cpu")
            return self._cm.__enter__()
        # SafetensorError: truncated file, bad header, not safetensors at all
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"{str(self.path)!r} is not a readable safetensors file ({type(e).__name__}: {e})"
            ) from None

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# --- SimpleGVR checkpoints ---------------------------------------------------------------------
def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, from its header only (no tensor is read)."""
    with open_safetensors(path) as f:
        return dict(f.metadata() or {})


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """ValueError naming the first floating-point tensor of `tensors` that holds NaN or Inf."""
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(
                f"{what}: tensor {k} contains NaN or Inf (corrupt or diverged weights); "
                f"nothing was written"
            )


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
    """Normalise a Wan transformer state dict to the original Wan key names; returns (sd, source
    format)."""
    for prefix in _KNOWN_PREFIXES:  # ComfyUI / full-checkpoint prefixes
        if any(k.startswith(prefix + "patch_embedding.") for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    if "patch_embedding.weight" not in sd:
        raise ValueError(
            "not a Wan 2.1 transformer state dict: no 'patch_embedding.weight' key "
            f"(first keys: {sorted(sd)[:5]})"
        )
    if "condition_embedder.time_proj.weight" not in sd and "proj_out.weight" not in sd:
        return dict(sd), "wan"
    return {_rename(k, _DIFFUSERS_TO_WAN) or k: v for k, v in sd.items()}, "diffusers"


def _rename(key: str, table) -> str | None:
    """`key` after the first rule of `table` [(pattern, replacement)] that matches it; None when
    none does."""
    for pat, rep in table:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    return None


def infer_wan_dit_config(
    sd: dict[str, torch.Tensor], num_heads: int | None = None, conditioned: bool = False
) -> DiTConfig:
    """Wan DiT hyper-parameters from tensor shapes (original key names); heads from the arg or known
    sizes. conditioned: a DiT over cat[z_t, c] (in_dim = 2 out_dim, as Ultra Flash's SR DiT), else a
    T2V model."""

    def need(key):
        if key not in sd:
            raise ValueError(
                f"Wan state dict lacks {key!r}: expected a complete Wan 2.1 transformer"
            )
        return sd[key]

    pe = need("patch_embedding.weight")
    dim, in_dim = pe.shape[0], pe.shape[1]
    patch = tuple(int(p) for p in pe.shape[2:])
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"Wan state dict has blocks {layers[:3]}...{layers[-3:]}: expected 0..N-1")
    if any(k.startswith("img_emb.") for k in sd) or any(".cross_attn.k_img." in k for k in sd):
        raise ValueError(
            "this is a Wan image-to-video transformer (img_emb/k_img keys): expected a T2V model"
        )
    if num_heads is None:
        if dim not in KNOWN_HEADS:
            raise ValueError(
                f"Wan dim={dim} is not a released size {sorted(KNOWN_HEADS)}: pass --num-heads"
            )
        num_heads = KNOWN_HEADS[dim]
    head_w = need("head.head.weight")
    out_dim = head_w.shape[0] // (patch[0] * patch[1] * patch[2])
    if in_dim != (2 * out_dim if conditioned else out_dim):
        raise ValueError(
            f"Wan patch_embedding has in_dim={in_dim} but the head gives "
            f"out_dim={out_dim}: expected "
            + (
                f"in_dim = 2 x out_dim = {2 * out_dim} (cat[noisy latent, condition])"
                if conditioned
                else "a T2V model"
            )
        )
    return DiTConfig(
        dim=dim,
        ffn_dim=need("blocks.0.ffn.0.weight").shape[0],
        num_heads=num_heads,
        num_layers=len(layers),
        in_dim=in_dim,
        out_dim=out_dim,
        patch_size=patch,
        freq_dim=need("time_embedding.0.weight").shape[1],
        text_dim=need("text_embedding.0.weight").shape[1],
        qk_norm="blocks.0.self_attn.norm_q.weight" in sd,
        cross_attn_norm="blocks.0.norm3.weight" in sd,
    )


def import_wan(
    sd_or_path,
    *,
    config=None,
    upsampler: str | None = None,
    num_heads: int | None = None,
    latent_format: str | None = None,
    attention: str | None = None,
    upsampler_hidden: int = 128,
    seed: int = 0,
) -> SimpleGVR:
    """Build a SimpleGVR from a Wan 2.1 / 2.2 T2V transformer (original, ComfyUI or diffusers keys).

    `config` (a named config such as 'wan2.2-ti2v-5b' or 'cogvideox-1.3b', a dict or a
    SimpleGVRConfig) is the target: the weights must have its DiT's shape, and it sets the latent
    format, text length and upsampler. Without it everything is inferred from the shapes (latent
    format from the channel count: 16 -> wan21, 48 -> wan22). `patch_embedding` is widened with
    zeros for the condition channels and the noise-level embedding's last projection is zero, so the
    returned DiT outputs exactly what the T2V model outputs, for any condition. New weights
    (upsampler, first noise-level layer) are drawn from `seed`.
    """
    if isinstance(sd_or_path, (str, os.PathLike)):
        sd = read_weights(sd_or_path)
    else:  # the model takes the tensors over: copy the caller's, so training it leaves them alone
        sd = {k: v.clone() for k, v in dict(sd_or_path).items()}
    sd, _source = wan_state_dict_to_original(sd)
    check_finite(sd, "the Wan weights")
    if config is not None:
        config = _import_target(
            get_config(config), sd, num_heads, latent_format, upsampler, attention
        )
        base_in = config.dit.out_dim
    else:
        base = infer_wan_dit_config(sd, num_heads)
        base_in = base.in_dim
        fmt = (
            get_format(latent_format)
            if latent_format
            else {16: get_format("wan21"), 48: get_format("wan22")}.get(base.out_dim)
        )
        if fmt is None:
            raise ValueError(
                f"Wan model has {base.out_dim} latent channels: pass latent_format explicitly"
            )
        dit_cfg = DiTConfig(
            **{**base.__dict__, "in_dim": 2 * base.out_dim, "attention": attention or "full"}
        )
        config = SimpleGVRConfig(
            name="wan-import",
            latent_format=fmt.name,
            dit=dit_cfg,
            upsampler=UpsamplerConfig(
                mode=upsampler or "learned", channels=base.out_dim, hidden=upsampler_hidden
            ),
        )
    # The DiT is built on `meta` and takes the Wan tensors as they are (a 5B import needs no random
    # 5B model first); only the new weights - upsampler, noise-level embedding - are made for real,
    # from `seed`.
    with torch.device("meta"):
        model = SimpleGVR(config)
    target = model.dit.state_dict()
    pe = sd["patch_embedding.weight"]
    dtype = pe.dtype if pe.is_floating_point() else torch.float32
    wide = torch.zeros(target["patch_embedding.weight"].shape, dtype=dtype)
    wide[:, :base_in] = pe
    sd = {**sd, "patch_embedding.weight": wide}
    wan_keys = {k for k in target if not k.startswith("noise_level_embedding.")}
    missing = sorted(wan_keys - set(sd))
    extra = sorted(set(sd) - wan_keys)
    if missing or extra:
        raise ValueError(
            f"Wan state dict does not match a Wan T2V transformer: missing {missing[:5]}, "
            f"unexpected {extra[:5]}"
        )
    for k in wan_keys:
        if tuple(sd[k].shape) != tuple(target[k].shape):
            raise ValueError(
                f"Wan tensor {k} has shape {tuple(sd[k].shape)}, expected {tuple(target[k].shape)}"
            )
    model.dit.load_state_dict({k: sd[k].to(dtype) for k in wan_keys}, strict=False, assign=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.upsampler = LatentUpsampler(config.upsampler).to(dtype)
        if config.dit.noise_level_embed:
            model.dit.noise_level_embedding.to_empty(device="cpu")
            model.dit.init_noise_level_embedding()
            model.dit.noise_level_embedding.to(dtype)
    return model


_SHAPE_FIELDS = (
    "dim",
    "ffn_dim",
    "num_layers",
    "out_dim",
    "patch_size",
    "freq_dim",
    "text_dim",
    "qk_norm",
    "cross_attn_norm",
)


def _import_target(
    target: SimpleGVRConfig,
    sd: dict,
    num_heads: int | None,
    latent_format: str | None,
    upsampler: str | None,
    attention: str | None,
) -> SimpleGVRConfig:
    """The named config an import fills, after checking that the Wan weights have its DiT's
    shape."""
    base = infer_wan_dit_config(sd, num_heads or target.dit.num_heads)
    wrong = [
        f"{k}={getattr(base, k)!r} (config: {getattr(target.dit, k)!r})"
        for k in _SHAPE_FIELDS
        if getattr(base, k) != getattr(target.dit, k)
    ]
    if base.num_heads != target.dit.num_heads:
        wrong.append(f"num_heads={base.num_heads} (config: {target.dit.num_heads})")
    if wrong:
        raise ValueError(
            f"the Wan weights do not have the shape of config '{target.name}': {', '.join(wrong)}"
        )
    if latent_format is not None and get_format(latent_format).name != target.latent_format:
        raise ValueError(
            f"latent_format {latent_format!r} disagrees with config '{target.name}' "
            f"({target.latent_format!r}): leave it out, the config sets it"
        )
    d = target.to_dict()
    if upsampler is not None:
        d["upsampler"]["mode"] = upsampler
    if attention is not None:
        d["dit"]["attention"] = attention
    return SimpleGVRConfig.from_dict(d)


def import_wan_t2v(sd_or_path, num_heads: int | None = None) -> torch.nn.Module:
    """A plain Wan T2V transformer (in_dim = C, no noise-level embedding) as a SimpleGVRDiT, e.g.
    for model-guided degradation."""
    from .models import SimpleGVRDiT

    sd = (
        read_weights(sd_or_path) if isinstance(sd_or_path, (str, os.PathLike)) else dict(sd_or_path)
    )
    sd, _ = wan_state_dict_to_original(sd)
    config = DiTConfig(
        **{**infer_wan_dit_config(sd, num_heads).__dict__, "noise_level_embed": False}
    )
    with torch.device("meta"):
        dit = SimpleGVRDiT(config)
    dit.load_state_dict(sd, strict=True, assign=True)
    return dit


# --- CogVideoX transformer: diffusers -> ComfyUI key names ----------------------------------------
# ComfyUI v0.22 runs CogVideoX natively (comfy/ldm/cogvideo/model.py) but loads only its own key
# names, and the published CogVideoX transformers (THUDM/CogVideoX-*/transformer) are in diffusers'
# names. The table follows the two modules side by side; keys it does not name must be the ones both
# share.
_COGVIDEOX_TO_COMFYUI = [
    (r"^time_embedding\.linear_([12])\.", r"time_embedding_linear_\1."),
    (r"^ofs_embedding\.linear_([12])\.", r"ofs_embedding_linear_\1."),
    (r"^transformer_blocks\.(\d+)\.attn1\.to_([qkv])\.", r"blocks.\1.\2."),
    (r"^transformer_blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.norm_\2."),
    (r"^transformer_blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.attn_out."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", r"blocks.\1.ff_proj."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.2\.", r"blocks.\1.ff_out."),
    (r"^transformer_blocks\.(\d+)\.(norm[12])\.(linear|norm)\.", r"blocks.\1.\2.\3."),
]

_COGVIDEOX_SHARED = re.compile(
    r"^(patch_embed\.(proj|text_proj|pos_embedding)|norm_final|norm_out\.(linear|norm)|proj_out)"
    r"(\.(weight|bias))?$"
)


def cogvideox_to_comfyui(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers `CogVideoXTransformer3DModel` state dict in the key names ComfyUI's CogVideoX
    loader reads."""
    if "blocks.0.norm1.linear.weight" in sd:
        raise ValueError(
            "this CogVideoX transformer already has ComfyUI's key names (blocks.N.norm1...): "
            "use it as it is"
        )
    if "transformer_blocks.0.norm1.linear.weight" not in sd or "patch_embed.proj.weight" not in sd:
        raise ValueError(
            f"not a diffusers CogVideoX transformer: no "
            f"'transformer_blocks.0.norm1.linear.weight' / 'patch_embed.proj.weight' (first keys: "
            f"{sorted(sd)[:5]})"
        )
    out = {}
    for k, v in sd.items():
        new = _rename(k, _COGVIDEOX_TO_COMFYUI)
        if new is None and not _COGVIDEOX_SHARED.match(k):
            raise ValueError(
                f"unexpected CogVideoX transformer tensor {k!r}: no ComfyUI name for it"
            )
        out[new or k] = v
    return out


def convert_cogvideox(
    src: str | os.PathLike,
    out: str | os.PathLike,
    dtype: torch.dtype | None = None,
    *,
    replace: bool = True,
) -> Path:
    """Write the CogVideoX transformer at `src` (a diffusers `transformer/` folder or file) as one
    safetensors file in ComfyUI's key names (for UNETLoader, models/diffusion_models/), optionally
    cast to `dtype`; atomically. Weights with NaN or Inf, or values that `dtype` cannot hold (fp16
    above 65504), are refused."""
    sd = cogvideox_to_comfyui(read_weights(src))
    check_finite(sd, f"the CogVideoX transformer {str(src)!r}")
    if dtype is not None:
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        for k, v in cast.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                big = float(sd[k].abs().max())
                raise ValueError(
                    f"tensor {k} holds values up to {big:.4g}, beyond what "
                    f"{str(dtype).replace('torch.', '')} can hold (they would become Inf): use "
                    f"--dtype bf16 or keep; nothing was written"
                )
        sd = cast
    sd = {k: v.contiguous() for k, v in sd.items()}
    meta = {"source": Path(src).name, "converted_by": "simplegvr convert-cogvideox"}
    return atomic_write(out, lambda tmp: save_file(sd, tmp, metadata=meta), replace=replace)


# --- other weights files: .pth read safely; the TAEHV tiny decoder --------------------------------
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


def read_weights_file(
    path: str | os.PathLike, what: str = "weights", skip: tuple[str, ...] = ()
) -> dict:
    """The tensors of one weights file, whatever its kind: `.safetensors` (header first; keys
    starting with `skip` are not read), or `.pth` / `.pt` / `.ckpt` / `.bin` through
    torch.load(weights_only=True) only. A pickle that would run code is refused as unsafe
    (ValueError; nothing runs, and the message never suggests turning the protection off); any other
    failure is a ValueError naming the file."""
    path = check_input_file(path, what)
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(
            f"{what} {str(path)!r}: expected a file ending in {', '.join(WEIGHT_SUFFIXES)}"
        )
    if path.suffix.lower() == ".safetensors":
        with open_safetensors(path) as f:
            keys = [k for k in f.keys() if not k.startswith(skip)] if skip else list(f.keys())
            try:
                return {k: f.get_tensor(k) for k in keys}
            except Exception as e:  # noqa: BLE001 - SafetensorError on a corrupt payload
                raise ValueError(
                    f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e})"
                ) from None
    return read_torch_file(path, what)


def read_torch_file(path: str | os.PathLike, what: str = "file"):
    """What a `torch.save` file holds (tensors, plain containers, numbers, strings: a state dict, a
    training state.pt), read with torch's weights-only unpickler only. A file holding any other
    Python object - which unpickling could run as code - is refused (ValueError saying so; the
    protection is never turned off and the message never suggests it), as is a truncated or corrupt
    file; every error names the file."""
    import warnings

    p = check_input_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol ...": not our file
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # what the weights-only unpickler refuses to build
        m = re.search(r"unsupported (global|operand)[^\n]*", str(e), re.IGNORECASE)
        if m or "weights only load failed" in str(e).lower():
            reason = m.group(0).rstrip(".") if m else "objects other than tensors"
            raise ValueError(
                f"{what} {str(p)!r} was refused as unsafe: it holds Python objects, not only "
                f"tensors, so reading it could run code ({reason}); use a file of tensors from a "
                f"source you trust"
            ) from None
        raise ValueError(
            f"{what} {str(p)!r} is not a readable torch file (UnpicklingError: {_first_line(e)})"
        ) from None
    except Exception as e:  # noqa: BLE001 - zip / pickle corruption, a truncated file
        first = _first_line(e)[:200]
        if "weights_only" in first:  # never pass on advice to turn the protection off
            first = type(e).__name__
        raise ValueError(
            f"{what} {str(p)!r} is not a readable torch file (truncated or corrupt: "
            f"{type(e).__name__}: {first})"
        ) from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _unwrap_decoder(obj, path: Path) -> dict:
    """The state dict of a file: the dict itself, or its 'state_dict' / 'model' entry."""
    if isinstance(obj, dict) and not any(str(k).startswith("decoder.") for k in obj):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not any(str(k).startswith("decoder.") for k in obj):
        raise ValueError(
            f"{str(path)!r} holds no TAEHV decoder: expected 'decoder.N...' tensors "
            "(a state dict, or one under 'state_dict' or 'model')"
        )
    return obj


def load_tiny_decoder(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
) -> TinyDecoder:
    """A TinyDecoder from a TAEHV weights file (`tiny_decoder.pth`, `taew2_1.pth` or .safetensors).

    .pth/.pt/.ckpt/.bin are read with torch.load(weights_only=True) only: a pickle that would run
    code is refused. dtype None keeps the file's dtype. The model is in eval mode without grads;
    `model.load_notes` lists any TGrow weight that was cut to size.
    """
    p = Path(path)
    check_dtype(dtype)
    sd = _unwrap_decoder(read_weights_file(p, "tiny decoder weights", skip=("encoder.",)), p)
    sd, channels, notes = tiny_decoder_state_dict(sd, repr(str(p)))
    with torch.device("meta"):  # no random init of weights about to be replaced
        model = TinyDecoder(channels)
    model.load_state_dict(sd, strict=True, assign=True)
    model = model.to(device=device, dtype=dtype or sd["decoder.1.weight"].dtype)
    model.load_notes = notes
    return model.eval().requires_grad_(False)


# --- what a weights file holds, from its names alone (file lists of the hosts) --------------------
# A kind -> names that identify it (a key ending in one of them; wrappers' prefixes do not matter).
WEIGHT_KINDS = {
    "wan_dit": ("patch_embedding.weight",),  # a Wan DiT: Ultra Flash's sr_dit_sparse.pth, or a T2V
    "ultraflash_upsampler": ("pre_shuffle.0.weight",),  # Ultra Flash's latent_upsampler.pth (v1)
    "tiny_decoder": ("decoder.22.weight",),  # a TAEHV decoder: tiny_decoder.pth, taew2_1, taew2_2
}
PICKLE_PEEK_BYTES = 64 << 20  # a state dict's pickle (names, not tensors) is far smaller


def _names_of(path: Path) -> tuple[str, ...] | bytes | None:
    """A weights file's tensor names without reading any tensor: the safetensors header, or the raw
    bytes of a torch.save zip's pickle (searched, never unpickled). None when it cannot be told
    cheaply."""
    import zipfile

    if path.suffix.lower() in (".safetensors", ".sft"):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                if (f.metadata() or {}).get("format") == "simplegvr":
                    return ("simplegvr",)
                return tuple(f.keys())
        except Exception:  # noqa: BLE001 - unreadable: the loader names the problem when chosen
            return None
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((i for i in z.infolist() if i.filename.endswith("data.pkl")), None)
            if pkl is None or pkl.file_size > PICKLE_PEEK_BYTES:
                return None
            return z.read(pkl)
    except (OSError, zipfile.BadZipFile, ValueError):  # a legacy (non-zip) torch.save file
        return None


def weights_kind(path: str | os.PathLike) -> str | None:
    """What a weights file holds, told from its tensor names alone (fast enough for a host's file
    lists): 'simplegvr' (our checkpoint), one of WEIGHT_KINDS, 'other' (names of something else), or
    None (cannot be told cheaply: a legacy pickle, an unreadable file). Nothing is unpickled: a
    .pth's pickle is searched as bytes."""
    names = _names_of(Path(path))
    if names is None:
        return None
    if names == ("simplegvr",):
        return "simplegvr"
    for kind, marks in WEIGHT_KINDS.items():
        if isinstance(names, bytes):
            if any(m.encode() in names for m in marks):
                return kind
        elif any(n.endswith(m) for n in names for m in marks):
            return kind
    return "other"


# --- Ultra Flash's one-step streaming SR model ----------------------------------------------------
ULTRAFLASH_METADATA = {
    "trained_steps": "published",  # trained by its authors: not the untrained import-wan warning
    "origin": "Ultra Flash (arXiv 2606.09150; code github.com/xin1u/UltraFlash, weights "
    "huggingface.co/xin1u/UltraFlash): sr_dit_sparse.pth + latent_upsampler.pth, imported by "
    "simplegvr import-ultraflash",
    "license": "apache-2.0 (the weights' model card; the code is Apache-2.0)",
    "trained_on": "Ultra Flash's own streaming generator's 480p outputs -> 960x1664 "
    "(its 1K setting)",
}
# How it is sampled: one step from pure noise at t = 1000 (x0 = noise - v), the condition is the
# upsampler's output itself (condition noise 0), one conditional pass (no CFG), at the upsampler's
# native 2x size.
ULTRAFLASH_RECIPE = SamplingRecipe(
    steps=1, shift=1.0, timesteps=(1000.0,), guidance=1.0, noise_level=0.0
)
# Their shipped sparse settings (configs/sr_sparse_ultraforcing.py; models/block_sparse.py has the
# semantics)
ULTRAFLASH_ATTENTION = dict(
    attention=CAUSAL_MODE,
    causal_block=(2, 8, 8),
    causal_local_range=9,
    causal_top_k_ratio=1.0,
    causal_ref_tokens=1560,
    causal_top_k=0,
    causal_kv_blocks=3,
    causal_group_frames=6,
)
_WRAPPERS = ("model", "generator", "state_dict")


def unwrap_state_dict(obj, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a training framework's file: the dict itself or its 'model' / 'generator' /
    'state_dict' entry (as Ultra Flash's loaders read them), with DDP's `module.` and FSDP's
    `_fsdp_wrapped_module.` taken out of the names (their loaders do not, and a prefixed key then
    loads as random weights)."""
    for _ in range(3):  # nested wrappers
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ValueError(
            f"{what} holds no state dict (expected tensors, or one under {list(_WRAPPERS)})"
        )
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{what}: {str(k)!r} is a {type(v).__name__}, not a tensor")
        # FSDP wraps submodules: anywhere in the name
        name = str(k).replace("_fsdp_wrapped_module.", "")
        while name.startswith("module."):  # DDP wraps the whole model
            name = name[len("module.") :]
        if name in out:
            raise ValueError(
                f"{what}: {str(k)!r} and another key both become {name!r} without their prefixes"
            )
        out[name] = v
    return out


def _strict(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], what: str) -> None:
    missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{what} does not match: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    for k, ref in expected.items():
        if tuple(sd[k].shape) != tuple(ref.shape):
            raise ValueError(
                f"{what}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(ref.shape)}"
            )
        if not sd[k].is_floating_point():
            raise ValueError(
                f"{what}: {k} has dtype {sd[k].dtype}, expected a floating-point tensor"
            )


def ultraflash_config(
    dit_sd: dict[str, torch.Tensor], up_sd: dict[str, torch.Tensor], num_heads: int | None = None
) -> SimpleGVRConfig:
    """The SimpleGVRConfig of Ultra Flash weights, from their shapes: a Wan 2.1 DiT over cat[noisy,
    condition] (in_dim 32, no noise-level embedding) in their block-sparse causal attention, and
    their v1 upsampler (`memory` mode: mid width, memory blocks and scale from pre_shuffle /
    blocks.N.conv)."""
    dit = infer_wan_dit_config(dit_sd, num_heads, conditioned=True)
    pre = up_sd.get("pre_shuffle.0.weight")
    conv = up_sd.get("blocks.0.conv.0.weight")
    if pre is None or conv is None or pre.ndim != 4 or conv.ndim != 4:
        raise ValueError(
            "the upsampler weights lack pre_shuffle.0.weight / blocks.0.conv.0.weight: expected "
            "Ultra Flash's latent_upsampler.pth (their v1 UltraLatentUpsampler)"
        )
    mid = int(conv.shape[0])
    scale = round(math.sqrt(pre.shape[0] / mid))
    blocks = len({int(m.group(1)) for k in up_sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if scale * scale * mid != pre.shape[0]:
        raise ValueError(
            f"pre_shuffle.0.weight has {pre.shape[0]} rows: expected mid x scale^2 (mid {mid})"
        )
    return SimpleGVRConfig(
        name="ultraflash",
        latent_format="wan21",
        train_latent_frames=ULTRAFLASH_ATTENTION["causal_group_frames"],
        dit=DiTConfig(**{**dit.__dict__, "noise_level_embed": False, **ULTRAFLASH_ATTENTION}),
        upsampler=UpsamplerConfig(
            mode="memory",
            channels=dit.out_dim,
            hidden=mid,
            memory_blocks=blocks,
            memory_scale=scale,
        ),
    )


def import_ultraflash(
    dit: str | os.PathLike | dict,
    upsampler: str | os.PathLike | dict,
    *,
    num_heads: int | None = None,
) -> SimpleGVR:
    """A SimpleGVR running Ultra Flash's published one-step weights exactly: `sr_dit_sparse.pth`
    (the DiT) and `latent_upsampler.pth` (.pth read with torch.load(weights_only=True) only, or
    .safetensors, or state dicts). Every key must be there with its shape (strict: a renamed key is
    an error, not random weights); sizes come from the tensors (`num_heads` defaults to 12 at dim
    1536). The model samples as their pipeline does (ULTRAFLASH_RECIPE: one step at t = 1000,
    condition noise 0, no CFG) in their streaming attention."""

    def tensors(src, what):
        if isinstance(src, dict):
            return unwrap_state_dict(src, what)
        return unwrap_state_dict(read_weights_file(src, what), f"{what} {str(src)!r}")

    dit_sd, up_sd = (
        tensors(dit, "the Ultra Flash DiT"),
        tensors(upsampler, "the Ultra Flash upsampler"),
    )
    config = ultraflash_config(dit_sd, up_sd, num_heads)
    with torch.device("meta"):
        model = SimpleGVR(config)
    _strict(model.dit.state_dict(), dit_sd, "the Ultra Flash DiT")
    _strict(
        {k[len("memory.") :]: v for k, v in model.upsampler.state_dict().items()},
        up_sd,
        "the Ultra Flash upsampler",
    )
    check_finite(dit_sd, "the Ultra Flash DiT")
    check_finite(up_sd, "the Ultra Flash upsampler")
    model.dit.load_state_dict(dit_sd, strict=True, assign=True)
    model.upsampler.load_state_dict(
        {"memory." + k: v for k, v in up_sd.items()}, strict=True, assign=True
    )
    model.sampling = ULTRAFLASH_RECIPE
    return model
