"""SimpleGVR Sampler: flow sampling of the HR latent against the condition, with the T2V model's text."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from . import glue, runtime
from ._core import ATTENTION_MODES, pipeline, sampling
from .upsampler import SEED_MAX

log = logging.getLogger("SimpleGVR")

MODEL_DEFAULT = "model default"


class SimpleGVRSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRSampler",
            display_name="SimpleGVR Sampler",
            category="SimpleGVR",
            search_aliases=["simplegvr", "video super resolution", "upscale video latent", "1080p"],
            description="Generates the HR latent by rectified-flow sampling (Wan's flow convention) against the "
                        "condition from SimpleGVR Latent Upsampler, guided by the text of the T2V model. Output: an HR "
                        "LATENT for VAE Decode with the T2V model's VAE.",
            inputs=[
                runtime.SimpleGVRModel.Input("model", tooltip="From Load SimpleGVR Model (the same one the Latent "
                                                              "Upsampler used)."),
                io.Latent.Input("samples", tooltip="From SimpleGVR Latent Upsampler. A plain LR video latent also works: "
                                                   "it is then upsampled here with the defaults (1920x1080, noise 0.4, "
                                                   "latent_scale auto, this seed)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="The prompt from the text encoder the T2V model used (CLIP Text Encode "
                                              "with umt5-xxl for Wan). Not connected: the null prompt."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Negative prompt, same text encoder. Not connected: the null prompt."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Seed of the sampling noise."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Euler steps from pure noise (paper: 50)."),
                io.Float.Input("cfg", default=5.0, min=1.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance on the text. 1.0 runs one DiT pass per step and "
                                       "ignores the negative prompt."),
                io.Float.Input("shift", default=5.0, min=0.1, max=100.0, step=0.1,
                               tooltip="Timestep shift of the flow schedule, sigma' = s*sigma/(1+(s-1)*sigma) (Wan "
                                       "T2V: 5; higher spends more steps at high noise)."),
                io.Combo.Input("sampler", options=list(sampling.SAMPLERS), default="euler",
                               tooltip="euler: one DiT pass per step. heun: two, second order."),
                io.Combo.Input("attention", options=[MODEL_DEFAULT, *ATTENTION_MODES], default=MODEL_DEFAULT,
                               tooltip="Override the model's self-attention pattern for this run: full (temporal "
                                       "windows of the trained length), temporal_units or sparse_local."),
                io.Int.Input("tile_size", default=0, min=0, max=1024, step=8, advanced=True,
                             tooltip="Spatial DiT tiles of this many latent pixels, blended linearly over 8 (0: no "
                                     "tiles). Saves memory at 1080p and above; a little slower."),
                io.Combo.Input("output_scale", options=list(glue.OUTPUT_SCALE_CHOICES), default="same as input",
                               advanced=True,
                               tooltip="Scale of the output: as the LR input came (raw for core samplers: what VAE "
                                       "Decode expects), or forced raw / normalised."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The HR latent (raw VAE scale for core graphs).")],
        )

    @classmethod
    def execute(cls, model, samples, seed, steps, cfg, shift, sampler, attention, tile_size=0,
                output_scale="same as input", positive=None, negative=None) -> io.NodeOutput:
        net = runtime.module(model)
        name = runtime.model_name(model)
        text_dim = net.config.dit.text_dim
        context = glue.conditioning_to_context(positive, text_dim, "positive")
        negative_context = glue.conditioning_to_context(negative, text_dim, "negative")
        info = glue.condition_from_latent(samples, net, name)
        budget = runtime.memory_budget(model)
        if info is None:
            lr = glue.read_video_latent(samples, net.latent_format, "auto", "LR latent")
            size = {"width": glue.DEFAULT_WIDTH, "height": glue.DEFAULT_HEIGHT}
            hr_hw = pipeline.target_size(net, tuple(lr.raw.shape[-2:]), **size)
            log.info("SimpleGVR Sampler: a plain LATENT %s, upsampling it to latent %dx%d with the defaults; %s",
                     tuple(samples["samples"].shape), *hr_hw, lr.note)
            runtime.load(model, pipeline.upsampler_memory(net, lr.raw.shape, hr_hw))
            info = glue.upsample_latent(net, lr, size=size, noise_level=0.4, seed=seed, model_name=name,
                                        memory_budget=budget)[glue.LATENT_KEY]
        mode = None if attention == MODEL_DEFAULT else attention
        cond = info.condition
        tiles = (tile_size, tile_size) if tile_size else None
        plan = pipeline.plan_sampling(net, cond.c.shape, attention=mode, tile_size=tiles)
        runtime.load(model, plan.memory(net, cfg=cfg))
        x = pipeline.sample(net, cond, context=context, negative_context=negative_context, steps=int(steps),
                            cfg=float(cfg), shift=float(shift), seed=int(seed), attention=mode, sampler=sampler,
                            tile_size=tiles, callback=runtime.sampling_callback(model, int(steps)), memory_budget=budget)
        scale = info.scale if output_scale == "same as input" else output_scale
        return io.NodeOutput({"samples": glue.to_output(x, net.latent_format, info.layout, scale)})
