# SPDX-License-Identifier: Apache-2.0
"""Tiny, seeded Ultra Flash SR stacks for exactness tests (pure torch; no Ultra Flash code).

Ultra Flash (arXiv 2606.09150, github xin1u/UltraFlash) upscales Wan 2.1 latents in one step: a
causal latent upsampler (v1, `UltraLatentUpsampler`) makes the condition, and a sparse, chunk-causal
Wan 2.1 DiT with 32 input channels (`[noise(16), condition(16)]`) predicts the flow velocity at t =
1000, so the clean HR latent is `x0 = noise - v`. The clip is processed in streaming groups of
latent frames with a KV cache (see docs/ultraflash.md).

This module only describes *tiny* versions of those two networks and fills them with seeded random
weights in Ultra Flash's own checkpoint key layout (the Wan 2.1 key names, `patch_embedding.weight
[dim, 32, 1, 2, 2]`; the v1 upsampler's `pre_shuffle.* / blocks.N.conv.{0,2,4}.* / final.*`), plus
seeded inputs. `make_ultraflash_fixtures.py` feeds exactly these tensors to the reference code and
stores its outputs; our reimplementation loads the same tensors and must reproduce the stored
outputs.

Everything here is deterministic: one `torch.Generator` per call, tensors drawn in the fixed order
of the key tables below, float32, CPU.

Sizes are (T, H, W) / (H, W) everywhere.
"""

from __future__ import annotations

import copy
import math

import torch

LATENT_CHANNELS = 16  # Wan 2.1 latent channels (LR input, HR output)

# --------------------------------------------------------------------------------------------------
# Named cases
# --------------------------------------------------------------------------------------------------
# Fields:
#   dit       : network sizes in Wan's naming. in_dim = 2 * 16 (noise + condition), out_dim = 16.
#               text_len = length the text context is zero-padded to *before*
#               text_embedding (512 shipped).
#   sparse    : block = (t, h, w) token block of the block-sparse attention (128 tokens for
#               (2, 8, 8)); local_range = spatial window in blocks; top_k_ratio r and
#               ref_spatial_tokens set top_k = min(max(int(S*S * (r * ref / (h*w))), 1),
#               max(S*S*TQ - 1, 1)) per streaming call;
#               stream_chunk_size = causal granularity in latent frames (2 = one temporal block);
#               kv_len = temporal blocks of K/V kept in the cache after each call.
#   groups    : latent frames per streaming call, in order (sum = T). The short script forms
#               6-frame groups (two 3-frame LR chunks, remainder flushed at the end); the
#               long-video script starts with 4 (1 + 3 frames, independent first frame), then 6,
#               remainder at the end.
#   upsampler : v1 latent upsampler: 3x3 conv (16 -> mid*s*s) + PixelShuffle(s) + ReLU,
#               num_blocks causal memory blocks (replicate memory at the first frame), final 3x3
#               conv mid -> 16.
#   lr_size   : (T, H, W) of the normalised LR latent; HR latent = (T, s*H, s*W); DiT token grid =
#               (T, s*H/2, s*W/2) before padding to the block size.
#   prompt_len: valid text-feature rows (what the pipeline keeps after stripping the zero rows).
#   timestep  : SR timestep (one step, no shift).
#   seeds     : seeds for build_state_dicts / build_inputs. Chosen so that every top-k threshold
#               of the reference run is separated from the next score by > 3e-4 (relative), i.e.
#               the selected blocks cannot flip under float32 reordering
#               (make_ultraflash_fixtures.py --verify reports it).
_CASES: dict[str, dict] = {
    # Shipped sparse parameters at a tiny size. LR 9x13 -> HR latent 18x26 -> tokens 9x13 -> padded
    # 16x16 = 2x2 spatial blocks. Groups 6, 6, 1: the 1-frame group is padded to one 2-frame
    # temporal block and attends to a 3-temporal-block cache; there top_k = 15 of a 64-entry slab
    # actually bites.
    "shipped": {
        "dit": dict(
            dim=64,
            num_heads=2,
            num_layers=2,
            ffn_dim=128,
            text_dim=32,
            freq_dim=256,
            in_dim=32,
            out_dim=LATENT_CHANNELS,
            patch=(1, 2, 2),
            eps=1e-6,
            qk_norm=True,
            cross_attn_norm=True,
            text_len=512,
            rope_theta=10000.0,
        ),
        "sparse": dict(
            block=(2, 8, 8),
            local_range=9,
            top_k_ratio=1.0,
            ref_spatial_tokens=1560,
            stream_chunk_size=2,
            kv_len=3,
        ),
        "groups": (6, 6, 1),
        "upsampler": dict(
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            mid_channels=16,
            num_blocks=2,
            scale=2,
        ),
        "lr_size": (13, 9, 13),
        "prompt_len": 9,
        "timestep": 1000.0,
        "seeds": {"weights": 4, "inputs": 5},
    },
    # Top-k and the local window both exclude blocks. LR 9x17 -> tokens 9x17 -> padded 16x24 = 2x3
    # spatial blocks; local_range 3 hides the far column; top_k = int(36 * 2.0 * 20 / 153) = 9 per
    # slab of 6 query blocks, so many rows fall back to their first allowed key block. Long-video
    # grouping 4, 6, 3: the second call sees a 2-temporal-block cache (less than kv_len), the third
    # a 3-block cache plus an odd, padded group. 3 heads, 3 layers, text_len 24 (padding length
    # comes from the config, not 512).
    "biting": {
        "dit": dict(
            dim=96,
            num_heads=3,
            num_layers=3,
            ffn_dim=160,
            text_dim=40,
            freq_dim=64,
            in_dim=32,
            out_dim=LATENT_CHANNELS,
            patch=(1, 2, 2),
            eps=1e-6,
            qk_norm=True,
            cross_attn_norm=True,
            text_len=24,
            rope_theta=10000.0,
        ),
        "sparse": dict(
            block=(2, 8, 8),
            local_range=3,
            top_k_ratio=2.0,
            ref_spatial_tokens=20,
            stream_chunk_size=2,
            kv_len=3,
        ),
        "groups": (4, 6, 3),
        "upsampler": dict(
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            mid_channels=12,
            num_blocks=3,
            scale=2,
        ),
        "lr_size": (13, 9, 17),
        "prompt_len": 7,
        "timestep": 1000.0,
        "seeds": {"weights": 4, "inputs": 6},
    },
}


def tiny_configs() -> dict[str, dict]:
    """All named cases (deep copies, so callers may edit them)."""
    out = {}
    for name, case in _CASES.items():
        case = copy.deepcopy(case)
        case["name"] = name
        _check_case(case)
        out[name] = case
    return out


def real_size_files() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Their two published files' key tables at full size as empty tensors of the current default
    device (use under `torch.device("meta")`): the shipped case's layout at Wan 2.1 1.3B's sizes
    (dim 1536, 12 heads, 30 layers, ffn 8960, umT5's 4096-wide text) and the v1 upsampler's (128
    wide, 8 blocks)."""
    case = tiny_configs()["shipped"]
    case["dit"].update(
        dim=1536, num_heads=12, num_layers=30, ffn_dim=8960, text_dim=4096, freq_dim=256
    )
    case["upsampler"].update(mid_channels=128, num_blocks=8)
    return (
        {k: torch.empty(shape) for k, shape, _ in dit_key_table(case)},
        {k: torch.empty(shape) for k, shape, _ in upsampler_key_table(case)},
    )


def _check_case(case: dict) -> None:
    d, s = case["dit"], case["sparse"]
    assert d["dim"] % d["num_heads"] == 0 and (d["dim"] // d["num_heads"]) % 2 == 0, (
        "head_dim must be even"
    )
    assert d["in_dim"] == 2 * LATENT_CHANNELS and d["out_dim"] == LATENT_CHANNELS
    assert s["block"][0] in (1, 2), (
        "chunk-causal sparse attention supports temporal blocks of 1 or 2 frames"
    )
    assert sum(case["groups"]) == case["lr_size"][0], "groups must cover all latent frames"
    assert case["prompt_len"] <= d["text_len"]
    scale = case["upsampler"]["scale"]
    _, h, w = case["lr_size"]
    assert (scale * h) % d["patch"][1] == 0 and (scale * w) % d["patch"][2] == 0


def hr_latent_size(case: dict) -> tuple[int, int, int]:
    """(T, H, W) of the HR latent (= condition = output)."""
    t, h, w = case["lr_size"]
    s = case["upsampler"]["scale"]
    return t, s * h, s * w


def token_grid(case: dict, frames: int) -> tuple[int, int, int]:
    """DiT token grid (f, h, w) of one streaming call with `frames` latent frames (before block
    padding)."""
    _, hh, ww = hr_latent_size(case)
    pt, ph, pw = case["dit"]["patch"]
    return frames // pt, hh // ph, ww // pw


# --------------------------------------------------------------------------------------------------
# Key tables (Ultra Flash checkpoint layout) and seeded weights
# --------------------------------------------------------------------------------------------------
# kind -> how a standard-normal draw z becomes the parameter (fan_in = prod(shape[1:])):
#   "weight"   : z / sqrt(fan_in)   (linear / conv kernels, incl. the zero-initialised ones)
#   "bias"     : 0.05 * z
#   "qk_norm"  : 2 + 0.2 * z        (RMSNorm gains on q/k: > 1 spreads the pooled block scores,
#                                    so that no top-k decision is a near tie; see `seeds` below)
#   "ln_weight": 1 + 0.1 * z        (affine LayerNorm gain)
#   "ln_bias"  : 0.05 * z
#   "modulation": 0.1 * z       (added to the time projection)
_SCALES = {
    "bias": (0.0, 0.05),
    "qk_norm": (2.0, 0.2),
    "ln_weight": (1.0, 0.1),
    "ln_bias": (0.0, 0.05),
    "modulation": (0.0, 0.1),
}


def dit_key_table(case: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, kind) of every DiT tensor, in the fixed draw order."""
    d = case["dit"]
    dim, ffn, pt, ph, pw = d["dim"], d["ffn_dim"], *d["patch"]
    rows: list[tuple[str, tuple[int, ...], str]] = [
        ("patch_embedding.weight", (dim, d["in_dim"], pt, ph, pw), "weight"),
        ("patch_embedding.bias", (dim,), "bias"),
        ("text_embedding.0.weight", (dim, d["text_dim"]), "weight"),  # Linear, GELU(tanh), Linear
        ("text_embedding.0.bias", (dim,), "bias"),
        ("text_embedding.2.weight", (dim, dim), "weight"),
        ("text_embedding.2.bias", (dim,), "bias"),
        ("time_embedding.0.weight", (dim, d["freq_dim"]), "weight"),  # Linear, SiLU, Linear
        ("time_embedding.0.bias", (dim,), "bias"),
        ("time_embedding.2.weight", (dim, dim), "weight"),
        ("time_embedding.2.bias", (dim,), "bias"),
        ("time_projection.1.weight", (6 * dim, dim), "weight"),  # SiLU, Linear
        ("time_projection.1.bias", (6 * dim,), "bias"),
    ]
    for n in range(d["num_layers"]):
        p = f"blocks.{n}."
        rows.append((p + "modulation", (1, 6, dim), "modulation"))
        for attn in ("self_attn", "cross_attn"):
            if attn == "cross_attn" and d["cross_attn_norm"]:
                rows += [
                    (p + "norm3.weight", (dim,), "ln_weight"),
                    (p + "norm3.bias", (dim,), "ln_bias"),
                ]
            for proj in ("q", "k", "v", "o"):
                rows += [
                    (f"{p}{attn}.{proj}.weight", (dim, dim), "weight"),
                    (f"{p}{attn}.{proj}.bias", (dim,), "bias"),
                ]
            if d["qk_norm"]:
                rows += [
                    (f"{p}{attn}.norm_q.weight", (dim,), "qk_norm"),
                    (f"{p}{attn}.norm_k.weight", (dim,), "qk_norm"),
                ]
        rows += [
            (p + "ffn.0.weight", (ffn, dim), "weight"),  # Linear, GELU(tanh), Linear
            (p + "ffn.0.bias", (ffn,), "bias"),
            (p + "ffn.2.weight", (dim, ffn), "weight"),
            (p + "ffn.2.bias", (dim,), "bias"),
        ]
    rows += [
        ("head.modulation", (1, 2, dim), "modulation"),
        ("head.head.weight", (pt * ph * pw * d["out_dim"], dim), "weight"),
        ("head.head.bias", (pt * ph * pw * d["out_dim"],), "bias"),
    ]
    return rows


def _pixel_shuffle_factors(scale: int) -> list[int]:
    """The v1 upsampler head: one PixelShuffle(2) per factor 2 of the scale, then one for the
    remainder."""
    factors = []
    while scale % 2 == 0:
        factors.append(2)
        scale //= 2
    if scale > 1:
        factors.append(scale)
    return factors


def upsampler_key_table(case: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, kind) of every v1 latent-upsampler tensor, in the fixed draw order."""
    u = case["upsampler"]
    mid = u["mid_channels"]
    rows: list[tuple[str, tuple[int, ...], str]] = []
    if u["scale"] == 1:
        rows += [
            ("pre_shuffle.0.weight", (mid, u["in_channels"], 3, 3), "weight"),
            ("pre_shuffle.0.bias", (mid,), "bias"),
        ]
    else:
        c_in = u["in_channels"]
        # Sequential: conv, shuffle, conv, ...
        for i, f in enumerate(_pixel_shuffle_factors(u["scale"])):
            rows += [
                (f"pre_shuffle.{2 * i}.weight", (mid * f * f, c_in, 3, 3), "weight"),
                (f"pre_shuffle.{2 * i}.bias", (mid * f * f,), "bias"),
            ]
            c_in = mid
    for n in range(u["num_blocks"]):
        # conv(cat[x, past]), ReLU, conv, ReLU, conv
        for j, c_in in ((0, 2 * mid), (2, mid), (4, mid)):
            rows += [
                (f"blocks.{n}.conv.{j}.weight", (mid, c_in, 3, 3), "weight"),
                (f"blocks.{n}.conv.{j}.bias", (mid,), "bias"),
            ]
    # zero-initialised upstream
    rows += [
        ("final.weight", (u["out_channels"], mid, 3, 3), "weight"),
        ("final.bias", (u["out_channels"],), "bias"),
    ]
    return rows


def _fill(table, gen: torch.Generator) -> dict[str, torch.Tensor]:
    sd = {}
    for key, shape, kind in table:
        z = torch.randn(shape, generator=gen, dtype=torch.float32)
        if kind == "weight":
            sd[key] = z / math.sqrt(math.prod(shape[1:]))
        else:
            mean, std = _SCALES[kind]
            sd[key] = mean + std * z
    return sd


def build_state_dicts(
    case: dict, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(dit_state_dict, upsampler_state_dict), float32, drawn from one generator: DiT table, then
    upsampler."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    dit_sd = _fill(dit_key_table(case), gen)
    up_sd = _fill(upsampler_key_table(case), gen)
    return dit_sd, up_sd


# --------------------------------------------------------------------------------------------------
# Seeded inputs
# --------------------------------------------------------------------------------------------------
def build_inputs(case: dict, seed: int) -> dict[str, torch.Tensor]:
    """Seeded inputs of one case, float32, drawn in the order lr, noise, context.

    lr      [1, 16, T, H, W]       normalised Wan 2.1 LR latent ((z - mean) / std space).
    noise   [1, 16, T, sH, sW]     initial noise x_T of the whole clip; streaming group g uses its
    frames
                                   (upstream draws one tensor per group; any draw is an input, so a
                                       slice
                                   of one clip-sized draw is an equally valid one).
    context [1, prompt_len, text_dim]  text-encoder features of the valid prompt tokens only. The
    pipeline
                                   strips the zero rows, then the DiT zero-pads to text_len *before*
                                   text_embedding and cross-attends to all text_len rows without a
                                       mask.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    t, h, w = case["lr_size"]
    _, hh, ww = hr_latent_size(case)
    lr = torch.randn((1, LATENT_CHANNELS, t, h, w), generator=gen, dtype=torch.float32)
    noise = torch.randn((1, LATENT_CHANNELS, t, hh, ww), generator=gen, dtype=torch.float32)
    context = torch.randn(
        (1, case["prompt_len"], case["dit"]["text_dim"]), generator=gen, dtype=torch.float32
    )
    return {"lr": lr, "noise": noise, "context": context}


def group_slices(case: dict) -> list[slice]:
    """Latent-frame slice of each streaming call, in order."""
    out, start = [], 0
    for n in case["groups"]:
        out.append(slice(start, start + n))
        start += n
    return out
