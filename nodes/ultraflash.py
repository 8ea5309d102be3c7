"""Load Ultra Flash Model: Ultra Flash's two published files (the one-step SR DiT and its latent
upsampler) -> SIMPLEGVR_MODEL, the same model type Load SimpleGVR Model gives."""

from __future__ import annotations

import logging
import os

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from . import glue, runtime

log = logging.getLogger("SimpleGVR")

DIT_FOLDERS = (runtime.MODEL_FOLDER,)
UPSAMPLER_FOLDERS = (runtime.MODEL_FOLDER, runtime.SHARED_FOLDER)


def _files(folders, kind: str, first: str) -> list[str]:
    return glue.weight_files(runtime.entries(*folders), (kind,), first)


class SimpleGVRUltraFlashLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRUltraFlashLoader",
            display_name="Load Ultra Flash Model",
            category="SimpleGVR",
            search_aliases=["ultra flash", "ultraflash", "one-step super resolution", "wan 2.1 1k"],
            description="Loads Ultra Flash's published one-step Wan 2.1 super-resolution weights "
            "(huggingface.co/xin1u/UltraFlash, Apache-2.0): the sparse SR DiT and its "
            "2x latent upsampler, as a SimpleGVR model with their recipe (1 step at "
            "t=1000, cfg 1, no condition noise, block-sparse causal attention "
            "streaming groups of 6 latent frames). .pth files are read as plain "
            "tensors only (a pickle that would run code is refused). `simplegvr "
            "import-ultraflash` writes the same model as one .safetensors for Load "
            "SimpleGVR Model.",
            inputs=[
                io.Combo.Input(
                    "dit_name",
                    options=_files(DIT_FOLDERS, "wan_dit", glue.ULTRAFLASH_DIT),
                    tooltip=f"The SR DiT, {glue.ULTRAFLASH_DIT} (2.8 GB), in "
                    "models/simplegvr/. Listed: .pth / .safetensors files "
                    "holding a Wan DiT (or whose contents cannot be told "
                    "without loading them).",
                ),
                io.Combo.Input(
                    "upsampler_name",
                    options=_files(
                        UPSAMPLER_FOLDERS, "ultraflash_upsampler", glue.ULTRAFLASH_UPSAMPLER
                    ),
                    tooltip=f"The latent upsampler, {glue.ULTRAFLASH_UPSAMPLER} (19 "
                    "MB), in models/simplegvr/ or "
                    "models/latent_upscale_models/. Listed: files holding "
                    "Ultra Flash's upsampler (or whose contents cannot be "
                    "told).",
                ),
                io.Combo.Input(
                    "dtype",
                    options=list(glue.DTYPE_CHOICES),
                    default="auto",
                    tooltip="Weight and compute dtype. auto: what ComfyUI picks for "
                    "this device (bf16, as Ultra Flash runs, on GPUs that "
                    "support it; fp32 on the CPU).",
                ),
                io.Int.Input(
                    "num_heads",
                    default=0,
                    min=0,
                    max=128,
                    advanced=True,
                    tooltip="Attention heads of the DiT. 0 = from its width (12 at 1536: "
                    "the published file); set it only for a DiT of another size.",
                ),
            ],
            outputs=[
                runtime.SimpleGVRModel.Output(
                    display_name="model",
                    tooltip="The Ultra Flash model, for Latent Upsampler and Sampler.",
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, dit_name, upsampler_name, **_) -> str:
        """Run again when either file changes on disk (ComfyUI otherwise reuses the last output for
        the same names)."""
        stamps = []
        for name, folders in ((dit_name, DIT_FOLDERS), (upsampler_name, UPSAMPLER_FOLDERS)):
            try:
                st = os.stat(runtime.file_path(name, folders, "file"))
                stamps.append(f"{st.st_mtime_ns}:{st.st_size}")
            except (OSError, ValueError):
                stamps.append("missing")
        return "|".join(stamps)

    @classmethod
    def execute(
        cls, dit_name: str, upsampler_name: str, dtype: str = "auto", num_heads: int = 0
    ) -> io.NodeOutput:
        dit = runtime.file_path(dit_name, DIT_FOLDERS, "Ultra Flash DiT")
        up = runtime.file_path(upsampler_name, UPSAMPLER_FOLDERS, "Ultra Flash upsampler")

        def auto(params: int) -> torch.dtype:
            return mm.unet_dtype(
                mm.get_torch_device(),
                model_params=params,
                supported_dtypes=[torch.bfloat16, torch.float16, torch.float32],
            )

        model = glue.load_ultraflash(
            dit, up, num_heads=int(num_heads), dtype=dtype, auto_dtype=auto
        )
        model.simplegvr_name = f"{dit_name} + {upsampler_name}"
        text = glue.model_text(model)
        log.info(
            "SimpleGVR: loaded Ultra Flash from %s and %s: %s",
            dit_name,
            upsampler_name,
            text.replace("\n\n", "; "),
        )
        runtime.show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(runtime.wrap_once(model))
