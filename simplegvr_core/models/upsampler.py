"""Latent upsampler: the condition path of SimpleGVR (paper §4.1; ICLR version's residual design).

    c_s = (1 - s) c0 + s eps                                   noise augmentation, before any
        learning
                                                               (sampling.add_condition_noise; the
                                                                   input here)
    h   = Res3D_time(Res3D_ch(c_s))       channels C -> hidden, time T -> 1 + 4(T - 1) (causal, as
        the VAE)
    h   = bilinear(h, target H x W)       any factor, e.g. 60x104 -> 135x240
    h   = Res3D_ch(Res3D_time^-1(h))      time back to T, hidden -> hidden
    c   = base(c_s) + proj_out(h)         proj_out starts at zero: a fresh `learned` upsampler is
        its base

base is bilinear latent interpolation (the paper) or, with `base = "linear"`, `LinearBase`: a
learned per-frame linear map to sub-pixels that starts as bilinear and is fitted to the codec
(training/fit_upsampler.py).

Every temporal convolution is causal (pads only the past), the norms are per position, and the time
expansion maps latent frame 0 to one frame and each later latent frame to 4, so output frame i never
depends on input frames after i. `interp` is plain latent interpolation; `channel_only` skips the
temporal expansion (the paper's ablation).

`memory` is Ultra Flash's v1 latent upsampler (`MemoryUpsampler`), per frame and 2D only:

    h = ReLU(PixelShuffle_s(conv3x3(c_s)))       C -> hidden, at s x the size (s = 2 or 3)
    h = ReLU(convs(cat[h, past_i]) + h), i < N   past_i: block i's input at the previous frame
    c = conv3x3(h)                               hidden -> C

Its output at its native size is the condition (Ultra Flash adds no base); a clip can be streamed in
groups of frames with a small state (`MemoryUpsampler.stream`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import UpsamplerConfig


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels at each (t, h, w) position: it mixes no frames, so it stays causal."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight.view(1, -1, 1, 1, 1)


class CausalConv3d(nn.Conv3d):
    """3x3x3 convolution that pads time on the past side only (replicating the first frame)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding=(0, 1, 1))

    def forward(self, x):
        x = torch.cat([x[:, :, :1]] * 2 + [x], dim=2)
        return super().forward(x)


class ResBlock3d(nn.Module):
    """Pre-norm residual block of two causal 3D convolutions; a 1x1x1 skip when channels change."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = ChannelRMSNorm(cin)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = ChannelRMSNorm(cout)
        self.conv2 = CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TemporalExpand(nn.Module):
    """Residual block that turns T latent frames into 1 + r(T-1) frames, causally (r = 4).

    The convolutions predict r sub-frames per latent frame (added to the latent frame repeated r
    times); latent frame 0 keeps only its last sub-frame, as the VAE decodes it to one frame.
    """

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.norm1 = ChannelRMSNorm(channels)
        self.conv1 = CausalConv3d(channels, channels)
        self.norm2 = ChannelRMSNorm(channels)
        self.conv2 = CausalConv3d(channels, channels * factor)

    def forward(self, x):
        b, c, t, h, w = x.shape
        r = self.factor
        y = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))  # [B, C*r, T, H, W]
        y = y.view(b, c, r, t, h, w) + x.unsqueeze(2)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(b, c, t * r, h, w)  # frame order (t, sub-frame)
        return y[:, :, r - 1 :]  # [B, C, 1 + r(T-1), H, W]


class TemporalCompress(nn.Module):
    """Residual block that folds 1 + r(T-1) frames back into T latent frames (inverse grouping)."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.norm1 = ChannelRMSNorm(channels * factor)
        self.conv1 = CausalConv3d(channels * factor, channels)
        self.norm2 = ChannelRMSNorm(channels)
        self.conv2 = CausalConv3d(channels, channels)

    def forward(self, x):
        b, c, tf, h, w = x.shape
        r = self.factor
        x = torch.cat([x[:, :, :1]] * (r - 1) + [x], dim=2)  # frame 0 fills its r slots
        t = x.shape[2] // r
        g = x.view(b, c, t, r, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c * r, t, h, w)
        y = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(g))))))
        return x.view(b, c, t, r, h, w).mean(3) + y


def resize_frames(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of every frame of [B, C, T, H, W] to size=(H2, W2)."""
    b, c, t, h, w = x.shape
    y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    return y.reshape(b, t, c, *size).permute(0, 2, 1, 3, 4)


def bilinear_taps(factor: int) -> torch.Tensor:
    """[factor, 3]: the weights of offsets -1, 0, +1 that give output phase p of a bilinear
    x`factor` upscale (align_corners=False); with replicate padding they reproduce F.interpolate
    exactly, edges included."""
    taps = torch.zeros(factor, 3, dtype=torch.float64)
    for p in range(factor):
        # the output pixel's position in input pixels, from its own input pixel
        d = (p + 0.5) / factor - 0.5
        lo = math.floor(d)
        taps[p, lo + 1] += 1.0 - (d - lo)
        taps[p, lo + 2] += d - lo
    return taps


class LinearBase(nn.Module):
    """A learned linear upscale of every latent frame: a k x k convolution (replicate padding) to
    factor^2 sub-pixels per latent pixel, pixel-shuffled, then bilinear to the target size when that
    is not factor x the input. It starts as exact bilinear interpolation; each output frame depends
    on its own input frame only."""

    def __init__(self, channels: int, factor: int, kernel: int):
        super().__init__()
        self.factor, self.kernel = factor, kernel
        self.conv = nn.Conv2d(channels, channels * factor * factor, kernel)
        with torch.no_grad():
            taps = bilinear_taps(factor)
            w = torch.zeros(channels, factor, factor, channels, kernel, kernel, dtype=torch.float64)
            m = kernel // 2
            for ch in range(channels):
                w[ch, :, :, ch, m - 1 : m + 2, m - 1 : m + 2] = torch.einsum(
                    "pi,qj->pqij", taps, taps
                )
            self.conv.weight.copy_(w.reshape(self.conv.weight.shape).float())
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).float()
        p = self.kernel // 2
        y = F.conv2d(
            F.pad(y, (p, p, p, p), mode="replicate"),
            self.conv.weight.float(),
            self.conv.bias.float(),
        )
        y = F.pixel_shuffle(y, self.factor)
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y.to(x.dtype).reshape(b, t, c, *size).permute(0, 2, 1, 3, 4)


class MemoryBlock(nn.Module):
    """A causal memory block: ReLU(convs(cat[x, past]) + x), convs = conv3x3 (2 hidden -> hidden),
    ReLU, conv3x3, ReLU, conv3x3 (Ultra Flash's `UltraLatentMemBlock` at equal widths)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.conv = nn.Sequential(  # keys conv.0, conv.2, conv.4
            nn.Conv2d(2 * hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + x)  # [N, hidden, H, W]


MemoryState = tuple  # of tensors [B, hidden, sH, sW]: each memory block's input at the last frame


class MemoryUpsampler(nn.Module):
    """Ultra Flash's v1 latent upsampler: [B, C, T, H, W] -> [B, C, T, sH, sW], causal in time.

    Per frame: conv3x3 to hidden*s*s channels, pixel shuffle by s, ReLU; `blocks` memory blocks,
    each fed its own input at the previous frame (at a clip's first frame: its input at that frame);
    a final conv3x3 back to C. Output frame t depends on input frames t - blocks .. t only.

    The keys are Ultra Flash's (`pre_shuffle.0.*`, `blocks.N.conv.{0,2,4}.*`, `final.*`), so their
    `latent_upsampler.pth` loads without renaming. The final conv starts at zero, as theirs does.

    Streaming: `stream(x, state)` returns the output and the state after x's last frame (the N
    block inputs there, [B, hidden, sH, sW] each). A clip's groups fed in order with the state
    carried give the whole-clip `forward(x)`, up to float rounding. A state belongs to one clip.
    """

    def __init__(self, channels: int, hidden: int, blocks: int, scale: int):
        super().__init__()
        self.channels, self.hidden, self.scale = channels, hidden, scale
        self.pre_shuffle = nn.Sequential(
            nn.Conv2d(channels, hidden * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
            nn.ReLU(),
        )
        self.blocks = nn.ModuleList([MemoryBlock(hidden) for _ in range(blocks)])
        self.final = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def _check(self, x: torch.Tensor, state) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != self.channels:
            raise ValueError(
                f"x has shape {tuple(getattr(x, 'shape', ()))}: expected [B,{self.channels},T,H,W]"
            )
        if min(x.shape) < 1:
            raise ValueError(f"x has shape {tuple(x.shape)}: expected every size >= 1")
        dtype = self.final.weight.dtype
        if x.dtype != dtype:
            raise ValueError(f"x is {x.dtype}: expected the weights' dtype {dtype}")
        if state is None:
            return
        b, _, _, h, w = x.shape
        want = (b, self.hidden, self.scale * h, self.scale * w)
        if not isinstance(state, (tuple, list)) or len(state) != len(self.blocks):
            n = len(state) if isinstance(state, (tuple, list)) else "-"
            raise ValueError(
                f"state is a {type(state).__name__} of {n} items: expected "
                f"{len(self.blocks)} tensors (one per memory block) from stream()"
            )
        for i, s in enumerate(state):
            if not isinstance(s, torch.Tensor) or tuple(s.shape) != want:
                raise ValueError(
                    f"state[{i}] has shape {tuple(getattr(s, 'shape', ()))}: expected "
                    f"{list(want)} (this clip's batch, hidden width and output size)"
                )

    def _run(self, x: torch.Tensor, state, keep: bool) -> tuple[torch.Tensor, MemoryState]:
        b, c, t, h, w = x.shape
        y = self.pre_shuffle(x.transpose(1, 2).reshape(b * t, c, h, w))  # [B*T, hidden, sH, sW]
        last = []
        for i, block in enumerate(self.blocks):
            frames = y.view(b, t, *y.shape[1:])  # [B, T, hidden, sH, sW]
            first = frames[:, :1] if state is None else state[i].to(y).unsqueeze(1)
            past = torch.cat([first, frames[:, :-1]], dim=1).view_as(y)  # the input at t - 1
            if keep:  # a copy, so that the state holds no activations (and no graph)
                last.append(frames[:, -1].detach().clone())
            y = block(y, past)
        y = self.final(y)  # [B*T, C, sH, sW]
        return y.view(b, t, c, *y.shape[-2:]).transpose(1, 2), tuple(last)

    def forward(self, x: torch.Tensor, state: MemoryState | None = None) -> torch.Tensor:
        """x [B, C, T, H, W] -> [B, C, T, sH, sW]; state: None (x starts a clip) or stream()'s."""
        self._check(x, state)
        return self._run(x, state, keep=False)[0]

    def stream(self, x: torch.Tensor, state: MemoryState | None = None):
        """A clip's next group of frames -> (output [B, C, T, sH, sW], state after its last frame).
        state None starts a clip; the state is detached (no gradient flows between groups)."""
        self._check(x, state)
        return self._run(x, state, keep=True)


class LatentUpsampler(nn.Module):
    """Bring a (noise-augmented) normalised LR latent to the HR latent size: [B,C,T,H,W] ->
    [B,C,T,H2,W2]."""

    def __init__(self, config: UpsamplerConfig):
        super().__init__()
        self.config = config
        c, hid, r = config.channels, config.hidden, config.temporal_factor
        if config.base == "linear":
            self.base = LinearBase(c, config.base_factor, config.base_kernel)
        if config.mode == "interp":
            return
        if config.mode == "memory":
            self.memory = MemoryUpsampler(c, hid, config.memory_blocks, config.memory_scale)
            return
        time_in = TemporalExpand(hid, r) if config.mode == "learned" else ResBlock3d(hid, hid)
        time_out = TemporalCompress(hid, r) if config.mode == "learned" else ResBlock3d(hid, hid)
        self.res_in = nn.ModuleList([ResBlock3d(c, hid), time_in])
        self.res_out = nn.ModuleList([time_out, ResBlock3d(hid, hid)])
        self.proj_out = nn.Conv3d(hid, c, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def expand(self, c: torch.Tensor) -> torch.Tensor:
        """The pre-resize features: [B, hidden, 1 + 4(T-1), H, W] for `learned` (T frames
        otherwise)."""
        for blk in self.res_in:
            c = blk(c)
        return c

    def _check(self, cs: torch.Tensor, size) -> tuple[int, int]:
        config = self.config
        if not isinstance(cs, torch.Tensor) or cs.ndim != 5 or cs.shape[1] != config.channels:
            raise ValueError(
                f"c_s has shape {tuple(getattr(cs, 'shape', ()))}: expected "
                f"[B,{config.channels},T,H,W]"
            )
        if cs.shape[2] < 1:
            raise ValueError("c_s has 0 latent frames: expected at least 1")
        if len(size) != 2 or min(int(v) for v in size) < 1:
            raise ValueError(f"size={size}: expected a positive (H, W) in latent pixels")
        if cs.device.type != "meta" and not torch.isfinite(cs).all():
            raise ValueError("c_s contains NaN or Inf")
        return int(size[0]), int(size[1])

    def native_size(self, lr_hw: tuple[int, int]) -> tuple[int, int] | None:
        """The output size (H, W) the `memory` mode's weights make for an LR latent of lr_hw:
        memory_scale x it. None for the other modes, which are built for any size."""
        if self.config.mode != "memory":
            return None
        return self.config.memory_scale * int(lr_hw[0]), self.config.memory_scale * int(lr_hw[1])

    def _memory_output(self, cs: torch.Tensor, y: torch.Tensor, size: tuple[int, int]):
        # Ultra Flash's condition is the network's output at its native size (memory_scale x).
        # Another size is a bilinear resize of it: outside what their weights were trained for.
        if tuple(y.shape[-2:]) != size:
            y = resize_frames(y.float(), size)
        return y.to(cs.dtype)

    def stream(self, cs: torch.Tensor, size: tuple[int, int], state: MemoryState | None = None):
        """Mode `memory` only: the condition of one clip's next group of frames -> (c, state).

        cs [B, C, T, H, W] holds the group's frames; state None starts a clip, else the state the
        previous group returned. The groups' outputs, concatenated, equal forward() on the clip.
        """
        if self.config.mode != "memory":
            raise ValueError(f"stream() needs upsampler mode 'memory', got {self.config.mode!r}")
        size = self._check(cs, size)
        y, state = self.memory.stream(cs.to(self.memory.final.weight.dtype), state)
        return self._memory_output(cs, y, size), state

    def forward(self, cs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """cs: the noise-augmented LR latent c_s [B, C, T, H, W]; size: the HR latent (H2, W2).
        Mode `memory` makes native_size(H, W), its condition; another size is a bilinear resize."""
        config = self.config
        size = self._check(cs, size)
        if config.mode == "memory":
            y = self.memory(cs.to(self.memory.final.weight.dtype))  # [B, C, T, sH, sW]
            return self._memory_output(cs, y, size)
        base = self.base(cs, size) if config.base == "linear" else resize_frames(cs, size)
        if config.mode == "interp":
            return base
        dtype = self.proj_out.weight.dtype
        h = resize_frames(self.expand(cs.to(dtype)), size)
        for blk in self.res_out:
            h = blk(h)
        return base + self.proj_out(h).to(base.dtype)
