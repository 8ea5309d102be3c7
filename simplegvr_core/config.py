"""Model configs as dataclasses (serialised into every checkpoint) and the named configs.

`tiny` (and `tiny-wan22`, `tiny-cogvideox`) are for tests (< 1M parameters); `wan2.1-1.3b` is
Wan2.1-T2V-1.3B and `wan2.2-ti2v-5b` Wan2.2-TI2V-5B widened for the condition; `cogvideox-1.3b`
works in CogVideoX latents with T5 text.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .latent_formats import get_format

ATTENTION_MODES = ("full", "temporal_units", "sparse_local", "block_sparse_causal")
# Ultra Flash's streaming attention: the clip runs in groups, causally
CAUSAL_MODE = "block_sparse_causal"
UPSAMPLER_MODES = ("learned", "interp", "channel_only", "memory")
UPSAMPLER_BASES = ("bilinear", "linear")


# Hard limits of a config: far beyond every released model (Wan 14B: dim 5120, 40 layers), small
# enough that building a model from a hostile checkpoint's metadata cannot take minutes or gigabytes
# before it is checked.
LIMITS = {
    "dim": 16384,
    "ffn_dim": 65536,
    "num_heads": 256,
    "num_layers": 256,
    "in_dim": 1024,
    "out_dim": 512,
    "freq_dim": 4096,
    "text_dim": 16384,
    "text_len": 8192,
    "unit_frames": 4096,
    "sparse_topk": 4096,
    "patch": 16,
    "sparse_block": 1024,
    "hidden": 4096,
    "channels": 512,
    "temporal_factor": 16,
    "train_latent_frames": 100_000,
}


def _check_int(owner: str, name: str, value, lo: int = 1, hi: int | None = None) -> int:
    hi = LIMITS.get(name, 1 << 30) if hi is None else hi
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name}={value!r}: expected an integer in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ValueError(f"{owner}.{name}={value}: expected an integer in [{lo}, {hi}]")
    return value


def _check_bool(owner: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name}={value!r}: expected true or false")
    return value


def _check_ints(owner: str, name: str, value, n: int, hi: int) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"{owner}.{name}={value!r}: expected {n} integers in [1, {hi}]")
    return tuple(_check_int(owner, f"{name}[{i}]", v, 1, hi) for i, v in enumerate(value))


@dataclass
class DiTConfig:
    """Wan 2.1 DiT hyper-parameters (Wan's own names) plus SimpleGVR's condition and attention."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 32  # 2*C for SimpleGVR (cat[z_t, c]); C for a plain T2V model
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    text_dim: int = 4096
    # text features are zero-padded (and cut) to this many tokens, as Wan does with umt5's
    text_len: int = 512
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    noise_level_embed: bool = True  # embed the condition noise level s (zero-init projection)
    attention: str = "full"  # full | temporal_units | sparse_local
    unit_frames: int = 5  # temporal_units: latent frames per unit (paper §4.4)
    # sparse_local: (h, w) tokens per 2D block ("12x9", w x h)
    sparse_block: tuple[int, int] = (9, 12)
    sparse_topk: int = 1  # sparse_local: extra key blocks each query block attends to
    # block_sparse_causal (Ultra Flash, models/block_sparse.py): zero-padded (frames, rows, columns)
    # token blocks, causal across temporal blocks, a window of `causal_local_range` blocks, per head
    # the top-k key blocks by pooled score (k from `causal_top_k_ratio` and `causal_ref_tokens`, or
    # `causal_top_k` > 0); the clip runs in groups of `causal_group_frames` latent frames, each
    # seeing a cache of the last `causal_kv_blocks` blocks.
    causal_block: tuple[int, int, int] = (2, 8, 8)
    causal_local_range: int = 9
    causal_top_k_ratio: float = 1.0
    causal_ref_tokens: int = 1560
    causal_top_k: int = 0
    causal_kv_blocks: int = 3
    causal_group_frames: int = 6

    def __post_init__(self) -> None:
        # Types and ranges first: a config can come from a checkpoint's metadata (untrusted).
        for name in (
            "dim",
            "ffn_dim",
            "num_heads",
            "num_layers",
            "in_dim",
            "out_dim",
            "freq_dim",
            "text_dim",
            "text_len",
            "unit_frames",
        ):
            _check_int("dit", name, getattr(self, name))
        _check_int("dit", "sparse_topk", self.sparse_topk, lo=0)
        for name in ("qk_norm", "cross_attn_norm", "noise_level_embed"):
            _check_bool("dit", name, getattr(self, name))
        if (
            isinstance(self.eps, bool)
            or not isinstance(self.eps, (int, float))
            or not 0 < self.eps <= 0.1
        ):
            raise ValueError(f"dit.eps={self.eps!r}: expected a small positive number (Wan: 1e-6)")
        if not isinstance(self.attention, str):
            raise ValueError(f"dit.attention={self.attention!r}: expected one of {ATTENTION_MODES}")
        self.patch_size = _check_ints("dit", "patch_size", self.patch_size, 3, LIMITS["patch"])
        self.sparse_block = _check_ints(
            "dit", "sparse_block", self.sparse_block, 2, LIMITS["sparse_block"]
        )
        self.causal_block = _check_ints(
            "dit", "causal_block", self.causal_block, 3, LIMITS["sparse_block"]
        )
        for name in ("causal_local_range", "causal_kv_blocks", "causal_group_frames"):
            _check_int("dit", name, getattr(self, name), 1, LIMITS["unit_frames"])
        _check_int("dit", "causal_ref_tokens", self.causal_ref_tokens, 0, 1 << 24)
        _check_int("dit", "causal_top_k", self.causal_top_k, 0, 1 << 24)
        if (
            isinstance(self.causal_top_k_ratio, bool)
            or not isinstance(self.causal_top_k_ratio, (int, float))
            or not 0 <= self.causal_top_k_ratio <= 1e6
        ):
            raise ValueError(
                f"dit.causal_top_k_ratio={self.causal_top_k_ratio!r}: expected a number in [0, 1e6]"
            )
        if self.freq_dim % 2:
            raise ValueError(
                f"dit.freq_dim={self.freq_dim}: expected an even number (cos and sin halves)"
            )
        if self.dim % self.num_heads:
            raise ValueError(
                f"dit.dim={self.dim} is not divisible by dit.num_heads={self.num_heads}"
            )
        head_dim = self.dim // self.num_heads
        if head_dim % 2 or head_dim < 6:
            raise ValueError(
                f"dit head_dim={head_dim}: expected an even number >= 6 for the 3D RoPE"
            )
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(
                f"dit.patch_size={self.patch_size}: expected three positive ints (t, h, w)"
            )
        if self.in_dim not in (self.out_dim, 2 * self.out_dim):
            raise ValueError(
                f"dit.in_dim={self.in_dim}: expected out_dim ({self.out_dim}, plain T2V) or "
                f"2*out_dim ({2 * self.out_dim}, SimpleGVR cat[z_t, c])"
            )
        check_attention(self.attention, self.unit_frames, self.sparse_block, self.sparse_topk)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def conditioned(self) -> bool:
        return self.in_dim == 2 * self.out_dim


PREDICTIONS = ("hr", "residual", "residual_x0")


@dataclass
class UpsamplerConfig:
    """Latent upsampler (condition path): `learned`, `interp`, `channel_only` (paper ablation) or
    `memory` (causal memory blocks after a pixel shuffle: Ultra Flash's v1 latent upsampler)."""

    mode: str = "learned"
    channels: int = 16  # latent channels C
    hidden: int = 128  # width of the residual blocks
    temporal_factor: int = 4  # VAE temporal compression: latent frame 0 -> 1 frame, others -> 4
    # The path the residual blocks add to: "bilinear" latent interpolation (the paper), or "linear",
    # a learned per-frame linear map - a base_kernel x base_kernel convolution to base_factor^2
    # sub-pixels per latent pixel (pixel shuffle), bilinear to the target size when that is not
    # base_factor x the input. It starts as bilinear and can be fitted to a VAE's decode -> upscale
    # -> encode map or to data (training/fit_upsampler.py): latent channels are not pixels, and
    # interpolating them is a poor upscale for most codecs.
    base: str = "bilinear"
    base_factor: int = 2
    base_kernel: int = 5
    # mode "memory": `hidden` is the width after the pixel shuffle (128 shipped), then
    # `memory_blocks` causal memory blocks (8 shipped); the output is memory_scale x the input (2
    # shipped; 3 also has a layout). At most 16 blocks: output frame t sees input frames
    # t - memory_blocks .. t, and pipeline.build_condition's chunks carry 16 frames of past
    # (UPSAMPLER_CONTEXT), so chunked conditions stay exact.
    memory_blocks: int = 8
    memory_scale: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in UPSAMPLER_MODES:
            raise ValueError(f"upsampler.mode={self.mode!r}: expected one of {UPSAMPLER_MODES}")
        if not isinstance(self.base, str) or self.base not in UPSAMPLER_BASES:
            raise ValueError(f"upsampler.base={self.base!r}: expected one of {UPSAMPLER_BASES}")
        for name in ("channels", "hidden", "temporal_factor"):
            _check_int("upsampler", name, getattr(self, name))
        _check_int("upsampler", "base_factor", self.base_factor, 1, 8)
        if _check_int("upsampler", "base_kernel", self.base_kernel, 3, 15) % 2 == 0:
            raise ValueError(
                f"upsampler.base_kernel={self.base_kernel}: expected an odd integer in [3, 15]"
            )
        _check_int("upsampler", "memory_blocks", self.memory_blocks, 1, 16)
        if type(self.memory_scale) is not int or self.memory_scale not in (2, 3):
            raise ValueError(
                f"upsampler.memory_scale={self.memory_scale!r}: expected 2 or 3 "
                f"(the pixel-shuffle layouts of Ultra Flash's v1 upsampler)"
            )
        if self.mode == "memory" and self.base != "bilinear":
            raise ValueError(
                f"upsampler.base={self.base!r} is not used by mode 'memory' (its "
                f"output is the network's own): expected 'bilinear', the default"
            )


@dataclass
class SimpleGVRConfig:
    """Everything needed to rebuild a SimpleGVR model; stored as JSON in checkpoint metadata."""

    name: str = "custom"
    latent_format: str = "wan21"
    train_latent_frames: int = 5  # clip length the checkpoint was trained on (17 frames -> 5)
    dit: DiTConfig = field(default_factory=DiTConfig)
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    # What the flow carries (`SimpleGVR.velocity`): "hr", the HR latent itself (the paper), or
    # "residual", HR minus the upsampler's condition c (the DiT adds detail to the upsampler's
    # estimate; train it with train.upsampler_weight > 0 so that c is one), or "residual_x0", the
    # DiT's output is the estimate of HR minus c and v follows from it (a fresh model's estimate is
    # c itself: its head starts at zero; for few-step students).
    prediction: str = "hr"

    def __post_init__(self) -> None:
        if not isinstance(self.prediction, str) or self.prediction not in PREDICTIONS:
            raise ValueError(
                f"config prediction={self.prediction!r}: expected one of {PREDICTIONS}"
            )
        if not isinstance(self.name, str):
            raise ValueError(f"config name={self.name!r}: expected a string")
        if not isinstance(self.latent_format, str):
            raise ValueError(
                f"latent_format={self.latent_format!r}: expected a name such as 'wan21'"
            )
        _check_int("config", "train_latent_frames", self.train_latent_frames)
        if isinstance(self.dit, dict):
            self.dit = _build(DiTConfig, self.dit, "dit")
        if isinstance(self.upsampler, dict):
            self.upsampler = _build(UpsamplerConfig, self.upsampler, "upsampler")
        if not isinstance(self.dit, DiTConfig) or not isinstance(self.upsampler, UpsamplerConfig):
            raise ValueError(
                f"config dit/upsampler must be tables, got {type(self.dit).__name__} / "
                f"{type(self.upsampler).__name__}"
            )
        fmt = get_format(self.latent_format)
        self.latent_format = fmt.name
        if self.dit.out_dim != fmt.channels or self.upsampler.channels != fmt.channels:
            raise ValueError(
                f"latent format '{fmt.name}' has {fmt.channels} channels but dit.out_dim="
                f"{self.dit.out_dim} and upsampler.channels={self.upsampler.channels}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimpleGVRConfig:
        return _build(cls, d, "config")


def check_attention(mode: str, unit_frames: int, sparse_block, sparse_topk: int) -> None:
    """Validate an attention setting (used by the config and by inference-time overrides)."""
    if not isinstance(mode, str) or mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode {mode!r}: expected one of {ATTENTION_MODES}")
    if unit_frames < 1:
        raise ValueError(f"unit_frames must be >= 1, got {unit_frames}")
    if len(tuple(sparse_block)) != 2 or min(sparse_block) < 1:
        raise ValueError(f"sparse_block must be two positive ints (h, w), got {sparse_block}")
    if sparse_topk < 0:
        raise ValueError(f"sparse_topk must be >= 0, got {sparse_topk}")


def _build(cls, d: dict[str, Any], what: str):
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names, key=str)
    if unknown:  # a few of them: a hostile checkpoint or config may carry a million
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        shown = ", ".join(repr(k)[:60] for k in unknown[:5])
        raise ValueError(
            f"{what} has unknown keys [{shown}]{more}: expected a subset of {sorted(names)}"
        )
    return cls(**d)


def _tiny(latent_format: str = "wan21", text_len: int = 512, name: str = "tiny") -> SimpleGVRConfig:
    channels = get_format(latent_format).channels
    return SimpleGVRConfig(
        name=name,
        latent_format=latent_format,
        dit=DiTConfig(
            dim=64,
            ffn_dim=128,
            num_heads=4,
            num_layers=2,
            in_dim=2 * channels,
            out_dim=channels,
            freq_dim=32,
            text_dim=32,
            text_len=text_len,
            unit_frames=2,
            sparse_block=(2, 2),
        ),
        upsampler=UpsamplerConfig(channels=channels, hidden=16),
    )


def _wan13b() -> SimpleGVRConfig:
    return SimpleGVRConfig(
        name="wan2.1-1.3b",
        dit=DiTConfig(attention="temporal_units"),
        upsampler=UpsamplerConfig(hidden=128),
    )


def _wan22_5b() -> SimpleGVRConfig:
    """Wan2.2-TI2V-5B (Wan-Video/Wan2.2 wan/configs/wan_ti2v_5B.py and its config.json: dim 3072,
    ffn 14336, 24 heads, 30 layers, 48 latent channels, the /16 Wan 2.2 VAE) widened for the
    condition, used as text-to-video only."""
    return SimpleGVRConfig(
        name="wan2.2-ti2v-5b",
        latent_format="wan22",
        dit=DiTConfig(
            dim=3072,
            ffn_dim=14336,
            num_heads=24,
            num_layers=30,
            in_dim=96,
            out_dim=48,
            attention="temporal_units",
        ),
        upsampler=UpsamplerConfig(channels=48, hidden=128),
    )


def _cogvideox_13b() -> SimpleGVRConfig:
    """A SimpleGVR for CogVideoX latents (16 channels, /8, scale 1.15258426: unit variance, the
    scale of the one VAE CogVideoX 2b and 5b share) with T5-XXL text (4096 wide, 226 tokens, as
    CogVideoX pads it). The DiT has Wan 2.1 1.3B's shape, so it can start from those weights
    (`import-wan --config cogvideox-1.3b`)."""
    return SimpleGVRConfig(
        name="cogvideox-1.3b",
        latent_format="cogvideox_2b",
        dit=DiTConfig(text_len=COGVIDEOX_TEXT_LEN, attention="temporal_units"),
        upsampler=UpsamplerConfig(channels=16, hidden=128),
    )


# CogVideoX's max_text_seq_length: T5 prompts padded to 226 tokens (diffusers, SAT, ComfyUI)
COGVIDEOX_TEXT_LEN = 226

NAMED_CONFIGS = {
    "tiny": _tiny,
    "tiny-wan22": lambda: _tiny("wan22", name="tiny-wan22"),
    "tiny-cogvideox": lambda: _tiny("cogvideox_2b", COGVIDEOX_TEXT_LEN, name="tiny-cogvideox"),
    "wan2.1-1.3b": _wan13b,
    "wan2.2-ti2v-5b": _wan22_5b,
    "cogvideox-1.3b": _cogvideox_13b,
}


def get_config(spec: str | dict | SimpleGVRConfig) -> SimpleGVRConfig:
    """A config from a name in NAMED_CONFIGS, a dict (as stored in checkpoints) or a config."""
    if isinstance(spec, SimpleGVRConfig):
        return spec
    if isinstance(spec, dict):
        return SimpleGVRConfig.from_dict(spec)
    if isinstance(spec, str):
        if spec not in NAMED_CONFIGS:
            raise ValueError(f"unknown config {spec!r}: expected one of {sorted(NAMED_CONFIGS)}")
        return NAMED_CONFIGS[spec]()
    raise ValueError(f"config must be a name, dict or SimpleGVRConfig, got {type(spec).__name__}")
