"""What the SimpleGVR nodes do between ComfyUI's data types and `simplegvr_core`, without importing
comfy.

ComfyUI hands a LATENT as `{"samples": tensor, ...}`, a CONDITIONING as `[[tensor [B, L, D], dict],
...]` and an IMAGE as a float tensor [N, H, W, 3] in [0, 1]. These functions validate them (a
`ValueError` with a message ComfyUI shows in its UI), convert them for the core and back. The node
modules beside this file add only the schema declarations and ComfyUI's model management, progress
bar and previews, so everything here is tested in CI, which has no ComfyUI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ._core import (
    DTYPES,
    SimpleGVR,
    checkpoint,
    classic,
    colour,
    degrade,
    flow_guided,
    format_bytes,
    latent_formats,
    parse_json,
    pipeline,
    plan,
    resize_frames,
    weights,
)

log = logging.getLogger("SimpleGVR")

LATENT_KEY = "simplegvr"  # where the Latent Upsampler puts the condition inside the LATENT dict
MODEL_EXTENSIONS = (".safetensors", ".sft")
LATENT_SCALE_CHOICES = (pipeline.AUTO, *latent_formats.LATENT_SCALES)
OUTPUT_SCALE_CHOICES = ("same as input", *latent_formats.LATENT_SCALES)
DTYPE_CHOICES = ("auto", *DTYPES)  # auto: what ComfyUI picks for the device
DEFAULT_WIDTH, DEFAULT_HEIGHT = 1920, 1080
# "short edge" (default), "long edge", "width and height", "scale"
RESIZE_CHOICES = pipeline.RESIZE_MODES
DEFAULT_RESIZE_BY, DEFAULT_EDGE = pipeline.DEFAULT_RESIZE_BY, pipeline.DEFAULT_EDGE
MEMORY_CHOICES = ("auto", "manual")
# the noise_level widget's "auto": the checkpoint's recipe (pipeline.resolve_noise_level)
AUTO_NOISE = -1.0
AUTO_GUIDANCE = 0.0  # the cfg widget's "auto": the checkpoint's recipe (pipeline.resolve_guidance)


def noise_level_arg(value: float) -> float | str:
    """The core's noise_level for the widget's value: "auto" for AUTO_NOISE (any negative), else the
    value."""
    return pipeline.AUTO if float(value) < 0 else float(value)


def guidance_arg(value: float) -> float | str:
    """The core's cfg for the widget's value: "auto" for AUTO_GUIDANCE, else the value."""
    return pipeline.AUTO if float(value) == AUTO_GUIDANCE else float(value)


@dataclass
class Host:
    """What ComfyUI's model management gives a node, as plain callables (runtime.host makes one;
    tests fake it)."""

    # load the model onto its device and free this many bytes more for the activations
    load: Callable[[int], None]
    free: Callable[[], int]  # bytes free on the model's device now
    budget: int | None = None  # the most a run may plan for (the device's total memory)
    model_name: str = ""


# --- model files ----------------------------------------------------------------------------------
def is_model_file(name: str) -> bool:
    return name.lower().endswith(MODEL_EXTENSIONS)


def is_simplegvr_file(path: str) -> bool:
    """True when `path` is a safetensors file whose metadata says format=simplegvr (reads the header
    only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format") == checkpoint.FORMAT_NAME
    except Exception:  # not safetensors, truncated, unreadable: not ours
        return False


# What the loaders list: weights files of a kind, told from their names alone
# (`weights.weights_kind`). Ultra Flash's published files (huggingface.co/xin1u/UltraFlash) come
# first in their lists when present.
WEIGHT_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt")
ULTRAFLASH_DIT, ULTRAFLASH_UPSAMPLER = "sr_dit_sparse.pth", "latent_upsampler.pth"
TINY_DECODER = "tiny_decoder.pth"
ULTRAFLASH_URL = "https://huggingface.co/xin1u/UltraFlash/resolve/main/"
_stat_cache: dict[tuple, object] = {}


def _stat_key(path) -> tuple:
    """(path, mtime, size): what a cache of a file's contents is keyed on (a changed file is read
    again)."""
    st = os.stat(path)
    return str(path), st.st_mtime_ns, st.st_size


def _cached(what: str, path, compute: Callable):
    key = (what, *_stat_key(path))
    if key not in _stat_cache:
        _stat_cache[key] = compute(path)
    return _stat_cache[key]


def weight_files(entries, kinds: tuple[str, ...], first: str = "") -> list[str]:
    """The names of `entries` ((name, full path) pairs of a model folder) that hold weights of one
    of `kinds`, or whose kind cannot be told from their names (a legacy pickle): `first` (the
    published file) at the top, then in folder order, each name once. SimpleGVR checkpoints and
    files of other kinds are left out."""
    names = []
    for name, path in entries:
        if name in names or not name.lower().endswith(WEIGHT_EXTENSIONS) or not path:
            continue
        try:
            kind = _cached("kind", path, weights.weights_kind)
        except OSError:
            continue
        if kind is None or kind in kinds:
            names.append(name)
    return sorted(names, key=lambda n: n != first)


DEMO_HEADLINE = "DEMO WORLD toy model: not for real video"
UNTRAINED_HEADLINE = "UNTRAINED: makes a new video, no upscale"


def checkpoint_warning(path, name: str) -> tuple[str, str] | None:
    """(headline, warning) for a SimpleGVR checkpoint that is not a video upscaler, from its
    metadata (the header only): an untrained `import-wan` one, or one of the demo world's toy
    models (its `codec` names the demo codec: the files the pack ships, copied or renamed, and
    every demo rebuild's). None for any other checkpoint."""
    meta = weights.read_metadata(path)
    warning = checkpoint.untrained_warning(meta, name)
    if warning:
        return UNTRAINED_HEADLINE, warning
    warning = checkpoint.demo_world_warning(meta, name)
    if warning:
        return DEMO_HEADLINE, warning
    return None


def flagged_checkpoints(entries) -> dict[str, str]:
    """{name: headline} of the checkpoints in `entries` ((name, full path) pairs) that
    `checkpoint_warning` flags, for the loader's tooltip: seen before anything runs."""
    out = {}
    for name, path in entries:
        try:
            found = _cached("warning", path, lambda p, n=name: checkpoint_warning(p, n))
        except (OSError, ValueError):
            continue
        if found:
            out[name] = found[0]
    return out


def node_text(headline: str, *details: str) -> str:
    """The text under a node: the node shows about two lines at its default size, so the one thing
    that matters comes first in a short line (a warning, or what was done), the details after a
    blank line."""
    return "\n\n".join([headline, *[d for d in details if d]])


def resolve_dtype(name: str, auto: torch.dtype) -> torch.dtype:
    """'auto' -> `auto` (what ComfyUI picks for the device), else bf16 / fp16 / fp32."""
    if name == "auto":
        return auto
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: expected one of {list(DTYPE_CHOICES)}")
    return DTYPES[name]


# --- Ultra Flash ---------------------------------------------------------------------------
_ultraflash: dict[tuple, SimpleGVR] = {}


def load_ultraflash(
    dit_path,
    upsampler_path,
    *,
    num_heads: int = 0,
    dtype: str = "auto",
    auto_dtype: Callable[[int], torch.dtype] = lambda params: torch.float32,
) -> SimpleGVR:
    """Ultra Flash's two published files as a SimpleGVR (`weights.import_ultraflash`) in `dtype`
    ('auto': auto_dtype(parameter count), what ComfyUI picks for the device), kept while both files
    are unchanged (path, mtime, size): the next run with the same files reuses it. One at a time
    (the real DiT has 1.4B parameters). num_heads 0: from the DiT's width (12 at 1536, as
    published)."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 0:
        raise ValueError(
            f"num_heads={num_heads!r}: expected 0 (from the DiT's width) or a number of heads"
        )
    key = (_stat_key(dit_path), _stat_key(upsampler_path), num_heads, dtype)
    if key not in _ultraflash:
        _ultraflash.clear()  # the last one goes before the next is read: never two copies in memory
        model = weights.import_ultraflash(dit_path, upsampler_path, num_heads=num_heads or None)
        params = sum(p.numel() for p in model.parameters())
        model = model.to(dtype=resolve_dtype(dtype, auto_dtype(params)))
        _ultraflash[key] = model.eval().requires_grad_(False)
    return _ultraflash[key]


def model_text(model: SimpleGVR, warning: tuple[str, str] | None = None) -> str:
    """What Load SimpleGVR Model / Load Ultra Flash Model show under the node: a warning's headline,
    or what the model is, on the first line."""
    params = sum(p.numel() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    cfg, recipe = model.config, model.sampling
    steps = "one-step" if recipe.steps == 1 else f"{recipe.steps}-step"
    name = "Ultra Flash" if cfg.name == "ultraflash" else cfg.name
    about = f"{steps} {name}, {params / 1e6:.0f}M parameters, {dtype}"
    attention = model.dit.attention_mode
    if attention == "block_sparse_causal":
        attention += f" in groups of {cfg.dit.causal_group_frames} latent frames"
    native = model.upsampler.native_size((8, 8))
    up = f"upsampler {cfg.upsampler.mode}" + (f" at its native {native[0] // 8}x" if native else "")
    detail = f"{model.latent_format.name} latents; attention {attention}; {up}"
    if warning:
        return node_text(f"WARNING: {warning[0]}", warning[1], about, detail)
    return node_text(about, detail)


# --- LATENT in ----------------------------------------------------------------------------------
def read_video_latent(
    latent, fmt, latent_scale: str = "auto", what: str = "samples"
) -> latent_formats.VideoLatent:
    """A LATENT dict from a video sampler, validated by the core's `read_latent` (the CLI's reader
    too)."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(
            f"{what}: expected a LATENT (a dict with 'samples'), got {type(latent).__name__}"
        )
    return latent_formats.read_latent(latent["samples"], fmt, latent_scale, what)


# --- Latent Upsampler ----------------------------------------------------------------------------
@dataclass
class ConditionInfo:
    """What the Latent Upsampler hands the SimpleGVR Sampler inside the LATENT (under
    LATENT_KEY)."""

    condition: object  # simplegvr_core.pipeline.Condition, normalised, on the CPU
    latent_format: str
    layout: str
    scale: str
    seed: int
    model: str = ""
    extra: dict = field(default_factory=dict)


def target_args(resize_by: str, edge: int, width: int, height: int, scale: float) -> dict:
    """The keyword arguments of build_condition (`pipeline.target_size`) for the node's size
    widgets."""
    if resize_by == "short edge":
        return {"short_edge": int(edge)}
    if resize_by == "long edge":
        return {"long_edge": int(edge)}
    if resize_by == "width and height":
        return {"width": int(width), "height": int(height)}
    if resize_by == "scale":
        return {"scale": float(scale)}
    # the size the model's upsampler was trained for (Ultra Flash: 2x), else 2.25x
    if resize_by == "native":
        return {}
    raise ValueError(f"resize_by {resize_by!r}: expected one of {list(RESIZE_CHOICES)}")


DEFAULT_SIZE = target_args(
    DEFAULT_RESIZE_BY, DEFAULT_EDGE, DEFAULT_WIDTH, DEFAULT_HEIGHT, pipeline.DEFAULT_SCALE
)


def size_text(model: SimpleGVR, lr_hw, hr_hw) -> str:
    """'latent 60x104 (832x480 px) -> latent 135x234 (1872x1080 px)' for logs and the node."""
    r = model.latent_format.spatial_ratio
    return (
        f"latent {lr_hw[0]}x{lr_hw[1]} ({lr_hw[1] * r}x{lr_hw[0] * r} px) -> latent "
        f"{hr_hw[0]}x{hr_hw[1]} ({hr_hw[1] * r}x{hr_hw[0] * r} px)"
    )


def to_output(x_raw: torch.Tensor, fmt, layout: str, scale: str) -> torch.Tensor:
    """A raw [B,C,T,H,W] latent in the scale and layout the graph expects, float32 on the CPU."""
    fmt = latent_formats.get_format(fmt)
    x = x_raw.detach().to("cpu", torch.float32)
    if scale == "normalised":
        x = fmt.normalise(x)
    elif scale != "raw":
        raise ValueError(f"scale {scale!r}: expected 'raw' or 'normalised'")
    return latent_formats.from_bcthw(x, layout).contiguous()


def upsample_latent(
    model: SimpleGVR,
    lr: latent_formats.VideoLatent,
    *,
    size: dict | None = None,
    noise_level: float,
    seed: int,
    model_name: str = "",
    plan: pipeline.ConditionPlan | None = None,
) -> dict:
    """The Latent Upsampler's LATENT: `samples` = the LR latent resized bilinearly to the target
    size, in the incoming scale and layout (a sensible VAE Decode preview, and a fair start for
    other samplers); LATENT_KEY = the noise-augmented, upsampled condition c the SimpleGVR Sampler
    denoises against. plan: the `pipeline.ConditionPlan` to build it with (else one for `size`, in
    chunks of 8 latent frames)."""
    # The node puts the result back into the incoming layout and scale itself (to_output), so the
    # core works in BCTHW.
    bcthw = latent_formats.VideoLatent(raw=lr.raw, layout="BCTHW", scale="raw", note=lr.note)
    cond = pipeline.build_condition(
        model, bcthw, plan, noise_level=noise_level, seed=seed, **(size or {})
    )
    preview = resize_frames(lr.raw, tuple(cond.c.shape[-2:]))
    fmt = model.latent_format
    info = ConditionInfo(
        condition=cond,
        latent_format=fmt.name,
        layout=lr.layout,
        scale=lr.scale,
        seed=int(seed),
        model=model_name,
        extra={"lr_shape": tuple(lr.raw.shape)},
    )
    return {"samples": to_output(preview, fmt, lr.layout, lr.scale), LATENT_KEY: info}


def condition_latent(info: ConditionInfo) -> dict:
    """The Latent Upsampler's `hr_latent`: its own HR estimate (the condition c, with the condition
    noise it was given: none at Ultra Flash's recipe) as a LATENT in the input's scale and layout
    (raw for core graphs), for a core KSampler to re-denoise (the hires-fix path) or VAE Decode."""
    c = info.condition.c
    fmt = latent_formats.get_format(info.latent_format)
    return {"samples": to_output(fmt.denormalise(c), fmt, info.layout, info.scale)}


WARNING_HEADLINES = (
    ("changes the aspect ratio", "the picture is stretched"),
    ("outside what this model was trained for", "size outside the model's training"),
)


def warning_headline(warnings: tuple[str, ...] | list[str]) -> str:
    """One short line for the first warning ('WARNING: the picture is stretched'); the warnings
    follow in full."""
    first = warnings[0]
    short = next((h for words, h in WARNING_HEADLINES if words in first), "read below")
    more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
    return f"WARNING: {short}{more}"


def condition_from_latent(latent, model: SimpleGVR, model_name: str = "") -> ConditionInfo | None:
    """The condition the Latent Upsampler stored in `latent`, checked against `model`; None for a
    plain LATENT."""
    if not isinstance(latent, dict) or LATENT_KEY not in latent:
        return None
    info = latent[LATENT_KEY]
    if not isinstance(info, ConditionInfo):
        raise ValueError(
            f"latent['{LATENT_KEY}'] is a {type(info).__name__}, not a SimpleGVR condition: "
            "connect the LATENT output of SimpleGVR Latent Upsampler"
        )
    fmt = model.latent_format
    c = info.condition.c
    if info.latent_format != fmt.name or c.shape[1] != fmt.channels:
        raise ValueError(
            f"the latent was upsampled for '{info.latent_format}' latents ({c.shape[1]} channels) "
            f"but the SimpleGVR model works in '{fmt.name}' latents ({fmt.channels} channels): "
            f"connect the same model to Latent Upsampler and Sampler"
        )
    if model_name and info.model and info.model != model_name:
        log.warning(
            "SimpleGVR Sampler: the condition was made by the upsampler of %r, sampling with %r",
            info.model,
            model_name,
        )
    return info


def upsample(
    model: SimpleGVR,
    lr: latent_formats.VideoLatent,
    size: dict,
    noise_level: float,
    seed: int,
    host: Host,
) -> tuple[dict, str, tuple[str, ...]]:
    """The Latent Upsampler's work (also the Sampler's, for a plain LR latent): the condition
    planned once - its size, warnings and the room the whole clip would need, which ComfyUI is asked
    to free - then built in the largest chunks that fit what is free (the result does not depend on
    them). Returns the LATENT, the line that says what was done, and the warnings."""
    cplan = pipeline.plan_condition(model, lr.raw.shape, chunk_frames=None, **size)
    host.load(cplan.memory)
    free = host.free()
    cplan = cplan.fit(model, free)
    out = upsample_latent(
        model, lr, noise_level=noise_level, seed=seed, model_name=host.model_name, plan=cplan
    )
    chunk = cplan.chunk_frames or lr.raw.shape[2]
    r = model.latent_format.spatial_ratio
    (h, w), (H, W), t = lr.raw.shape[-2:], cplan.size, lr.raw.shape[2]
    headline = f"{w * r}x{h * r} -> {W * r}x{H * r} px, {t} latent frames"
    detail = (
        f"{size_text(model, (h, w), (H, W))}, {t} latent frames; upsampler in chunks of "
        f"{chunk} latent frames ({format_bytes(cplan.memory)} of {format_bytes(free)} free)"
    )
    if cplan.warnings:
        text = node_text(warning_headline(cplan.warnings), *cplan.warnings, headline, detail)
    else:
        text = node_text(headline, detail)
    return out, text, cplan.warnings


# --- Sampler: where the DiT runs -----------------------------------------------------------------
def sampling_plan(
    model: SimpleGVR,
    shape,
    *,
    memory: str,
    free: int | None,
    guidance: float,
    attention: str | None,
    chunk_frames: int = 0,
    tile_size: int = 0,
    dtype=None,
) -> tuple[plan.SamplingPlan, int, str]:
    """The Sampler's SamplingPlan, its memory estimate and the line that says so on the node and in
    the log.

    memory="auto": `plan.auto_plan` for `free` bytes (what ComfyUI reports free once the model is
    loaded); "manual": `chunk_frames` latent frames per temporal window (0: the attention mode's
    default) and square spatial tiles of `tile_size` latent pixels (0: none)."""
    if memory == "auto":
        chosen, need = plan.fit_plan(
            model, shape, int(free), guidance=guidance, dtype=dtype, attention=attention
        )
        head = f"memory auto, {format_bytes(free)} free"
    elif memory == "manual":
        tiles = (int(tile_size), int(tile_size)) if tile_size else None
        chosen = plan.plan_sampling(
            model,
            shape,
            attention=attention,
            chunk_frames=int(chunk_frames) or "auto",
            tile_size=tiles,
        )
        need = chosen.memory(model, guidance=guidance, dtype=dtype)
        head = "memory manual"
    else:
        raise ValueError(f"memory {memory!r}: expected one of {list(MEMORY_CHOICES)}")
    return (
        chosen,
        need,
        f"{head}: {chosen.describe()}; estimate {format_bytes(need)} beyond the weights",
    )


def sampler_headline(model: SimpleGVR, chosen: plan.SamplingPlan, n_steps: int, auto: bool) -> str:
    """The Sampler's first line: 'one-step Ultra Flash, 13 latent frames in 3 groups', '50 steps
    (auto), 21 latent frames, 2 DiT calls/step'."""
    name = "Ultra Flash" if model.config.name == "ultraflash" else model.config.name
    steps = ("one-step" if n_steps == 1 else f"{n_steps}-step") + (" (auto)" if auto else "")
    t = chosen.shape[2]
    if chosen.causal:
        return f"{steps} {name}, {t} latent frames in {len(chosen.t_windows)} groups"
    return f"{steps} {name}, {t} latent frames, {chosen.calls_per_step} DiT call(s)/step"


def run_sampler(
    model: SimpleGVR,
    samples,
    host: Host,
    *,
    context,
    negative_context,
    seed: int,
    steps: int | str,
    guidance: float | str,
    shift: float,
    sampler: str,
    attention: str | None,
    memory: str = "auto",
    colour_fix: str = "none",
    chunk_frames: int = 0,
    tile_size: int = 0,
    output_scale: str = "same as input",
    callback_for: Callable[[int], Callable] | None = None,
    say: Callable[[str], None] = lambda text: None,
    interrupt: Callable[[], None] | None = None,
) -> dict:
    """The SimpleGVR Sampler's work on a LATENT from the Latent Upsampler (or a plain LR latent,
    upsampled here with the Latent Upsampler's defaults): plan where the DiT runs for the memory
    ComfyUI frees (the room the attention mode's own plan would need is asked for first), sample,
    and return the output LATENT. Every size, plan and estimate is computed once and handed on.
    `say(text)` gets the lines for the node; `callback_for(n_steps)` makes the progress callback
    (its i / total count the steps of every streaming group); `interrupt()` runs after every DiT
    block and stops the run by raising (a host's Cancel)."""
    guidance = pipeline.resolve_guidance(model, guidance)
    info = condition_from_latent(samples, model, host.model_name)
    lines = []
    # a plain LR latent: the Latent Upsampler's defaults (short edge 1080, aspect kept)
    if info is None:
        lr = read_video_latent(samples, model.latent_format, "auto", "LR latent")
        out, text, _ = upsample(model, lr, DEFAULT_SIZE, pipeline.AUTO, seed, host)
        log.info(
            "SimpleGVR Sampler: a plain LATENT %s, upsampled with the defaults: %s; %s",
            tuple(samples["samples"].shape),
            text,
            lr.note,
        )
        info = out[LATENT_KEY]
        lines.append(text)
    cond = info.condition
    shape = tuple(cond.c.shape)
    # ask ComfyUI for the room the mode's own plan would need, then plan for what is free
    if memory == "auto":
        host.load(
            plan.plan_sampling(model, shape, attention=attention).memory(model, guidance=guidance)
        )
        free = host.free()
    else:
        free = None
    chosen, need, text = sampling_plan(
        model,
        shape,
        memory=memory,
        free=free,
        guidance=guidance,
        attention=attention,
        chunk_frames=chunk_frames,
        tile_size=tile_size,
    )
    host.load(need)
    n_steps = pipeline.step_count(model, steps)
    text += f"; {n_steps} steps" + (
        " (auto: the checkpoint's recommendation)" if steps == pipeline.AUTO_STEPS else ""
    )
    lines.append(text + (f"; colour fix: {colour_fix}" if colour_fix != "none" else ""))
    log.info("SimpleGVR Sampler: %s", lines[-1])
    headline = sampler_headline(model, chosen, n_steps, steps == pipeline.AUTO_STEPS)
    say(node_text(headline, *reversed(lines)))
    # auto planned for what is free (within the device); a manual plan is checked against the
    # device's memory
    x = pipeline.sample(
        model,
        cond,
        chosen,
        context=context,
        negative_context=negative_context,
        steps=steps,
        cfg=guidance,
        shift=float(shift),
        seed=int(seed),
        sampler=sampler,
        colour_fix=colour_fix,
        callback=callback_for(n_steps) if callback_for else None,
        memory_budget=host.budget if memory == "manual" else None,
        interrupt=interrupt,
    )
    scale = info.scale if output_scale == "same as input" else output_scale
    return {"samples": to_output(x, model.latent_format, info.layout, scale)}


# --- CONDITIONING -------------------------------------------------------------------------------
def conditioning_to_context(cond, what: str = "positive") -> torch.Tensor | None:
    """The text features of a CONDITIONING ([[tensor [B, L, width], dict]]); None (the null prompt)
    when not connected. Only the CONDITIONING's structure is checked here: the features themselves
    (width, batch, finite) are validated once, by `pipeline.prepare_context`, as for every host."""
    if cond is None:
        return None
    if not isinstance(cond, (list, tuple)) or not cond:
        raise ValueError(
            f"{what}: expected a CONDITIONING (a non-empty list of [tensor, dict]), got "
            f"{type(cond).__name__}"
        )
    if len(cond) > 1:
        raise ValueError(
            f"{what} holds {len(cond)} combined conditionings: SimpleGVR takes one text (use "
            f"Conditioning (Concat) to join prompts, not Conditioning (Combine))"
        )
    entry = cond[0]
    t = entry[0] if isinstance(entry, (list, tuple)) and entry else None
    if not isinstance(t, torch.Tensor):
        raise ValueError(
            f"{what}: expected a CONDITIONING entry [tensor, dict], got {type(entry).__name__}"
        )
    return t


# --- IMAGE frames and the degradations ------------------------------------------------------------
def images_to_frames(images, what: str = "images") -> np.ndarray:
    """A ComfyUI IMAGE (float [N, H, W, 3] in [0, 1], one video frame per batch entry) -> uint8 [T,
    H, W, 3]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"{what}: expected an IMAGE tensor [frames, H, W, 3], got {type(images).__name__}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = (
            " (RGBA: drop the alpha channel first)"
            if images.ndim == 4 and images.shape[-1] == 4
            else ""
        )
        raise ValueError(
            f"{what} has shape {tuple(images.shape)}: expected video frames [frames, H, W, 3]{hint}"
        )
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


def flow_config(
    *,
    strength: float,
    motion_threshold: float,
    bleed: bool,
    blur: bool,
    dis_preset: str,
    extra_json: str = "",
) -> flow_guided.FlowGuidedConfig:
    """The flow-guided parameters of the node's widgets plus any other FlowGuidedConfig field from a
    JSON object."""
    d = {
        "strength": float(strength),
        "motion_threshold": float(motion_threshold),
        "bleed": bool(bleed),
        "blur": bool(blur),
        "dis_preset": dis_preset,
    }
    if extra_json and extra_json.strip():
        extra = parse_json(extra_json, "flow_config_json")
        if not isinstance(extra, dict):
            raise ValueError(
                f'flow_config_json must be a JSON object like {{"ellipses": [1, 6]}}, got '
                f"{extra_json!r}"
            )
        dup = sorted(set(extra) & set(FLOW_WIDGET_FIELDS))
        if dup:
            raise ValueError(f"flow_config_json sets {dup}: set those with their widgets")
        known = {f.name for f in fields(flow_guided.FlowGuidedConfig)}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(
                f"flow_config_json has unknown keys {unknown}: expected keys from "
                f"{sorted(known - set(FLOW_WIDGET_FIELDS))}"
            )
        d.update({k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()})
    return flow_guided.FlowGuidedConfig.from_dict(d)


def classic_output_size(frames: np.ndarray, scale: float) -> tuple[int, int]:
    """(H, W) of the classic pipeline's output: the input size times `scale`, even, at least 2."""
    if not 0 < scale <= 1:
        raise ValueError(f"classic_scale={scale}: expected a factor in (0, 1]")
    h, w = frames.shape[1:3]
    return max(2, 2 * round(h * scale / 2)), max(2, 2 * round(w * scale / 2))


def degrade_frames(
    frames: np.ndarray,
    flow_cfg,
    seed: int,
    *,
    classic_strength: float | None = None,
    classic_scale: float = 1.0,
    on_frame: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The Flow Degrade node's call of the core chain (`degrade.degrade_frames`): flow-guided, then
    optionally the classic (RealBasicVSR) pipeline at severity `classic_strength` (None: off)
    resizing to `classic_scale` x the input size. The same seed gives what `simplegvr degrade` and
    training give."""
    if classic_strength is None:
        return degrade.degrade_frames(
            frames, "flow", None, seed, flow_config=flow_cfg, on_frame=on_frame
        )
    classic_config = classic.ClassicConfig().scaled(float(classic_strength))
    return degrade.degrade_frames(
        frames,
        "flow+classic",
        classic_output_size(frames, classic_scale),
        seed,
        flow_config=flow_cfg,
        classic_config=classic_config,
        on_frame=on_frame,
    )


# --- Colour Fix -----------------------------------------------------------------------------------
def colour_fix_images(
    images, reference, method: str, levels: int = colour.WAVELET_LEVELS
) -> torch.Tensor:
    """The Colour Fix node: HR IMAGE frames corrected against the LR IMAGE frames they were upscaled
    from."""
    for what, x in (("images", images), ("reference", reference)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"{what}: expected an IMAGE tensor [frames, H, W, 3], got {type(x).__name__}"
            )
    out = colour.colour_fix_frames(
        method,
        images.detach().to("cpu", torch.float32),
        reference.detach().to("cpu", torch.float32),
        levels,
    )
    return out.contiguous()


# --- Fast Decode: a TAEHV tiny decoder on a Wan LATENT ---------------------------------------
DEFAULT_DECODE_CHUNK = 6  # latent frames per chunk: Ultra Flash's streaming groups (24 frames)
_decoders: dict[tuple, object] = {}


def load_decoder(path, dtype: torch.dtype = torch.float32):
    """The tiny decoder of a TAEHV file (`weights.load_tiny_decoder`: .pth read with weights_only
    only, or .safetensors) in `dtype` on the CPU, kept while the file is unchanged (path, mtime,
    size)."""
    key = (_stat_key(path), dtype)
    if key not in _decoders:
        for old in [k for k in _decoders if k[0][0] == str(path)]:  # an older version of the file
            del _decoders[old]
        _decoders[key] = weights.load_tiny_decoder(path, dtype=dtype)
    return _decoders[key]


def decoder_format(decoder) -> latent_formats.LatentFormat:
    """The latent format a tiny decoder decodes: 16 channels Wan 2.1 (taew2_1, tiny_decoder.pth), 48
    Wan 2.2 5B."""
    return latent_formats.get_format({16: "wan21", 48: "wan22"}[decoder.latent_channels])


def read_decoder_latent(latent, fmt) -> latent_formats.VideoLatent:
    """The Fast Decode node's LATENT: a raw video latent of `fmt` ([B,C,T,H,W] as KSampler and the
    SimpleGVR Sampler hand it on, or a wrapper's [B,T,C,H,W]), validated by the core's
    `read_latent`. A latent whose channel statistics fit a raw latent of another VAE with as many
    channels (a CogVideoX latent for Wan 2.1) is refused."""
    fmt = latent_formats.get_format(fmt)
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(
            f"samples: expected a LATENT (a dict with 'samples'), got {type(latent).__name__}"
        )
    x = latent["samples"]
    if isinstance(x, torch.Tensor) and x.ndim == 5 and fmt.channels not in x.shape[1:3]:
        raise ValueError(
            f"samples has shape {tuple(x.shape)}: {x.shape[1]} channels, but this "
            f"tiny decoder decodes {fmt.describe()} latents ({fmt.channels} "
            "channels): decode other latents with VAE Decode and their own VAE"
        )
    lr = latent_formats.read_latent(x, fmt, "raw", "samples")
    if float(lr.raw.amax() - lr.raw.amin()) > 0:  # a constant (empty) latent tells no statistics
        own = latent_formats.latent_scale_distances(lr.raw, fmt)["raw"]
        for family, d in latent_formats.other_family_distances(lr.raw, fmt).items():
            if d < own:
                raise ValueError(
                    f"samples of shape {tuple(x.shape)} looks like a raw {family} "
                    f"latent (distance of its channel statistics {d:.3f}, to a raw "
                    f"{fmt.name} latent {own:.3f}): this tiny decoder decodes "
                    f"{fmt.describe()} latents; decode it with VAE Decode and its own "
                    "VAE"
                )
    return lr


def decode_memory(decoder, latent, chunk_frames: int, dtype: torch.dtype) -> int:
    """Bytes a chunk's decode of `latent` (a LATENT) needs beyond the weights (an estimate for
    ComfyUI to free; 0 for what is no video latent, which `fast_decode` then refuses): the last
    MemBlock stage, 64 channels at 4x the latent size on 2 frames per latent frame, its input,
    memory, concatenation and the convolutions' outputs (about 8 such tensors), plus the chunk's
    float32 frames."""
    x = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        return 0
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    es = torch.empty((), dtype=dtype).element_size()
    s = decoder.spatial_ratio
    stage = b * 2 * chunk_frames * 64 * (4 * h) * (4 * w) * es * 8
    return int(stage + b * 4 * chunk_frames * 3 * (s * h) * (s * w) * 4)


def fast_decode(
    decoder,
    latent,
    chunk_frames: int = DEFAULT_DECODE_CHUNK,
    *,
    on_chunk: Callable[[int, int], None] | None = None,
    interrupt: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, str]:
    """SimpleGVR Fast Decode: a raw Wan LATENT -> an IMAGE [frames, H, W, 3] in [0, 1] (float32,
    CPU; a batch of videos one after another), normalised for the decoder (the latent format's
    mean/std) and decoded chunk by chunk of `chunk_frames` latent frames with the decoder's memory
    carried (the result equals the whole decode; memory holds one chunk). interrupt() runs before
    every chunk, on_chunk(done, total) after it. Returns the frames and the node's text."""
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(f"chunk_frames={chunk_frames!r}: expected a number of latent frames >= 1")
    fmt = decoder_format(decoder)
    z = fmt.normalise(read_decoder_latent(latent, fmt).raw)
    b, _, t, h, w = z.shape
    s, frames = decoder.spatial_ratio, decoder.output_frames(t)
    out = torch.empty(b, frames, s * h, s * w, 3)
    stream = decoder.stream(clamp=True, dtype=torch.float32)
    starts = range(0, t, chunk_frames)
    done = 0
    for i, a in enumerate(starts):
        if interrupt is not None:
            interrupt()
        y = stream.decode(z[:, :, a : a + chunk_frames])  # [B, 3, f, sH, sW]
        out[:, done : done + y.shape[2]] = y.permute(0, 2, 3, 4, 1).cpu()
        done += y.shape[2]
        if on_chunk is not None:
            on_chunk(i + 1, len(starts))
    dtype = str(next(decoder.parameters()).dtype).removeprefix("torch.")
    text = node_text(
        f"{frames} frames {s * w}x{s * h} px from {t} latent frames",
        f"{fmt.name} latent [{b}, {z.shape[1]}, {t}, {h}, {w}] normalised by its "
        f"mean/std, decoded in {len(starts)} chunk(s) of {chunk_frames} latent frames "
        f"({dtype})",
    )
    return out.reshape(b * frames, s * h, s * w, 3), text
