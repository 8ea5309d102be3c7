"""`simplegvr demo`: the whole cascade on a laptop CPU, on embedded weights, on video real T2V
models made.

Shipped with the package, above the library (which never imports it). The demo world (DESIGN.md):

    clips.py     the real AI-generated clips of `comfyui-workflow-templates-media-video`, their
        fixed
                 train / validation / test split by file, the HR clip (17 frames, 128x128) and its
                     LR (64x64)
    assets.py    the embedded weights (`assets/`): a linear lapped codec with Wan 2.1's latent
        contract, the
                 teacher and the one-step default SimpleGVR, checked as one set by their manifest's
                     hashes
    evaluate.py  LR latent -> Latent Upsampler -> SimpleGVR sampling -> decode against decode +
        bicubic and latent
                 bilinear + decode, with paired bootstrap intervals over clips; the output files

The weights are rebuilt by the lab (`python -m training.demo`, also `simplegvr demo --retrain` in a
clone), the one writer of `assets/`.
"""

from .assets import (
    ASSET_FILES,
    ASSETS,
    MANIFEST,
    MODEL_FILE,
    STUDENT_FILE,
    VAE_FILE,
    file_sha256,
    load_assets,
    load_model,
    read_manifest,
)
from .clips import FRAMES, HR_SIZE, LR_MODES, LR_SIZE, lr_clip
from .evaluate import (
    BASELINES,
    DIFF_WINDOW,
    DIFF_ZOOM,
    GRID_CLIPS,
    MAX_VIDEOS,
    METHODS,
    METRICS,
    MIN_INTERVAL_CLIPS,
    OutputWriter,
    baselines,
    compare,
    difference_band,
    evaluate,
    format_comparisons,
    format_table,
    iter_clips,
    largest_difference_window,
    load_clips,
    write_outputs,
)

__all__ = [
    "ASSETS",
    "ASSET_FILES",
    "BASELINES",
    "DIFF_WINDOW",
    "DIFF_ZOOM",
    "FRAMES",
    "GRID_CLIPS",
    "HR_SIZE",
    "LR_MODES",
    "LR_SIZE",
    "MANIFEST",
    "MAX_VIDEOS",
    "METHODS",
    "METRICS",
    "MIN_INTERVAL_CLIPS",
    "MODEL_FILE",
    "OutputWriter",
    "STUDENT_FILE",
    "VAE_FILE",
    "baselines",
    "compare",
    "difference_band",
    "evaluate",
    "file_sha256",
    "format_comparisons",
    "format_table",
    "iter_clips",
    "largest_difference_window",
    "load_assets",
    "load_clips",
    "load_model",
    "lr_clip",
    "read_manifest",
    "write_outputs",
]
