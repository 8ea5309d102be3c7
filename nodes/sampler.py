"""SimpleGVR Sampler: flow sampling of the HR latent against the condition, with the T2V model's
text."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from . import glue, runtime
from ._core import ATTENTION_MODES, colour, pipeline, sampling
from .upsampler import SEED_MAX

log = logging.getLogger("SimpleGVR")

MODEL_DEFAULT = "model default"
# the steps widget's value for "the checkpoint's recommendation" (pipeline.AUTO_STEPS)
AUTO_STEPS = 0


class SimpleGVRSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRSampler",
            display_name="SimpleGVR Sampler",
            category="SimpleGVR",
            search_aliases=["simplegvr", "video super resolution", "upscale video latent", "1080p"],
            description="Generates the HR latent by rectified-flow sampling (Wan's flow "
            "convention) against the condition from SimpleGVR Latent Upsampler, guided by the "
            "text of the T2V model. Output: an HR LATENT for VAE Decode with the T2V model's VAE.",
            inputs=[
                runtime.SimpleGVRModel.Input(
                    "model",
                    tooltip="From Load SimpleGVR Model (the same one the Latent Upsampler used).",
                ),
                io.Latent.Input(
                    "samples",
                    tooltip="From SimpleGVR Latent Upsampler. A plain LR video latent also works: "
                    "it is then upsampled here with the Upsampler's defaults (short edge "
                    "1080 px keeping the aspect ratio, noise level and latent_scale auto, "
                    "this seed).",
                ),
                io.Conditioning.Input(
                    "positive",
                    optional=True,
                    tooltip="The prompt from the text encoder the T2V model used (CLIP Text Encode "
                    "with umt5-xxl for Wan, T5-XXL for CogVideoX). Not connected: the null "
                    "prompt.",
                ),
                io.Conditioning.Input(
                    "negative",
                    optional=True,
                    tooltip="Negative prompt, same text encoder. Not connected: the null prompt.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=SEED_MAX,
                    control_after_generate=True,
                    tooltip="Seed of the sampling noise.",
                ),
                io.Int.Input(
                    "steps",
                    default=AUTO_STEPS,
                    min=0,
                    max=1000,
                    display_name="steps (0 = auto)",
                    tooltip="0 = auto (the default): the checkpoint's recommended steps "
                    "and schedule (50 for a teacher, as the paper; 1 for Ultra "
                    "Flash; 1-4 for a distilled checkpoint; shift is then not "
                    "used). Else: Euler steps from pure noise.",
                ),
                io.Float.Input(
                    "cfg",
                    default=glue.AUTO_GUIDANCE,
                    min=glue.AUTO_GUIDANCE,
                    max=30.0,
                    step=0.1,
                    round=0.01,
                    display_name="cfg (0 = auto)",
                    tooltip="Classifier-free guidance on the text. 0 = auto: the checkpoint's "
                    "recipe (a SimpleGVR teacher: 5; Ultra Flash: 1). 1.0 runs one DiT pass per "
                    "step and ignores the negative prompt.",
                ),
                io.Float.Input(
                    "shift",
                    default=pipeline.DEFAULT_SHIFT,
                    min=0.1,
                    max=100.0,
                    step=0.1,
                    tooltip="Timestep shift of the flow schedule, sigma' = "
                    "s*sigma/(1+(s-1)*sigma) (Wan T2V: 5; higher spends more steps at high noise).",
                ),
                io.Combo.Input(
                    "sampler",
                    options=list(sampling.SAMPLERS),
                    default="euler",
                    tooltip="euler: one DiT pass per step. heun: two, second order.",
                ),
                io.Combo.Input(
                    "attention",
                    options=[MODEL_DEFAULT, *ATTENTION_MODES],
                    default=MODEL_DEFAULT,
                    tooltip="Override the model's self-attention pattern for this run: full "
                    "(temporal windows of the trained length), temporal_units or sparse_local.",
                ),
                io.Combo.Input(
                    "memory",
                    options=list(glue.MEMORY_CHOICES),
                    default="auto",
                    tooltip="auto: fit the free GPU memory ComfyUI reports - the whole clip if it "
                    "fits, else overlapping temporal windows (down to the trained length), then "
                    "spatial tiles, blended linearly; the choice is shown under the node and in "
                    "the log. manual: use chunk_frames and tile_size.",
                ),
                io.Combo.Input(
                    "colour_fix",
                    options=list(colour.COLOUR_FIXES),
                    default="none",
                    tooltip="latent AdaIN: set each HR latent channel's clip-wide mean and std to "
                    "those of the upsampled LR latent (fixes a global colour or brightness drift; "
                    "cheap and flicker-free). For a pixel-space wavelet fix use SimpleGVR Colour "
                    "Fix after VAE Decode.",
                ),
                io.Int.Input(
                    "chunk_frames",
                    default=0,
                    min=0,
                    max=4096,
                    advanced=True,
                    tooltip="memory manual: temporal DiT window in latent frames, overlapping by "
                    "1 (0: the attention mode's default - the trained length for full, the whole "
                    "clip otherwise).",
                ),
                io.Int.Input(
                    "tile_size",
                    default=0,
                    min=0,
                    max=1024,
                    step=8,
                    advanced=True,
                    tooltip="memory manual: spatial DiT tiles of this many latent pixels, blended "
                    "linearly over 8 (0: no tiles).",
                ),
                io.Combo.Input(
                    "output_scale",
                    options=list(glue.OUTPUT_SCALE_CHOICES),
                    default="same as input",
                    advanced=True,
                    tooltip="Scale of the output: as the LR input came (raw for core samplers: "
                    "what VAE Decode expects), or forced raw / normalised.",
                ),
            ],
            outputs=[
                io.Latent.Output(
                    display_name="latent", tooltip="The HR latent (raw VAE scale for core graphs)."
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls,
        model,
        samples,
        seed,
        steps,
        cfg,
        shift,
        sampler,
        attention,
        memory="auto",
        colour_fix="none",
        chunk_frames=0,
        tile_size=0,
        output_scale="same as input",
        positive=None,
        negative=None,
    ) -> io.NodeOutput:
        net = runtime.module(model)
        out = glue.run_sampler(
            net,
            samples,
            runtime.host(model),
            context=glue.conditioning_to_context(positive, "positive"),
            negative_context=glue.conditioning_to_context(negative, "negative"),
            seed=seed,
            steps=pipeline.AUTO_STEPS if steps == AUTO_STEPS else int(steps),
            guidance=glue.guidance_arg(cfg),
            shift=shift,
            sampler=sampler,
            attention=None if attention == MODEL_DEFAULT else attention,
            memory=memory,
            colour_fix=colour_fix,
            chunk_frames=chunk_frames,
            tile_size=tile_size,
            output_scale=output_scale,
            callback_for=lambda n: runtime.sampling_callback(model, n),
            say=lambda text: runtime.show_text(cls.hidden.unique_id, text),
            interrupt=runtime.interrupt,
        )
        return io.NodeOutput(out)
