"""What the SimpleGVR nodes do between ComfyUI's data types and `simplegvr_core`, without importing comfy.

ComfyUI hands a LATENT as `{"samples": tensor, ...}`, a CONDITIONING as `[[tensor [B, L, D], dict], ...]`
and an IMAGE as a float tensor [N, H, W, 3] in [0, 1]. These functions validate them (a `ValueError`
with a message ComfyUI shows in its UI), convert them for the core and back. The node modules beside
this file add only the schema declarations and ComfyUI's model management, progress bar and previews,
so everything here is tested in CI, which has no ComfyUI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ._core import SimpleGVR, checkpoint, classic, colour, degrade, flow_guided, latent_formats, parse_json, pipeline, resize_frames

log = logging.getLogger("SimpleGVR")

LATENT_KEY = "simplegvr"  # where the Latent Upsampler puts the condition inside the LATENT dict
MODEL_EXTENSIONS = (".safetensors", ".sft")
LATENT_SCALE_CHOICES = ("auto", "raw", "normalised")
OUTPUT_SCALE_CHOICES = ("same as input", "raw", "normalised")
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEFAULT_WIDTH, DEFAULT_HEIGHT = 1920, 1080
RESIZE_CHOICES = pipeline.RESIZE_MODES  # "short edge" (default), "long edge", "width and height", "scale"
DEFAULT_RESIZE_BY, DEFAULT_EDGE = pipeline.DEFAULT_RESIZE_BY, pipeline.DEFAULT_EDGE
MEMORY_CHOICES = ("auto", "manual")
GiB = pipeline.GiB


# --- model files -------------------------------------------------------------------------------------
def is_model_file(name: str) -> bool:
    return name.lower().endswith(MODEL_EXTENSIONS)


def is_simplegvr_file(path: str) -> bool:
    """True when `path` is a safetensors file whose metadata says format=simplegvr (reads the header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format") == checkpoint.FORMAT_NAME
    except Exception:  # not safetensors, truncated, unreadable: not ours
        return False


def resolve_dtype(name: str, auto: torch.dtype) -> torch.dtype:
    """'auto' -> `auto` (what ComfyUI picks for the device), else bf16 / fp16 / fp32."""
    if name == "auto":
        return auto
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: expected one of {list(DTYPE_CHOICES)}")
    return DTYPES[name]


# --- LATENT in ----------------------------------------------------------------------------------
def read_video_latent(latent, fmt, latent_scale: str = "auto", what: str = "samples") -> latent_formats.VideoLatent:
    """A LATENT dict from a video sampler, validated by the core's `read_latent` (the CLI's reader too)."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{what}: expected a LATENT (a dict with 'samples'), got {type(latent).__name__}")
    return latent_formats.read_latent(latent["samples"], fmt, latent_scale, what)


# --- Latent Upsampler ----------------------------------------------------------------------------
@dataclass
class ConditionInfo:
    """What the Latent Upsampler hands the SimpleGVR Sampler inside the LATENT (under LATENT_KEY)."""

    condition: object  # simplegvr_core.pipeline.Condition, normalised, on the CPU
    latent_format: str
    layout: str
    scale: str
    seed: int
    model: str = ""
    extra: dict = field(default_factory=dict)


def target_args(resize_by: str, edge: int, width: int, height: int, scale: float) -> dict:
    """The keyword arguments of build_condition (`pipeline.target_size`) for the node's size widgets."""
    if resize_by == "short edge":
        return {"short_edge": int(edge)}
    if resize_by == "long edge":
        return {"long_edge": int(edge)}
    if resize_by == "width and height":
        return {"width": int(width), "height": int(height)}
    if resize_by == "scale":
        return {"scale": float(scale)}
    raise ValueError(f"resize_by {resize_by!r}: expected one of {list(RESIZE_CHOICES)}")


DEFAULT_SIZE = target_args(DEFAULT_RESIZE_BY, DEFAULT_EDGE, DEFAULT_WIDTH, DEFAULT_HEIGHT, pipeline.DEFAULT_SCALE)


def size_text(model: SimpleGVR, lr_hw, hr_hw) -> str:
    """'latent 60x104 (832x480 px) -> latent 135x234 (1872x1080 px)' for logs and the node."""
    r = model.latent_format.spatial_ratio
    return (f"latent {lr_hw[0]}x{lr_hw[1]} ({lr_hw[1] * r}x{lr_hw[0] * r} px) -> latent {hr_hw[0]}x{hr_hw[1]} "
            f"({hr_hw[1] * r}x{hr_hw[0] * r} px)")


def to_output(x_raw: torch.Tensor, fmt, layout: str, scale: str) -> torch.Tensor:
    """A raw [B,C,T,H,W] latent in the scale and layout the graph expects, float32 on the CPU."""
    fmt = latent_formats.get_format(fmt)
    x = x_raw.detach().to("cpu", torch.float32)
    if scale == "normalised":
        x = fmt.normalise(x)
    elif scale != "raw":
        raise ValueError(f"scale {scale!r}: expected 'raw' or 'normalised'")
    return latent_formats.from_bcthw(x, layout).contiguous()


def upsample_latent(model: SimpleGVR, lr: latent_formats.VideoLatent, *, size: dict, noise_level: float, seed: int,
                    model_name: str = "", chunk_frames: int | str | None = 8, memory_budget=None) -> dict:
    """The Latent Upsampler's LATENT: `samples` = the LR latent resized bilinearly to the target size, in
    the incoming scale and layout (a sensible VAE Decode preview, and a fair start for other samplers);
    LATENT_KEY = the noise-augmented, upsampled condition c the SimpleGVR Sampler denoises against.
    chunk_frames / memory_budget: build_condition's ("auto": the largest chunk that fits the budget)."""
    # The node puts the result back into the incoming layout and scale itself (to_output), so the core works in BCTHW.
    bcthw = latent_formats.VideoLatent(raw=lr.raw, layout="BCTHW", scale="raw", note=lr.note)
    cond = pipeline.build_condition(model, bcthw, noise_level=noise_level, seed=seed, chunk_frames=chunk_frames,
                                    memory_budget=memory_budget, **size)
    preview = resize_frames(lr.raw, tuple(cond.c.shape[-2:]))
    fmt = model.latent_format
    info = ConditionInfo(condition=cond, latent_format=fmt.name, layout=lr.layout, scale=lr.scale, seed=int(seed),
                         model=model_name, extra={"lr_shape": tuple(lr.raw.shape)})
    return {"samples": to_output(preview, fmt, lr.layout, lr.scale), LATENT_KEY: info}


def condition_from_latent(latent, model: SimpleGVR, model_name: str = "") -> ConditionInfo | None:
    """The condition the Latent Upsampler stored in `latent`, checked against `model`; None for a plain LATENT."""
    if not isinstance(latent, dict) or LATENT_KEY not in latent:
        return None
    info = latent[LATENT_KEY]
    if not isinstance(info, ConditionInfo):
        raise ValueError(f"latent['{LATENT_KEY}'] is a {type(info).__name__}, not a SimpleGVR condition: "
                         "connect the LATENT output of SimpleGVR Latent Upsampler")
    fmt = model.latent_format
    c = info.condition.c
    if info.latent_format != fmt.name or c.shape[1] != fmt.channels:
        raise ValueError(f"the latent was upsampled for '{info.latent_format}' latents ({c.shape[1]} channels) but the "
                         f"SimpleGVR model works in '{fmt.name}' latents ({fmt.channels} channels): connect the same "
                         "model to Latent Upsampler and Sampler")
    if model_name and info.model and info.model != model_name:
        log.warning("SimpleGVR Sampler: the condition was made by the upsampler of %r, sampling with %r",
                    info.model, model_name)
    return info


# --- Sampler: where the DiT runs -----------------------------------------------------------------
def sampling_plan(model: SimpleGVR, shape, *, memory: str, free: int | None, cfg: float, attention: str | None,
                  chunk_frames: int = 0, tile_size: int = 0, dtype=None):
    """The Sampler's SamplingPlan and the line that says so on the node and in the log.

    memory="auto": `pipeline.auto_plan` for `free` bytes (what ComfyUI reports free once the model is loaded);
    "manual": `chunk_frames` latent frames per temporal window (0: the attention mode's default) and square spatial
    tiles of `tile_size` latent pixels (0: none)."""
    if memory == "auto":
        plan = pipeline.auto_plan(model, shape, int(free), cfg=cfg, dtype=dtype, attention=attention)
        head = f"memory auto, {free / GiB:.1f} GiB free"
    elif memory == "manual":
        tiles = (int(tile_size), int(tile_size)) if tile_size else None
        plan = pipeline.plan_sampling(model, shape, attention=attention, chunk_frames=int(chunk_frames) or "auto",
                                      tile_size=tiles)
        head = "memory manual"
    else:
        raise ValueError(f"memory {memory!r}: expected one of {list(MEMORY_CHOICES)}")
    need = plan.memory(model, cfg=cfg, dtype=dtype)
    return plan, f"{head}: {plan.describe()}; estimate {need / GiB:.2f} GiB beyond the weights"


# --- CONDITIONING -------------------------------------------------------------------------------
def conditioning_to_context(cond, text_dim: int, what: str = "positive") -> torch.Tensor | None:
    """The text features [B, L, text_dim] of a CONDITIONING; None (the null prompt) when not connected."""
    if cond is None:
        return None
    if not isinstance(cond, (list, tuple)) or not cond:
        raise ValueError(f"{what}: expected a CONDITIONING (a non-empty list of [tensor, dict]), got {type(cond).__name__}")
    if len(cond) > 1:
        raise ValueError(f"{what} holds {len(cond)} combined conditionings: SimpleGVR takes one text (use Conditioning "
                         "(Concat) to join prompts, not Conditioning (Combine))")
    entry = cond[0]
    t = entry[0] if isinstance(entry, (list, tuple)) and entry else None
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{what}: expected a CONDITIONING entry [tensor, dict], got {type(entry).__name__}")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"{what} conditioning has shape {tuple(t.shape)}: expected text features [B, tokens, width]")
    if t.shape[-1] != text_dim:
        raise ValueError(f"{what} conditioning has width {t.shape[-1]} (shape {tuple(t.shape)}) but the SimpleGVR model "
                         f"expects text_dim {text_dim}: connect the text encoder the T2V model used (umt5-xxl for Wan, "
                         "T5-XXL for CogVideoX: width 4096)")
    t = t.detach().to("cpu", torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} conditioning contains NaN or Inf")
    return t


# --- IMAGE frames and the degradations ------------------------------------------------------------
def images_to_frames(images, what: str = "images") -> np.ndarray:
    """A ComfyUI IMAGE (float [N, H, W, 3] in [0, 1], one video frame per batch entry) -> uint8 [T, H, W, 3]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what}: expected an IMAGE tensor [frames, H, W, 3], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = " (RGBA: drop the alpha channel first)" if images.ndim == 4 and images.shape[-1] == 4 else ""
        raise ValueError(f"{what} has shape {tuple(images.shape)}: expected video frames [frames, H, W, 3]{hint}")
    if min(images.shape[:3]) < 1:
        raise ValueError(f"{what} has shape {tuple(images.shape)}: it is empty")
    if not images.is_floating_point():
        raise ValueError(f"{what} has dtype {images.dtype}: expected a float IMAGE in [0, 1]")
    x = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def frames_to_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> a ComfyUI IMAGE, float32 [T, H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0


FLOW_WIDGET_FIELDS = ("strength", "motion_threshold", "bleed", "blur", "dis_preset")


def flow_config(*, strength: float, motion_threshold: float, bleed: bool, blur: bool, dis_preset: str,
                extra_json: str = "") -> flow_guided.FlowGuidedConfig:
    """The flow-guided parameters of the node's widgets plus any other FlowGuidedConfig field from a JSON object."""
    d = {"strength": float(strength), "motion_threshold": float(motion_threshold), "bleed": bool(bleed),
         "blur": bool(blur), "dis_preset": dis_preset}
    if extra_json and extra_json.strip():
        extra = parse_json(extra_json, "flow_config_json")
        if not isinstance(extra, dict):
            raise ValueError(f"flow_config_json must be a JSON object like {{\"ellipses\": [1, 6]}}, got {extra_json!r}")
        dup = sorted(set(extra) & set(FLOW_WIDGET_FIELDS))
        if dup:
            raise ValueError(f"flow_config_json sets {dup}: set those with their widgets")
        known = {f.name for f in fields(flow_guided.FlowGuidedConfig)}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(f"flow_config_json has unknown keys {unknown}: expected keys from "
                             f"{sorted(known - set(FLOW_WIDGET_FIELDS))}")
        d.update({k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()})
    return flow_guided.FlowGuidedConfig.from_dict(d)


def classic_output_size(frames: np.ndarray, scale: float) -> tuple[int, int]:
    """(H, W) of the classic pipeline's output: the input size times `scale`, even, at least 2."""
    if not 0 < scale <= 1:
        raise ValueError(f"classic_scale={scale}: expected a factor in (0, 1]")
    h, w = frames.shape[1:3]
    return max(2, 2 * round(h * scale / 2)), max(2, 2 * round(w * scale / 2))


def degrade_frames(frames: np.ndarray, flow_cfg, seed: int, *, classic_strength: float | None = None,
                   classic_scale: float = 1.0, on_frame: Callable[[int], None] | None = None) -> np.ndarray:
    """The Flow Degrade node's call of the core chain (`degrade.degrade_frames`): flow-guided, then optionally the
    classic (RealBasicVSR) pipeline at severity `classic_strength` (None: off) resizing to `classic_scale` x the
    input size. The same seed gives what `simplegvr degrade` and training give."""
    if classic_strength is None:
        return degrade.degrade_frames(frames, "flow", None, seed, flow_config=flow_cfg, on_frame=on_frame)
    cfg = classic.ClassicConfig().scaled(float(classic_strength))
    return degrade.degrade_frames(frames, "flow+classic", classic_output_size(frames, classic_scale), seed,
                                  flow_config=flow_cfg, classic_config=cfg, on_frame=on_frame)


# --- Colour Fix -------------------------------------------------------------------------------------
def colour_fix_images(images, reference, method: str, levels: int = colour.WAVELET_LEVELS) -> torch.Tensor:
    """The Colour Fix node: HR IMAGE frames corrected against the LR IMAGE frames they were upscaled from."""
    for what, x in (("images", images), ("reference", reference)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{what}: expected an IMAGE tensor [frames, H, W, 3], got {type(x).__name__}")
    out = colour.colour_fix_frames(method, images.detach().to("cpu", torch.float32),
                                   reference.detach().to("cpu", torch.float32), levels)
    return out.contiguous()
