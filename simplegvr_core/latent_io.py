"""ComfyUI `.latent` files: safetensors with key `latent_tensor` and the marker
`latent_format_version_0`.

A latent saved by ComfyUI's SaveLatent can be upscaled offline and loaded back with LoadLatent.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .files import atomic_write
from .weights import read_safetensors

MARKER = "latent_format_version_0"


def load_latent(path: str | os.PathLike) -> torch.Tensor:
    """The latent tensor stored in a ComfyUI `.latent` file, as stored (validate it with
    `latent_formats.read_latent`, as every host does)."""
    tensors, _ = read_safetensors(path)
    if "latent_tensor" not in tensors:
        raise ValueError(
            f"{str(path)!r} is not a ComfyUI .latent file: no 'latent_tensor' key (keys: "
            f"{sorted(tensors)[:5]})"
        )
    if MARKER not in tensors:
        raise ValueError(
            f"{str(path)!r} lacks the '{MARKER}' marker: it is a legacy SD1 latent, not a "
            f"video latent"
        )
    return tensors["latent_tensor"]


def save_latent(
    latent: torch.Tensor,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    *,
    replace: bool = True,
) -> Path:
    """Write a `.latent` file that ComfyUI's LoadLatent reads, atomically (temporary name, then
    rename; replace=False never replaces an existing file, `files.atomic_write`). A latent with NaN
    or Inf is refused."""
    if not isinstance(latent, torch.Tensor) or not latent.is_floating_point():
        raise ValueError(f"latent must be a floating-point tensor, got {type(latent).__name__}")
    if not torch.isfinite(latent).all():
        raise ValueError(f"the latent for {str(path)!r} contains NaN or Inf: nothing was written")
    tensors = {"latent_tensor": latent.detach().cpu().contiguous(), MARKER: torch.tensor([])}
    return atomic_write(
        path, lambda tmp: save_file(tensors, tmp, metadata=metadata), replace=replace
    )
