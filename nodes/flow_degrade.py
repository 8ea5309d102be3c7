"""SimpleGVR Flow Degrade: video frames -> frames with a T2V model's motion artefacts (paper
§4.2.1), optionally followed by the classic RealBasicVSR pipeline: training pairs and previews
inside ComfyUI."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from . import glue
from ._core import flow_guided, seeding

log = logging.getLogger("SimpleGVR")

CLASSIC_CHOICES = ("off", "after flow-guided")


class SimpleGVRFlowDegrade(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SimpleGVRFlowDegrade",
            display_name="SimpleGVR Flow Degrade",
            category="SimpleGVR",
            search_aliases=[
                "flow degrade",
                "flow-guided degradation",
                "training pairs",
                "realbasicvsr",
                "degradation",
            ],
            description="Flow-guided degradation (paper §4.2.1): DIS optical flow between frames; "
            "inside moving regions, colour bleeding from the previous frame (ellipses) and "
            "motion-adaptive blur along the flow; static regions stay untouched. Optionally the "
            "classic RealBasicVSR second-order pipeline after it (blur, resize, noise, JPEG, "
            "video compression). Seeded: a seed reproduces a clip.",
            inputs=[
                io.Image.Input(
                    "images",
                    tooltip="Video frames [frames, H, W, 3] in [0, 1], e.g. from Get "
                    "Video Components.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=seeding.SEED_MAX,
                    control_after_generate=True,
                    tooltip="Seed of every random choice (ellipses, blur gain, classic stages).",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=3.0,
                    step=0.05,
                    tooltip="Multiplies the blur length and the bleeding weight (0: no "
                    "flow-guided change).",
                ),
                io.Float.Input(
                    "motion_threshold",
                    default=1.0,
                    min=0.1,
                    max=20.0,
                    step=0.1,
                    tooltip="Pixels per frame: a pixel or block that moves less is static "
                    "and left alone.",
                ),
                io.Boolean.Input(
                    "colour_bleeding",
                    default=True,
                    tooltip="Ellipses in moving regions take their colours from the "
                    "previous frame.",
                ),
                io.Boolean.Input(
                    "motion_blur",
                    default=True,
                    tooltip="Per-block line blur whose length and direction follow the "
                    "block's motion.",
                ),
                io.Combo.Input(
                    "dis_preset",
                    options=list(flow_guided.DIS_PRESETS),
                    default="ultrafast",
                    tooltip="OpenCV DIS optical-flow preset: ultrafast (fastest), fast, medium "
                    "(slowest). Every preset's flow is re-checked for aliasing on "
                    "periodic texture "
                    '(turn off with {"alias_check": false} in flow_config_json).',
                ),
                io.Combo.Input(
                    "classic",
                    options=list(CLASSIC_CHOICES),
                    default="off",
                    tooltip="Run the classic RealBasicVSR second-order degradation after the "
                    "flow-guided one (the paper's dual degradation).",
                ),
                io.Float.Input(
                    "classic_strength",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="Severity of the classic pipeline: 1 = RealBasicVSR's ranges, 0 = the "
                    "mildest end of every range. Used when classic is on.",
                ),
                io.Float.Input(
                    "classic_scale",
                    default=1.0,
                    min=0.1,
                    max=1.0,
                    step=0.05,
                    tooltip="Output size of the classic pipeline as a fraction of the input (1: "
                    "same size; 0.444: 1080p -> 480p). Used when classic is on.",
                ),
                io.String.Input(
                    "flow_config_json",
                    default="",
                    multiline=False,
                    advanced=True,
                    tooltip='Any other flow-guided parameter as a JSON object, e.g. {"ellipses": '
                    '[1, 6], "block_size": 32, "blur_gain": [0.5, 1.2]} (see FlowGuidedConfig).',
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="images",
                    tooltip="The degraded frames (same count; same size unless classic_scale < 1).",
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        images,
        seed,
        strength,
        motion_threshold,
        colour_bleeding,
        motion_blur,
        dis_preset,
        classic,
        classic_strength,
        classic_scale,
        flow_config_json="",
    ) -> io.NodeOutput:
        if classic not in CLASSIC_CHOICES:
            raise ValueError(f"classic {classic!r}: expected one of {list(CLASSIC_CHOICES)}")
        frames = glue.images_to_frames(images, "images")
        cfg = glue.flow_config(
            strength=strength,
            motion_threshold=motion_threshold,
            bleed=colour_bleeding,
            blur=motion_blur,
            dis_preset=dis_preset,
            extra_json=flow_config_json,
        )
        with_classic = classic != "off"
        pbar = comfy.utils.ProgressBar(len(frames) + int(with_classic))

        def on_frame(i):
            mm.throw_exception_if_processing_interrupted()
            pbar.update_absolute(i + 1)

        out = glue.degrade_frames(
            frames,
            cfg,
            seed,
            classic_strength=classic_strength if with_classic else None,
            classic_scale=classic_scale,
            on_frame=on_frame,
        )
        if with_classic:
            pbar.update_absolute(pbar.total)  # the classic stage, once
        log.info(
            "SimpleGVR Flow Degrade: %d frames %dx%d -> %dx%d (classic %s)",
            len(frames),
            frames.shape[2],
            frames.shape[1],
            out.shape[2],
            out.shape[1],
            classic,
        )
        return io.NodeOutput(glue.frames_to_images(out))
