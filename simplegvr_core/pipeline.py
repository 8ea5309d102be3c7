"""From a raw-scale LR latent of a T2V sampler to a raw-scale HR latent, in two calls every host
makes.

    raw LR latent --read_latent--> --normalise, noise s, upsampler--> Condition c
        `build_condition`
    Condition c --plan, flow sampling against c--> x0 --denormalise--> raw HR latent    `sample`

`upscale` is the two in a row, the one-call convenience. The nodes (Latent Upsampler =
build_condition, Sampler = sample), the CLI and training's validation make exactly these calls, so
they validate the same way and give the same numbers for the same seed.

Each call runs a plan made beside its price (`plan.py`): a `ConditionPlan` (target size, upsampler
chunks, its memory estimate, warnings) for `build_condition`, a `SamplingPlan` (where the DiT runs)
for `sample`. A host makes each plan once - for the memory it has - and hands it on; the Condition
carries its size and warnings, so nothing downstream computes them again. Long videos: the condition
is built in temporal chunks with enough causal context to be exact, and the DiT runs on the windows
of the SamplingPlan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import colour, seeding
from .latent_formats import LatentFormat, VideoLatent, from_bcthw, get_format, read_latent
from .memory import available_memory, check_memory
from .model import SimpleGVR
from .models.upsampler import resize_frames
from .plan import (
    UPSAMPLER_CONTEXT,
    SamplingPlan,
    auto_plan,
    fit_condition_chunk,
    plan_sampling,
    upsampler_memory,
)
from .sampling import (
    MAX_SHIFT,
    MAX_STEPS,
    SAMPLERS,
    add_condition_noise,
    cfg_velocity,
    flow_sigmas,
    get_sampler,
)

MAX_CFG = 100.0
AUTO = "auto"  # a setting taken from the checkpoint or planned for the memory at hand
AUTO_STEPS = AUTO  # steps from the checkpoint's sampling recipe (model.sampling)
# latent pixels: 32768 px for Wan 2.1; anything larger is a typo, not a video
MAX_LATENT_SIDE = 4096
# The defaults every host shows (CLI flags, node widgets): the paper's inference settings and Wan's
# flow shift.
DEFAULT_NOISE_LEVEL = 0.4  # condition noise s at inference (trained on 0.3-0.6)
DEFAULT_GUIDANCE = 5.0  # classifier-free guidance on the text (ComfyUI's "cfg")
DEFAULT_SHIFT = 5.0  # Wan's flow time shift for explicit steps
DEFAULT_CONDITION_CHUNK = 8  # latent frames per upsampler chunk when not planned for a budget


@dataclass
class Condition:
    """The upsampled, noise-augmented condition c (model space, float32 on the CPU) and how it was
    made."""

    c: torch.Tensor  # [B, C, T, H2, W2], normalised
    noise_level: float
    layout: str  # layout of the LR latent it came from ('BCTHW' or 'BTCHW')
    lr_shape: tuple[int, ...]
    # per-channel (mean, std) [B, C] of the clean LR latent upsampled bilinearly (normalised, before
    # the condition noise): the colours `sample(colour_fix="latent AdaIN")` restores
    reference: tuple[torch.Tensor, torch.Tensor] | None = None
    # latent frames per upsampler chunk it was built with (None: the whole clip)
    chunk_frames: int | None = None
    # what the user should know about it (e.g. its size stretches the picture)
    warnings: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """The HR latent (H, W) it was upsampled to."""
        return tuple(self.c.shape[-2:])


@dataclass(frozen=True)
class ConditionPlan:
    """How `build_condition` makes a condition and what it costs, decided once: the target size, the
    upsampler's chunks, their memory estimate (bytes beyond the weights, `plan.upsampler_memory`)
    and the warnings."""

    lr_shape: tuple[int, int, int, int, int]  # the LR latent [B, C, T, h, w]
    size: tuple[int, int]  # the HR latent (H, W)
    chunk_frames: int | None  # latent frames per upsampler chunk (None: the whole clip)
    memory: int
    warnings: tuple[str, ...] = ()

    def fit(self, model: SimpleGVR, budget: int) -> ConditionPlan:
        """The same plan with the largest chunk whose estimate fits `budget` bytes
        (`plan.auto_condition_chunk`; the result does not depend on the chunk)."""
        dtype = next(model.upsampler.parameters()).dtype
        chunk, need = fit_condition_chunk(model, self.lr_shape, self.size, int(budget), dtype)
        return dataclasses.replace(self, chunk_frames=chunk, memory=need)


# --- sizes and scalar arguments ------------------------------------------------------------------
def _finite(name: str, value, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a number") from None
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise ValueError(
            f"{name}={value!r}: expected a finite number in "
            f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        )
    return v


# how a host gives the size
RESIZE_MODES = ("short edge", "long edge", "width and height", "scale", "native")
# the nodes' default: 1080p, the input's aspect ratio kept
DEFAULT_RESIZE_BY, DEFAULT_EDGE = "short edge", 1080
DEFAULT_SCALE = 2.25  # 480p -> 1080p, the core's and the CLI's default when no size is given
# an explicit size that changes the aspect ratio by more than this (plus rounding) warns
ASPECT_TOLERANCE = 0.01


def _pixels(name: str, v, limit: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
        raise ValueError(f"{name}={v!r}: expected a whole number of pixels in [1, {limit}]")
    return v


def target_size(
    model: SimpleGVR,
    lr_hw: tuple[int, int],
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    *,
    short_edge: int | None = None,
    long_edge: int | None = None,
) -> tuple[int, int]:
    """HR latent (H, W) for an LR latent of `lr_hw`, from exactly one of: `short_edge` or
    `long_edge` (pixels of that side of the output, the other side following the input's aspect
    ratio), `width` and `height` (pixels, as given: see `aspect_warning`), or `scale`. Without any:
    the upsampler's native size where its weights have one (Ultra Flash's: 2x), else DEFAULT_SCALE
    (2.25, 480p -> 1080p). Rounded to the latent grid."""
    fmt = model.latent_format
    given = [
        name
        for name, v in (
            ("width/height", width if width is not None else height),
            ("scale", scale),
            ("short_edge", short_edge),
            ("long_edge", long_edge),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(
            f"give one of width/height, scale, short_edge or long_edge, not {' and '.join(given)}"
        )
    if (width is None) != (height is None):
        raise ValueError(f"give both width and height in pixels, got width={width} height={height}")
    h, w = (int(v) for v in lr_hw)
    r = fmt.spatial_ratio
    limit = MAX_LATENT_SIDE * r
    if width is not None:
        width, height = _pixels("width", width, limit), _pixels("height", height, limit)
        size = fmt.latent_size(height, width)
    elif short_edge is not None or long_edge is not None:
        name, edge = (
            ("short_edge", short_edge) if short_edge is not None else ("long_edge", long_edge)
        )
        edge = _pixels(name, edge, limit)
        side = min(h, w) if short_edge is not None else max(h, w)
        # each side * edge / (r * side), rounded in exact integers with halves up: an edge between
        # two grid lines (1080 on Wan 2.2's /16 grid, 67.5 latent pixels) becomes 1088 whatever the
        # float rounding, never 1072
        size = (
            max(1, (2 * h * edge + r * side) // (2 * r * side)),
            max(1, (2 * w * edge + r * side) // (2 * r * side)),
        )
    elif scale is None and model.upsampler.native_size((h, w)) is not None:
        size = model.upsampler.native_size((h, w))
    else:
        scale = (
            DEFAULT_SCALE
            if scale is None
            else _finite("scale", scale, 0.0, MAX_LATENT_SIDE, lo_open=True)
        )
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if max(size) > MAX_LATENT_SIDE:
        raise ValueError(
            f"target latent {size[0]}x{size[1]} ({size[1] * r}x{size[0] * r} px) is larger than "
            f"{MAX_LATENT_SIDE} latent pixels on a side"
        )
    if size[0] < h or size[1] < w:
        raise ValueError(
            f"target {size[1] * r}x{size[0] * r} px (latent {size[0]}x{size[1]}) is smaller than "
            f"the input {w * r}x{h * r} px (latent {h}x{w}): SimpleGVR only upscales"
        )
    return size


def native_warning(model: SimpleGVR, lr_hw: tuple[int, int], hr_hw: tuple[int, int]) -> str | None:
    """A user-facing warning when the upsampler's weights were trained for one size (Ultra Flash's
    2x) and `hr_hw` is another: the condition is then that output resized bilinearly, outside what
    the weights were trained for."""
    native = model.upsampler.native_size(lr_hw)
    if native is None or tuple(hr_hw) == tuple(native):
        return None
    r = model.latent_format.spatial_ratio
    return (
        f"{hr_hw[1] * r}x{hr_hw[0] * r} px is outside what this model was trained for: its "
        f"upsampler makes {native[1] * r}x{native[0] * r} px ({native[0] // lr_hw[0]}x); the "
        f"condition is resized bilinearly to the size asked for (resize_by 'native' keeps the "
        f"trained size)"
    )


def aspect_warning(model: SimpleGVR, lr_hw: tuple[int, int], hr_hw: tuple[int, int]) -> str | None:
    """A user-facing warning when `hr_hw` stretches the picture of `lr_hw` (latent sizes) by more
    than the latent grid's rounding plus ASPECT_TOLERANCE; None when the aspect ratio is kept."""
    (h, w), (H, W) = lr_hw, hr_hw
    r = model.latent_format.spatial_ratio
    change = (W / H) / (w / h) - 1
    if abs(change) <= ASPECT_TOLERANCE + 0.5 / H + 0.5 / W:
        return None
    return (
        f"{W * r}x{H * r} px changes the aspect ratio of the {w * r}x{h * r} px input "
        f"({w / h:.3f} -> {W / H:.3f}: {abs(change):.1%} "
        f"{'wider' if change > 0 else 'narrower'}), so the video is stretched; use resize_by "
        f"'short edge' or 'long edge' to keep the aspect ratio"
    )


def prepare_context(model: SimpleGVR, context, batch: int, what: str = "context") -> torch.Tensor:
    """Text features [B, L, text_dim] zero-padded (or cut) to the model's text_len tokens (Wan:
    512), as in training; None -> the null prompt (all zeros)."""
    dim, n = model.config.dit.text_dim, model.config.dit.text_len
    if context is None:
        return torch.zeros(batch, n, dim)
    if not isinstance(context, torch.Tensor):
        raise ValueError(f"{what} must be a tensor [B, L, {dim}], got {type(context).__name__}")
    if context.ndim == 2:
        context = context[None]
    if context.ndim != 3 or context.shape[-1] != dim:
        raise ValueError(
            f"{what} has shape {tuple(context.shape)}: expected [B, L, {dim}] text features (the "
            f"model's text_dim is {dim}): the text encoder the T2V model used (umt5-xxl for Wan, "
            "T5-XXL for CogVideoX: width 4096)"
        )
    if context.shape[0] not in (1, batch) or context.shape[1] < 1:
        raise ValueError(
            f"{what} has shape {tuple(context.shape)}: expected batch 1 or {batch} and at "
            f"least one token"
        )
    if not torch.isfinite(context).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return pad_text(context.expand(batch, -1, -1).float(), n)


def pad_text(context: torch.Tensor, text_len: int) -> torch.Tensor:
    """[B, L, D] -> [B, text_len, D]: zero-padded after the last token, or cut after text_len
    tokens."""
    if context.shape[1] >= text_len:
        return context[:, :text_len]
    return torch.nn.functional.pad(context, (0, 0, 0, text_len - context.shape[1]))


# --- condition ---------------------------------------------------------------------------------
def _model_device_dtype(model: SimpleGVR):
    p = next(model.dit.parameters())
    return p.device, p.dtype


def _lr(model: SimpleGVR, lr_latent, latent_format, latent_scale: str) -> VideoLatent:
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"model must be a SimpleGVR, got {type(model).__name__}")
    fmt = model.latent_format
    if latent_format is not None and get_format(latent_format).name != fmt.name:
        raise ValueError(
            f"latent format '{get_format(latent_format).name}' does not match the checkpoint's "
            f"latent format '{fmt.name}'"
        )
    if isinstance(lr_latent, VideoLatent):
        return lr_latent
    return read_latent(lr_latent, fmt, latent_scale, "LR latent")


def plan_condition(
    model: SimpleGVR,
    lr_shape,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    short_edge: int | None = None,
    long_edge: int | None = None,
    chunk_frames: int | str | None = DEFAULT_CONDITION_CHUNK,
    memory_budget=None,
) -> ConditionPlan:
    """The `ConditionPlan` for an LR latent of `lr_shape` [B, C, T, h, w]: the target size
    (`target_size`, from the size arguments), the warning when it stretches the picture, the
    upsampler's chunk - `chunk_frames` latent frames, None for the whole clip, or "auto": the
    largest chunk whose estimate fits `memory_budget` (bytes; None or "auto": what the device has
    available now) - and its estimate, which an explicit chunk must fit (memory_budget None: no
    check). Nothing large is allocated."""
    lr_shape = tuple(int(v) for v in lr_shape)
    size = target_size(
        model, lr_shape[3:], width, height, scale, short_edge=short_edge, long_edge=long_edge
    )
    warnings = tuple(
        w
        for w in (
            native_warning(model, lr_shape[3:], size),
            aspect_warning(model, lr_shape[3:], size),
        )
        if w
    )
    device, dtype = _model_device_dtype(model)
    if (
        chunk_frames != AUTO
        and chunk_frames is not None
        and (
            isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1
        )
    ):
        raise ValueError(
            f"chunk_frames={chunk_frames!r}: expected 'auto', None or a number of "
            f"latent frames >= 1"
        )
    chunk = None if chunk_frames == AUTO else chunk_frames
    plan = ConditionPlan(
        lr_shape, size, chunk, upsampler_memory(model, lr_shape, size, chunk, dtype), warnings
    )
    if chunk_frames == AUTO:
        budget = available_memory(device) if memory_budget in (None, AUTO) else int(memory_budget)
        return plan.fit(model, budget)
    check_memory(
        plan.memory,
        memory_budget,
        f"the condition for {lr_shape} -> latent {size[0]}x{size[1]}",
        device,
    )
    return plan


@torch.no_grad()
def build_condition(
    model: SimpleGVR,
    lr_latent: torch.Tensor | VideoLatent,
    plan: ConditionPlan | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    short_edge: int | None = None,
    long_edge: int | None = None,
    noise_level: float | str = AUTO,
    seed: int = 0,
    chunk_frames: int | str | None = DEFAULT_CONDITION_CHUNK,
    latent_format: str | LatentFormat | None = None,
    latent_scale: str = "raw",
    memory_budget=None,
) -> Condition:
    """Read, normalise, noise-augment (seeded) and upsample an LR latent into the condition c.

    lr_latent: a raw tensor [B,C,T,H,W] / [B,T,C,H,W] (read with `latent_scale`) or a `VideoLatent`
    that `latent_formats.read_latent` already validated. `plan`: the host's `plan_condition` for
    this latent; without one it is made here from the size arguments (`target_size`'s),
    `chunk_frames` and `memory_budget`. The learned upsampler is causal with a receptive field of
    UPSAMPLER_CONTEXT latent frames, so it runs on chunks with that much past context and gives
    exactly the whole-clip result while its memory stays bounded by the chunk. noise_level: the
    condition noise s ("auto": the checkpoint's recipe, else DEFAULT_NOISE_LEVEL).
    """
    lr = _lr(model, lr_latent, latent_format, latent_scale)
    noise_level = resolve_noise_level(model, noise_level)
    seed = seeding.check_seed(seed)
    x = lr.raw
    if plan is None:
        plan = plan_condition(
            model,
            x.shape,
            width=width,
            height=height,
            scale=scale,
            short_edge=short_edge,
            long_edge=long_edge,
            chunk_frames=chunk_frames,
            memory_budget=memory_budget,
        )
    elif not isinstance(plan, ConditionPlan) or plan.lr_shape != tuple(x.shape):
        raise ValueError(
            f"plan must be a ConditionPlan for the LR latent's shape {tuple(x.shape)}, got "
            f"{getattr(plan, 'lr_shape', plan)!r}"
        )
    elif any(v is not None for v in (width, height, scale, short_edge, long_edge)):
        raise ValueError(
            "give the target size to plan_condition or to build_condition, not to both"
        )
    device, dtype = _model_device_dtype(model)
    size = plan.size
    c0 = model.latent_format.normalise(x.float())
    T = c0.shape[2]
    step = T if not plan.chunk_frames else int(plan.chunk_frames)
    reference = colour.channel_stats(c0, step, transform=lambda part: resize_frames(part, size))
    cs = add_condition_noise(
        c0, noise_level, generator=seeding.torch_generator(seed, seeding.CONDITION_NOISE)
    )
    parts = []
    for s in range(0, T, step):
        e = min(T, s + step)
        lo = max(0, s - UPSAMPLER_CONTEXT)
        out = model.upsampler(cs[:, :, lo:e].to(device, dtype), size=size)
        parts.append(out[:, :, s - lo :].float().cpu())
    c = torch.cat(parts, dim=2)
    return Condition(
        c=c,
        noise_level=noise_level,
        layout=lr.layout,
        lr_shape=tuple(x.shape),
        reference=reference,
        chunk_frames=None if step >= T else step,
        warnings=plan.warnings,
    )


# --- sampling ------------------------------------------------------------------------------------
def _non_finite_cause(model: SimpleGVR, condition: Condition, guidance: float) -> str:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"the model's weights contain NaN or Inf ({name})"
    dtype = next(model.parameters()).dtype
    if dtype == torch.float16:
        return "fp16 overflow in the DiT: use bf16 or fp32"
    if guidance > 30:
        return f"cfg={guidance:g} is very large: use 1-10"
    if not torch.isfinite(condition.c).all():
        return "the condition contains NaN or Inf"
    return "unknown: check the input latent and the checkpoint"


def sampling_sigmas(
    model: SimpleGVR, steps: int | str = AUTO_STEPS, shift: float = DEFAULT_SHIFT
) -> torch.Tensor:
    """The steps+1 sigmas of a run. steps "auto": the checkpoint's recipe (`model.sampling`: its
    steps and its shift or explicit timesteps; `shift` is not used) - 50 steps at shift 5 for a
    teacher. An int: `steps` Euler steps of the flow schedule with `shift` (checked in both
    cases)."""
    shift = _finite("shift", shift, 0.0, MAX_SHIFT, lo_open=True)
    if steps == AUTO_STEPS:
        return model.sampling.sigmas()
    check_steps(steps)
    return flow_sigmas(steps, shift)


def resolve_guidance(model: SimpleGVR, cfg: float | str = AUTO) -> float:
    """The guidance scale of a run: "auto" takes the checkpoint's recipe (`model.sampling.guidance`;
    an Ultra Flash model: 1, one pass) or DEFAULT_GUIDANCE when it records none; a number is checked
    and kept."""
    if cfg == AUTO:
        g = model.sampling.guidance
        return DEFAULT_GUIDANCE if g is None else g
    return _finite("cfg", cfg, 0.0, MAX_CFG, lo_open=True)


def resolve_noise_level(model: SimpleGVR, noise_level: float | str = AUTO) -> float:
    """The condition noise level s of a run: "auto" takes the checkpoint's recipe
    (`model.sampling.noise_level`; an Ultra Flash model: 0) or DEFAULT_NOISE_LEVEL; a number in [0,
    1] is checked and kept."""
    if noise_level == AUTO:
        s = model.sampling.noise_level
        return DEFAULT_NOISE_LEVEL if s is None else s
    return _finite("noise_level", noise_level, 0.0, 1.0)


def check_steps(steps) -> int | str:
    """`steps` when it is "auto" or an int in [1, MAX_STEPS]; ValueError otherwise."""
    if steps != AUTO_STEPS and (
        isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS
    ):
        raise ValueError(f"steps={steps!r}: expected an int in [1, {MAX_STEPS}] or 'auto'")
    return steps


def step_count(model: SimpleGVR, steps: int | str = AUTO_STEPS) -> int:
    """How many steps a run of `steps` takes ("auto": the checkpoint's recipe), for progress
    bars."""
    return model.sampling.steps if check_steps(steps) == AUTO_STEPS else int(steps)


@torch.no_grad()
def sample(
    model: SimpleGVR,
    condition: Condition,
    plan: SamplingPlan | None = None,
    *,
    context=None,
    negative_context=None,
    steps: int | str = AUTO_STEPS,
    cfg: float | str = AUTO,
    shift: float = DEFAULT_SHIFT,
    seed: int = 0,
    noise: torch.Tensor | None = None,
    sampler: str = "euler",
    colour_fix: str = "none",
    callback: Callable | None = None,
    progress: bool = False,
    memory_budget=None,
    interrupt: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Flow sampling of the HR latent against `condition`; returns it in raw scale and the LR
    latent's layout.

    plan: where the DiT runs, a `SamplingPlan` for the condition's shape (`plan_sampling`,
    `auto_plan`); None: the attention mode's own plan (`plan_sampling` with its defaults). context /
    negative_context: umt5 features [B, L, text_dim] (None = the null prompt the model was trained
    with 10% of the time). steps and shift: `sampling_sigmas` ("auto": the checkpoint's recommended
    recipe). cfg (the guidance scale; "auto": the checkpoint's, `resolve_guidance`) = 1 runs one DiT
    forward per step. noise: the initial noise (normalised latent space, the condition's shape)
    instead of the one drawn from `seed`, to compare or reproduce a run exactly. colour_fix: "none"
    or "latent AdaIN" (`colour.adain` to the condition's reference statistics). memory_budget: bytes
    the plan's estimate must fit (None: no check). callback(dict) runs after every step, interrupt()
    after every DiT block (of every window and group); an exception raised in either stops sampling
    and propagates (a host's Cancel answers within one block). A causal plan (block_sparse_causal)
    runs its groups one after another, each through all its steps, with the K/V of the groups before
    it (`_stream`). The state of the ODE is kept in float32 whatever the model's dtype. A result
    with NaN or Inf is an error.
    """
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"model must be a SimpleGVR, got {type(model).__name__}")
    if not isinstance(condition, Condition):
        raise ValueError(
            f"condition must be a Condition from build_condition, got {type(condition).__name__}"
        )
    sigmas = sampling_sigmas(model, steps, shift)
    guidance = resolve_guidance(model, cfg)
    seed = seeding.check_seed(seed)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r}: expected one of {SAMPLERS}")
    if colour_fix not in colour.COLOUR_FIXES:
        raise ValueError(f"colour_fix {colour_fix!r}: expected one of {list(colour.COLOUR_FIXES)}")
    if colour_fix != "none" and condition.reference is None:
        raise ValueError(
            "colour_fix needs the condition's reference statistics: build the condition with "
            "build_condition"
        )
    shape = tuple(condition.c.shape)
    device, dtype = _model_device_dtype(model)
    if plan is None:
        plan = plan_sampling(model, shape)
    elif not isinstance(plan, SamplingPlan) or plan.shape != shape:
        raise ValueError(
            f"plan must be None or a SamplingPlan for the condition's shape {shape}, got "
            f"{getattr(plan, 'shape', plan)!r}"
        )
    batch = condition.c.shape[0]
    ctx = prepare_context(model, context, batch)
    neg = (
        prepare_context(model, negative_context, batch, "negative_context")
        if guidance != 1.0
        else None
    )
    if memory_budget is not None:
        check_memory(
            plan.memory(model, guidance=guidance, dtype=dtype),
            memory_budget,
            f"sampling a latent of {shape} (DiT window {plan.window_shape})",
            device,
        )

    if noise is not None and (
        not isinstance(noise, torch.Tensor)
        or tuple(noise.shape) != shape
        or not noise.is_floating_point()
        or not torch.isfinite(noise).all()
    ):
        raise ValueError(
            f"noise must be a finite floating-point tensor of the condition's shape {shape} "
            f"(normalised latent space), got {getattr(noise, 'shape', type(noise).__name__)}"
        )

    cond = condition.c.to(device, torch.float32)
    ctx, neg = ctx.to(device, dtype), (neg.to(device, dtype) if neg is not None else None)
    velocity = cfg_velocity(
        model.velocity, ctx, neg, guidance, condition.noise_level, attention=plan.mode
    )
    if noise is None:
        noise = torch.randn(shape, generator=seeding.torch_generator(seed, seeding.SAMPLING_NOISE))
    x = noise.to(device, torch.float32)
    model.dit.interrupt = interrupt
    try:
        if plan.causal:
            x0 = _stream(
                model, plan, velocity, x, cond, sigmas.to(device), sampler, callback, progress
            ).float()
        else:

            def model_fn(xt, sigma):
                return plan.run(lambda xw, cw: velocity(xw, cw, sigma), xt, cond)

            x0 = get_sampler(sampler)(
                model_fn, x, sigmas.to(device), callback=callback, disable=not progress
            ).float()
    finally:
        model.dit.interrupt = None
    if colour_fix == "latent AdaIN":
        x0 = colour.adain(x0, *condition.reference)
    out = model.latent_format.denormalise(x0)
    if not torch.isfinite(out).all():
        raise ValueError(
            f"sampling produced NaN or Inf in the HR latent (likely cause: "
            f"{_non_finite_cause(model, condition, guidance)}); nothing was returned"
        )
    return from_bcthw(out, condition.layout)


def _stream(
    model: SimpleGVR,
    plan: SamplingPlan,
    velocity: Callable,
    x: torch.Tensor,
    cond: torch.Tensor,
    sigmas: torch.Tensor,
    sampler: str,
    callback: Callable | None,
    progress: bool,
) -> torch.Tensor:
    """A causal plan's sampling (Ultra Flash's streaming): group after group of latent frames, each
    through all its steps; the k-th DiT call of a group sees the K/V caches the k-th calls of the
    groups before left (one `CausalStream` per call index: at one step, exactly their one call per
    group). Memory holds one group and the caches, whatever the clip's length. The callback counts
    steps over all groups."""
    from tqdm.auto import tqdm

    from .models.dit import CausalStream

    run, steps, groups = get_sampler(sampler), len(sigmas) - 1, plan.t_windows
    streams: dict[int, CausalStream] = {}
    out = []
    for g, (s, e) in enumerate(tqdm(groups, desc="groups", disable=not progress)):
        calls = iter(range(1 << 30))

        def model_fn(xt, sigma, s=s, e=e, calls=calls):
            k = next(calls)
            stream = streams.setdefault(k, CausalStream(len(model.dit.blocks)))
            return velocity(xt, cond[:, :, s:e], sigma, stream=stream)

        def step_done(d, g=g):
            if callback is not None:
                callback(
                    {
                        **d,
                        "i": g * steps + d["i"],
                        "total": len(groups) * steps,
                        "group": g,
                        "groups": len(groups),
                    }
                )

        out.append(run(model_fn, x[:, :, s:e], sigmas, callback=step_done, disable=True))
    return torch.cat(out, dim=2)


def upscale(
    model: SimpleGVR,
    lr_latent: torch.Tensor | VideoLatent,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    short_edge: int | None = None,
    long_edge: int | None = None,
    noise_level: float | str = AUTO,
    seed: int = 0,
    latent_format=None,
    latent_scale: str = "raw",
    condition_chunk_frames: int | str | None = DEFAULT_CONDITION_CHUNK,
    memory_budget=None,
    plan: SamplingPlan | str | None = None,
    attention: str | None = None,
    chunk_frames: int | str | None = AUTO,
    chunk_overlap: int = 1,
    tile_size: tuple[int, int] | None = None,
    tile_overlap: int = 8,
    **sample_kwargs,
) -> torch.Tensor:
    """`build_condition` then `sample` with the same seed: a raw LR latent ([B,C,T,H,W] or
    [B,T,C,H,W]) to a raw HR latent in the same layout. Where the DiT runs: `plan` - a SamplingPlan,
    "auto" (`auto_plan` for `memory_budget` bytes; None or "auto": what the device has available
    now; with condition_chunk_frames="auto" both calls are planned for it), or None (`plan_sampling`
    with `attention` and the window arguments: chunk_frames "auto" = the trained length for `full`,
    the whole clip otherwise). `sample_kwargs` are `sample`'s (context, steps, cfg, shift, ...)."""
    condition = build_condition(
        model,
        lr_latent,
        width=width,
        height=height,
        scale=scale,
        short_edge=short_edge,
        long_edge=long_edge,
        noise_level=noise_level,
        seed=seed,
        latent_format=latent_format,
        latent_scale=latent_scale,
        chunk_frames=condition_chunk_frames,
        memory_budget=memory_budget,
    )
    shape = tuple(condition.c.shape)
    if plan == AUTO:
        device, dtype = _model_device_dtype(model)
        budget = available_memory(device) if memory_budget in (None, AUTO) else int(memory_budget)
        plan = auto_plan(
            model,
            shape,
            budget,
            guidance=resolve_guidance(model, sample_kwargs.get("cfg", AUTO)),
            dtype=dtype,
            attention=attention,
            chunk_overlap=chunk_overlap,
            tile_overlap=tile_overlap,
        )
    elif plan is None:
        plan = plan_sampling(
            model,
            shape,
            attention=attention,
            chunk_frames=chunk_frames,
            chunk_overlap=chunk_overlap,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
        )
    return sample(model, condition, plan, seed=seed, memory_budget=memory_budget, **sample_kwargs)
