"""Text features for training: each T2V family's own encoder, or a deterministic byte encoder for
tiny models.

    kind        encoder                                            features of a caption
    umt5        Wan's umt5-xxl (transformers UMT5EncoderModel)     [L, 4096], its real L tokens (<=
        512); the
                                                                   pipeline zero-pads them to
                                                                       text_len, as Wan does
    t5          CogVideoX's T5 v1.1 XXL (T5EncoderModel)           [226, 4096]: padded to 226 tokens
        and encoded
                                                                   without a mask, as diffusers'
                                                                       CogVideoX pipeline
                                                                   and ComfyUI's CogVideoX text
                                                                       encoder do
    tiny_umt5, tiny_t5: small random versions (seeded) of the two, same code path, with a byte-level
        tokenizer
    byte        a fixed random embedding of each UTF-8 byte (no language model; for the smallest
        tests)

Features are computed once per caption and cached in a safetensors file (never per step). The null
prompt (10% of training steps) is all zeros.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

MAX_TOKENS = 512
COGVIDEOX_TOKENS = 226  # config.COGVIDEOX_TEXT_LEN: CogVideoX's max_text_seq_length


@dataclass(frozen=True)
class TextKind:
    families: tuple[str, ...]  # latent families whose T2V model uses this encoder (empty: any)
    model: str = ""  # transformers class
    max_tokens: int = MAX_TOKENS
    pad_to_max: bool = False  # CogVideoX: always max_tokens tokens, no attention mask
    tiny: bool = False
    download: str = ""


TEXT_KINDS = {
    "umt5": TextKind(
        ("Wan 2.1", "Wan 2.2"),
        "UMT5EncoderModel",
        MAX_TOKENS,
        download="simplegvr download-wan --out {path}",
    ),
    "t5": TextKind(
        ("CogVideoX",),
        "T5EncoderModel",
        COGVIDEOX_TOKENS,
        pad_to_max=True,
        download="simplegvr download-cogvideox --out {path}",
    ),
    "tiny_umt5": TextKind(("Wan 2.1", "Wan 2.2"), "UMT5EncoderModel", MAX_TOKENS, tiny=True),
    "tiny_t5": TextKind(
        ("CogVideoX",), "T5EncoderModel", COGVIDEOX_TOKENS, pad_to_max=True, tiny=True
    ),
    "byte": TextKind(()),
}


class ByteTextEncoder:
    """Deterministic features for tiny models and tests: a fixed random embedding of each UTF-8 byte
    plus a sinusoidal position code, with an end token. Not a language model; it gives each caption
    a stable, distinct feature sequence so text conditioning can be exercised without downloads."""

    def __init__(self, dim: int, seed: int = 0):
        if dim < 2:
            raise ValueError(f"text dim must be >= 2, got {dim}")
        self.dim = dim
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(257, dim, generator=g) / math.sqrt(dim)  # 256 bytes + end token

    def __call__(self, text: str) -> torch.Tensor:
        ids = list(text.encode("utf-8"))[: MAX_TOKENS - 1] + [256]
        pos = torch.arange(len(ids), dtype=torch.float32)[:, None]
        freq = torch.exp(
            -math.log(1e4) * torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim
        )
        pe = torch.zeros(len(ids), self.dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: self.dim // 2])
        return self.table[torch.tensor(ids)] + 0.1 * pe


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(
            "the T5 text encoders need `transformers` (pip install 'simplegvr[train]')"
        ) from e
    return transformers


def tiny_t5_encoder(model_class: str, dim: int, seed: int = 0):
    """A small random T5-family encoder (umt5's or T5 v1.1's architecture: gated-GELU, relative
    positions) of width `dim` and transformers' ByT5 byte tokenizer (no vocabulary file), seeded:
    the real code path without a download."""
    tf = _transformers()
    config_cls = tf.UMT5Config if model_class == "UMT5EncoderModel" else tf.T5Config
    heads = 4 if dim % 4 == 0 else 1
    config = config_cls(
        vocab_size=384,
        d_model=dim,
        d_kv=dim // heads,
        d_ff=2 * dim,
        num_layers=2,
        num_heads=heads,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(tf, model_class)(config)
    return model, tf.ByT5Tokenizer()


class T5TextEncoder:
    """A T5-family text encoder (Wan's umt5-xxl or CogVideoX's T5 v1.1 XXL) the way its T2V model
    runs it."""

    def __init__(
        self,
        kind: str,
        path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype=torch.bfloat16,
        dim: int = 32,
        seed: int = 0,
    ):
        if kind not in TEXT_KINDS or not TEXT_KINDS[kind].model:
            raise ValueError(
                f"text encoder kind {kind!r}: expected one of "
                f"{[k for k, v in TEXT_KINDS.items() if v.model]}"
            )
        self.kind = k = TEXT_KINDS[kind]
        if k.tiny:
            self.model, self.tokenizer = tiny_t5_encoder(k.model, dim, seed)
            dtype = torch.float32
        else:
            tf = _transformers()
            p = Path(path or "")
            if not (p / "text_encoder").is_dir() or not (p / "tokenizer").is_dir():
                raise ValueError(
                    f"{str(p)!r} lacks text_encoder/ and tokenizer/: run "
                    f"`{k.download.format(path=p)}`"
                )
            self.tokenizer = tf.AutoTokenizer.from_pretrained(p / "tokenizer")
            self.model = getattr(tf, k.model).from_pretrained(
                p / "text_encoder", torch_dtype=dtype, use_safetensors=True
            )
        self.model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.device = device
        self.dim = self.model.config.d_model

    @torch.no_grad()
    def __call__(self, text: str) -> torch.Tensor:
        k = self.kind
        # CogVideoX: 226 tokens, padding encoded too (no mask), as its pipelines do
        if k.pad_to_max:
            tok = self.tokenizer(
                text,
                max_length=k.max_tokens,
                padding="max_length",
                truncation=True,
                add_special_tokens=True,
                return_tensors="pt",
            )
            out = self.model(input_ids=tok.input_ids.to(self.device))
            return out.last_hidden_state[0].float().cpu()
        tok = self.tokenizer(text, max_length=k.max_tokens, truncation=True, return_tensors="pt")
        out = self.model(
            input_ids=tok.input_ids.to(self.device),
            attention_mask=tok.attention_mask.to(self.device),
        )
        n = int(tok.attention_mask.sum())
        return out.last_hidden_state[0, :n].float().cpu()


def make_text_encoder(
    kind: str, dim: int, path: str | None = None, device="cpu", family: str | None = None
):
    """The text encoder `kind` with `dim`-wide features; `family` (the model's latent family) must
    be one its T2V model uses: SimpleGVR reads the same CONDITIONING the T2V sampler got."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"text encoder kind {kind!r}: expected one of {list(TEXT_KINDS)}")
    k = TEXT_KINDS[kind]
    if family is not None and k.families and family not in k.families:
        fits = [n for n, v in TEXT_KINDS.items() if family in v.families]
        raise ValueError(
            f"text.kind={kind!r} is the text encoder of {' / '.join(k.families)}, but the model "
            f"works in {family} latents: use {' or '.join(repr(n) for n in fits)} (or "
            f"'byte' for tests)"
        )
    if kind == "byte":
        return ByteTextEncoder(dim)
    if not k.tiny and not path:
        raise ValueError(
            f"text.kind = {kind!r} needs text.path (a folder from "
            f"`{k.download.format(path='DIR')}`)"
        )
    enc = T5TextEncoder(kind, path, device=device, dim=dim)
    if enc.dim != dim:
        raise ValueError(f"{kind} features are {enc.dim}-d but the model's text_dim is {dim}")
    return enc


def caption_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class TextCache:
    """Caption -> features, encoded once and stored in one safetensors file (atomically
    rewritten)."""

    def __init__(self, path: str | os.PathLike | None, encoder, encoder_name: str):
        self.path = Path(path) if path else None
        self.encoder, self.encoder_name = encoder, encoder_name
        self.features: dict[str, torch.Tensor] = {}
        if self.path and self.path.exists():
            from .weights import read_safetensors

            tensors, meta = read_safetensors(self.path)
            if meta.get("encoder") == encoder_name:
                self.features = tensors

    def encode_all(self, captions) -> int:
        """Encode the captions not cached yet; returns how many were encoded."""
        todo = sorted({c for c in captions if caption_key(c) not in self.features})
        for c in todo:
            self.features[caption_key(c)] = self.encoder(c).float().contiguous()
        if todo and self.path:
            from safetensors.torch import save_file

            from .files import atomic_write

            atomic_write(
                self.path,
                lambda tmp: save_file(self.features, tmp, metadata={"encoder": self.encoder_name}),
            )
        return len(todo)

    def __getitem__(self, caption: str) -> torch.Tensor:
        key = caption_key(caption)
        if key not in self.features:
            raise KeyError(f"caption not encoded: {caption[:60]!r}")
        return self.features[key]
