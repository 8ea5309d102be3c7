"""Training-pair degradations (paper §4.2): flow-guided, model-guided (SDEdit) and classic
(RealBasicVSR).

    flow_guided.py   motion blur + colour bleeding from DIS optical flow (numpy / OpenCV)
    classic.py       RealBasicVSR second-order chain (OpenCV, PyAV)
    model_guided.py  SDEdit of latents with any base-model velocity (torch)
    video_io.py      video files <-> uint8 [T, H, W, 3] (PyAV)

This file holds the one degradation chain of the pixel-space modes (`iter_degrade` /
`degrade_frames`), its list of modes and its seeding, used alike by `simplegvr degrade`, the Flow
Degrade node and training: the same frames, mode, size and seed give the same LR frames everywhere.
Nothing heavy is imported here.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import seeding

MODES = ("none", "flow", "classic", "flow+classic")
# px: DIS optical flow fails on frames under 12 px (cv2.error); leave it some room
MIN_FLOW_SIDE = 16
# a frame larger than this is refused unless the caller raises the limit
DEFAULT_MAX_FRAME_PIXELS = 8192 * 8192


def check_modes(spec: str) -> list[str]:
    """The modes of a degradation spec: one of MODES, or several joined by commas (one drawn per
    clip)."""
    modes = [m.strip() for m in str(spec).split(",")]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(
            f"degradation {spec!r}: expected one of {MODES}, or several joined by commas "
            "(e.g. 'none,flow': one drawn per clip)"
        )
    return modes


def pick_mode(spec: str, seed) -> str:
    """The mode a clip gets: the spec's only mode, or one of 'a,b,...' drawn from `seed`'s
    DEGRADE_MODE stream."""
    modes = check_modes(spec)
    if len(modes) == 1:
        return modes[0]
    return modes[int(seeding.numpy_rng(seed, seeding.DEGRADE_MODE).integers(len(modes)))]


def degrade_memory(
    frames: int,
    hw: tuple[int, int],
    lr_hw: tuple[int, int] | None,
    mode: str,
    streaming: bool = False,
) -> int:
    """A rough upper bound of the bytes one degradation of `frames` frames of size hw=(H, W) holds
    at its peak.

    The classic chain keeps float32 copies of every frame through its stages, and its random
    up-scale can make them 1.5x larger per side; flow-guided holds the clip (or, streaming, two
    frames) plus flow and blur buffers."""
    h, w = hw
    lh, lw = lr_hw or hw
    frame, lr_frame = h * w * 3, lh * lw * 3
    # frames held at once: a streaming run keeps one of look-ahead
    held = 2 if streaming else frames
    if mode == "none":
        return held * (frame + lr_frame)
    flow_work = 40 * h * w  # flow (float32 x2), gray frames, blur and blend buffers
    if mode == "flow":
        return held * (2 * frame + lr_frame) + flow_work
    classic = frames * frame * (1 + 4 * 2.25 * 2)
    return int(classic + (flow_work + frames * frame if mode == "flow+classic" else 0))


def check_sizes(
    frame_hw: tuple[int, int],
    mode: str,
    frames: int,
    lr_hw: tuple[int, int] | None,
    *,
    max_memory: int | None = None,
    streaming: bool = False,
    what: str = "frames",
) -> None:
    """Refuse (ValueError) frames too small for the optical flow or too large for memory, before
    decoding or allocating anything. max_memory: bytes allowed (None: DEFAULT_MAX_FRAME_PIXELS per
    frame and what the host has available now)."""
    from ..memory import available_memory, format_bytes

    h, w = frame_hw
    if mode in ("flow", "flow+classic") and min(h, w) < MIN_FLOW_SIDE:
        raise ValueError(
            f"{what} are {w}x{h} px: the flow-guided degradation needs frames of at least "
            f"{MIN_FLOW_SIDE}x{MIN_FLOW_SIDE} px (optical flow)"
        )
    if lr_hw is not None and (
        len(lr_hw) != 2 or any(isinstance(v, bool) or int(v) != v or v < 2 for v in lr_hw)
    ):
        raise ValueError(f"LR size {lr_hw}: expected (height, width) with both >= 2")
    need = degrade_memory(frames, (h, w), lr_hw, mode, streaming)
    if max_memory is None:
        for name, (ph, pw) in (("input", (h, w)), ("LR", lr_hw or (h, w))):
            if ph * pw > DEFAULT_MAX_FRAME_PIXELS:
                raise ValueError(
                    f"{what}: the {name} frames are {pw}x{ph} px, above the "
                    f"{DEFAULT_MAX_FRAME_PIXELS} px limit for one frame (raise the memory limit, "
                    f"CLI: --max-memory GiB, if you mean it)"
                )
        limit = available_memory("cpu")
    else:
        limit = int(max_memory)
    if need > limit:
        raise ValueError(
            f"{what}: degrading {frames} frames of {w}x{h} px ({mode}) needs about "
            f"{format_bytes(need)}, but {format_bytes(limit)} "
            f"{'is available' if max_memory is None else 'is the limit'} (CLI: --max-frames, a "
            f"smaller --lr-size, or --max-memory GiB if you have the memory)"
        )


def iter_degrade(
    frames: Iterable,
    mode: str = "flow",
    lr_size: tuple[int, int] | None = None,
    seed=0,
    *,
    flow_config=None,
    classic_config=None,
) -> Iterator:
    """Degrade uint8 RGB frames [H, W, 3] with `mode` and yield the LR frames one by one.

    mode: one of MODES or a comma list (one drawn from the seed). lr_size: (H, W) of the output,
    default the input size. none: area resize. flow: flow-guided at the input size, then an area
    resize; it streams (one frame of look-ahead). classic: the RealBasicVSR chain, which ends at
    lr_size. flow+classic: flow-guided, then classic (both need the whole clip). Seeding: the
    flow-guided and classic stages draw from their own streams of `seed` (seeding.FLOW_DEGRADE /
    CLASSIC_DEGRADE), so the same seed gives the same output in every host, and either stage's draws
    do not depend on the other's.
    """
    import cv2
    import numpy as np

    from .classic import ClassicConfig, classic_degrade
    from .flow_guided import FlowGuidedConfig, iter_flow_guided

    seed = seeding.check_seed(seed)
    mode = pick_mode(mode, seed)
    if lr_size is not None:
        if len(lr_size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 2 for v in lr_size):
            raise ValueError(f"lr_size={lr_size}: expected (height, width) with both >= 2")
        lr_size = (int(lr_size[0]), int(lr_size[1]))

    def resized(stream):
        for f in stream:
            if lr_size is not None and f.shape[:2] != lr_size:
                f = cv2.resize(f, lr_size[::-1], interpolation=cv2.INTER_AREA)
            yield f

    if mode in ("flow", "flow+classic"):
        rng = seeding.numpy_rng(seed, seeding.FLOW_DEGRADE)
        frames = iter_flow_guided(frames, flow_config or FlowGuidedConfig(), rng)
    if mode in ("none", "flow"):
        yield from resized(frames)
        return
    clip = frames if isinstance(frames, np.ndarray) else np.stack(list(frames))
    rng = seeding.numpy_rng(seed, seeding.CLASSIC_DEGRADE)
    yield from classic_degrade(clip, lr_size, classic_config or ClassicConfig(), rng)


def degrade_frames(
    frames,
    mode: str = "flow",
    lr_size: tuple[int, int] | None = None,
    seed=0,
    *,
    flow_config=None,
    classic_config=None,
    on_frame=None,
):
    """`iter_degrade` on a clip in memory: uint8 [T, H, W, 3] -> uint8 [T, h, w, 3] (lr_size = (h,
    w)). on_frame(i) runs as input frame i is taken up (progress and cancel during the flow-guided
    stage; the classic stage then runs on the whole clip)."""
    import numpy as np

    from .video_io import check_frames

    frames = check_frames(frames, "frames")
    check_sizes(frames.shape[1:3], pick_mode(mode, seed), len(frames), lr_size)

    def taken():
        for i, f in enumerate(frames):
            if on_frame is not None:
                on_frame(i)
            yield f

    return np.stack(
        list(
            iter_degrade(
                taken(), mode, lr_size, seed, flow_config=flow_config, classic_config=classic_config
            )
        )
    )


def file_seed(seed: int, rel: str) -> int:
    """A per-file seed from the run seed (all of its bits) and the file's path relative to IN
    (stable across runs and machines)."""
    return seeding.derive_seed(seed, seeding.FILE, zlib.crc32(rel.encode()))


def degrade_file(
    src,
    dst,
    mode: str = "flow",
    seed: int = 0,
    lr_size: tuple[int, int] | None = None,
    strength: float = 1.0,
    crf: int | None = None,
    max_frames: int | None = None,
    dis_preset: str = "ultrafast",
    progress: bool = False,
    max_memory: int | None = None,
    replace: bool = True,
) -> int:
    """Degrade one video file into an H.264 mp4 at `dst` (written atomically) with
    `degrade.iter_degrade`.

    lr_size: (H, W) of the output (default the input size). The frame size and count the container
    states are checked against the memory the mode needs before anything is decoded. replace=False:
    never over an existing `dst`, even one that appears while this runs. Returns the frame count."""
    import math

    from tqdm.auto import tqdm

    from .classic import ClassicConfig
    from .flow_guided import FlowGuidedConfig
    from .video_io import DEFAULT_CRF, VideoWriter, iter_frames, probe_video

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    if not (math.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength={strength}: expected a finite number >= 0")
    seed = seeding.check_seed(seed)
    info = probe_video(src)
    total = (
        min(info.frames, max_frames)
        if info.frames and max_frames
        else (info.frames or max_frames or None)
    )
    streaming = mode in ("none", "flow")
    check_sizes(
        (info.height, info.width),
        mode,
        total or 1,
        lr_size,
        max_memory=max_memory,
        streaming=streaming,
        what=f"video {str(src)!r}",
    )
    flow_cfg = FlowGuidedConfig(strength=strength, dis_preset=dis_preset)
    classic_cfg = ClassicConfig().scaled(min(1.0, strength))
    bar = tqdm(
        total=total,
        desc=Path(src).name,
        unit="frame",
        disable=not progress,
        leave=False,
        file=sys.stderr,
    )
    n = 0
    try:
        with VideoWriter(
            dst, info.fps, crf=DEFAULT_CRF if crf is None else crf, replace=replace
        ) as writer:
            frames = iter_frames(src, max_frames)
            for frame in iter_degrade(
                frames, mode, lr_size, seed, flow_config=flow_cfg, classic_config=classic_cfg
            ):
                writer.write(frame)
                n += 1
                bar.update(1)
    finally:
        bar.close()
    return n
