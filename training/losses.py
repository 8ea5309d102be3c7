"""The training loss (paper §4.1, §4.3): every sample's random draws from its own stream
(`sample_draws`), the noise-augmented condition, the flow target and the null-prompt dropout
(`flow_loss`), and errors measured in pixels through a linear codec (`PixelMetric`, with its
SSIM)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simplegvr_core import seeding  # noqa: E402
from simplegvr_core.sampling import add_condition_noise, noise_latent  # noqa: E402
from simplegvr_core.timesteps import TimestepSampler  # noqa: E402


def sample_draws(
    seed: int, j: int, hr_shape, lr_shape, train_config: dict, sampler: TimestepSampler
) -> dict:
    """The random draws of sample j of the run, from its own stream: condition noise level s and
    noise, σ, the flow noise ε and the null-prompt coin. A pure function of (seed, j), so whichever
    process, micro-batch or resumed run trains sample j draws the same."""
    g = seeding.torch_generator(seed, seeding.TRAIN_SAMPLE, j)
    lo, hi = train_config["noise_level"]
    s = torch.rand(1, generator=g) * (hi - lo) + lo
    cond_eps = torch.randn(tuple(lr_shape), generator=g)
    sigma = sampler.sample(1, g)
    eps = torch.randn(tuple(hr_shape), generator=g)
    drop = torch.rand(1, generator=g) < train_config["null_prompt_prob"]
    return {"s": s, "cond_eps": cond_eps, "sigma": sigma, "eps": eps, "drop": drop}


class PixelMetric:
    """Squared error of model-space latents measured in pixels, through a linear codec's decoder
    (`vae.LappedVideoCodec`, the demo's): `train.pixel_metric = <codec file>`. Plain latent MSE
    weighs every normalised channel alike, while a decoder turns some channels into far more pixel
    energy than others; a loss that counts errors as the decoded frames would spends the model on
    what PSNR sees. The flow target does not change (any such quadratic loss is minimised by the
    same E[v | x_σ]); only where the capacity goes does. Scaled so that a unit normal error scores
    1, as plain MSE does."""

    def __init__(self, path: str, latent_format, device):
        from simplegvr_core.vae import LappedVideoCodec, VideoVAE

        codec = VideoVAE.load("file", path).vae
        if not isinstance(codec, LappedVideoCodec):
            raise ValueError(
                f"train.pixel_metric={path!r} is a {type(codec).__name__}: expected a linear "
                f"lapped codec file (the demo's, training/train_vae.py), whose decoder is "
                f"a linear map"
            )
        if latent_format.mean is None or latent_format.channels != codec.z_dim:
            raise ValueError(
                f"train.pixel_metric needs a {codec.z_dim}-channel latent format with per-channel "
                f"statistics, got {latent_format.describe()}"
            )
        self.codec = codec.to(device).eval()
        for q in self.codec.parameters():
            q.requires_grad_(False)
        std = torch.tensor(latent_format.std, dtype=torch.float32, device=device)
        self.fmt = latent_format
        # model-space unit -> code unit
        self.gain = (std / self.codec.scale.to(device)).view(1, -1, 1, 1, 1)
        g = torch.Generator().manual_seed(0)
        self.norm = 1.0
        self.norm = float(self(torch.randn(2, codec.z_dim, 3, 8, 8, generator=g).to(device)).mean())

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space latents [B, C, T, h, w] -> the codec's decoded frames [B, 3, T', H, W] in [0,
        1]."""
        return ((self.codec.decode(self.fmt.denormalise(x.float())) + 1) / 2).clamp(0, 1)

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def blur_matrix(n: int) -> torch.Tensor:
        """[n, n] matrix of `metrics.ssim`'s Gaussian blur along one axis (window 11, sigma 1.5,
        OpenCV's BORDER_REFLECT: the edge sample repeated, ...cba|abc...): B @ z blurs z's first
        axis. As a matmul it runs at full speed on CPU, where a 1-channel 1x11 convolution (and its
        backward) was the slowest op of a step."""
        g = torch.exp(-0.5 * ((torch.arange(11, dtype=torch.float64) - 5) / 1.5) ** 2)
        g = (g / g.sum()).tolist()
        b = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for k in range(11):
                j = i + k - 5
                while not 0 <= j < n:  # reflect about the edges (more than once when n < 6)
                    j = -j - 1 if j < 0 else 2 * n - 1 - j
                b[i][j] += g[k]
        return torch.tensor(b, dtype=torch.float32)

    def ssim(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample mean SSIM [B] of the decoded frames of two model-space latents, as
        `metrics.ssim` measures it (Gaussian window 11, sigma 1.5, reflected borders, per RGB
        channel and frame); differentiable in `pred`."""
        a, b = self.frames(pred), self.frames(target)
        n, ch, t, h, w = a.shape
        a, b = (z.permute(0, 2, 1, 3, 4).reshape(n * t * ch, h, w) for z in (a, b))
        bh, bw = self.blur_matrix(h).to(a.device), self.blur_matrix(w).t().to(a.device)

        def blur(z):
            return bh @ z @ bw

        c1, c2 = 0.01**2, 0.03**2
        ma, mb = blur(a), blur(b)
        va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
        s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
        return s.view(n, -1).mean(1)

    def __call__(self, err: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared pixel error [B] of a model-space latent error [B, C, T, h, w]."""
        w = self.codec.decoder_weight()
        # the decoder without its bias
        px = torch.nn.functional.conv_transpose3d(err.float() * self.gain, w)
        return px.pow(2).flatten(1).mean(1) / self.norm


def flow_loss(
    model,
    hr,
    lr,
    ctx,
    draws: list[dict],
    upsampler_weight: float = 0.0,
    metric=None,
    ssim_weight: float = 0.0,
) -> torch.Tensor:
    """Per-sample training losses [B]: noise-augmented condition, flow target, null-prompt dropout,
    with sample i's draws `draws[i]` (`sample_draws`). With `upsampler_weight` > 0, plus that weight
    times the squared error of the upsampler's condition c against HR: c is a latent at HR size, and
    this asks it to be the best guess of HR from the LR latent (the upsampler learns latent
    super-resolution directly, not only through the DiT's gradients). `metric` (a `PixelMetric`):
    how a latent error is scored (default: mean square over the latent). With `ssim_weight` > 0 (and
    a metric), plus that weight times 1 - SSIM of the decoded x0 estimate x_σ - σ v against the
    decoded HR latent: a loss on local structure, which mean-square errors let a model blur or ring
    away."""
    dev = hr.device
    s = torch.cat([d["s"] for d in draws]).to(dev)
    cond_eps = torch.stack([d["cond_eps"] for d in draws]).to(dev)
    sigma = torch.cat([d["sigma"] for d in draws]).to(dev)
    eps = torch.stack([d["eps"] for d in draws]).to(dev)
    drop = torch.cat([d["drop"] for d in draws]).to(dev)
    c_s = add_condition_noise(lr, s, noise=cond_eps)  # c_s = (1-s) c0 + s ε, before the upsampler
    x = noise_latent(hr, eps, sigma)  # x_σ = (1-σ) x0 + σ ε
    ctx = ctx * (~drop).view(-1, 1, 1).to(ctx.dtype)
    score = metric or (lambda e: e.float().pow(2).flatten(1).mean(1))
    # SimpleGVR.forward: upsampler + DiT
    v, c = model(x, c_s, sigma * 1000.0, ctx, s, return_condition=True)
    loss = score(v.float() - (eps - hr).float())
    if upsampler_weight:
        loss = loss + upsampler_weight * score(c.float() - hr.float())
    if ssim_weight:
        x0 = x.float() - sigma.view(-1, *[1] * (x.dim() - 1)) * v.float()
        loss = loss + ssim_weight * (1 - metric.ssim(x0, hr))
    return loss
