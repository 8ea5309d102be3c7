"""Tiny video decoder in the TAEHV layout (madebyollin/taehv; Ultra Flash's `tiny_decoder.pth`).

Maps NORMALISED latents ((z - mean) / std, what the diffusion model sees) to RGB frames in [0, 1]:

    z [B, C, T, H, W]  ->  frames [B, 3, 4T - 3, 8H, 8W]          (C = 16: Wan 2.1, taew2_1)
                       ->  frames [B, 3, 4T - 3, 16H, 16W]        (C = 48: Wan 2.2 5B, taew2_2)

The network is a 2D conv stack run on every frame, made causal in time by MemBlocks (each also sees
its own input at the previous frame; zeros before the first frame) and grown in time by TGrow
(a 1x1 conv to s*C channels read as s consecutive sub-frames):

    0 soft clamp 3 tanh(z / 3)   1 conv C->256   2 ReLU
    3-5 MemBlock(256)   6 nearest x2   7 TGrow(256, 1)   8 conv 256->128 (no bias)
    9-11 MemBlock(128)  12 nearest x2  13 TGrow(128, 2)  14 conv 128->64 (no bias)
    15-17 MemBlock(64)  18 nearest x2  19 TGrow(64, 2)   20 conv 64->64 (no bias)
    21 ReLU   22 conv 64->3p^2   (p = 2 for C = 48: then a 2x2 pixel shuffle)

The Sequential indices are the checkpoint keys (`decoder.N.*`); files also hold `encoder.*`, which
is ignored (`weights.load_tiny_decoder` reads the files). The 4 raw frames of latent 0 are a
warm-up: the first 3 are dropped once per stream, so T latents give 4T - 3 frames, as the Wan VAE
does. Decoding chunk by chunk with each MemBlock's last input frame carried over
(`TinyDecoderStream`) equals the whole decode and bounds memory by the chunk; this is how Ultra
Flash decodes its 6/6/6/3 latent groups (21 + 24 + 24 + 12 = 81 frames).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = [
    "TinyDecoder",
    "TinyDecoderStream",
    "tiny_decoder_state_dict",
    "check_latent",
    "expected_shapes",
]

# Latent channels -> pixel-shuffle factor of the RGB output (taew2_1: 16, taew2_2: 48).
PATCH_SIZE = {16: 1, 48: 2}
WIDTHS = (256, 128, 64, 64)  # channels of the three MemBlock stages and of the RGB head
TIME_STRIDES = (1, 2, 2)  # TGrow per stage: one latent -> 4 frames
FRAMES_TO_TRIM = 3  # warm-up frames dropped at the start of a stream
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the input latent to (-3, 3): 3 tanh(z / 3)."""

    def forward(self, x):
        return torch.tanh(x / 3) * 3


def with_past(x, past0):
    """(N, T, C, H, W), (N, C, H, W) -> (N*T, 2C, H, W): [x_t, x_{t-1}] per frame, x_{-1} = past0.

    Written into one buffer (no shifted copy, no concatenation); the caller holds no reference,
    so the buffer is freed as soon as the first conv has read it.
    """
    n, t, c, h, w = x.shape
    both = x.new_empty(n, t, 2 * c, h, w)
    both[:, :, :c] = x
    both[:, 0, c:] = past0
    both[:, 1:, c:] = x[:, :-1]
    return both.view(n * t, 2 * c, h, w)


class MemBlock(nn.Module):
    """Residual block of three 3x3 convs on [x_t, x_{t-1}]: the only place frames meet."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(
            conv3x3(2 * c, c),
            nn.ReLU(inplace=True),
            conv3x3(c, c),
            nn.ReLU(inplace=True),
            conv3x3(c, c),
        )
        self.skip = nn.Identity()  # equal widths: the general block's 1x1 skip is identity
        self.act = nn.ReLU(inplace=True)

    def forward(self, x, past0):
        """x: (N, T, C, H, W) consecutive frames; past0: (N, C, H, W) the input before x[:, 0]."""
        n, t, c, h, w = x.shape
        y = self.conv(with_past(x, past0))  # (N*T, C, H, W)
        y += self.skip(x.reshape(n * t, c, h, w))
        return self.act(y).view(n, t, c, h, w)


class TGrow(nn.Module):
    """Time upsampling: a 1x1 conv to stride*C channels, channel group j is sub-frame j."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x):
        """x: (N, T, C, H, W) -> (N, T * stride, C, H, W)."""
        n, t, c, h, w = x.shape
        y = self.conv(x.reshape(n * t, c, h, w))  # (N*T, s*C, H, W)
        return y.view(n, t * self.stride, c, h, w)  # sub-frames interleaved in time


def _per_frame(layer, x):
    """A layer of (N*T, C, H, W) frames on x (N, T, C, H, W); TGrow takes (N, T, ...) itself."""
    if isinstance(layer, TGrow):
        return layer(x)
    n, t = x.shape[:2]
    y = layer(x.flatten(0, 1))  # (N*T, C', H', W')
    return y.view(n, -1, *y.shape[1:])


class TinyDecoder(nn.Module):
    """TAEHV decoder: normalised latents [B, C, T, H, W] -> RGB [B, 3, 4T - 3, sH, sW]."""

    def __init__(self, latent_channels: int = 16):
        super().__init__()
        if latent_channels not in PATCH_SIZE:
            raise ValueError(
                f"latent_channels={latent_channels!r}: expected 16 (Wan 2.1, taew2_1) or 48 "
                "(Wan 2.2 5B, taew2_2); other TAEHV variants (HunyuanVideo 1.5, LTX, 'super') "
                "are not supported"
            )
        self.latent_channels = latent_channels
        self.patch_size = PATCH_SIZE[latent_channels]
        self.spatial_ratio = 8 * self.patch_size
        self.time_ratio = 1
        for s in TIME_STRIDES:
            self.time_ratio *= s
        w = WIDTHS
        layers: list[nn.Module] = [Clamp(), conv3x3(latent_channels, w[0]), nn.ReLU(inplace=True)]
        for stage, stride in enumerate(TIME_STRIDES):
            layers += [MemBlock(w[stage]) for _ in range(3)]
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                TGrow(w[stage], stride),
                conv3x3(w[stage], w[stage + 1], bias=False),
            ]
        layers += [nn.ReLU(inplace=True), conv3x3(w[3], 3 * self.patch_size**2)]
        self.decoder = nn.Sequential(*layers)
        # The layers after the last MemBlock (18-22) mix no frames: `_tail` runs them per frame.
        self.tail_start = 1 + max(i for i, m in enumerate(self.decoder) if isinstance(m, MemBlock))
        self.tail_growth = TIME_STRIDES[-1]
        self.load_notes: list[str] = []  # set by load_tiny_decoder

    # --- the network --------------------------------------------------------------------------
    def _run(self, x, memory, trim: int = 0):
        """x: (N, T, C, h, w) in the weights' dtype; memory: None (start of a video) or, per
        MemBlock, its input at the frame before x[:, 0], (N, C_i, h_i, w_i).

        Returns raw frames (N, 4T - trim, 3, sh, sw), not clamped, and the memory after x.
        """
        memory_out = []
        for layer in self.decoder[: self.tail_start]:
            if isinstance(layer, MemBlock):
                past0 = torch.zeros_like(x[:, 0]) if memory is None else memory[len(memory_out)]
                memory_out.append(x[:, -1].clone())  # this block's input at the last frame
                x = layer(x, past0)
            else:
                x = _per_frame(layer, x)
        return self._tail(x, trim), memory_out

    def _tail(self, x, trim: int):
        """The layers after the last MemBlock mix no frames: run them one frame of x at a time,
        so the full-resolution activations exist for one frame only, and skip trimmed frames.

        x: (N, T, C, h, w) -> (N, T * g - trim, 3, sh, sw), g the tail's time growth (2).
        """
        g = self.tail_growth
        out, done = None, 0
        for k in range(trim // g, x.shape[1]):
            y = x[:, k : k + 1]
            for layer in self.decoder[self.tail_start :]:
                y = _per_frame(layer, y)  # (N, 1 or g, C', h', w')
            if self.patch_size > 1:
                y = _per_frame(nn.PixelShuffle(self.patch_size), y)  # (N, g, 3, sh, sw)
            if k == trim // g:
                y = y[:, trim % g :]
                out = y.new_empty(x.shape[0], x.shape[1] * g - trim, *y.shape[2:])
            out[:, done : done + y.shape[1]] = y
            done += y.shape[1]
        return out

    def _prepare(self, z, what: str = "z"):
        """Validate a latent and bring it to the weights' device and dtype as (N, T, C, h, w)."""
        check_latent(z, self.latent_channels, what)
        p = self.decoder[1].weight
        return z.to(device=p.device, dtype=p.dtype).movedim(1, 2)

    def forward(self, z):
        """z: (B, C, T, H, W) normalised latents -> frames (B, 3, 4T - 3, sH, sW) in [0, 1]."""
        x, _ = self._run(self._prepare(z), None, FRAMES_TO_TRIM)
        return x.clamp(0, 1).movedim(1, 2)

    @torch.no_grad()
    def decode_raw(self, z, *, dtype: torch.dtype | None = None):
        """z: (B, C, T, H, W) -> (B, 3, 4T, sH, sW): every raw frame, warm-up kept, not clamped.

        `dtype`: output dtype (None: the weights' dtype).
        """
        check_dtype(dtype)
        x, _ = self._run(self._prepare(z), None)
        return x.movedim(1, 2).to(dtype or x.dtype)

    @torch.no_grad()
    def decode(
        self,
        z,
        *,
        clamp: bool = True,
        chunk_frames: int | None = None,
        dtype: torch.dtype | None = None,
    ):
        """z: (B, C, T, H, W) normalised latents -> frames (B, 3, 4T - 3, sH, sW).

        clamp: clamp to [0, 1] (the decoder's output; False keeps the raw values for tests).
        chunk_frames: decode that many latent frames at a time, carrying the MemBlock memory;
            the result is the same and the activations are bounded by the chunk (None: all at once).
        dtype: output dtype (None: the weights' dtype; e.g. torch.float32 from a bf16 decoder).
        """
        check_latent(z, self.latent_channels, "z")
        check_chunk_frames(chunk_frames)
        check_dtype(dtype)
        b, _, t, h, w = z.shape
        p = self.decoder[1].weight
        out_dtype = dtype or p.dtype
        stream = TinyDecoderStream(self, clamp=clamp, dtype=out_dtype)
        step = t if chunk_frames is None else chunk_frames
        if step >= t:
            return stream.decode(z)
        s = self.spatial_ratio
        out = torch.empty(
            b, 3, self.output_frames(t), s * h, s * w, dtype=out_dtype, device=p.device
        )
        done = 0
        for a in range(0, t, step):
            frames = stream.decode(z[:, :, a : a + step])  # (B, 3, f, sH, sW)
            out[:, :, done : done + frames.shape[2]] = frames
            done += frames.shape[2]
            del frames
        return out

    def output_frames(self, latent_frames: int) -> int:
        """Frames a stream of `latent_frames` latents decodes to: 4T - 3."""
        return self.time_ratio * latent_frames - FRAMES_TO_TRIM

    def stream(self, *, clamp: bool = True, dtype: torch.dtype | None = None) -> TinyDecoderStream:
        """A `TinyDecoderStream` on this decoder."""
        return TinyDecoderStream(self, clamp=clamp, dtype=dtype)


class TinyDecoderStream:
    """Decodes one video chunk by chunk: `decode(z_chunk)` returns that chunk's frames.

    Each MemBlock's input at the chunk's last frame is carried to the next chunk, so the frames
    concatenated equal `TinyDecoder.decode` of the whole latent. The first chunk of T latents
    gives 4T - 3 frames (warm-up dropped), every later chunk 4T.
    """

    def __init__(
        self, decoder: TinyDecoder, *, clamp: bool = True, dtype: torch.dtype | None = None
    ):
        if not isinstance(decoder, TinyDecoder):
            raise ValueError(f"decoder is a {type(decoder).__name__}: expected a TinyDecoder")
        check_dtype(dtype)
        self.decoder, self.clamp, self.dtype = decoder, clamp, dtype
        self.reset()

    def reset(self) -> None:
        """Start a new video: zero memory, the next chunk's warm-up is dropped again."""
        self.memory = None
        self.latents_in = 0
        self.frames_out = 0
        self._shape = None

    @torch.no_grad()
    def decode(self, z):
        """z: (B, C, T, H, W) the next latent frames of the video -> (B, 3, F, sH, sW) frames."""
        x = self.decoder._prepare(z, "z chunk")
        shape = (z.shape[0], z.shape[3], z.shape[4])
        if self._shape is not None and shape != self._shape:
            raise ValueError(
                f"z chunk has batch x H x W {shape}: expected {self._shape} as the "
                "earlier chunks of this stream (call reset() to start a new video)"
            )
        trim = FRAMES_TO_TRIM if self.memory is None else 0
        x, self.memory = self.decoder._run(x, self.memory, trim)
        self._shape = shape
        if self.clamp:
            x = x.clamp(0, 1)
        self.latents_in += z.shape[2]
        self.frames_out += x.shape[1]
        return x.movedim(1, 2).to(self.dtype or x.dtype)


# --- input checks -------------------------------------------------------------------------------
def check_latent(z, channels: int, what: str = "z") -> None:
    """ValueError unless z is a finite floating-point [B, channels, T>=1, H>=1, W>=1] tensor."""
    if not isinstance(z, torch.Tensor):
        raise ValueError(
            f"{what} is a {type(z).__name__}: expected a torch.Tensor [B,{channels},T,H,W]"
        )
    if z.ndim != 5 or z.shape[1] != channels:
        raise ValueError(
            f"{what} has shape {tuple(z.shape)}: expected [B,{channels},T,H,W] "
            f"normalised latents ({channels} channels, frames on dim 2)"
        )
    if min(z.shape) < 1:
        raise ValueError(
            f"{what} has shape {tuple(z.shape)}: expected at least 1 batch item, "
            "latent frame, row and column"
        )
    if not z.is_floating_point():
        raise ValueError(f"{what} has dtype {z.dtype}: expected a floating-point latent")
    if z.device.type != "meta" and not torch.isfinite(z).all():  # meta: FLOP counting, no values
        raise ValueError(f"{what} contains NaN or Inf")


def check_chunk_frames(chunk_frames) -> None:
    if chunk_frames is None:
        return
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(
            f"chunk_frames={chunk_frames!r}: expected None or a positive number of latent frames"
        )


def check_dtype(dtype) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(
            f"dtype={dtype!r}: expected None or one of {', '.join(str(d) for d in DTYPES)}"
        )


# --- loading -------------------------------------------------------------------------------------
def expected_shapes(latent_channels: int = 16) -> dict[str, tuple[int, ...]]:
    """key -> shape of every `decoder.*` tensor of a TAEHV decoder (64 keys for Wan 2.1)."""
    with torch.device("meta"):
        model = TinyDecoder(latent_channels)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def tiny_decoder_state_dict(sd: dict, what: str = "weights") -> tuple[dict, int, list[str]]:
    """Check a TAEHV state dict: (decoder tensors keyed as TinyDecoder, latent channels, notes).

    `encoder.*` is ignored. Every other key must be an expected `decoder.*` tensor of the right
    shape, and finite. A TGrow weight with k times the expected rows (a stride-k layer used at a
    smaller stride, as in madebyollin's patch_tgrow_layers) keeps its last rows, the sub-frame
    that ends each group; the notes say so.
    """
    first = sd.get("decoder.1.weight")
    if not isinstance(first, torch.Tensor) or first.ndim != 4:
        raise ValueError(f"{what}: missing decoder.1.weight (the latent input conv [256,C,3,3])")
    channels = first.shape[1]
    if channels not in PATCH_SIZE:
        raise ValueError(
            f"{what}: decoder.1.weight has shape {tuple(first.shape)}: expected 16 "
            "(Wan 2.1) or 48 (Wan 2.2 5B) latent channels"
        )
    expected = expected_shapes(channels)
    out, notes = {}, []
    unexpected = sorted(k for k in sd if not str(k).startswith("encoder.") and k not in expected)
    if unexpected:
        raise ValueError(
            f"{what}: unexpected key(s) {unexpected[:5]} (not part of a TAEHV "
            "decoder; a 'super' or UltraDecoder file is not supported)"
        )
    missing = sorted((k for k in expected if k not in sd), key=_key_order)
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing[:5]} of the TAEHV decoder")
    for k, shape in expected.items():
        v = sd[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise ValueError(
                f"{what}: {k} is {type(v).__name__}"
                f"{'' if not isinstance(v, torch.Tensor) else ' ' + str(v.dtype)}: "
                "expected a floating-point tensor"
            )
        got = tuple(v.shape)
        if got != shape and k.endswith(".conv.weight") and _is_tgrow_grown(got, shape):
            notes.append(f"{k}: {got} -> {shape} (kept the last {shape[0]} rows)")
            v = v[-shape[0] :].clone()
        elif got != shape:
            raise ValueError(f"{what}: {k} has shape {got}: expected {shape}")
        if not torch.isfinite(v).all():
            raise ValueError(f"{what}: {k} contains NaN or Inf (corrupt weights)")
        out[k] = v
    return out, channels, notes


def _is_tgrow_grown(got, shape) -> bool:
    return (
        len(got) == len(shape)
        and got[1:] == shape[1:]
        and got[0] > shape[0]
        and got[0] % shape[0] == 0
    )


def _key_order(k: str):
    parts = k.split(".")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, k)
