"""SimpleGVR checkpoints (one safetensors file) and the import of Wan 2.1 / 2.2 T2V weights.

A checkpoint holds `dit.*` and `upsampler.*` tensors; its metadata holds
`{"format": "simplegvr", "version": "1", "config": <SimpleGVRConfig JSON>, "latent_format": name,
"sampling": <SamplingRecipe JSON>}` (`sampling`: how to sample it - steps, shift or timesteps, r-embedding; a file
without it is sampled as a teacher, 50 steps).
Only safetensors is read: no file is ever unpickled.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import DiTConfig, SimpleGVRConfig, UpsamplerConfig, get_config
from .files import atomic_write, check_input_file, parse_json
from .latent_formats import get_format
from .model import SimpleGVR
from .models import LatentUpsampler
from .sampling import TEACHER_RECIPE, SamplingRecipe

FORMAT_NAME = "simplegvr"
FORMAT_VERSION = "1"
SUPPORTED_VERSIONS = ("1",)
# Metadata of a checkpoint that `simplegvr import-wan` made and nobody trained: `training/train.py --export` writes
# the number of steps it trained instead.
TRAINED_STEPS_KEY = "trained_steps"
IMPORTED_METADATA = {TRAINED_STEPS_KEY: "0", "origin": "simplegvr import-wan (Wan T2V weights, untrained)"}


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


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a model's weights: one safetensors file, or a folder of shards as diffusers and the Hugging Face
    hub write them (`*.safetensors.index.json` names the shards; else every .safetensors file of the folder)."""
    p = Path(path)
    if not p.is_dir():
        return read_safetensors(p)[0]
    index = sorted(p.glob("*.safetensors.index.json"))
    if index:
        try:
            weight_map = parse_json(index[0].read_text(), f"safetensors index {str(index[0])!r}")["weight_map"]
            files = sorted({p / f for f in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{str(index[0])!r} is not a safetensors index ({type(e).__name__}: {e})") from None
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
    """`safe_open` on the CPU as a context manager whose failures are ValueErrors naming the file. The header
    (names, shapes, dtypes, metadata) is read without loading any tensor."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self):
        check_input_file(self.path, "checkpoint")
        try:
            self._cm = safe_open(str(self.path), framework="pt", device="cpu")
            return self._cm.__enter__()
        except Exception as e:  # noqa: BLE001 - SafetensorError: truncated file, bad header, not safetensors at all
            raise ValueError(f"{str(self.path)!r} is not a readable safetensors file ({type(e).__name__}: {e})") from None

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def read_torch_file(path: str | os.PathLike, what: str = "file"):
    """The tensors (and plain containers, numbers, strings) of a `torch.save` file such as a
    training state.pt, read with torch's weights-only unpickler: a file holding any other Python
    object - which unpickling could run as code - is refused (ValueError saying so; the protection
    is never turned off), as is a truncated or corrupt file. ValueError naming the file, never a
    traceback advising `weights_only=False`."""
    import pickle
    import warnings
    import zipfile

    p = check_input_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol ...": not our file
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # what the weights-only unpickler refuses to build
        kind = "it holds Python objects, not only tensors" if "global" in str(e).lower() else \
            "it is not a torch file of tensors only (a pickle of Python objects, or a corrupt file)"
        raise ValueError(f"{what} {str(p)!r} was refused as unsafe: {kind}, and reading it could "
                         "run code; use a file this trainer wrote") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError, IndexError, TypeError,
            AttributeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if "weights_only" in first:  # never pass on advice to turn the protection off
            first = type(e).__name__
        raise ValueError(f"{what} {str(p)!r} is not a readable torch file (truncated or corrupt: "
                         f"{first})") from None


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


SAMPLING_KEY = "sampling"


def save_checkpoint(model: SimpleGVR, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None,
                    sampling: SamplingRecipe | None = None, *, replace: bool = True) -> Path:
    """Write `model` to one safetensors file atomically (temporary file + rename), with its sampling recipe
    (`sampling`, default `model.sampling`: 50 steps for a model nobody distilled). replace=False never replaces an
    existing file, even one that appears while writing (`files.atomic_write`). Weights with NaN or Inf are refused:
    nothing non-finite is ever written as a model."""
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"save_checkpoint expects a SimpleGVR model, got {type(model).__name__}")
    sampling = model.sampling if sampling is None else sampling
    if not isinstance(sampling, SamplingRecipe):
        raise ValueError(f"sampling must be a SamplingRecipe, got {type(sampling).__name__}")
    if extra_metadata and SAMPLING_KEY in extra_metadata:
        raise ValueError("extra_metadata has a 'sampling' entry: pass save_checkpoint(..., sampling=SamplingRecipe(...))")
    tensors = {}
    for prefix, module in (("dit.", model.dit), ("upsampler.", model.upsampler)):
        for k, v in module.state_dict().items():
            if v.device.type == "meta":
                raise ValueError(f"cannot save {prefix}{k}: it is on the meta device (no data)")
            tensors[prefix + k] = v.detach().to("cpu").contiguous()
    check_finite(tensors, "the model to save")
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": model.config.to_json(),
            "latent_format": model.config.latent_format, SAMPLING_KEY: sampling.to_json()}
    meta.update(extra_metadata or {})
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), replace=replace)


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """ValueError naming the first floating-point tensor of `tensors` that holds NaN or Inf."""
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{what}: tensor {k} contains NaN or Inf (corrupt or diverged weights); nothing was written")


def checkpoint_config(path: str | os.PathLike) -> SimpleGVRConfig:
    """The config of a SimpleGVR checkpoint, from its header only (format, version, config, latent format checked as
    `load_checkpoint` checks them); no tensor is read."""
    with open_safetensors(path) as f:
        return _header_config(f, str(path))


def checkpoint_sampling(path: str | os.PathLike) -> SamplingRecipe:
    """The sampling recipe of a SimpleGVR checkpoint, from its header only (the teacher's, 50 steps, when it has
    none); ValueError for a file that is not a sound SimpleGVR checkpoint or whose recipe is malformed."""
    with open_safetensors(path) as f:
        _header_config(f, str(path))
        return _header_sampling(dict(f.metadata() or {}), str(path))


def _header_sampling(meta: dict[str, str], name: str) -> SamplingRecipe:
    if SAMPLING_KEY not in meta:
        return TEACHER_RECIPE
    try:
        return SamplingRecipe.from_json(meta[SAMPLING_KEY])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name!r} has an invalid sampling entry in its metadata: {e}") from None


def _header_config(f, name: str) -> SimpleGVRConfig:
    meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{name!r} is not a SimpleGVR checkpoint: metadata format={meta.get('format')!r}, "
                         f"expected {FORMAT_NAME!r} (import Wan weights with `simplegvr import-wan`)")
    if meta.get("version") not in SUPPORTED_VERSIONS:
        raise ValueError(f"{name!r} has checkpoint version {meta.get('version')!r}: this SimpleGVR reads "
                         f"{SUPPORTED_VERSIONS}")
    try:
        config = SimpleGVRConfig.from_dict(parse_json(meta["config"], "the config"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{name!r} has no valid config in its metadata: {e}") from None
    stated = meta.get("latent_format", config.latent_format)
    try:
        stated_fmt = get_format(stated).name
    except ValueError as e:
        raise ValueError(f"{name!r}: metadata latent_format: {e}") from None
    if stated_fmt != config.latent_format:
        raise ValueError(f"{name!r}: metadata latent_format {stated!r} disagrees with its config's "
                         f"{config.latent_format!r}")
    return config


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SimpleGVR:
    """Rebuild a SimpleGVR from a checkpoint. Nothing large is allocated before the file is known to be sound:
    format and version, then the config's types and ranges (config.LIMITS), the metadata's latent format and
    sampling recipe (`model.sampling`), then every tensor name, shape and dtype of the header against the model
    built on `meta`; only then are the weights read, and they must be finite."""
    name = str(path)
    with open_safetensors(path) as f:
        config = _header_config(f, name)
        sampling = _header_sampling(dict(f.metadata() or {}), name)
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
        if v.data_ptr() % WEIGHT_ALIGNMENT:
            # The file's tensors sit at offsets that depend on the header's length; CPU kernels take other vector
            # paths on unaligned weights, so without this copy the outputs would depend on the metadata's length.
            tensors[k] = v.clone()
    model.dit.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dit.")}, assign=True)
    model.upsampler.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("upsampler.")}, assign=True)
    model.sampling = sampling
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


WEIGHT_ALIGNMENT = 64  # bytes: what torch's CPU allocator gives every tensor
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
    return {_rename(k, _DIFFUSERS_TO_WAN) or k: v for k, v in sd.items()}, "diffusers"


def _rename(key: str, table) -> str | None:
    """`key` after the first rule of `table` [(pattern, replacement)] that matches it; None when none does."""
    for pat, rep in table:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    return None


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


def import_wan(sd_or_path, *, config=None, upsampler: str | None = None, num_heads: int | None = None,
               latent_format: str | None = None, attention: str | None = None, upsampler_hidden: int = 128,
               seed: int = 0) -> SimpleGVR:
    """Build a SimpleGVR from a Wan 2.1 / 2.2 T2V transformer (original, ComfyUI or diffusers keys).

    `config` (a named config such as 'wan2.2-ti2v-5b' or 'cogvideox-1.3b', a dict or a SimpleGVRConfig) is the
    target: the weights must have its DiT's shape, and it sets the latent format, text length and upsampler. Without
    it everything is inferred from the shapes (latent format from the channel count: 16 -> wan21, 48 -> wan22).
    `patch_embedding` is widened with zeros for the condition channels and the noise-level embedding's last
    projection is zero, so the returned DiT outputs exactly what the T2V model outputs, for any condition. New
    weights (upsampler, first noise-level layer) are drawn from `seed`.
    """
    if isinstance(sd_or_path, (str, os.PathLike)):
        sd = read_weights(sd_or_path)
    else:  # the model takes the tensors over: copy the caller's, so training it leaves them alone
        sd = {k: v.clone() for k, v in dict(sd_or_path).items()}
    sd, _source = wan_state_dict_to_original(sd)
    check_finite(sd, "the Wan weights")
    if config is not None:
        cfg = _import_target(get_config(config), sd, num_heads, latent_format, upsampler, attention)
        base_in = cfg.dit.out_dim
    else:
        base = infer_wan_dit_config(sd, num_heads)
        base_in = base.in_dim
        fmt = get_format(latent_format) if latent_format else {16: get_format("wan21"), 48: get_format("wan22")}.get(base.out_dim)
        if fmt is None:
            raise ValueError(f"Wan model has {base.out_dim} latent channels: pass latent_format explicitly")
        dit_cfg = DiTConfig(**{**base.__dict__, "in_dim": 2 * base.out_dim, "attention": attention or "full"})
        cfg = SimpleGVRConfig(name="wan-import", latent_format=fmt.name, dit=dit_cfg,
                              upsampler=UpsamplerConfig(mode=upsampler or "learned", channels=base.out_dim,
                                                        hidden=upsampler_hidden))
    # The DiT is built on `meta` and takes the Wan tensors as they are (a 5B import needs no random 5B model first);
    # only the new weights - upsampler, noise-level embedding - are made for real, from `seed`.
    with torch.device("meta"):
        model = SimpleGVR(cfg)
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
        raise ValueError(f"Wan state dict does not match a Wan T2V transformer: missing {missing[:5]}, unexpected {extra[:5]}")
    for k in wan_keys:
        if tuple(sd[k].shape) != tuple(target[k].shape):
            raise ValueError(f"Wan tensor {k} has shape {tuple(sd[k].shape)}, expected {tuple(target[k].shape)}")
    model.dit.load_state_dict({k: sd[k].to(dtype) for k in wan_keys}, strict=False, assign=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.upsampler = LatentUpsampler(cfg.upsampler).to(dtype)
        if cfg.dit.noise_level_embed:
            model.dit.noise_level_embedding.to_empty(device="cpu")
            model.dit.init_noise_level_embedding()
            model.dit.noise_level_embedding.to(dtype)
    return model


_SHAPE_FIELDS = ("dim", "ffn_dim", "num_layers", "out_dim", "patch_size", "freq_dim", "text_dim", "qk_norm",
                 "cross_attn_norm")


def _import_target(target: SimpleGVRConfig, sd: dict, num_heads: int | None, latent_format: str | None,
                   upsampler: str | None, attention: str | None) -> SimpleGVRConfig:
    """The named config an import fills, after checking that the Wan weights have its DiT's shape."""
    base = infer_wan_dit_config(sd, num_heads or target.dit.num_heads)
    wrong = [f"{k}={getattr(base, k)!r} (config: {getattr(target.dit, k)!r})" for k in _SHAPE_FIELDS
             if getattr(base, k) != getattr(target.dit, k)]
    if base.num_heads != target.dit.num_heads:
        wrong.append(f"num_heads={base.num_heads} (config: {target.dit.num_heads})")
    if wrong:
        raise ValueError(f"the Wan weights do not have the shape of config '{target.name}': {', '.join(wrong)}")
    if latent_format is not None and get_format(latent_format).name != target.latent_format:
        raise ValueError(f"latent_format {latent_format!r} disagrees with config '{target.name}' "
                         f"({target.latent_format!r}): leave it out, the config sets it")
    d = target.to_dict()
    if upsampler is not None:
        d["upsampler"]["mode"] = upsampler
    if attention is not None:
        d["dit"]["attention"] = attention
    return SimpleGVRConfig.from_dict(d)


def import_wan_t2v(sd_or_path, num_heads: int | None = None) -> torch.nn.Module:
    """A plain Wan T2V transformer (in_dim = C, no noise-level embedding) as a SimpleGVRDiT, e.g. for
    model-guided degradation."""
    from .models import SimpleGVRDiT

    sd = read_weights(sd_or_path) if isinstance(sd_or_path, (str, os.PathLike)) else dict(sd_or_path)
    sd, _ = wan_state_dict_to_original(sd)
    cfg = DiTConfig(**{**infer_wan_dit_config(sd, num_heads).__dict__, "noise_level_embed": False})
    with torch.device("meta"):
        dit = SimpleGVRDiT(cfg)
    dit.load_state_dict(sd, strict=True, assign=True)
    return dit


# --- CogVideoX transformer: diffusers -> ComfyUI key names -----------------------------------------
# ComfyUI v0.22 runs CogVideoX natively (comfy/ldm/cogvideo/model.py) but loads only its own key names, and the
# published CogVideoX transformers (THUDM/CogVideoX-*/transformer) are in diffusers' names. The table follows the two
# modules side by side; keys it does not name must be the ones both share.
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
_COGVIDEOX_SHARED = re.compile(r"^(patch_embed\.(proj|text_proj|pos_embedding)|norm_final|norm_out\.(linear|norm)|proj_out)"
                               r"(\.(weight|bias))?$")


def cogvideox_to_comfyui(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers `CogVideoXTransformer3DModel` state dict in the key names ComfyUI's CogVideoX loader reads."""
    if "blocks.0.norm1.linear.weight" in sd:
        raise ValueError("this CogVideoX transformer already has ComfyUI's key names (blocks.N.norm1...): use it as it is")
    if "transformer_blocks.0.norm1.linear.weight" not in sd or "patch_embed.proj.weight" not in sd:
        raise ValueError(f"not a diffusers CogVideoX transformer: no 'transformer_blocks.0.norm1.linear.weight' / "
                         f"'patch_embed.proj.weight' (first keys: {sorted(sd)[:5]})")
    out = {}
    for k, v in sd.items():
        new = _rename(k, _COGVIDEOX_TO_COMFYUI)
        if new is None and not _COGVIDEOX_SHARED.match(k):
            raise ValueError(f"unexpected CogVideoX transformer tensor {k!r}: no ComfyUI name for it")
        out[new or k] = v
    return out


def convert_cogvideox(src: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype | None = None, *,
                      replace: bool = True) -> Path:
    """Write the CogVideoX transformer at `src` (a diffusers `transformer/` folder or file) as one safetensors file in
    ComfyUI's key names (for UNETLoader, models/diffusion_models/), optionally cast to `dtype`; atomically. Weights
    with NaN or Inf, or values that `dtype` cannot hold (fp16 above 65504), are refused."""
    sd = cogvideox_to_comfyui(read_weights(src))
    check_finite(sd, f"the CogVideoX transformer {str(src)!r}")
    if dtype is not None:
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        for k, v in cast.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                big = float(sd[k].abs().max())
                raise ValueError(f"tensor {k} holds values up to {big:.4g}, beyond what {str(dtype).replace('torch.', '')} "
                                 f"can hold (they would become Inf): use --dtype bf16 or keep; nothing was written")
        sd = cast
    sd = {k: v.contiguous() for k, v in sd.items()}
    meta = {"source": Path(src).name, "converted_by": "simplegvr convert-cogvideox"}
    return atomic_write(out, lambda tmp: save_file(sd, tmp, metadata=meta), replace=replace)
