"""SimpleGVR Latent Upsampler: a LR video LATENT -> a LATENT at the target size carrying the
condition."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from . import glue, runtime
from ._core import pipeline, seeding

log = logging.getLogger("SimpleGVR")

SEED_MAX = seeding.SEED_MAX


class SimpleGVRLatentUpsampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRLatentUpsampler",
            display_name="SimpleGVR Latent Upsampler",
            category="SimpleGVR",
            search_aliases=["latent upsampler", "simplegvr", "upscale video latent", "1080p"],
            description="Noise-augments the LR latent of a video sampler (Wan 2.1/2.2, CogVideoX) "
            "and brings it to the target size with the model's learned upsampler: the condition "
            "the SimpleGVR Sampler denoises against. The LATENT's samples are the LR latent "
            "resized bilinearly, so VAE Decode gives a (blurry) preview of the target size.",
            inputs=[
                runtime.SimpleGVRModel.Input(
                    "model",
                    tooltip="From Load SimpleGVR Model; its checkpoint fixes the latent "
                    "format (channels) the input must have.",
                ),
                io.Latent.Input(
                    "samples",
                    tooltip="LR video latent [B,C,T,H,W] from a KSampler (raw VAE scale) or a "
                    "wrapper pack ([B,T,C,H,W] is detected; see latent_scale).",
                ),
                io.Combo.Input(
                    "resize_by",
                    options=list(glue.RESIZE_CHOICES),
                    default=glue.DEFAULT_RESIZE_BY,
                    tooltip="short edge / long edge: that side of the output becomes `edge` "
                    "pixels and the other follows the input's aspect ratio (832x480 -> 1872x1080; "
                    "a portrait 480x832 -> 1080x1872). width and height: exactly that size (a "
                    "warning says when it stretches the picture). scale: scale x the input size. "
                    "native: the size the model's upsampler was trained for (Ultra Flash: 2x, "
                    "832x480 -> 1664x960), else 2.25x; other sizes on such a model are labelled "
                    "as outside its training.",
                ),
                io.Int.Input(
                    "edge",
                    default=glue.DEFAULT_EDGE,
                    min=16,
                    max=16384,
                    step=8,
                    tooltip="Only read when resize_by is 'short edge' or 'long edge' "
                    "(ignored otherwise): pixels of the output's short (or long) "
                    "side, rounded to the latent grid (/8 for Wan 2.1 and "
                    "CogVideoX, /16 for Wan 2.2, where 1080 becomes 1088).",
                ),
                io.Int.Input(
                    "width",
                    default=glue.DEFAULT_WIDTH,
                    min=16,
                    max=16384,
                    step=8,
                    tooltip="Only read when resize_by is 'width and height' (ignored "
                    "otherwise, e.g. with the default 'short edge'): target width "
                    "in pixels, rounded to the latent grid.",
                ),
                io.Int.Input(
                    "height",
                    default=glue.DEFAULT_HEIGHT,
                    min=16,
                    max=16384,
                    step=8,
                    tooltip="Only read when resize_by is 'width and height' (ignored "
                    "otherwise, e.g. with the default 'short edge'): target "
                    "height in pixels (1080 -> 135 latent rows for Wan 2.1).",
                ),
                io.Float.Input(
                    "scale",
                    default=pipeline.DEFAULT_SCALE,
                    min=1.0,
                    max=8.0,
                    step=0.05,
                    tooltip="Only read when resize_by is 'scale' (ignored otherwise): "
                    "the target size as a multiple of the input (2.25: 480p -> "
                    "1080p).",
                ),
                io.Float.Input(
                    "noise_level",
                    default=glue.AUTO_NOISE,
                    min=glue.AUTO_NOISE,
                    max=1.0,
                    step=0.01,
                    display_name="noise_level (-1 = auto)",
                    tooltip="Condition noise s: c = (1-s)*LR + s*noise before upsampling. -1 = "
                    "auto: the checkpoint's recipe (Ultra Flash: 0; a SimpleGVR teacher: 0.4, the "
                    "paper's, trained on 0.3-0.6). Higher hides more LR artefacts and invents "
                    "more detail.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=SEED_MAX,
                    control_after_generate=True,
                    tooltip="Seed of the condition noise.",
                ),
                io.Combo.Input(
                    "latent_scale",
                    options=list(glue.LATENT_SCALE_CHOICES),
                    default="auto",
                    tooltip="raw: VAE scale, what core samplers and VAE Encode give. normalised: "
                    "model space, what kijai's WanVideoWrapper hands on. auto: decide from the "
                    "channel statistics (logged). The output keeps the input's scale and layout.",
                ),
            ],
            outputs=[
                io.Latent.Output(
                    display_name="latent",
                    tooltip="Target-size LATENT for SimpleGVR Sampler (carries the condition).",
                ),
                io.Latent.Output(
                    display_name="hr_latent",
                    tooltip="The upsampler's own HR estimate (the condition, raw "
                    "VAE scale for core graphs, the input's layout): for "
                    "a core KSampler to re-denoise at a low denoise "
                    "(hires fix), or VAE Decode. At noise_level > 0 it "
                    "carries that noise.",
                ),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, model, samples, resize_by, edge, width, height, scale, noise_level, seed, latent_scale
    ) -> io.NodeOutput:
        net = runtime.module(model)
        lr = glue.read_video_latent(samples, net.latent_format, latent_scale, "LR latent")
        size = glue.target_args(resize_by, edge, width, height, scale)
        out, text, warnings = glue.upsample(
            net, lr, size, glue.noise_level_arg(noise_level), seed, runtime.host(model)
        )
        for warning in warnings:
            log.warning("SimpleGVR: %s", warning)
        log.info(
            "SimpleGVR Latent Upsampler: %s %s; %s",
            tuple(samples["samples"].shape),
            text.replace("\n\n", "; "),
            lr.note,
        )
        runtime.show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(out, glue.condition_latent(out[glue.LATENT_KEY]))
