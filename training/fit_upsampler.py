"""Fit the latent upsampler's linear base (`upsampler.base = "linear"`) before the main training
run.

    python training/fit_upsampler.py --config training/configs/demo.toml --out
        runs/demo/init.safetensors
    python training/train.py --config training/configs/demo.toml
        model.init=runs/demo/init.safetensors ...

The base is a per-frame linear map from the LR latent to the HR latent
(`models.upsampler.LinearBase`). This stage builds the model the config describes and sets only that
map: the least-squares fit of the HR latents of the pair shards from their LR latents (closed form,
the normal equations; seconds on a CPU, and deterministic). Why: latent channels are not pixels, and
a codec's latents interpolated bilinearly decode to a poor upscale (the demo codec's: 6 dB below
decode + bicubic); the fitted base is the best linear estimate of HR from the LR latent, so the
upsampler - and, with `prediction = "residual"`, the DiT - starts from it. Everything else keeps the
config's initialisation (seeded by train.seed). The checkpoint is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simplegvr_core.checkpoint import save_checkpoint  # noqa: E402
from simplegvr_core.console import report_errors  # noqa: E402
from simplegvr_core.files import check_output  # noqa: E402
from simplegvr_core.models.upsampler import resize_frames  # noqa: E402
from training.config import input_paths, load_config  # noqa: E402
from training.data import CODEC_KEY, PairShards, declared_codec  # noqa: E402
from training.models import build_model  # noqa: E402


def _padding(kernel: int, frames: int, causal: bool) -> tuple[int, ...]:
    """F.pad's (W, H, T) replicate padding for k x k taps in `frames` frames: the frames - 1 before
    (causal) or frames // 2 on each side."""
    p, before = kernel // 2, (frames - 1 if causal else frames // 2)
    return p, p, p, p, before, frames - 1 - before


def _features(lr: torch.Tensor, kernel: int, frames: int = 1, causal: bool = True) -> torch.Tensor:
    """[B,C,T,h,w] -> [B*T*h*w, C*frames*k*k + 1]: every latent pixel's k x k neighbourhood
    (replicate padding, as `LinearBase` pads) in its own frame and, frames > 1, in the frames - 1
    before it (causal; else frames // 2 on each side, the first and last frames replicated), and a
    constant, float64. Taps are ordered (channel, frame, row, column): a Conv3d weight's order, and
    a Conv2d's for frames = 1."""
    b, c, t, h, w = lr.shape
    p = kernel // 2
    x = F.pad(lr.double(), _padding(kernel, frames, causal), mode="replicate")
    cols = [
        F.unfold(
            x[:, :, d : d + t].transpose(1, 2).reshape(b * t, c, h + 2 * p, w + 2 * p), kernel
        ).reshape(b * t, c, 1, kernel * kernel, h * w)
        for d in range(frames)
    ]
    u = torch.cat(cols, 2).reshape(b * t, -1, h * w).transpose(1, 2).reshape(b * t * h * w, -1)
    return torch.cat([u, torch.ones(len(u), 1, dtype=u.dtype)], 1)


def _targets(hr: torch.Tensor, factor: int) -> torch.Tensor:
    """[B,C,T,H,W] -> [B*T*h*w, C*f*f]: each LR position's f x f HR sub-pixels, in pixel_shuffle's
    channel order."""
    b, c, t, hh, ww = hr.shape
    z = F.pixel_unshuffle(hr.double().permute(0, 2, 1, 3, 4).reshape(b * t, c, hh, ww), factor)
    return z.permute(0, 2, 3, 1).reshape(-1, c * factor * factor)


def _noise_gram(
    t: int, h: int, w: int, channels: int, kernel: int, frames: int = 1, causal: bool = True
) -> torch.Tensor:
    """E[u u^T] summed over the t*h*w rows of one clip, u = `_features` of a unit white-noise latent
    without its constant: a noise pixel appears in as many of a row's taps as replicate padding
    copies it to, so the Gram is the count of tap pairs that read the same pixel (identity inside,
    more at the borders), per channel."""
    idx = torch.arange(t * h * w, dtype=torch.float64).reshape(1, 1, t, h, w)
    # [t*h*w, frames*k*k]: the pixel each tap reads
    taps = _features(idx, kernel, frames, causal)[:, :-1]
    same = (taps[:, :, None] == taps[:, None, :]).sum(0, dtype=torch.float64)
    return torch.kron(torch.eye(channels, dtype=torch.float64), same)


def check_noise_level(noise_level) -> tuple[float, float] | None:
    if noise_level is None:
        return None
    try:
        lo, hi = (float(x) for x in noise_level)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(
            f"noise_level={noise_level!r}: expected [lo, hi] with 0 <= lo <= hi <= 1, or None "
            f"(a clean LR)"
        )
    return lo, hi


def _check_pairs(
    hr: torch.Tensor, lr: torch.Tensor, factor: int, channels: int | None = None
) -> None:
    c = channels if channels is not None else (lr.shape[1] if lr.ndim == 5 else "C")
    if (
        hr.ndim != 5
        or lr.ndim != 5
        or hr.shape[:3] != lr.shape[:3]
        or hr.shape[0] == 0
        or lr.shape[1] != c
        or tuple(hr.shape[3:]) != (factor * lr.shape[3], factor * lr.shape[4])
    ):
        raise ValueError(
            f"pairs of shapes HR {tuple(hr.shape)} and LR {tuple(lr.shape)}: expected non-empty "
            f"[N, {c}, T, {factor}h, {factor}w] and [N, {c}, T, h, w] latents "
            f"(upsampler.base_factor={factor})"
        )
    if not (torch.isfinite(hr).all() and torch.isfinite(lr).all()):
        raise ValueError("the pair latents contain NaN or Inf")


def _check_taps(kernel, frames, causal: bool) -> None:
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel={kernel!r}: expected an odd int >= 1")
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 16:
        raise ValueError(f"frames={frames!r}: expected an int in [1, 16]")
    if not causal and frames % 2 == 0:
        raise ValueError(
            f"frames={frames} centred: expected an odd number of frames (as many after as before)"
        )


@torch.no_grad()
def solve_linear_map(
    hr: torch.Tensor,
    lr: torch.Tensor,
    *,
    factor: int,
    kernel: int,
    frames: int = 1,
    causal: bool = True,
    ridge: float = 1e-3,
    chunk: int = 64,
    noise_level=None,
) -> torch.Tensor:
    """The least-squares linear map from the LR latents `lr` [N,C,T,h,w] (each latent pixel's taps,
    `_features`) to the HR latents `hr` [N,C,T,f*h,f*w] (each LR position's f x f sub-pixels): the
    normal equations, accumulated `chunk` rows at a time in float64, with a ridge of `ridge` times
    the mean feature energy.

    noise_level [lo, hi]: fit the map to the condition training feeds the upsampler instead of the
    clean LR, c_s = (1 - s) c + s e with s ~ U[lo, hi] per clip and e white unit noise (train.py's
    draws): the normal equations in expectation over s and e, in closed form - E[(1-s)^2] times the
    clean Gram plus E[s^2] times the noise's (`_noise_gram`), E[1-s] times the clean cross terms -
    i.e. the Wiener filter of that noisy input, with no sampling error. None: the clean LR (s = 0).

    Returns [C*frames*k*k + 1, C*f*f] float64 (the last row is the bias). frames = 1 is
    `LinearBase`'s per-frame map; frames > 1 is spatio-temporal, which the model does not hold
    (experiments/linear_ceiling.py measures it)."""
    _check_pairs(hr, lr, factor)
    _check_taps(kernel, frames, causal)
    noise = check_noise_level(noise_level)
    lo, hi = noise or (0.0, 0.0)
    m1 = 1.0 - (lo + hi) / 2  # E[1 - s]
    es2 = (lo * lo + lo * hi + hi * hi) / 3  # E[s^2]
    m2 = 1.0 - (lo + hi) + es2  # E[(1 - s)^2]
    c = lr.shape[1]
    n = c * frames * kernel * kernel + 1
    xtx = torch.zeros(n, n, dtype=torch.float64)
    xty = torch.zeros(n, c * factor * factor, dtype=torch.float64)
    grams: dict = {}
    for i in range(0, hr.shape[0], chunk):
        x, y = (
            _features(lr[i : i + chunk], kernel, frames, causal),
            _targets(hr[i : i + chunk], factor),
        )
        g = x.T @ x
        g[:-1, :-1] *= m2
        g[:-1, -1] *= m1
        g[-1, :-1] *= m1
        if es2 > 0:
            b, _, t, h, w = lr[i : i + chunk].shape
            if (t, h, w) not in grams:
                grams[(t, h, w)] = _noise_gram(t, h, w, c, kernel, frames, causal)
            g[:-1, :-1] += es2 * b * grams[(t, h, w)]
        xtx += g
        xy = x.T @ y
        xy[:-1] *= m1
        xty += xy
    lam = ridge * float(xtx.diagonal()[:-1].mean())
    return torch.linalg.solve(xtx + lam * torch.eye(n, dtype=torch.float64), xty)


def apply_linear_map(
    a: torch.Tensor,
    x: torch.Tensor,
    *,
    factor: int,
    kernel: int,
    frames: int = 1,
    causal: bool = True,
) -> torch.Tensor:
    """`solve_linear_map`'s map `a` applied to latents x [B,C,T,h,w] -> [B,C,T,f*h,f*w] (float32): a
    Conv3d over the same taps, in the same order and with the same padding, then pixel shuffle."""
    _check_taps(kernel, frames, causal)
    b, c, t, h, w = x.shape
    if tuple(a.shape) != (c * frames * kernel * kernel + 1, c * factor * factor):
        raise ValueError(
            f"a linear map of shape {tuple(a.shape)} for {c}-channel latents, {frames} frames, "
            f"{kernel}x{kernel} taps and factor {factor}: expected "
            f"{(c * frames * kernel * kernel + 1, c * factor * factor)}"
        )
    weight = a[:-1].T.reshape(-1, c, frames, kernel, kernel).float()
    y = F.conv3d(
        F.pad(x.float(), _padding(kernel, frames, causal), mode="replicate"), weight, a[-1].float()
    )
    y = F.pixel_shuffle(y.transpose(1, 2).reshape(b * t, -1, h, w), factor)
    return y.reshape(b, t, c, factor * h, factor * w).transpose(1, 2)


@torch.no_grad()
def fit_base(
    model,
    hr: torch.Tensor,
    lr: torch.Tensor,
    *,
    ridge: float = 1e-3,
    chunk: int = 64,
    noise_level=None,
    log=print,
) -> dict:
    """Set `model.upsampler.base` to the least-squares linear map from the model-space LR latents
    `lr` [N,C,T,h,w] to the HR latents `hr` [N,C,T,f*h,f*w] (f = upsampler.base_factor):
    `solve_linear_map` with the base's kernel, per frame, for the clean LR or (noise_level [lo, hi])
    the condition training noises.

    Returns {"mse", "bilinear_mse"}: the fit's and plain bilinear interpolation's mean squared error
    on the rows, on one seeded draw of the condition when noise_level is given."""
    up = model.upsampler
    config = up.config
    if config.base != "linear":
        raise ValueError(
            f"upsampler.base={config.base!r}: fitting needs upsampler.base='linear' in the "
            f"model config"
        )
    f, k, c = config.base_factor, config.base_kernel, config.channels
    _check_pairs(hr, lr, f, c)
    noise = check_noise_level(noise_level)
    a = solve_linear_map(hr, lr, factor=f, kernel=k, ridge=ridge, chunk=chunk, noise_level=noise)
    up.base.conv.weight.copy_(a[:-1].T.reshape(up.base.conv.weight.shape).float())
    up.base.conv.bias.copy_(a[-1].float())
    lo, hi = noise or (0.0, 0.0)
    n = a.shape[0]
    size = tuple(hr.shape[3:])
    err = {"mse": 0.0, "bilinear_mse": 0.0}
    gen = torch.Generator().manual_seed(0)
    for i in range(0, hr.shape[0], chunk):
        h, x = hr[i : i + chunk].float(), lr[i : i + chunk].float()
        if noise is not None:
            s = (torch.rand(len(x), generator=gen) * (hi - lo) + lo).reshape(-1, 1, 1, 1, 1)
            x = (1 - s) * x + s * torch.randn(x.shape, generator=gen)
        err["mse"] += float((up.base(x, size) - h).pow(2).sum())
        err["bilinear_mse"] += float((resize_frames(x, size) - h).pow(2).sum())
    err = {key: v / hr.numel() for key, v in err.items()}
    on = "" if noise is None else f" on the condition noised at s ~ U[{lo}, {hi}]"
    log(
        f"fit_upsampler: {hr.shape[0]} pairs, {n} weights per output{on}: latent MSE "
        f"{err['mse']:.4f} (bilinear: {err['bilinear_mse']:.4f})"
    )
    return err


@torch.no_grad()
def codec_round_trip(
    latents: torch.Tensor, codec_path: str | Path, latent_format, chunk: int = 64
) -> torch.Tensor:
    """Model-space latents [N,C,T,H,W] as a linear codec shows them: encode(decode(z)) of each
    (unclamped). Fitted to these targets, the base predicts what the decoder draws rather than the
    part of an HR latent that decodes to seams at the 8-pixel grid. Tried on the demo's one-step
    model: less blocky, but its SSIM margin over bicubic was lost (RESULTS.md, Blockiness)."""
    from simplegvr_core.vae import LappedVideoCodec, VideoVAE

    codec = VideoVAE.load("file", codec_path).vae
    if not isinstance(codec, LappedVideoCodec):
        raise ValueError(
            f"--codec-targets {str(codec_path)!r} is a {type(codec).__name__}: "
            "expected a linear lapped codec file (the demo's, training/train_vae.py)"
        )
    out = [
        latent_format.normalise(
            codec.encode(
                codec.decode(latent_format.denormalise(latents[i : i + chunk].float()))
            ).mode()
        )
        for i in range(0, len(latents), chunk)
    ]
    return torch.cat(out)


def load_pairs(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR, LR) latents [N,C,T,H,W] / [N,C,T,h,w] of every row of the pair shards in `folder` (model
    space: the shards hold normalised latents)."""
    data = PairShards(folder)
    rows = [data[(i, 0)] for i in range(len(data))]
    return torch.stack([r["hr_latent"] for r in rows]), torch.stack([r["lr_latent"] for r in rows])


def fit_init(
    config: dict,
    out: str | Path,
    *,
    ridge: float = 1e-3,
    noise_level=None,
    log=print,
    overwrite: bool = False,
    codec_targets: str | Path | None = None,
) -> dict:
    """Build the model `config["model"]` describes (seeded by train.seed), fit its base on the pair
    shards of data.path (to the condition noised at `noise_level`, as `fit_base` takes it) and write
    it to `out` (atomically): the checkpoint train.py's model.init takes. An existing `out` is
    refused before any work, and again at the rename, unless `overwrite`; an `out` that is one of
    the inputs is refused. Returns fit_base's errors."""
    if config["data"]["kind"] != "shards":
        raise ValueError(
            f"data.kind={config['data']['kind']!r}: fit_upsampler reads pair shards "
            f"(data.kind='shards')"
        )
    if not ridge >= 0:
        raise ValueError(f"--ridge {ridge}: expected a number >= 0")
    noise = check_noise_level(noise_level)
    inputs = input_paths(config) + ([Path(codec_targets)] if codec_targets else [])
    check_output(out, overwrite=overwrite, inputs=inputs, what="--out")  # before any work
    torch.manual_seed(config["train"]["seed"])
    model = build_model(config["model"]).float()
    hr, lr = load_pairs(config["data"]["path"])
    if codec_targets:
        hr = codec_round_trip(hr, codec_targets, model.latent_format)
    err = fit_base(model, hr, lr, ridge=ridge, noise_level=noise, log=log)
    meta = {"fit_upsampler_pairs": str(len(hr)), "fit_upsampler_mse": f"{err['mse']:.6f}"}
    if codec_targets:
        meta["fit_upsampler_targets"] = "codec round trip of the HR latents"
    codec = declared_codec(config)  # the demo codec's pairs make a demo-world model: it says so
    if codec:
        meta[CODEC_KEY] = codec
    if noise is not None:
        meta["fit_upsampler_noise_level"] = f"{noise[0]},{noise[1]}"
    save_checkpoint(model, out, extra_metadata=meta, replace=overwrite)
    return err


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--config",
        required=True,
        help="the training config (its [model], data.path, train.pixel_metric)",
    )
    ap.add_argument(
        "overrides", nargs="*", help="section.key=value overrides, as train.py takes them"
    )
    ap.add_argument(
        "--out", required=True, help="the .safetensors checkpoint to write (train.py's model.init)"
    )
    ap.add_argument(
        "--ridge", type=float, default=1e-3, help="ridge, relative to the mean feature energy"
    )
    ap.add_argument(
        "--noise-level",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="fit to the condition noised at s ~ U[LO, HI] (train.noise_level of a model that is "
        "sampled with condition noise); default: the clean LR",
    )
    ap.add_argument(
        "--codec-targets",
        default=None,
        metavar="CODEC",
        help="fit to the HR latents as this linear codec file round-trips them "
        "(encode(decode(hr))): a base that predicts what the decoder draws, "
        "without seams",
    )
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run():
        config = load_config(args.config, args.overrides)
        fit_init(
            config,
            args.out,
            ridge=args.ridge,
            noise_level=args.noise_level,
            overwrite=args.overwrite,
            codec_targets=args.codec_targets,
        )
        print(f"fit_upsampler: wrote {args.out}")

    return report_errors("fit_upsampler", run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
