"""Rectified-flow sampling in Wan's convention: the one home of the flow schedule (k-diffusion
style).

    x_σ = (1 − σ) x0 + σ ε,   v = ε − x0,   model timestep = 1000 σ,   shift: σ' = sσ / (1 + (s −
        1)σ)

Samplers are plain functions `sample_x(model_fn, x, sigmas, callback=None, disable=True)` where
`model_fn(x, sigma)` returns the velocity for a batch (sigma: [B]). `callback({"i", "sigma",
"sigma_next", "x", "denoised", "total"})` runs after every step; an exception raised in it stops
sampling at once (ComfyUI interruption and progress hook in there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

SAMPLERS = ("euler", "heun")
MAX_STEPS = 10_000
MAX_SHIFT = 1000.0
# a `sampling` metadata entry longer than this is not a recipe (MAX_STEPS timesteps fit)
MAX_RECIPE_CHARS = 1 << 16
# how a 50-step (teacher) checkpoint is sampled: the paper's setting
TEACHER_STEPS, TEACHER_SHIFT = 50, 5.0


def shift_sigma(sigma, shift: float):
    """Wan / SD3 time shift σ' = sσ / (1 + (s − 1)σ); s > 1 spends more steps at high noise."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(sigma, shift: float):
    """Inverse of `shift_sigma`: the unshifted σ whose shifted value is `sigma`."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return sigma / (shift - (shift - 1) * sigma)


def flow_sigmas(steps: int, shift: float = 1.0, start: float = 1.0, device=None) -> torch.Tensor:
    """steps+1 sigmas: linspace(start, 0, steps+1) then shifted (float64 math, float32 result).

    With `start < 1` (SDEdit-style partial denoising) the grid starts at the *shifted* value
    `start`: the unshifted grid starts at unshift_sigma(start), so the first sigma is exactly
    `start`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < start <= 1:
        raise ValueError(f"start sigma must lie in (0, 1], got {start}")
    u0 = unshift_sigma(torch.tensor(start, dtype=torch.float64), shift)
    grid = torch.linspace(float(u0), 0.0, steps + 1, dtype=torch.float64)
    sig = shift_sigma(grid, shift)
    sig[0] = start
    return sig.to(torch.float32).to(device) if device is not None else sig.to(torch.float32)


def _finite_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


@dataclass(frozen=True)
class SamplingRecipe:
    """How a checkpoint is meant to be sampled; stored as JSON in its metadata (`sampling`) and used
    by "auto" steps.

    steps: DiT evaluations per sample (Euler). shift: the flow schedule's shift, used when
    `timesteps` is None. timesteps: explicit model timesteps (1000 sigma) of the steps, strictly
    decreasing in (0, 1000], one per step (the last step goes to 0), as a distilled model is trained
    on them. r_embedding: the model takes a second timestep r (the next one) - recorded here for the
    sampler of such a model. guidance: the classifier-free guidance scale it is sampled with (1: one
    pass, no negative prompt), noise_level: the condition noise s; None: not recorded, the hosts'
    defaults (pipeline.DEFAULT_GUIDANCE, DEFAULT_NOISE_LEVEL) apply."""

    steps: int = TEACHER_STEPS
    shift: float = TEACHER_SHIFT
    timesteps: tuple[float, ...] | None = None
    r_embedding: bool = False
    guidance: float | None = None
    noise_level: float | None = None

    def __post_init__(self) -> None:
        # A recipe can come from a checkpoint's metadata (untrusted): types and ranges before
        # anything uses it.
        if (
            isinstance(self.steps, bool)
            or not isinstance(self.steps, int)
            or not 1 <= self.steps <= MAX_STEPS
        ):
            raise ValueError(
                f"sampling.steps={self.steps!r}: expected an integer in [1, {MAX_STEPS}]"
            )
        if not _finite_number(self.shift) or not 0 < self.shift <= MAX_SHIFT:
            raise ValueError(
                f"sampling.shift={self.shift!r}: expected a number in (0, {MAX_SHIFT:g}]"
            )
        if not isinstance(self.r_embedding, bool):
            raise ValueError(f"sampling.r_embedding={self.r_embedding!r}: expected true or false")
        if self.timesteps is not None:
            ts = self.timesteps
            if not isinstance(ts, (list, tuple)) or len(ts) != self.steps:
                given = f" of {len(ts)}" if isinstance(ts, (list, tuple)) else ""
                raise ValueError(
                    f"sampling.timesteps: expected a list of steps={self.steps} numbers, got "
                    f"{type(ts).__name__}{given}"
                )
            if not all(_finite_number(t) and 0 < t <= 1000 for t in ts) or any(
                a <= b for a, b in zip(ts, ts[1:])
            ):
                raise ValueError(
                    f"sampling.timesteps={list(ts)[:8]}: expected strictly decreasing numbers "
                    f"in (0, 1000]"
                )
            object.__setattr__(self, "timesteps", tuple(float(t) for t in ts))
        object.__setattr__(self, "shift", float(self.shift))
        if self.guidance is not None:
            if not _finite_number(self.guidance) or not 0 < self.guidance <= 100:
                raise ValueError(
                    f"sampling.guidance={self.guidance!r}: expected a number in (0, 100] or null"
                )
            object.__setattr__(self, "guidance", float(self.guidance))
        if self.noise_level is not None:
            if not _finite_number(self.noise_level) or not 0 <= self.noise_level <= 1:
                raise ValueError(
                    f"sampling.noise_level={self.noise_level!r}: expected a number in "
                    f"[0, 1] or null"
                )
            object.__setattr__(self, "noise_level", float(self.noise_level))

    def sigmas(self, device=None) -> torch.Tensor:
        """The steps+1 sigmas of this recipe: its timesteps / 1000 then 0, else `flow_sigmas(steps,
        shift)`."""
        if self.timesteps is None:
            return flow_sigmas(self.steps, self.shift, device=device)
        sig = torch.tensor([*self.timesteps, 0.0], dtype=torch.float64) / 1000.0
        return sig.to(torch.float32).to(device) if device is not None else sig.to(torch.float32)

    def to_json(self) -> str:
        d = {
            "steps": self.steps,
            "shift": self.shift,
            "r_embedding": self.r_embedding,
            "timesteps": None if self.timesteps is None else list(self.timesteps),
        }
        d.update(
            {
                k: getattr(self, k)
                for k in ("guidance", "noise_level")
                if getattr(self, k) is not None
            }
        )
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text) -> SamplingRecipe:
        """Parse and validate a `sampling` metadata entry; ValueError for anything but a well-formed
        recipe."""
        if not isinstance(text, str) or len(text) > MAX_RECIPE_CHARS:
            size = f"{len(text)} characters" if isinstance(text, str) else type(text).__name__
            raise ValueError(
                f"sampling: expected a JSON object of at most {MAX_RECIPE_CHARS} "
                f"characters, got {size}"
            )
        from .files import parse_json

        d = parse_json(text, "sampling")
        known = ("steps", "shift", "timesteps", "r_embedding", "guidance", "noise_level")
        if not isinstance(d, dict) or set(d) - set(known):
            got = sorted(set(d) - set(known)) if isinstance(d, dict) else type(d).__name__
            raise ValueError(
                f"sampling: expected an object with keys from {list(known)}, got {got}"
            )
        return cls(**d)


TEACHER_RECIPE = SamplingRecipe()  # also the recipe of every checkpoint whose metadata has none


def noise_latent(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """x_σ = (1 − σ) x0 + σ ε, σ a float or [B]: the flow interpolation (training targets, SDEdit,
    and the condition noise augmentation below)."""
    s = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
    if s.ndim == 1:
        s = s.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def add_condition_noise(
    c0: torch.Tensor,
    noise_level,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Condition noise augmentation (paper §4.1): c_s = (1 − s) c0 + s ε, before the upsampler.

    s is a float or a [B] tensor in [0, 1]; ε is `noise`, or drawn (float32, on the CPU device of
    c0) from `generator`. s = 0 everywhere returns c0 itself."""
    s = torch.as_tensor(noise_level, dtype=torch.float32, device=c0.device)
    if s.ndim == 0:
        s = s.expand(c0.shape[0])
    if s.shape != (c0.shape[0],):
        raise ValueError(
            f"noise_level has shape {tuple(s.shape)}: expected a float or [{c0.shape[0]}]"
        )
    if s.device.type != "meta":
        if not torch.all((s >= 0) & (s <= 1)):
            raise ValueError(f"noise_level must lie in [0, 1], got {s.tolist()}")
        if noise is None and torch.all(s == 0):
            return c0
    if noise is None:
        noise = torch.randn(c0.shape, generator=generator, device=c0.device, dtype=torch.float32)
    elif noise.shape != c0.shape:
        raise ValueError(
            f"condition noise has shape {tuple(noise.shape)}: expected c0's shape {tuple(c0.shape)}"
        )
    return noise_latent(c0.float(), noise.float(), s).to(c0.dtype)


def _sigma_batch(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(device=x.device, dtype=torch.float32).expand(x.shape[0])


def _integrate(
    model_fn: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable | None,
    disable: bool,
    heun: bool,
) -> torch.Tensor:
    n = len(sigmas) - 1
    for i in tqdm(range(n), disable=disable, desc="sampling"):
        s, s_next = sigmas[i], sigmas[i + 1]
        v = model_fn(x, _sigma_batch(s, x))
        denoised = x - s.to(x.dtype) * v
        if heun and float(s_next) > 0:  # trapezoidal correction with the slope at the Euler point
            v = (v + model_fn(x + (s_next - s).to(x.dtype) * v, _sigma_batch(s_next, x))) / 2
        x = x + (s_next - s).to(x.dtype) * v
        if callback is not None:
            callback(
                {
                    "i": i,
                    "sigma": float(s),
                    "sigma_next": float(s_next),
                    "x": x,
                    "denoised": denoised,
                    "total": n,
                }
            )
    return x


def sample_euler(
    model_fn: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable | None = None,
    disable: bool = True,
) -> torch.Tensor:
    """Euler ODE integration of dx/dσ = v from sigmas[0] to sigmas[-1]."""
    return _integrate(model_fn, x, sigmas, callback, disable, heun=False)


def sample_heun(
    model_fn: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable | None = None,
    disable: bool = True,
) -> torch.Tensor:
    """Heun's 2nd-order method (trapezoidal correction; plain Euler on the last step to σ = 0)."""
    return _integrate(model_fn, x, sigmas, callback, disable, heun=True)


def get_sampler(name: str) -> Callable:
    if name == "euler":
        return sample_euler
    if name == "heun":
        return sample_heun
    raise ValueError(f"sampler {name!r}: expected one of {SAMPLERS}")


def cfg_velocity(
    dit,
    context: torch.Tensor,
    negative_context: torch.Tensor | None,
    guidance: float,
    noise_level,
    attention: str | None = None,
) -> Callable:
    """velocity(x, c, σ) of a SimpleGVR DiT against the condition c, with classifier-free guidance
    on text; made once per sampling run (the contexts are joined here, not at every call).

    guidance == 1 runs one forward per call; otherwise the positive and negative passes run as one
    batch and v = v_neg + guidance (v_pos − v_neg).
    """
    if guidance != 1.0 and negative_context is None:
        raise ValueError(f"cfg={guidance} needs a negative context (or use cfg=1)")
    both = _pad_cat(context, negative_context) if guidance != 1.0 else None

    def velocity(x, cond, sigma, stream=None):
        t = sigma * 1000.0
        # a causal DiT's group state (models/dit.py)
        extra = {} if stream is None else {"stream": stream}
        if guidance == 1.0:
            return dit(x, cond, t, context, noise_level, attention=attention, **extra)
        b = x.shape[0]
        nl = torch.as_tensor(noise_level, device=x.device, dtype=torch.float32).expand(b)
        v = dit(
            torch.cat([x, x]),
            torch.cat([cond, cond]),
            torch.cat([t, t]),
            both,
            torch.cat([nl, nl]),
            attention=attention,
            **extra,
        )
        v_pos, v_neg = v[:b], v[b:]
        return v_neg + guidance * (v_pos - v_neg)

    return velocity


def _pad_cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate two [B, L, D] text contexts on the batch, zero-padding the shorter length."""
    n = max(a.shape[1], b.shape[1])

    def pad(t):
        return torch.nn.functional.pad(t, (0, 0, 0, n - t.shape[1])) if t.shape[1] < n else t

    return torch.cat([pad(a), pad(b)])
