"""Load SimpleGVR Model: a checkpoint from models/simplegvr/ (or models/latent_upscale_models/) ->
SIMPLEGVR_MODEL."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from . import glue, runtime
from ._core import ATTENTION_MODES, checkpoint

log = logging.getLogger("SimpleGVR")

CHECKPOINT_DEFAULT = "checkpoint default"


class SimpleGVRModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRModelLoader",
            display_name="Load SimpleGVR Model",
            category="SimpleGVR",
            search_aliases=["simplegvr", "latent upscale model", "video super resolution"],
            description="Loads a SimpleGVR checkpoint (one .safetensors file from `simplegvr "
            "import-wan` or training) from models/simplegvr/ or models/latent_upscale_models/. "
            "ComfyUI moves it to the GPU when a SimpleGVR node runs and offloads it when another "
            "model needs the memory.",
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=runtime.list_models(),
                    tooltip=runtime.model_name_tooltip(
                        "SimpleGVR checkpoint in models/simplegvr/ (or a SimpleGVR file "
                        "in models/latent_upscale_models/). An untrained one (simplegvr "
                        "import-wan) and the demo world's toy models are named here and "
                        "warn under the node: they do not upscale real video."
                    ),
                ),
                io.Combo.Input(
                    "dtype",
                    options=list(glue.DTYPE_CHOICES),
                    default="auto",
                    tooltip="Weight and compute dtype. auto: what ComfyUI picks for this device "
                    "(bf16/fp16 on GPUs that support it, fp32 on the CPU).",
                ),
                io.Combo.Input(
                    "attention",
                    options=[CHECKPOINT_DEFAULT, *ATTENTION_MODES],
                    default=CHECKPOINT_DEFAULT,
                    tooltip="Self-attention pattern of the DiT (same weights for all): full; "
                    "temporal_units (5-latent-frame units, shifted every other block: long "
                    "videos); sparse_local (12x9-token 2D blocks + top-1 blocks: 1080p and "
                    "above). The Sampler can override it per run.",
                ),
            ],
            outputs=[
                runtime.SimpleGVRModel.Output(
                    display_name="model",
                    tooltip="The SimpleGVR model, for Latent Upsampler and Sampler.",
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, model_name: str, dtype: str = "auto", attention: str = CHECKPOINT_DEFAULT
    ) -> io.NodeOutput:
        path = runtime.model_path(model_name)
        model = checkpoint.load_checkpoint(path, device=mm.unet_offload_device())
        warning = glue.checkpoint_warning(path, model_name)
        params = sum(p.numel() for p in model.parameters())
        auto = mm.unet_dtype(
            mm.get_torch_device(),
            model_params=params,
            supported_dtypes=[torch.bfloat16, torch.float16, torch.float32],
        )
        model = model.to(dtype=glue.resolve_dtype(dtype, auto)).eval().requires_grad_(False)
        if attention != CHECKPOINT_DEFAULT:
            model.dit.set_attention(attention)
        model.simplegvr_name = model_name
        log.info(
            "SimpleGVR: loaded %s (%s, %.1fM parameters, %s latents, %s, attention %s)",
            model_name,
            model.config.name,
            params / 1e6,
            model.latent_format.name,
            str(next(model.parameters()).dtype),
            model.dit.attention_mode,
        )
        if warning:
            log.warning("SimpleGVR: %s", warning[1])
        runtime.show_text(cls.hidden.unique_id, glue.model_text(model, warning))
        return io.NodeOutput(runtime.wrap(model))
