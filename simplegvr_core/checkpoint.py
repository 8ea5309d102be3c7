"""SimpleGVR checkpoints: one safetensors file, our own format.

A checkpoint holds `dit.*` and `upsampler.*` tensors; its metadata holds
`{"format": "simplegvr", "version": "1", "config": <SimpleGVRConfig JSON>, "latent_format": name,
"sampling": <SamplingRecipe JSON>}` (`sampling`: how to sample it - steps, shift or timesteps,
r-embedding; a file without it is sampled as a teacher, 50 steps). Only safetensors is read: no file
is ever unpickled. Weights of other projects (Wan, CogVideoX, Ultra Flash) come in through
`weights.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .config import SimpleGVRConfig
from .files import atomic_write, parse_json
from .latent_formats import get_format
from .model import SimpleGVR
from .sampling import TEACHER_RECIPE, SamplingRecipe
from .weights import check_finite, open_safetensors, read_all

FORMAT_NAME = "simplegvr"

FORMAT_VERSION = "1"

SUPPORTED_VERSIONS = ("1",)

# Metadata of a checkpoint that `simplegvr import-wan` made and nobody trained: `training/train.py
# --export` writes the number of steps it trained instead.
TRAINED_STEPS_KEY = "trained_steps"

IMPORTED_METADATA = {
    TRAINED_STEPS_KEY: "0",
    "origin": "simplegvr import-wan (Wan T2V weights, untrained)",
}


def untrained_warning(metadata: dict[str, str], name: str = "this checkpoint") -> str | None:
    """The warning for a checkpoint whose metadata says it was never trained (`import-wan`); None
    otherwise."""
    if metadata.get(TRAINED_STEPS_KEY) != "0":
        return None
    return (
        f"{name} is an untrained SimpleGVR: `simplegvr import-wan` widened the Wan T2V weights, "
        f"which ignore the condition until trained, so it generates a new video from the prompt "
        f"instead of upscaling this one. Train it first (README: Training)."
    )


# Metadata naming the codec whose latents a model was trained on, written only where that is not a
# real VAE: the demo world's lapped codec copies Wan 2.1's latent contract and statistics, so its
# models load as Wan 2.1 models and run on a real Wan 2.1 latent without complaint. No statistic of
# the latent tells the two apart, so the file says it.
CODEC_KEY = "codec"

DEMO_CODEC = "simplegvr demo lapped codec (Wan 2.1 latent contract, 128x128 demo world)"

DEMO_CODEC_MARK = "simplegvr demo"  # in the name of every demo-world codec


def demo_world_warning(metadata: dict[str, str], name: str = "this checkpoint") -> str | None:
    """The warning for a checkpoint whose metadata says it was trained on the demo world's codec
    (`simplegvr demo`'s toy models); None otherwise."""
    codec = metadata.get(CODEC_KEY) or ""
    if DEMO_CODEC_MARK not in codec:
        return None
    return (
        f"{name} is a demo-world toy model (simplegvr demo), trained on 128x128 clips through "
        f"the {codec}: it does not upscale real video. That codec copies Wan 2.1's latent "
        "statistics, so a real Wan 2.1 latent is accepted without complaint and comes out as "
        "no real upscale. Use a trained or imported checkpoint (README: Model files)."
    )


def checkpoint_warning(metadata: dict[str, str], name: str = "this checkpoint") -> str | None:
    """The warning for a checkpoint that does not upscale real video, from its metadata: untrained
    (`untrained_warning`) or a demo-world model (`demo_world_warning`); None for any other."""
    return untrained_warning(metadata, name) or demo_world_warning(metadata, name)


SAMPLING_KEY = "sampling"


def save_checkpoint(
    model: SimpleGVR,
    path: str | os.PathLike,
    extra_metadata: dict[str, str] | None = None,
    sampling: SamplingRecipe | None = None,
    *,
    replace: bool = True,
) -> Path:
    """Write `model` to one safetensors file atomically (temporary file + rename), with its sampling
    recipe (`sampling`, default `model.sampling`: 50 steps for a model nobody distilled).
    replace=False never replaces an existing file, even one that appears while writing
    (`files.atomic_write`). Weights with NaN or Inf are refused: nothing non-finite is ever written
    as a model."""
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"save_checkpoint expects a SimpleGVR model, got {type(model).__name__}")
    sampling = model.sampling if sampling is None else sampling
    if not isinstance(sampling, SamplingRecipe):
        raise ValueError(f"sampling must be a SamplingRecipe, got {type(sampling).__name__}")
    if extra_metadata and SAMPLING_KEY in extra_metadata:
        raise ValueError(
            "extra_metadata has a 'sampling' entry: pass save_checkpoint(..., "
            "sampling=SamplingRecipe(...))"
        )
    tensors = {}
    for prefix, module in (("dit.", model.dit), ("upsampler.", model.upsampler)):
        for k, v in module.state_dict().items():
            if v.device.type == "meta":
                raise ValueError(f"cannot save {prefix}{k}: it is on the meta device (no data)")
            tensors[prefix + k] = v.detach().to("cpu").contiguous()
    check_finite(tensors, "the model to save")
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "latent_format": model.config.latent_format,
        SAMPLING_KEY: sampling.to_json(),
    }
    meta.update(extra_metadata or {})
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), replace=replace)


def checkpoint_config(path: str | os.PathLike) -> SimpleGVRConfig:
    """The config of a SimpleGVR checkpoint, from its header only (format, version, config, latent
    format checked as `load_checkpoint` checks them); no tensor is read."""
    with open_safetensors(path) as f:
        return _header_config(f, str(path))


def checkpoint_sampling(path: str | os.PathLike) -> SamplingRecipe:
    """The sampling recipe of a SimpleGVR checkpoint, from its header only (the teacher's, 50 steps,
    when it has none); ValueError for a file that is not a sound SimpleGVR checkpoint or whose
    recipe is malformed."""
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
        raise ValueError(
            f"{name!r} is not a SimpleGVR checkpoint: metadata format={meta.get('format')!r}, "
            f"expected {FORMAT_NAME!r} (import Wan weights with `simplegvr import-wan`)"
        )
    if meta.get("version") not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{name!r} has checkpoint version {meta.get('version')!r}: this SimpleGVR reads "
            f"{SUPPORTED_VERSIONS}"
        )
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
        raise ValueError(
            f"{name!r}: metadata latent_format {stated!r} disagrees with its config's "
            f"{config.latent_format!r}"
        )
    return config


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> SimpleGVR:
    """Rebuild a SimpleGVR from a checkpoint. Nothing large is allocated before the file is known to
    be sound: format and version, then the config's types and ranges (config.LIMITS), the metadata's
    latent format and sampling recipe (`model.sampling`), then every tensor name, shape and dtype of
    the header against the model built on `meta`; only then are the weights read, and they must be
    finite."""
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
            raise ValueError(
                f"{name!r} does not match its config: missing keys "
                f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
                f"{extra[:5]}{'...' if len(extra) > 5 else ''}"
            )
        for k, ref in expected.items():
            sl = f.get_slice(k)
            shape = tuple(sl.get_shape())
            if shape != tuple(ref.shape):
                raise ValueError(
                    f"{name!r}: tensor {k} has shape {shape}, expected {tuple(ref.shape)}"
                )
            if sl.get_dtype() not in _FLOAT_DTYPES:
                raise ValueError(
                    f"{name!r}: tensor {k} has dtype {sl.get_dtype()}, expected a floating type"
                )
        tensors = read_all(f, path)
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise ValueError(
                f"{name!r}: tensor {k} contains NaN or Inf (a diverged or corrupt checkpoint)"
            )
        if v.data_ptr() % WEIGHT_ALIGNMENT:
            # The file's tensors sit at offsets that depend on the header's length; CPU kernels take
            # other vector paths on unaligned weights, so without this copy the outputs would depend
            # on the metadata's length.
            tensors[k] = v.clone()
    model.dit.load_state_dict(
        {k[4:]: v for k, v in tensors.items() if k.startswith("dit.")}, assign=True
    )
    model.upsampler.load_state_dict(
        {k[10:]: v for k, v in tensors.items() if k.startswith("upsampler.")}, assign=True
    )
    model.sampling = sampling
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


WEIGHT_ALIGNMENT = 64  # bytes: what torch's CPU allocator gives every tensor

_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
