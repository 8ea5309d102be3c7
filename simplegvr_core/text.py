"""Text features for training: umt5-xxl (Wan's encoder) or a deterministic byte encoder for tiny models.

Features are computed once per caption and cached in a safetensors file (never per step). A caption's
features are [L, text_dim] trimmed to its real length; the pipeline zero-pads them to 512 tokens, the
way Wan and ComfyUI's Wan text encoder do. The null prompt (10% of training steps) is all zeros.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch

MAX_TOKENS = 512


class ByteTextEncoder:
    """Deterministic features for tiny models and tests: a fixed random embedding of each UTF-8 byte plus
    a sinusoidal position code, with an end token. Not a language model; it gives each caption a stable,
    distinct feature sequence so text conditioning can be exercised without downloads."""

    def __init__(self, dim: int, seed: int = 0):
        if dim < 2:
            raise ValueError(f"text dim must be >= 2, got {dim}")
        self.dim = dim
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(257, dim, generator=g) / math.sqrt(dim)  # 256 bytes + end token

    def __call__(self, text: str) -> torch.Tensor:
        ids = list(text.encode("utf-8"))[: MAX_TOKENS - 1] + [256]
        pos = torch.arange(len(ids), dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(1e4) * torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim)
        pe = torch.zeros(len(ids), self.dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: self.dim // 2])
        return self.table[torch.tensor(ids)] + 0.1 * pe


class UMT5TextEncoder:
    """Wan's umt5-xxl encoder (transformers UMT5EncoderModel + tokenizer) from a local diffusers-format
    folder, e.g. the one `simplegvr download-wan` makes (subfolders text_encoder/ and tokenizer/)."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", dtype=torch.bfloat16):
        try:
            from transformers import AutoTokenizer, UMT5EncoderModel
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ValueError("the umt5 text encoder needs `transformers` (pip install 'simplegvr[train]')") from e
        p = Path(path)
        if not (p / "text_encoder").is_dir() or not (p / "tokenizer").is_dir():
            raise ValueError(f"{str(p)!r} lacks text_encoder/ and tokenizer/: run `simplegvr download-wan --out {p}`")
        self.tokenizer = AutoTokenizer.from_pretrained(p / "tokenizer")
        self.model = UMT5EncoderModel.from_pretrained(p / "text_encoder", torch_dtype=dtype, use_safetensors=True)
        self.model.to(device).eval()
        self.device = device
        self.dim = self.model.config.d_model

    @torch.no_grad()
    def __call__(self, text: str) -> torch.Tensor:
        tok = self.tokenizer(text, max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
        out = self.model(input_ids=tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device))
        n = int(tok.attention_mask.sum())
        return out.last_hidden_state[0, :n].float().cpu()


def make_text_encoder(kind: str, dim: int, path: str | None = None, device="cpu"):
    if kind == "byte":
        return ByteTextEncoder(dim)
    if kind == "umt5":
        if not path:
            raise ValueError("text.kind = 'umt5' needs text.path (a folder from `simplegvr download-wan`)")
        enc = UMT5TextEncoder(path, device=device)
        if enc.dim != dim:
            raise ValueError(f"umt5 features are {enc.dim}-d but the model's text_dim is {dim}")
        return enc
    raise ValueError(f"text encoder kind {kind!r}: expected 'umt5' or 'byte'")


def caption_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class TextCache:
    """Caption -> features, encoded once and stored in one safetensors file (atomically rewritten)."""

    def __init__(self, path: str | os.PathLike | None, encoder, encoder_name: str):
        self.path = Path(path) if path else None
        self.encoder, self.encoder_name = encoder, encoder_name
        self.features: dict[str, torch.Tensor] = {}
        if self.path and self.path.exists():
            from .checkpoint import read_safetensors

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

            atomic_write(self.path, lambda tmp: save_file(self.features, tmp, metadata={"encoder": self.encoder_name}))
        return len(todo)

    def __getitem__(self, caption: str) -> torch.Tensor:
        key = caption_key(caption)
        if key not in self.features:
            raise KeyError(f"caption not encoded: {caption[:60]!r}")
        return self.features[key]
