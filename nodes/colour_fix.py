"""SimpleGVR Colour Fix: the upscaled frames with the colours of the frames they were upscaled from
(after VAE Decode)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from . import glue
from ._core import colour

log = logging.getLogger("SimpleGVR")


class SimpleGVRColourFix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRColourFix",
            display_name="SimpleGVR Colour Fix",
            category="SimpleGVR",
            search_aliases=[
                "colour fix",
                "color fix",
                "color correction",
                "wavelet color fix",
                "adain",
            ],
            description="Pulls the colours of upscaled frames back to the low-resolution frames "
            "they came from and keeps the new detail. wavelet (as StableSR, SeedVR2 and "
            "FlashVSR): the HR frames' high-frequency band plus the LR frames' low-frequency "
            "band. AdaIN: each colour channel's clip-wide mean and std set to the LR frames'. Put "
            "it after VAE Decode of the SimpleGVR latent, with the decoded LR video as "
            "the reference.",
            inputs=[
                io.Image.Input(
                    "images",
                    tooltip="The upscaled frames (VAE Decode of the SimpleGVR Sampler's latent).",
                ),
                io.Image.Input(
                    "reference",
                    tooltip="The frames they were upscaled from (VAE Decode of the LR latent): the "
                    "same number of frames, any size (resized bicubically).",
                ),
                io.Combo.Input(
                    "method",
                    options=list(colour.PIXEL_FIXES),
                    default="wavelet",
                    tooltip="wavelet: replace the low-frequency band with the reference's (fixes "
                    "tints and local colour drift, keeps detail). AdaIN: match each channel's "
                    "mean and std over the clip (global colour only; cheapest).",
                ),
                io.Int.Input(
                    "levels",
                    default=colour.WAVELET_LEVELS,
                    min=1,
                    max=12,
                    advanced=True,
                    tooltip="wavelet: blur levels (dilations 1, 2, 4, ...); 5 keeps detail finer "
                    "than about 64 px from the HR frames and takes everything coarser from "
                    "the reference.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="images",
                    tooltip="The corrected frames, same size and count as images.",
                )
            ],
        )

    @classmethod
    def execute(cls, images, reference, method, levels=colour.WAVELET_LEVELS) -> io.NodeOutput:
        out = glue.colour_fix_images(images, reference, method, int(levels))
        log.info(
            "SimpleGVR Colour Fix: %s on %d frames %dx%d (reference %dx%d)",
            method,
            out.shape[0],
            out.shape[2],
            out.shape[1],
            reference.shape[2],
            reference.shape[1],
        )
        return io.NodeOutput(out)
