"""SimpleGVR Fast Decode: a Wan LATENT -> IMAGE frames with a TAEHV tiny decoder (Ultra Flash's
tiny_decoder.pth, taew2_1), normalising the raw latent as the decoder expects (ComfyUI's VAELoader
does not for these files)."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.model_patcher
import torch
from comfy_api.latest import io

from . import glue, runtime

log = logging.getLogger("SimpleGVR")

DECODER_FOLDERS = (runtime.MODEL_FOLDER, runtime.DECODER_FOLDER)


class SimpleGVRFastDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRFastDecode",
            display_name="SimpleGVR Fast Decode",
            category="SimpleGVR",
            search_aliases=[
                "tiny decoder",
                "taehv",
                "taew2_1",
                "fast vae decode",
                "ultra flash decode",
            ],
            description="Decodes a Wan 2.1 video LATENT (raw, as KSampler and the SimpleGVR "
            "Sampler give it) with a TAEHV tiny decoder: Ultra Flash's "
            "tiny_decoder.pth or madebyollin's taew2_1 (taew2_2 for Wan 2.2 5B "
            "latents). The latent is normalised with Wan's per-channel mean/std first "
            "(ComfyUI's VAE Loader does not do that for these files), then decoded in "
            "chunks of latent frames with the decoder's memory carried, so the result "
            "equals one whole decode and memory holds one chunk. Several times faster "
            "than the Wan VAE, slightly softer.",
            inputs=[
                io.Combo.Input(
                    "decoder_name",
                    options=glue.weight_files(
                        runtime.entries(*DECODER_FOLDERS), ("tiny_decoder",), glue.TINY_DECODER
                    ),
                    tooltip=f"A TAEHV decoder file ({glue.TINY_DECODER} from Ultra "
                    "Flash, or taew2_1.pth) in models/simplegvr/ or "
                    "models/vae_approx/; .pth is read as plain tensors only.",
                ),
                io.Latent.Input(
                    "samples",
                    tooltip="A Wan 2.1 video latent [B,16,T,H,W] in raw VAE "
                    "scale (KSampler, SimpleGVR Sampler, Latent "
                    "Upsampler); other families are refused.",
                ),
                io.Int.Input(
                    "chunk_frames",
                    default=glue.DEFAULT_DECODE_CHUNK,
                    min=1,
                    max=1024,
                    tooltip="Latent frames decoded at a time (6 = 24 video frames, Ultra "
                    "Flash's groups). Memory grows with it; the frames do not "
                    "change. Cancel stops between chunks.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="images",
                    tooltip="The frames [4T-3, 8H, 8W, 3] in [0, 1] (for Create Video).",
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, decoder_name: str, samples, chunk_frames: int = glue.DEFAULT_DECODE_CHUNK
    ) -> io.NodeOutput:
        path = runtime.file_path(decoder_name, DECODER_FOLDERS, "tiny decoder")
        device = mm.vae_device()
        dtype = mm.vae_dtype(device, allowed_dtypes=[torch.float16, torch.bfloat16, torch.float32])
        decoder = glue.load_decoder(path, dtype)
        patcher = getattr(decoder, "_simplegvr_patcher", None)
        if patcher is None:
            patcher = comfy.model_patcher.ModelPatcher(
                decoder, load_device=device, offload_device=mm.vae_offload_device()
            )
            decoder._simplegvr_patcher = patcher
        need = glue.decode_memory(decoder, samples, int(chunk_frames), dtype)
        mm.load_models_gpu([patcher], memory_required=need, force_full_load=True)
        images, text = glue.fast_decode(
            decoder,
            samples,
            int(chunk_frames),
            on_chunk=runtime.progress(),
            interrupt=runtime.interrupt,
        )
        log.info("SimpleGVR Fast Decode: %s", text.replace("\n\n", "; "))
        runtime.show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(images)
