"""Model-guided (SDEdit) degradation on latents (paper §4.2.2, reference-facts.md §8).

    c0 = VAE(HR resized to ~480p)            (done by the caller; this module works on latents)
    x_α = (1 − α) c0 + α ε,  α ~ U[0.3, 0.4]
    Euler from σ = α to σ = 0 with the base T2V velocity  ->  ĉ0, stored as the LR condition

The base model's own flow convention applies (sampling.py): v = ε − x0, timestep = 1000σ. The grid
is `flow_sigmas(steps, shift, start=α)`: shift = 1 gives linspace(α, 0, steps+1); shift = s follows
the shifted grid from the same starting noise level α (the un-shifted grid starts at
α / (s − (s − 1)α)), so α always means the noise actually added, whatever the shift.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

DEFAULT_ALPHA_RANGE = (0.3, 0.4)
# the paper leaves k open; 20 Euler steps over σ <= 0.4 is denser than 50 over [0, 1]
DEFAULT_STEPS = 20


def dit_velocity(
    dit,
    negative_context: torch.Tensor | None = None,
    guidance: float = 1.0,
    attention: str | None = None,
) -> Callable:
    """velocity(x, t, context) for a plain T2V `SimpleGVRDiT` (in_dim = C, e.g. from
    `weights.import_wan_t2v`): one forward per step, or classifier-free guidance on text when
    `guidance != 1` (conditional and negative passes batched together)."""
    config = getattr(dit, "config", None)
    if config is None or not hasattr(config, "in_dim"):
        raise ValueError(f"dit is a {type(dit).__name__}: expected a SimpleGVRDiT")
    if config.in_dim != config.out_dim:
        raise ValueError(
            f"dit has in_dim={config.in_dim}, out_dim={config.out_dim}: model-guided degradation "
            f"needs the plain T2V base (in_dim = C), e.g. weights.import_wan_t2v(...)"
        )
    if guidance != 1.0 and negative_context is None:
        raise ValueError(f"guidance={guidance} needs a negative_context (or use guidance=1)")

    def velocity(x, t, context):
        if guidance == 1.0:
            return dit(x, None, t, context, attention=attention)
        b = x.shape[0]
        neg = (
            negative_context.expand(b, -1, -1)
            if negative_context.shape[0] == 1
            else negative_context
        )
        n = max(context.shape[1], neg.shape[1])
        ctx = torch.cat(
            [torch.nn.functional.pad(c, (0, 0, 0, n - c.shape[1])) for c in (context, neg)]
        )
        v = dit(torch.cat([x, x]), None, torch.cat([t, t]), ctx, attention=attention)
        return v[b:] + guidance * (v[:b] - v[b:])

    return velocity


def sample_alpha(
    generator: torch.Generator | None = None, alpha_range=DEFAULT_ALPHA_RANGE
) -> float:
    """α ~ U[lo, hi] (paper: [0.3, 0.4])."""
    lo, hi = (float(v) for v in alpha_range)
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"alpha_range={alpha_range}: expected 0 <= lo <= hi <= 1")
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def sdedit(
    x0: torch.Tensor,
    velocity: Callable,
    context: torch.Tensor | None = None,
    *,
    alpha: float | None = None,
    alpha_range=DEFAULT_ALPHA_RANGE,
    steps: int = DEFAULT_STEPS,
    shift: float = 1.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable | None = None,
    disable: bool = True,
) -> torch.Tensor:
    """SDEdit a clean latent x0 [B, C, T, H, W]: noise it to σ = α and integrate the base model's
    flow back to σ = 0 with Euler. Returns ĉ0 (x0's shape and dtype).

    velocity(x, t, context) -> v = ε − x0, with t = 1000σ of shape [B] (Wan's timestep scale).
    alpha: the noise level (default: drawn from alpha_range with `generator`; draw it yourself with
    `sample_alpha` to know it); α = 0 returns a copy of x0.
    noise: ε (default: standard normal from `generator`). callback: as in sampling.sample_euler.
    """
    from ..sampling import flow_sigmas, noise_latent, sample_euler

    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.ndim != 5:
        raise ValueError(
            f"x0 is {getattr(x0, 'dtype', type(x0).__name__)} {tuple(getattr(x0, 'shape', ()))}: "
            "expected a float latent [B, C, T, H, W]"
        )
    if not callable(velocity):
        raise ValueError(
            f"velocity is a {type(velocity).__name__}: expected a callable velocity(x, t, context)"
        )
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps}: expected an integer >= 1")
    if alpha is None:
        alpha = sample_alpha(generator, alpha_range)
    alpha = float(alpha)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha}: expected a noise level in [0, 1]")
    if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != x0.shape):
        raise ValueError(
            f"noise has shape {tuple(getattr(noise, 'shape', ()))}: expected x0's shape "
            f"{tuple(x0.shape)}"
        )
    if alpha == 0:
        return x0.clone()
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32, device="cpu").to(
            x0.device, x0.dtype
        )
    x = noise_latent(x0, noise, alpha)  # x_α = (1 - α) x0 + α ε
    sigmas = flow_sigmas(int(steps), shift=shift, start=alpha).to(x0.device)

    # sampling's convention: sigma [B] in [0, 1] -> the base model's t = 1000σ
    def model_fn(x, sigma):
        return velocity(x, sigma * 1000.0, context)

    return sample_euler(model_fn, x, sigmas, callback=callback, disable=disable)
