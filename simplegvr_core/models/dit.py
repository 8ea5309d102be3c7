"""SimpleGVR DiT: the Wan 2.1 transformer with the LR condition concatenated on channels.

Module names follow Wan's `wan/modules/model.py`, so the state-dict keys are those of the original
and ComfyUI checkpoints (`blocks.N.self_attn.q.weight`, `head.head.weight`, ...). Two additions:
`in_dim = 2C` (input is cat[z_t, c]) and `noise_level_embedding`, whose last projection starts at
zero, so a model initialised from a T2V checkpoint computes exactly the T2V model at step 0.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..config import CAUSAL_MODE, DiTConfig, check_attention
from .attention import ATTENTION_KERNELS, attention
from .block_sparse import BlockSparseSettings, KVCache, block_sparse_attention


def sinusoidal_embedding_1d(dim: int, position: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding: cat[cos, sin](t * 10000^(-i/half)), computed in float64."""
    half = dim // 2
    position = position.to(torch.float64)
    freqs = torch.pow(
        10000.0, -torch.arange(half, dtype=torch.float64, device=position.device) / half
    )
    sinusoid = torch.outer(position, freqs)
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Wan's t/h/w split of the head dim: d - 4*(d//6), 2*(d//6), 2*(d//6) (44/42/42 at 128)."""
    return head_dim - 4 * (head_dim // 6), 2 * (head_dim // 6), 2 * (head_dim // 6)


def rope_cos_sin(
    grid: tuple[int, int, int], head_dim: int, device, theta: float = 10000.0, t_offset: int = 0
):
    """Cos/sin tables [L, head_dim/2] of Wan's 3D RoPE for a frame-major (F, H, W) token grid; the
    frames sit at positions t_offset, t_offset + 1, ... (a streaming group's absolute frame index;
    rows and columns from 0)."""
    f, h, w = grid
    angles = []
    for n, d, view, start in zip(
        (f, h, w), rope_split(head_dim), ((f, 1, 1), (1, h, 1), (1, 1, w)), (t_offset, 0, 0)
    ):
        inv = 1.0 / torch.pow(theta, torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)
        pos = torch.arange(start, start + n, dtype=torch.float64, device=device)
        ang = torch.outer(pos, inv)  # [n, d/2]
        angles.append(ang.view(*view, -1).expand(f, h, w, -1))
    ang = torch.cat(angles, dim=-1).reshape(f * h * w, head_dim // 2)
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x: [B, L, heads, d] by the RoPE angles."""
    xf = x.float().unflatten(-1, (-1, 2))
    x1, x2 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
    return out.type_as(x)


def _embed(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a small embedding MLP in its own dtype and return float32."""
    weight = next(m.weight for m in seq if isinstance(m, nn.Linear))
    return seq(x.to(weight.dtype)).float()


FP16_MAX = torch.finfo(torch.float16).max


def to_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a float32 result back to the stream's dtype; fp16 saturates at +-65504 instead of
    overflowing to inf (large residual activations are the usual fp16 failure of DiTs)."""
    if dtype == torch.float16 and x.dtype != torch.float16:
        x = x.clamp(-FP16_MAX, FP16_MAX)
    return x.to(dtype)


def _no_autocast(device_type: str):
    if device_type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class WanRMSNorm(nn.Module):
    """RMSNorm over the full feature dim (Wan's q/k norm)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(
            x
        ) * self.weight.to(x.dtype)


class WanLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, affine weights included, whatever the weight dtype (affine
    only where Wan has keys: norm3)."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x):
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return to_dtype(F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps), x.dtype)


class WanSelfAttention(nn.Module):
    """Multi-head self-attention with q/k RMSNorm, 3D RoPE and a selectable attention pattern."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x, rope, grid, attn_kwargs):
        b, n = x.shape[:2]
        q = self.norm_q(self.q(x)).view(b, n, self.num_heads, self.head_dim)
        k = self.norm_k(self.k(x)).view(b, n, self.num_heads, self.head_dim)
        v = self.v(x).view(b, n, self.num_heads, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # returns the layer's next KV cache too (CausalStream)
        if attn_kwargs["mode"] == CAUSAL_MODE:
            o, cache, chosen = block_sparse_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                grid,
                attn_kwargs["settings"],
                attn_kwargs["cache"],
                attn_kwargs["kernel"],
            )
            if attn_kwargs.get("masks") is not None:
                attn_kwargs["masks"].append(chosen)
            return self.o(o.transpose(1, 2).flatten(2)), cache
        sp = attn_kwargs.get("sequence_parallel")
        if sp is not None:  # tokens split over processes (simplegvr_core/parallel.py)
            return self.o(sp.attention(q, k, v, grid, attn_kwargs).flatten(2))
        o = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), grid, **attn_kwargs)
        return self.o(o.transpose(1, 2).flatten(2))  # [B, L, dim]


class WanCrossAttention(WanSelfAttention):
    """Text cross-attention (no mask: Wan zero-pads the umt5 features to 512 and attends to all)."""

    def forward(self, x, context):
        b, n = x.shape[:2]
        q = self.norm_q(self.q(x)).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.norm_k(self.k(context)).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(context).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.o(o.transpose(1, 2).flatten(2))


class WanAttentionBlock(nn.Module):
    """Wan block: adaLN-modulated self-attention, cross-attention (ungated), modulated FFN."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        dim = config.dim
        self.norm1 = WanLayerNorm(dim, config.eps)
        self.self_attn = WanSelfAttention(dim, config.num_heads, config.qk_norm, config.eps)
        self.norm3 = (
            WanLayerNorm(dim, config.eps, elementwise_affine=True)
            if config.cross_attn_norm
            else nn.Identity()
        )
        self.cross_attn = WanCrossAttention(dim, config.num_heads, config.qk_norm, config.eps)
        self.norm2 = WanLayerNorm(dim, config.eps)
        self.ffn = nn.Sequential(
            nn.Linear(dim, config.ffn_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.ffn_dim, dim),
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, e0, context, rope, grid, attn_kwargs):
        # x: [B, L, dim]; e0: [B, 6, dim] float32
        # Wan's precision: modulation, norms and residual adds in float32, matmuls in the weight
        # dtype.
        e = (self.modulation.float() + e0).chunk(6, dim=1)
        dt = x.dtype
        y = self.self_attn(
            to_dtype(self.norm1(x).float() * (1 + e[1]) + e[0], dt), rope, grid, attn_kwargs
        )
        y, cache = y if isinstance(y, tuple) else (y, None)
        x = to_dtype(x.float() + y.float() * e[2], dt)
        x = to_dtype(x.float() + self.cross_attn(self.norm3(x), context).float(), dt)
        y = self.ffn(to_dtype(self.norm2(x).float() * (1 + e[4]) + e[3], dt))
        x = to_dtype(x.float() + y.float() * e[5], dt)
        return x if attn_kwargs["mode"] != CAUSAL_MODE else (x, cache)


class Head(nn.Module):
    """Final modulated LayerNorm and linear projection back to patches."""

    def __init__(self, dim: int, out_dim: int, patch_size, eps: float):
        super().__init__()
        self.norm = WanLayerNorm(dim, eps)
        self.head = nn.Linear(dim, out_dim * math.prod(patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x, e):
        # e: [B, dim] float32 (the time embedding, not its 6-way projection)
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        return self.head(to_dtype(self.norm(x).float() * (1 + scale) + shift, x.dtype))


class CausalStream:
    """What a `block_sparse_causal` DiT carries from one group of latent frames to the next (Ultra
    Flash's streaming): the absolute latent frame the next group starts at (its temporal RoPE
    position) and every layer's KV cache (`block_sparse.KVCache`: the last `causal_kv_blocks`
    temporal blocks of the groups before). One per clip, and per sampler call when a group takes
    several steps; `SimpleGVRDiT.forward(..., stream=s)` reads and advances it."""

    def __init__(self, layers: int, record_masks: bool = False):
        self.frame = 0
        self.caches: list[KVCache | None] = [None] * int(layers)
        # with record_masks: every call's selected key blocks per layer, bool [B, heads, Q blocks, K
        # blocks]
        self.masks: list[list[torch.Tensor]] | None = [] if record_masks else None


class SimpleGVRDiT(nn.Module):
    """Wan 2.1 DiT over cat[z_t, c] predicting the flow velocity v = eps - x0 (paper §3-4)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(
            config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        if config.noise_level_embed:
            self.noise_level_embedding = nn.Sequential(
                nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim)
            )
        self.blocks = nn.ModuleList([WanAttentionBlock(config) for _ in range(config.num_layers)])
        self.head = Head(dim, config.out_dim, config.patch_size, config.eps)
        self.gradient_checkpointing = False
        # a parallel.SequenceParallel splits the tokens over processes (parallel.enable)
        self.sequence_parallel = None
        # called after every block when set (pipeline.sample's `interrupt`): raising there stops the
        # run within one block, e.g. ComfyUI's Cancel; not part of the checkpoint
        self.interrupt = None
        self.attention_mode = config.attention
        self.attention_options = {
            "unit_frames": config.unit_frames,
            "sparse_block": config.sparse_block,
            "sparse_topk": config.sparse_topk,
        }
        # sdpa | flex | auto (attention.resolve_kernel); not part of the checkpoint
        self.attention_kernel = "auto"
        self.block_sparse = BlockSparseSettings(
            block=config.causal_block,
            local_range=config.causal_local_range,
            top_k_ratio=float(config.causal_top_k_ratio),
            ref_tokens=config.causal_ref_tokens,
            kv_blocks=config.causal_kv_blocks,
            top_k=config.causal_top_k,
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Wan's initialisation, plus zero-init of the noise-level embedding's last projection."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        if self.config.noise_level_embed:
            self.init_noise_level_embedding()

    def init_noise_level_embedding(self) -> None:
        """The noise-level embedding starts as a random first layer and a zero last one: it adds
        nothing until trained."""
        nn.init.normal_(self.noise_level_embedding[0].weight, std=0.02)
        nn.init.zeros_(self.noise_level_embedding[0].bias)
        nn.init.zeros_(self.noise_level_embedding[2].weight)
        nn.init.zeros_(self.noise_level_embedding[2].bias)

    def set_attention(
        self,
        mode: str,
        *,
        unit_frames: int | None = None,
        sparse_block=None,
        sparse_topk: int | None = None,
        kernel: str | None = None,
    ) -> None:
        """Switch the self-attention pattern at inference (the weights are shared by all modes), and
        optionally the kernel of the windowed modes ('auto', 'sdpa' or 'flex': the same result, a
        different speed)."""
        if kernel is not None and kernel not in ATTENTION_KERNELS:
            raise ValueError(f"attention kernel {kernel!r}: expected one of {ATTENTION_KERNELS}")
        opts = dict(self.attention_options)
        for key, val in (
            ("unit_frames", unit_frames),
            ("sparse_block", sparse_block),
            ("sparse_topk", sparse_topk),
        ):
            if val is not None:
                opts[key] = tuple(val) if key == "sparse_block" else int(val)
        check_attention(mode, **opts)
        self.attention_mode = mode
        self.attention_options = opts
        if kernel is not None:
            self.attention_kernel = kernel

    # --- forward ----------------------------------------------------------------------------
    def _check_inputs(self, x, cond, t, context, noise_level):
        config = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != config.out_dim:
            raise ValueError(
                f"z_t has shape {tuple(getattr(x, 'shape', ()))}: expected "
                f"[B,{config.out_dim},T,H,W]"
            )
        b = x.shape[0]
        if config.conditioned:
            if cond is None:
                raise ValueError(
                    f"condition c is None: this DiT has in_dim={config.in_dim} and needs c "
                    f"shaped like z_t"
                )
            if tuple(cond.shape) != tuple(x.shape):
                raise ValueError(
                    f"condition c has shape {tuple(cond.shape)}: expected z_t's shape "
                    f"{tuple(x.shape)}"
                )
        elif cond is not None:
            raise ValueError(
                f"this DiT is a plain T2V model (in_dim={config.in_dim}): expected c=None"
            )
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(
                f"timestep t has shape {tuple(t.shape)}: expected [{b}] (values in [0, 1000])"
            )
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != config.text_dim:
            raise ValueError(
                f"context has shape {tuple(context.shape)}: expected [{b}, L, {config.text_dim}]"
            )
        if config.noise_level_embed:
            if noise_level is None:
                raise ValueError(
                    "noise_level is None: expected the condition noise level s in [0, 1]"
                )
            noise_level = torch.as_tensor(noise_level, device=x.device)
            if noise_level.ndim == 0:
                noise_level = noise_level.expand(b)
            if noise_level.shape != (b,):
                raise ValueError(
                    f"noise_level has shape {tuple(noise_level.shape)}: expected a float or [{b}]"
                )
        return t, noise_level

    def forward(
        self,
        x,
        cond,
        t,
        context,
        noise_level=None,
        attention: str | None = None,
        stream: CausalStream | None = None,
    ):
        """x, cond: [B,C,T,H,W]; t: [B] in [0,1000]; context: [B,L,text_dim] -> velocity
        [B,C,T,H,W].

        block_sparse_causal: `stream` carries the frames before this call (their KV caches, the RoPE
        position); without one the call is a clip of its own, causal inside."""
        config = self.config
        t, noise_level = self._check_inputs(x, cond, t, context, noise_level)
        mode = attention or self.attention_mode
        if attention is not None:
            check_attention(mode, **self.attention_options)
        causal = mode == CAUSAL_MODE
        if stream is not None and (
            not isinstance(stream, CausalStream) or len(stream.caches) != len(self.blocks)
        ):
            raise ValueError(
                f"stream must be a CausalStream for {len(self.blocks)} layers, got "
                f"{type(stream).__name__}"
            )
        if stream is not None and not causal:
            raise ValueError(f"stream= is for the {CAUSAL_MODE!r} attention mode, not {mode!r}")
        if causal and self.sequence_parallel is not None:
            raise ValueError(f"the {CAUSAL_MODE!r} attention mode does not run sequence-parallel")
        b, _, f, h, w = x.shape
        pt, ph, pw = config.patch_size
        inp = torch.cat([x, cond], dim=1) if cond is not None else x
        pad = (0, -w % pw, 0, -h % ph, 0, -f % pt)
        if any(pad):  # e.g. 1080p: 135 latent rows -> 136 (replicate the edge), cropped again below
            inp = F.pad(inp, pad, mode="replicate")
        inp = inp.to(self.patch_embedding.weight.dtype)
        tokens = self.patch_embedding(inp)  # [B, dim, F', H', W']
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2).contiguous()  # [B, L, dim]

        with _no_autocast(x.device.type):  # Wan keeps the time path in float32
            e = _embed(self.time_embedding, sinusoidal_embedding_1d(config.freq_dim, t))
            if config.noise_level_embed:
                e = e + _embed(
                    self.noise_level_embedding,
                    sinusoidal_embedding_1d(config.freq_dim, 1000.0 * noise_level),
                )
            e0 = _embed(self.time_projection, e).unflatten(1, (6, config.dim))  # [B, 6, dim]
        ctx = self.text_embedding(context.to(tokens.dtype))
        rope = rope_cos_sin(
            grid,
            config.head_dim,
            x.device,
            t_offset=stream.frame // pt if stream is not None else 0,
        )
        sp = self.sequence_parallel
        if sp is not None:  # this process keeps its share of the tokens (and of their RoPE angles)
            n_tokens = tokens.shape[1]
            tokens, rope = sp.shard(tokens), (sp.shard(rope[0], 0), sp.shard(rope[1], 0))

        caches, masks = [], ([] if stream is not None and stream.masks is not None else None)
        for i, block in enumerate(self.blocks):
            kw = {
                "mode": mode,
                "block_index": i,
                "kernel": self.attention_kernel,
                **self.attention_options,
            }
            if sp is not None:
                kw["sequence_parallel"] = sp
            if causal:
                kw.update(
                    settings=self.block_sparse,
                    cache=stream.caches[i] if stream is not None else None,
                    masks=masks,
                )
            if self.gradient_checkpointing and torch.is_grad_enabled():
                out = checkpoint(block, tokens, e0, ctx, rope, grid, kw, use_reentrant=False)
            else:
                out = block(tokens, e0, ctx, rope, grid, kw)
            tokens = out[0] if causal else out
            if causal:
                caches.append(out[1])
            if self.interrupt is not None:
                self.interrupt()
        if stream is not None:
            stream.frame += f
            stream.caches = caches
            if masks is not None:
                stream.masks.append(masks)
        out = self.head(tokens, e)  # [B, L, C*pt*ph*pw]
        if sp is not None:
            out = sp.gather(out, n_tokens)
        return self.unpatchify(out, grid)[:, :, :f, :h, :w].to(x.dtype)

    def unpatchify(self, x: torch.Tensor, grid) -> torch.Tensor:
        """[B, F*H*W, C*pt*ph*pw] -> [B, C, F*pt, H*ph, W*pw]."""
        b = x.shape[0]
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        x = x.reshape(b, f, h, w, pt, ph, pw, self.config.out_dim)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, self.config.out_dim, f * pt, h * ph, w * pw)
