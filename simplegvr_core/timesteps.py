"""Training timestep (σ) samplers: uniform, logit-normal and the paper's detail-aware sampler
(§4.3).

The detail-aware sampler reads a curve made by `analyze_detail`: run the sampler on LR latents, take
a per-frame 2D DCT of every step's predicted x̂0, measure the high-frequency energy gained between
consecutive steps, and turn it into a density over σ (piecewise constant on the sampling grid, mixed
with a uniform floor). Training then draws σ from it by inverse CDF.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

TIMESTEP_SAMPLERS = ("uniform", "logit_normal", "detail_aware")


@dataclass
class DetailCurve:
    """Piecewise-constant density over σ ∈ [0, 1]: `density[i]` on [edges[i], edges[i+1])."""

    edges: list[float]  # increasing, edges[0] = 0, edges[-1] = 1
    density: list[float]  # integrates to 1
    floor: float = 0.1
    steps: int = 50
    source: str = ""

    def __post_init__(self) -> None:
        e = torch.tensor(self.edges, dtype=torch.float64)
        d = torch.tensor(self.density, dtype=torch.float64)
        if e.ndim != 1 or len(e) != len(d) + 1 or len(d) < 1:
            raise ValueError(
                f"detail curve needs len(edges) == len(density) + 1 >= 2, got {len(e)} and {len(d)}"
            )
        if abs(float(e[0])) > 1e-9 or abs(float(e[-1]) - 1) > 1e-9 or not torch.all(e[1:] > e[:-1]):
            raise ValueError("detail curve edges must increase strictly from 0 to 1")
        if not torch.all(d >= 0) or not torch.isfinite(d).all():
            raise ValueError("detail curve density must be finite and non-negative")
        mass = float((d * (e[1:] - e[:-1])).sum())
        if abs(mass - 1) > 1e-4:
            raise ValueError(f"detail curve density integrates to {mass:.6f}, expected 1")

    def cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        e = torch.tensor(self.edges, dtype=torch.float64)
        d = torch.tensor(self.density, dtype=torch.float64)
        cum = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.cumsum(d * (e[1:] - e[:-1]), 0)]
        )
        s = sigma.double().clamp(0, 1)
        i = torch.searchsorted(e, s, right=True).clamp(1, len(d)) - 1
        return (cum[i] + d[i] * (s - e[i])).clamp(0, 1)

    def save(self, path: str | os.PathLike, *, replace: bool = True) -> Path:
        from .files import atomic_write

        data = {
            "kind": "simplegvr-detail-curve",
            "edges": self.edges,
            "density": self.density,
            "floor": self.floor,
            "steps": self.steps,
            "source": self.source,
        }
        return atomic_write(
            path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)), replace=replace
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> DetailCurve:
        p = Path(path)
        if not p.is_file():
            raise ValueError(
                f"detail curve {str(p)!r} does not exist (make one with `simplegvr analyze-detail`)"
            )
        from .files import parse_json

        data = parse_json(p.read_text(), f"detail curve {str(p)!r}")
        if not isinstance(data, dict) or data.get("kind") != "simplegvr-detail-curve":
            kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{str(p)!r} is not a detail curve (kind={kind!r})")
        return cls(
            edges=data["edges"],
            density=data["density"],
            floor=data.get("floor", 0.0),
            steps=data.get("steps", 0),
            source=data.get("source", ""),
        )


class TimestepSampler:
    """Draws σ ∈ (0, 1) for a batch from a torch.Generator."""

    def __init__(
        self,
        kind: str = "uniform",
        *,
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        curve: DetailCurve | str | os.PathLike | None = None,
    ):
        if kind not in TIMESTEP_SAMPLERS:
            raise ValueError(f"timestep sampler {kind!r}: expected one of {TIMESTEP_SAMPLERS}")
        self.kind = kind
        self.logit_mean, self.logit_std = logit_mean, logit_std
        if kind == "detail_aware":
            if curve is None or curve == "":
                raise ValueError(
                    "the detail_aware sampler needs a curve (train.detail_curve = path from "
                    "analyze-detail)"
                )
            self.curve = curve if isinstance(curve, DetailCurve) else DetailCurve.load(curve)
            e = torch.tensor(self.curve.edges, dtype=torch.float64)
            d = torch.tensor(self.curve.density, dtype=torch.float64)
            self._edges, self._dens = e, d
            self._cum = torch.cat(
                [torch.zeros(1, dtype=torch.float64), torch.cumsum(d * (e[1:] - e[:-1]), 0)]
            )

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        if self.kind == "uniform":
            s = u
        elif self.kind == "logit_normal":  # SD3: σ = sigmoid(N(m, s))
            z = (
                torch.randn(n, generator=generator, dtype=torch.float64) * self.logit_std
                + self.logit_mean
            )
            s = torch.sigmoid(z)
        else:  # inverse CDF of the piecewise-constant density
            i = torch.searchsorted(self._cum, u, right=True).clamp(1, len(self._dens)) - 1
            dens = self._dens[i]
            s = self._edges[i] + torch.where(
                dens > 0, (u - self._cum[i]) / dens.clamp_min(1e-300), torch.zeros_like(u)
            )
        return s.clamp(1e-4, 1 - 1e-4).float()


# --- the detail curve ---------------------------------------------------------------------------
def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix [n, n]."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def high_frequency_energy(x0: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """Mean energy of the per-frame 2D DCT coefficients of [B,C,T,H,W] whose normalised frequency
    u/H + v/W exceeds `cutoff` (the upper band), per sample: [B]."""
    b, c, t, h, w = x0.shape
    dh, dw = dct_matrix(h).to(x0.device), dct_matrix(w).to(x0.device)
    coef = dh @ x0.double() @ dw.T  # DCT over H and W of every frame and channel
    fu = torch.arange(h, device=x0.device, dtype=torch.float64)[:, None] / h
    fv = torch.arange(w, device=x0.device, dtype=torch.float64)[None, :] / w
    band = (fu + fv) > cutoff
    return (coef.pow(2) * band).sum(dim=(1, 2, 3, 4)) / (c * t * band.sum().clamp_min(1))


def detail_curve_from_energies(
    sigmas: torch.Tensor,
    energies: torch.Tensor,
    floor: float = 0.1,
    steps: int = 0,
    source: str = "",
) -> DetailCurve:
    """energies[i] = HF energy of x̂0 predicted at sigmas[i] (len(sigmas) - 1 values, decreasing
    sigmas).

    The gain HF(i+1) - HF(i) (clipped at 0) is attributed to the interval [sigmas[i+1], sigmas[i]];
    the last step (to σ = 0) gets the gain of the final prediction over the one before, as it has no
    successor. The result is normalised to a density over σ and mixed with a uniform `floor`."""
    sig = sigmas.double().cpu()
    e = energies.double().cpu()
    n = len(sig) - 1
    if len(e) != n or n < 2:
        raise ValueError(f"need one energy per step: {n} steps, got {len(e)} energies")
    gains = torch.zeros(n, dtype=torch.float64)
    gains[: n - 1] = (e[1:] - e[:-1]).clamp_min(0)
    gains[n - 1] = gains[n - 2] if n >= 2 else 0.0
    lo, hi = sig[1:], sig[:-1]  # interval i = [sig[i+1], sig[i]]
    order = torch.argsort(lo)
    lo, hi, g = lo[order], hi[order], gains[order]
    width = (hi - lo).clamp_min(1e-12)
    total = float(g.sum())
    dens = g / width / total if total > 0 else torch.ones_like(g)
    dens = (1 - floor) * dens + floor
    edges = torch.cat([lo[:1].clamp(max=0.0), hi])
    edges[0], edges[-1] = 0.0, 1.0
    w = edges[1:] - edges[:-1]
    dens = dens / float((dens * w).sum())
    return DetailCurve(
        edges=[float(v) for v in edges],
        density=[float(v) for v in dens],
        floor=floor,
        steps=steps,
        source=source,
    )


@torch.no_grad()
def analyze_detail(
    model,
    lr_latents,
    *,
    steps: int = 50,
    shift: float = 5.0,
    scale: float | None = None,
    noise_level: float = 0.4,
    cutoff: float = 0.5,
    floor: float = 0.1,
    seed: int = 0,
    source: str = "",
    progress: bool = False,
) -> DetailCurve:
    """Run the sampler (cfg 1, null prompt) on raw LR latents, record HF(x̂0) per step, return the
    curve."""
    from .pipeline import upscale
    from .sampling import flow_sigmas

    if len(lr_latents) == 0:
        raise ValueError("analyze_detail needs at least one LR latent")
    totals = torch.zeros(steps, dtype=torch.float64)
    for k, lr in enumerate(lr_latents):
        rec: list[torch.Tensor] = []

        def record(d, rec=rec):
            rec.append(high_frequency_energy(d["denoised"].float(), cutoff).mean())

        upscale(
            model,
            lr,
            scale=scale,
            steps=steps,
            cfg=1.0,
            shift=shift,
            noise_level=noise_level,
            seed=seed + k,
            callback=record,
            progress=progress,
        )
        totals += torch.stack(rec).cpu()
    return detail_curve_from_energies(
        flow_sigmas(steps, shift), totals / len(lr_latents), floor=floor, steps=steps, source=source
    )
