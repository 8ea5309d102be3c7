"""The demo world's video: real AI-generated clips and the fixed train / validation / test split by
file.

The clips are the animated WebP files of the PyPI package `comfyui-workflow-templates-media-video`
(MIT, a dependency of ComfyUI itself; its release CLIPS_RELEASE holds them all), made by real
text/image-to-video models (Wan 2.1 / 2.2, Kling, LTX-2, HunyuanVideo 1.5, Vidu, Seedance, Grok,
...). Whole files belong to one split:

- train (54 files): codec fitting and SimpleGVR training. Before/after pairs of the same template
  (same motion) and look-alike templates stay together; the clips with burned-in UI, split screens
  or masks are here, where they only add variety.
- validation (10 files): choosing sampling settings (`demo.tune`) and checkpoints; never reported.
- test (14 files): what `simplegvr demo` reports; only clean text/image-to-video clips, 11 generator
  families, three of them (Seedance, HuMo, Vidu T2V) never seen in training. Test clips are read by
  no training or tuning code (tests/test_demo.py checks the training commands and the tuner against
  these lists).

The three single-frame images of the package (start/end/input pictures) are in no split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PACKAGE = "comfyui_workflow_templates_media_video"
DISTRIBUTION = "comfyui-workflow-templates-media-video"
# The release the split was made from; of the releases 0.3.86 (ComfyUI 0.22's pin) to 0.3.101, the
# only one that holds all 78 clips (the others lack 5 to 21 of them). The `demo` extra accepts a
# range (ComfyUI pins its own version); `split_files` names what is missing.
CLIPS_RELEASE = "0.3.101"

TRAIN = (
    "api_google_gemini_omni_flash_i2v-1.webp",
    "api_google_gemini_omni_flash_video_edit-1.webp",
    "api_google_gemini_omni_flash_video_edit-2.webp",
    "api_grok_reference_to_video-1.webp",
    "api_grok_video-1.webp",
    "api_grok_video_edit-1.webp",
    "api_grok_video_edit-2.webp",
    "api_grok_video_extend-1.webp",
    "api_happyhorse1_1_i2v-1.webp",
    "api_happyhorse1_1_r2v-1.webp",
    "api_kling_avatar2-1.webp",
    "api_kling_motion_control3-1.webp",
    "api_kling_motion_control3-2.webp",
    "api_kling_o3_video_edit-1.webp",
    "api_kling_o3_video_edit-2.webp",
    "api_kling_v3_video-1.webp",
    "api_luma_ray3_2_video_edit-1.webp",
    "api_luma_ray3_2_video_edit-2.webp",
    "api_wan2_7_t2v-1.webp",
    "ltxv_image_to_video-1.webp",
    "txt_to_image_to_video-1.webp",
    "video_bernini_r_video_editing-1.webp",
    "video_capybara_v0_1_image_to_video-1.webp",
    "video_capybara_v0_1_video_edit-1.webp",
    "video_capybara_v0_1_video_edit-2.webp",
    "video_causal_forcing_i2v-1.webp",
    "video_hunyuan_video_1.5_720p_i2v-1.webp",
    "video_ltx2_3_flf2v-1.webp",
    "video_ltx2_3_ia2v-1.webp",
    "video_ltx2_3_ic_lora-1.webp",
    "video_ltx2_3_ic_lora-2.webp",
    "video_ltx2_3_id_lora-1.webp",
    "video_ltx2_i2v_lora-1.webp",
    "video_wan2.1_alpha_t2v_14B-1.webp",
    "video_wan2.1_fun_camera_v1.1_1.3B-1.webp",
    "video_wan2.1_fun_camera_v1.1_14B-1.webp",
    "video_wan21_scail2_character_replacement-1.webp",
    "video_wan21_scail2_character_replacement-2.webp",
    "video_wan2_2_14B_flf2v-1.webp",
    "video_wan2_2_14B_fun_control-1.webp",
    "video_wan2_2_14B_fun_inpaint-1.webp",
    "video_wan2_2_14B_i2v-1.webp",
    "video_wan2_2_14B_s2v-1.webp",
    "video_wan2_2_5B_fun_control-1.webp",
    "video_wan2_2_5B_fun_inpaint-1.webp",
    "video_wan_ati-1.webp",
    "video_wan_vace_14B_ref2v-1.webp",
    "video_wan_vace_14B_v2v-1.webp",
    "video_wan_vace_14B_v2v-2.webp",
    "video_wan_vace_flf2v-1.webp",
    "video_wan_vace_inpainting-1.webp",
    "video_wan_vace_inpainting-2.webp",
    "video_wan_vace_outpainting-1.webp",
    "video_wan_vace_outpainting-2.webp",
)
VALIDATION = (
    "api_kling_dual_characters_effects-1.webp",
    "api_luma_ray3_3_i2v-1.webp",
    "api_runway_aleph2_video_edit-1.webp",
    "api_runway_aleph2_video_edit-2.webp",
    "api_vidu_q3_image_to_video-1.webp",
    "image_to_video_wan-1.webp",
    "ltxv_text_to_video-1.webp",
    "video_ltx2_3_i2v-1.webp",
    "video_wan2_1_infinitetalk-1.webp",
    "video_wan2_2_14B_fun_camera-1.webp",
)
TEST = (
    "api_google_gemini_omni_flash_t2v-1.webp",
    "api_grok_imagine_video_1_5-1.webp",
    "api_happyhorse1_1_t2v-1.webp",
    "api_kling_o3_flf2v-1.webp",
    "api_luma_ray3_3_t2v-1.webp",
    "api_seedance2_0_mini_t2v-1.webp",
    "api_vidu_q3_text_to_video-1.webp",
    "text_to_video_wan-1.webp",
    "video_humo-1.webp",
    "video_hunyuan_video_1.5_720p_t2v-1.webp",
    "video_ltx2_3_t2v-1.webp",
    "video_wan2_2_14B_t2v-1.webp",
    "video_wan2_2_5B_ti2v-1.webp",
    "video_wan_vace_14B_t2v-1.webp",
)
SPLITS = {"train": TRAIN, "validation": VALIDATION, "test": TEST}


# The demo world: an HR clip is a clip's centred 17-frame window, centre-cropped to a square and
# area-downscaled to 128x128; its LR (the stand-in for a T2V model's output) is that clip at half
# size.
FRAMES, HR_SIZE, LR_SIZE = 17, 128, 64
# the demo's LR: a clean 2x area downscale, or the paper's flow-guided T2V artefacts first
LR_MODES = ("area", "flow")


def clip_folder() -> Path:
    """The package's folder of WebP clips; ValueError saying how to install it when it is
    missing."""
    from importlib import resources

    try:
        root = Path(str(resources.files(PACKAGE) / "templates"))
    except ModuleNotFoundError:
        raise ValueError(
            f"the demo clips are in the package {DISTRIBUTION!r}, which is not installed: "
            "pip install 'simplegvr[demo]' (ComfyUI installs it too)"
        ) from None
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} does not exist: reinstall {DISTRIBUTION!r}")
    return root


def split_files(split: str) -> list[Path]:
    """Paths of the clips of `split` ('train', 'validation' or 'test'); ValueError naming any file
    that is missing."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {sorted(SPLITS)}")
    root = clip_folder()
    paths = [root / name for name in SPLITS[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        n = len(missing)
        raise ValueError(
            f"{n} of the {len(paths)} {split} clips {'is' if n == 1 else 'are'} missing from "
            f"{str(root)!r} (e.g. {missing[0]}): this Python has {DISTRIBUTION} "
            f"{_installed_version()}, and the demo's split needs {CLIPS_RELEASE}: pip install "
            f"'{DISTRIBUTION}=={CLIPS_RELEASE}'. In ComfyUI's Python, which pins its own version, "
            "use a separate virtual environment for the demo; `simplegvr demo --videos PATH` runs "
            "on your own files without them"
        )
    return paths


def _installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def read_media(path, max_frames: int | None = None) -> np.ndarray:
    """uint8 RGB frames [T, H, W, 3] of a video file (mp4/mkv/webm/mov/avi through PyAV, animated
    WebP through Pillow: `video_io` reads both)."""
    from ..degrade.video_io import read_video

    return read_video(path, max_frames)[0]


def list_media(paths, exclude=None) -> list[Path]:
    """Video files given as files or folders (searched recursively), sorted per folder, leaving out
    anything inside `exclude` (the run's own output folder: its videos are results, not inputs);
    ValueError for a path that does not exist or a folder with no video."""
    from ..degrade.video_io import VIDEO_EXTENSIONS

    skip = Path(exclude).resolve() if exclude is not None else None

    def outside(f: Path) -> bool:
        return skip is None or (f.resolve() != skip and skip not in f.resolve().parents)

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in VIDEO_EXTENSIONS
                and not f.name.startswith(".")
                and outside(f)
            )
            if not found:
                raise ValueError(f"{str(p)!r} holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{str(p)!r} does not exist")
    return out


def demo_clip(frames: np.ndarray, n_frames: int, size: int) -> np.ndarray:
    """The demo's HR clip from a video: the centred `n_frames`-long window, the centred square crop
    of the full short side, area-downscaled to size x size (bicubic if the video is smaller).
    ValueError when too short."""
    t = frames.shape[0]
    if t < n_frames:
        raise ValueError(f"the video has {t} frames: the demo needs at least {n_frames}")
    s = (t - n_frames) // 2
    return np.stack([demo_frame(f, size) for f in frames[s : s + n_frames]])


def demo_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """One frame of `demo_clip`: the centred square crop of the full short side at size x size."""
    import cv2

    h, w = frame.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(
        np.ascontiguousarray(frame[y : y + side, x : x + side]), (size, size), interpolation=interp
    )


MAX_SOURCE_FRAMES = 10_000  # frames of one video whose container does not say how many it has


def read_demo_clip(path, n_frames: int, size: int) -> np.ndarray:
    """`demo_clip(read_media(path))` without holding the video: the size is probed before anything
    is decoded (frames above `video_io.MAX_FRAME_PIXELS` are refused), only the centred window is
    decoded when the container states its length, and every frame is cropped and scaled as it
    arrives, so memory stays at one source frame."""
    from ..degrade.video_io import MAX_FRAME_PIXELS, iter_frames, probe_video

    info = probe_video(path)
    if info.width * info.height > MAX_FRAME_PIXELS:
        raise ValueError(
            f"video {str(path)!r} is {info.width}x{info.height} px, above the {MAX_FRAME_PIXELS} "
            f"px limit for one frame"
        )
    if info.frames:
        if info.frames < n_frames:
            raise ValueError(
                f"the video has {info.frames} frames: the demo needs at least {n_frames}"
            )
        start = (info.frames - n_frames) // 2
        out = [
            demo_frame(f, size)
            for i, f in enumerate(iter_frames(path, start + n_frames))
            if i >= start
        ]
        if len(out) == n_frames:
            return np.stack(out)
        raise ValueError(
            f"video {str(path)!r} is truncated: it ended before frame {start + n_frames} of the "
            f"{info.frames} its container states"
        )
    frames = []
    for f in iter_frames(path, MAX_SOURCE_FRAMES + 1):
        frames.append(demo_frame(f, size))
        if len(frames) > MAX_SOURCE_FRAMES:
            raise ValueError(
                f"video {str(path)!r} has more than {MAX_SOURCE_FRAMES} frames and does not state "
                f"how many: cut it shorter"
            )
    if len(frames) < n_frames:
        raise ValueError(f"the video has {len(frames)} frames: the demo needs at least {n_frames}")
    start = (len(frames) - n_frames) // 2
    return np.stack(frames[start : start + n_frames])


def lr_clip(hr: np.ndarray, mode: str = "area", seed: int = 0) -> np.ndarray:
    """The demo's stand-in for a T2V model's low-resolution output: the HR clip at half size (area),
    after the flow-guided degradation when mode='flow' (the paper's setting: the artefacts of a base
    T2V model)."""
    from .. import degrade

    if mode not in LR_MODES:
        raise ValueError(f"LR mode {mode!r}: expected one of {LR_MODES}")
    return degrade.degrade_frames(
        hr, "none" if mode == "area" else "flow", (LR_SIZE, LR_SIZE), seed
    )
