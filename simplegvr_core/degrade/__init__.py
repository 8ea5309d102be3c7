"""Training-pair degradations (paper §4.2): flow-guided, model-guided (SDEdit) and classic (RealBasicVSR).

    flow_guided.py   motion blur + colour bleeding from DIS optical flow (numpy / OpenCV)
    classic.py       RealBasicVSR second-order chain (OpenCV, PyAV)
    model_guided.py  SDEdit of latents with any base-model velocity (torch)
    video_io.py      video files <-> uint8 [T, H, W, 3] (PyAV)
    cli.py           `simplegvr degrade`

Nothing heavy is imported here; `degrade_frames` runs the pixel-space modes on a clip in memory.
"""

from __future__ import annotations

MODES = ("flow", "classic", "flow+classic")


def degrade_frames(frames, mode: str = "flow", lr_size: tuple[int, int] | None = None, seed=None, strength: float = 1.0,
                   flow_config=None, classic_config=None):
    """Degrade uint8 frames [T, H, W, 3] with `mode` (flow | classic | flow+classic).

    lr_size: (width, height) of the output (OpenCV order, as `--lr-size 848x480`); default the input
    size. flow: flow-guided at the input size, then an area resize. classic: the RealBasicVSR chain,
    which ends at lr_size. flow+classic: flow-guided, then classic. `strength` multiplies the flow
    degradation and is the classic severity (clipped to [0, 1]); explicit configs take precedence.
    One numpy Generator from `seed` drives both stages, so the same seed gives the same output.
    """
    import cv2
    import numpy as np

    from .classic import ClassicConfig, classic_degrade
    from .flow_guided import FlowGuidedConfig, flow_guided
    from .video_io import check_frames

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    if strength < 0:
        raise ValueError(f"strength={strength}: expected >= 0")
    frames = check_frames(frames, "frames")
    if lr_size is not None and (len(lr_size) != 2 or any(int(v) != v or v < 2 for v in lr_size)):
        raise ValueError(f"lr_size={lr_size}: expected (width, height) with both >= 2")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = frames
    if mode in ("flow", "flow+classic"):
        x = flow_guided(x, flow_config or FlowGuidedConfig(strength=strength), rng)
    if mode == "flow":
        if lr_size is not None and (x.shape[2], x.shape[1]) != tuple(lr_size):
            x = np.stack([cv2.resize(f, tuple(int(v) for v in lr_size), interpolation=cv2.INTER_AREA) for f in x])
        return x
    return classic_degrade(x, lr_size, classic_config or ClassicConfig().scaled(min(1.0, strength)), rng)
