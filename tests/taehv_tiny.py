"""Seeded, synthetic TAEHV-layout weights and latents for decoder tests.

Pure torch. Nothing here loads real weights: ``build_taehv_state_dict`` fills
every tensor of a full TAEHV checkpoint layout (``encoder.*`` and ``decoder.*``,
real channel widths) from one ``torch.Generator``, walking a fixed key/shape
table, so a decoder implementation can be compared against the reference
TAEHV code at tiny spatial sizes without the real ``.pth`` files.

Layout (base, non-"super" variant; latent_channels=16 is Wan 2.1 / Wan 2.2 A14B,
HunyuanVideo and CogVideoX; 48 is Wan 2.2 5B and 32 HunyuanVideo 1.5, both with a
2x2 pixel (un)shuffle so the RGB convs see 12 channels):

  encoder: 0 conv(3p^2->64) 1 act 2 TPool(64,2) 3 conv s2 4-6 MemBlock(64)
           7 TPool(64,2) 8 conv s2 9-11 MemBlock(64) 12 TPool(64,1) 13 conv s2
           14-16 MemBlock(64) 17 conv(64->C)
  decoder: 0 clamp 1 conv(C->256) 2 act 3-5 MemBlock(256) 6 up2 7 TGrow(256,1)
           8 conv(256->128,no bias) 9-11 MemBlock(128) 12 up2 13 TGrow(128,2)
           14 conv(128->64,no bias) 15-17 MemBlock(64) 18 up2 19 TGrow(64,2)
           20 conv(64->64,no bias) 21 act 22 conv(64->3p^2)
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "taehv_key_table",
    "build_taehv_state_dict",
    "build_latent",
    "state_dict_digest",
]

KeyShape = tuple[str, tuple[int, ...]]

# Per-tensor initialisation: (role -> (gain applied to 1/sqrt(fan_in), bias std)).
# Chosen so activations stay O(1) through 9 residual MemBlocks and the final RGB
# conv lands mostly inside [0, 1] (little clamping, so the fixture stays informative).
_ROLE_INIT = {
    "conv_relu": (math.sqrt(2.0), 0.05),  # conv followed by ReLU
    "mem_in": (math.sqrt(2.0), 0.05),  # MemBlock conv.0 on cat([x, past])
    "mem_mid": (math.sqrt(2.0), 0.05),  # MemBlock conv.2
    "mem_out": (0.5, 0.02),  # MemBlock conv.4 (residual branch end)
    "mem_skip": (1.0, 0.0),  # MemBlock 1x1 skip (unused at equal widths)
    "time": (1.0, 0.0),  # TPool / TGrow 1x1 convs (no bias)
    "stage": (1.0, 0.0),  # stride-2 / width-change convs (no bias)
    "latent_out": (1.0, 0.02),  # encoder.17
    "rgb_out": (0.3, 0.0),  # decoder.22 (bias set to 0.5 below)
}


def _patch_size(latent_channels: int) -> int:
    return 2 if latent_channels in (32, 48) else 1


def _memblock(prefix: str, n: int) -> list[tuple[str, tuple[int, ...], str]]:
    return [
        (f"{prefix}.conv.0.weight", (n, 2 * n, 3, 3), "mem_in"),
        (f"{prefix}.conv.0.bias", (n,), "mem_in"),
        (f"{prefix}.conv.2.weight", (n, n, 3, 3), "mem_mid"),
        (f"{prefix}.conv.2.bias", (n,), "mem_mid"),
        (f"{prefix}.conv.4.weight", (n, n, 3, 3), "mem_out"),
        (f"{prefix}.conv.4.bias", (n,), "mem_out"),
    ]


def _table_with_roles(latent_channels: int) -> list[tuple[str, tuple[int, ...], str]]:
    c_img = 3 * _patch_size(latent_channels) ** 2
    t: list[tuple[str, tuple[int, ...], str]] = []
    # encoder
    t += [
        ("encoder.0.weight", (64, c_img, 3, 3), "conv_relu"),
        ("encoder.0.bias", (64,), "conv_relu"),
    ]
    for pool_idx, pool_stride in ((2, 2), (7, 2), (12, 1)):
        t.append((f"encoder.{pool_idx}.conv.weight", (64, 64 * pool_stride, 1, 1), "time"))
        t.append((f"encoder.{pool_idx + 1}.weight", (64, 64, 3, 3), "stage"))
        for m in range(pool_idx + 2, pool_idx + 5):
            t += _memblock(f"encoder.{m}", 64)
    t += [
        ("encoder.17.weight", (latent_channels, 64, 3, 3), "latent_out"),
        ("encoder.17.bias", (latent_channels,), "latent_out"),
    ]
    # decoder
    t += [
        ("decoder.1.weight", (256, latent_channels, 3, 3), "conv_relu"),
        ("decoder.1.bias", (256,), "conv_relu"),
    ]
    widths = (256, 128, 64, 64)
    for stage, first in enumerate((3, 9, 15)):
        n, n_next = widths[stage], widths[stage + 1]
        for m in range(first, first + 3):
            t += _memblock(f"decoder.{m}", n)
        stride = 1 if stage == 0 else 2  # TGrow strides (1, 2, 2)
        t.append((f"decoder.{first + 4}.conv.weight", (n * stride, n, 1, 1), "time"))
        t.append((f"decoder.{first + 5}.weight", (n_next, n, 3, 3), "stage"))
    t += [
        ("decoder.22.weight", (c_img, 64, 3, 3), "rgb_out"),
        ("decoder.22.bias", (c_img,), "rgb_out"),
    ]
    return t


def taehv_key_table(latent_channels: int = 16) -> list[KeyShape]:
    """Ordered (key, shape) list of a full TAEHV state dict (encoder then decoder)."""
    return [(k, s) for k, s, _ in _table_with_roles(latent_channels)]


def build_taehv_state_dict(seed: int, latent_channels: int = 16) -> dict[str, torch.Tensor]:
    """Full TAEHV-layout state dict (float32, CPU) filled from one seeded generator.

    Tensors are drawn in the fixed table order with a single ``torch.Generator``,
    so the result depends only on ``seed`` and ``latent_channels``.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    sd: dict[str, torch.Tensor] = {}
    for key, shape, role in _table_with_roles(latent_channels):
        gain, bias_std = _ROLE_INIT[role]
        draw = torch.randn(shape, generator=gen, dtype=torch.float32)
        if key.endswith(".weight"):
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            sd[key] = draw * (gain / math.sqrt(fan_in))
        else:
            sd[key] = draw * bias_std
    sd["decoder.22.bias"] = sd["decoder.22.bias"] + 0.5  # centre RGB output in [0, 1]
    return sd


def build_latent(
    seed: int, T: int, h: int, w: int, channels: int = 16, scale: float = 1.5
) -> torch.Tensor:
    """Seeded model-space (normalised) latent, shape [1, channels, T, h, w] (NCTHW).

    ``scale`` > 1 pushes some values into the decoder's tanh(x/3)*3 soft clamp.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((1, channels, T, h, w), generator=gen, dtype=torch.float32) * scale


def state_dict_digest(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over keys, shapes and float32 little-endian bytes, in sorted key order."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k].detach().to(torch.float32).contiguous().cpu()
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes())  # needs numpy
    return h.hexdigest()
