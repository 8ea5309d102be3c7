"""Flow-guided degradation (paper §4.2.1): the motion artefacts of a base T2V model, made from real
video.

Two artefacts are simulated per frame from the optical flow to the previous frame:

* **colour bleeding** - ellipses placed inside moving regions take their colours from the previous
  frame (sampled at a Gaussian-random offset along the flow) and are blended into the current frame
  with a weight that peaks at the ellipse centre and falls to 0 at its edge;
* **motion-adaptive blur** - every block (16x16 by default) gets a line kernel whose length grows
  with the block's mean flow magnitude and whose direction follows the mean flow; static blocks are
  left untouched and neighbouring blocks' kernels cross-fade over a few pixels (`blend_width`), so
  there are no block seams.

Frame 0 has no previous frame: it is only blurred, using the flow between frames 0 and 1.

Flow: OpenCV DIS (Kroeger et al., ECCV'16) on grayscale uint8, `calc(cur, prev)`, so that
`prev(x + flow(x)) ≈ cur(x)`. DIS's coarse-to-fine search aliases on periodic texture (stripes of
8-px period moving 6 px/frame come out as ~2 px the wrong way), so by default `dealias_flow`
re-checks it: block matching along each moving block's flow direction over a 48-px window, which
sees the moving object's edges, replaces a block's flow only where a clearly better match is found
and the per-pixel warp residual drops (see `dealias_flow`). Everything random comes from one
`numpy.random.Generator`, so a seed reproduces a clip exactly. The paper leaves the preset,
thresholds, ellipse and kernel parameters open (paper-details.md §4); the defaults below are ours
and every one of them is a field of `FlowGuidedConfig`.

Speed: the line kernels are box filters along a direction, computed as an exact integer shear
(`cv2.remap`, nearest, wrap) + `cv2.blur` + the inverse shear, for a small bank of angles x lengths,
only over the moving part of the frame; the alias check adds ~1-8 ms per 540p frame pair, depending
on how much of the frame DIS leaves unexplained; see benchmarks/degrade_speed.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

import cv2
import numpy as np

from .video_io import check_frames

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# Odd line-kernel lengths of the bank; a block uses the one nearest its continuous length.
LENGTH_LEVELS = (1, 3, 5, 7, 11, 15, 21, 31, 45, 63)
SHORT_KERNEL = 7  # oblique kernels with at most this many taps are applied with cv2.filter2D
ALIAS_CELL = 16  # px of the flow frames: the cells whose flow `dealias_flow` checks


@dataclass
class FlowGuidedConfig:
    """All parameters of the flow-guided degradation. A `(lo, hi)` pair is a range drawn uniformly
    (per clip for the blur gain, per ellipse for the ellipse parameters); give `(v, v)` to fix
    it."""

    # --- flow and motion mask
    # ultrafast | fast | medium (reference-facts §5: 23 / 29 / 102 ms at 540p)
    dis_preset: str = "ultrafast"
    # compute the flow on frames resized by this factor (0.25-1); flow is rescaled back
    flow_scale: float = 1.0
    # re-check DIS against block matching (`dealias_flow`): periodic texture aliases
    alias_check: bool = True
    # px/frame (even, 4-64): how far along its direction a block's motion is searched
    alias_search: int = 16
    # px/frame: a pixel or block moving less is static (0.5-2 sensible)
    motion_threshold: float = 1.0
    strength: float = 1.0  # multiplies the blur gain and the bleeding weight (0 = no change)
    # --- colour bleeding
    bleed: bool = True
    bleed_prob: float = 0.9  # probability that a frame (t >= 1) gets any ellipses
    ellipses: tuple[int, int] = (1, 4)  # ellipses per frame
    ellipse_size: tuple[float, float] = (0.03, 0.10)  # semi-major axis as a fraction of min(H, W)
    ellipse_aspect: tuple[float, float] = (0.35, 1.0)  # minor / major axis
    # rad: Gaussian std of the major axis around the flow direction
    ellipse_angle_jitter: float = 0.35
    # blend weight of the previous-frame colour at the centre
    bleed_weight: tuple[float, float] = (0.3, 0.7)
    # sample the previous frame at x + s*flow(x), s ~ N(mean, std) per ellipse:
    bleed_offset_mean: float = 0.0
    # s = 0 takes the co-located (stale) colour, s = 1 the motion-compensated one
    bleed_offset_std: float = 0.6
    # Gaussian smoothing of the sampled colours, x minor axis
    bleed_smooth: tuple[float, float] = (0.0, 0.3)
    # --- motion-adaptive blur
    blur: bool = True
    block_size: int = 16  # px per block side
    # Gaussian sigma (blocks) smoothing the blur direction, and the length over moving blocks
    block_smooth: float = 1.0
    # px: neighbouring blocks' kernels cross-fade over this width (block_size = bilinear)
    blend_width: int = 8
    # kernel length per px of block motion (a shutter fraction)
    blur_gain: tuple[float, float] = (0.5, 1.2)
    max_kernel: int = 31  # longest line kernel, px (odd)
    blur_angles: int = 8  # directions in the kernel bank, over 180 degrees

    def __post_init__(self) -> None:
        if self.dis_preset not in DIS_PRESETS:
            raise ValueError(
                f"dis_preset={self.dis_preset!r}: expected one of {sorted(DIS_PRESETS)}"
            )
        if not 0.1 <= self.flow_scale <= 1.0:
            raise ValueError(f"flow_scale={self.flow_scale}: expected a factor in [0.1, 1]")
        if not isinstance(self.alias_check, (bool, np.bool_)):
            raise ValueError(f"alias_check={self.alias_check!r}: expected True or False")
        if (
            int(self.alias_search) != self.alias_search
            or not 4 <= self.alias_search <= 64
            or self.alias_search % 2
        ):
            raise ValueError(
                f"alias_search={self.alias_search}: expected an even number of px in [4, 64]"
            )
        self.alias_search = int(self.alias_search)
        for name in ("motion_threshold", "strength", "bleed_offset_std", "ellipse_angle_jitter"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a number >= 0")
        if self.motion_threshold <= 0:
            raise ValueError(f"motion_threshold={self.motion_threshold}: expected > 0 px/frame")
        if not 0 <= self.bleed_prob <= 1:
            raise ValueError(f"bleed_prob={self.bleed_prob}: expected a probability in [0, 1]")
        for name, lo_min, hi_max in (
            ("ellipses", 0, 1000),
            ("ellipse_size", 1e-4, 1.0),
            ("ellipse_aspect", 0.05, 1.0),
            ("bleed_weight", 0.0, 1.0),
            ("bleed_smooth", 0.0, 10.0),
            ("blur_gain", 0.0, 100.0),
        ):
            v = tuple(getattr(self, name))
            if len(v) != 2 or not lo_min <= v[0] <= v[1] <= hi_max:
                raise ValueError(
                    f"{name}={getattr(self, name)}: expected a range (lo, hi) with {lo_min} <= lo "
                    f"<= hi <= {hi_max}"
                )
            setattr(self, name, v)
        if int(self.ellipses[0]) != self.ellipses[0] or int(self.ellipses[1]) != self.ellipses[1]:
            raise ValueError(f"ellipses={self.ellipses}: expected a range of integers")
        if not 0 <= self.block_smooth <= 10:
            raise ValueError(
                f"block_smooth={self.block_smooth}: expected a sigma in blocks in [0, 10]"
            )
        if self.block_size < 4:
            raise ValueError(f"block_size={self.block_size}: expected >= 4 px")
        if not 2 <= self.blend_width <= self.block_size or self.blend_width % 2:
            raise ValueError(
                f"blend_width={self.blend_width}: expected an even width in [2, "
                f"block_size={self.block_size}] px"
            )
        if self.max_kernel < 3 or self.max_kernel % 2 == 0:
            raise ValueError(f"max_kernel={self.max_kernel}: expected an odd length >= 3")
        if not 2 <= self.blur_angles <= 64:
            raise ValueError(f"blur_angles={self.blur_angles}: expected 2..64 directions")

    @classmethod
    def from_dict(cls, d: dict) -> FlowGuidedConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"flow-guided config has unknown keys {unknown}: expected a subset of "
                f"{sorted(names)}"
            )
        return cls(**d)


@dataclass
class Ellipse:
    """One colour-bleeding ellipse as drawn (pixel units; angle of the major axis in rad)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    offset: float  # s: where along the flow the previous frame was sampled
    weight: float  # blend weight at the centre
    smooth: float  # Gaussian sigma (px) applied to the sampled colours


# --------------------------------------------------------------------------------------------
# flow
def make_dis(preset: str = "ultrafast") -> cv2.DISOpticalFlow:
    if preset not in DIS_PRESETS:
        raise ValueError(f"DIS preset {preset!r}: expected one of {sorted(DIS_PRESETS)}")
    return cv2.DISOpticalFlow_create(DIS_PRESETS[preset])


def to_gray(frame: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Grayscale uint8 (DIS accepts nothing else), optionally resized by `scale`."""
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale != 1.0:
        g = cv2.resize(
            g,
            (max(8, round(g.shape[1] * scale)), max(8, round(g.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    return g


def compute_flow(
    cur_gray: np.ndarray,
    prev_gray: np.ndarray,
    dis: cv2.DISOpticalFlow | None = None,
    size: tuple[int, int] | None = None,
    alias_search: int = 0,
) -> np.ndarray:
    """DIS flow [H, W, 2] float32 from the current to the previous frame: prev(x + flow) ≈ cur(x).

    `alias_search > 0`: re-check the flow with `dealias_flow(..., search=alias_search)` (px of the
    grayscale frames) before any resize. `size=(H, W)`: the flow was computed on smaller grayscale
    frames; resize it and its vectors to H x W.
    """
    for name, g in (("cur_gray", cur_gray), ("prev_gray", prev_gray)):
        if not isinstance(g, np.ndarray) or g.dtype != np.uint8 or g.ndim != 2:
            raise ValueError(
                f"{name} is {getattr(g, 'dtype', type(g).__name__)} {getattr(g, 'shape', '')}: "
                "expected a 2-D uint8 grayscale frame (DIS accepts nothing else)"
            )
    if cur_gray.shape != prev_gray.shape:
        raise ValueError(
            f"cur_gray {cur_gray.shape} and prev_gray {prev_gray.shape}: expected the same size"
        )
    if min(cur_gray.shape) < 12:
        raise ValueError(
            f"frames of {cur_gray.shape[1]}x{cur_gray.shape[0]} px (at the flow scale) are too "
            f"small for DIS optical flow: expected at least 12x12 px"
        )
    try:
        flow = (dis or make_dis()).calc(cur_gray, prev_gray, None)
    except cv2.error as e:
        raise ValueError(
            f"DIS optical flow failed on {cur_gray.shape[1]}x{cur_gray.shape[0]} px frames: "
            f"{str(e).strip().splitlines()[-1]}"
        ) from None
    if alias_search:
        flow = dealias_flow(flow, cur_gray, prev_gray, alias_search)
    if size is not None and tuple(size) != flow.shape[:2]:
        h, w = size
        sy, sx = h / flow.shape[0], w / flow.shape[1]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= sx
        flow[..., 1] *= sy
    return flow


# Thresholds of `dealias_flow` (grey levels are mean absolute differences of uint8 frames).
ALIAS_RESIDUAL = 8.0  # a cell is suspect where DIS's warp residual over its window exceeds this
ALIAS_MIN_MOTION = 0.5  # px: cells moving less than this are checked only next to moving ones
ALIAS_BETTER = 0.9  # a match must cost less than this times the cost at DIS's vector ...
ALIAS_MIN_CHANGE = 1.5  # px: ... lie at least this far from it ...
ALIAS_ACCEPT = 0.8  # ... and cut the window's per-pixel warp residual below this fraction
ALIAS_ANGLES = 8  # search lines over 180 degrees
ALIAS_TIE = 0.15  # window costs within this fraction of the lowest count as a tie


def _cell_mean(img: np.ndarray, n: int) -> np.ndarray:
    """Mean over n x n cells (n a power of two) by repeated 2x INTER_AREA (several times faster than
    one)."""
    while n > 1:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        n //= 2
    return img


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean over the last two axes, edge-replicated."""
    p = np.concatenate([a[..., :1, :], a, a[..., -1:, :]], axis=-2)
    s = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    p = np.concatenate([s[..., :1], s, s[..., -1:]], axis=-1)
    return (p[..., :-2] + p[..., 1:-1] + p[..., 2:]) * np.float32(1 / 9)


@functools.lru_cache(maxsize=64)
def _line_shifts(a: int, nang: int, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer shifts (dx, dy) [K, 2] along direction a * pi / nang, |t| <= reach, and their
    positions t along the line [K] (ascending)."""
    c, s = math.cos(a * math.pi / nang), math.sin(a * math.pi / nang)
    shifts = sorted(
        {(round(t * c), round(t * s)) for t in range(-reach, reach + 1)},
        key=lambda d: d[0] * c + d[1] * s,
    )
    sh = np.array(shifts, np.int64)
    return sh, (sh[:, 0] * c + sh[:, 1] * s).astype(np.float32)


_GRIDS: dict = {}


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    g = _GRIDS.get((h, w))
    if g is None:
        if len(_GRIDS) >= 8:
            _GRIDS.clear()
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
        _GRIDS[(h, w)] = g = (gx, gy)
    return g


def dealias_flow(
    flow: np.ndarray,
    cur_gray: np.ndarray,
    prev_gray: np.ndarray,
    search: int = 16,
    info: dict | None = None,
) -> np.ndarray:
    """Correct DIS flow where it aliased on periodic texture; `flow` is changed in place and
    returned.

    DIS refines its flow coarse to fine with 8-px patches. On periodic texture whose coarse levels
    carry no motion (stripes average out to grey), it settles in the alias nearest zero: 8-px
    stripes moving 6 px come out as ~2 px the other way, so the block is hardly blurred. Only the
    object's edges tell the aliases apart, so this re-checks the flow per ALIAS_CELL cell, at half
    resolution, over a 3 x 3-cell (48 px) window:

    1. suspect cells: DIS's per-pixel warp residual over the window > ALIAS_RESIDUAL;
    2. for the suspect cells moving 0.5 .. search - 2 px, shifts along the line of their own flow
       direction (one of 8; whole half-resolution pixels, so 2-px steps), |shift| <= search, are
       tried on the window (mean absolute difference);
       cells that look static take the lines of their moving neighbours;
    3. a cell takes the best shift (parabola-refined; of shifts within ALIAS_TIE of the lowest cost,
       the longest: a window that misses the leading edge cannot tell the aliases apart, and DIS
       settles in the short one) if it costs < ALIAS_BETTER x the cost at DIS's vector, lies >=
       ALIAS_MIN_CHANGE px from it and is itself that long (the check finds motion DIS missed; it
       never stops a block);
    4. and keeps it only if, with all the new vectors in place, the per-pixel warp residual over its
       window falls below ALIAS_ACCEPT x DIS's. The cell's flow is shifted by (new - DIS's mean), so
       its mean becomes the new vector and its per-pixel detail stays.

    Cells that DIS explains (static background, well-tracked texture) are never touched, so static
    regions stay bit-exact; everything is deterministic. Motion beyond `search`, or an alias of 0
    (stripes moving a whole period), is left as DIS found it. `info`, if given, receives the counts
    'checked' and 'corrected'.
    """
    h, w = cur_gray.shape
    if prev_gray.shape != (h, w) or flow.shape != (h, w, 2) or flow.dtype != np.float32:
        raise ValueError(
            f"flow {flow.dtype} {flow.shape}, prev_gray {prev_gray.shape}: expected float32 "
            f"{(h, w, 2)} and {(h, w)} like cur_gray"
        )
    cell, sub = ALIAS_CELL, 2
    c = cell // sub  # cell side at half resolution
    ch, cw = h // cell, w // cell
    if info is not None:
        info.update(checked=0, corrected=0)
    if ch < 3 or cw < 3 or search < 4:
        return flow
    reach = search // sub
    hh, ww = ch * c, cw * c  # half-resolution area covered by whole cells
    half = (w // sub, h // sub)
    cur_s = cv2.resize(cur_gray, half, interpolation=cv2.INTER_AREA)[:hh, :ww]
    prev_s = cv2.resize(prev_gray, half, interpolation=cv2.INTER_AREA)[:hh, :ww]
    # full-resolution px, half-res grid
    fs = cv2.resize(flow, half, interpolation=cv2.INTER_AREA)[:hh, :ww]
    fm = _cell_mean(fs, c)  # [ch, cw, 2] cell means
    gx, gy = _grid(hh, ww)

    def residual(f):  # per-cell window mean of |cur - prev warped by f|
        warped = cv2.remap(
            prev_s,
            gx + f[..., 0] * (1 / sub),
            gy + f[..., 1] * (1 / sub),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return _box3(_cell_mean(cv2.absdiff(cur_s, warped), c).astype(np.float32))

    r_dis = residual(fs)
    mag = np.hypot(fm[..., 0], fm[..., 1])
    suspect = r_dis > ALIAS_RESIDUAL
    check = suspect & (mag >= ALIAS_MIN_MOTION) & (mag <= (reach - 1) * sub)
    if not check.any():
        return flow
    nang = ALIAS_ANGLES
    abin = (
        np.rint((np.arctan2(fm[..., 1], fm[..., 0]) % np.pi) / (np.pi / nang)).astype(np.int64)
        % nang
    )
    pad = reach + 1
    pp = cv2.copyMakeBorder(prev_s, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    best = np.full((ch, cw), np.inf, np.float32)  # lowest window cost found, and its vector
    bvec = np.zeros((ch, cw, 2), np.float32)
    # window cost at DIS's own vector (on its own line)
    c_dis = np.full((ch, cw), np.nan, np.float32)
    c_zero = np.full((ch, cw), np.nan, np.float32)  # window cost at zero motion
    for a in np.unique(abin[check]):
        ys, xs = np.nonzero(check & (abin == a))
        # this line's cells and their neighbours ...
        ty0, ty1 = max(0, ys.min() - 1), min(ch, ys.max() + 2)
        tx0, tx1 = max(0, xs.min() - 1), min(cw, xs.max() + 2)
        # ... and windows
        y0, y1, x0, x1 = max(0, ty0 - 1), min(ch, ty1 + 1), max(0, tx0 - 1), min(cw, tx1 + 1)
        sh, tpar = _line_shifts(int(a), nang, reach)
        k = len(sh)
        rh, rw = (y1 - y0) * c, (x1 - x0) * c
        cs = cur_s[y0 * c : y1 * c, x0 * c : x1 * c]
        d = np.empty((k, rh, rw), np.uint8)
        for i, (dx, dy) in enumerate(sh.tolist()):
            cv2.absdiff(
                pp[
                    pad + y0 * c + dy : pad + y0 * c + dy + rh,
                    pad + x0 * c + dx : pad + x0 * c + dx + rw,
                ],
                cs,
                dst=d[i],
            )
        cost = _box3(
            _cell_mean(d.reshape(k * rh, rw), c).astype(np.float32).reshape(k, y1 - y0, x1 - x0)
        )
        cost = cost[:, ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]
        region = (slice(ty0, ty1), slice(tx0, tx1))
        c_zero[region] = cost[int(np.argmin(np.abs(tpar)))]
        # best shift: of those within ALIAS_TIE of the lowest cost, the longest (the window cannot
        # tell them apart, and DIS misses the long ones), refined by a parabola through its
        # neighbours
        near = cost <= (1 + ALIAS_TIE) * cost.min(0)
        kb = np.where(near, np.abs(tpar)[:, None, None], -1.0).argmax(0)
        cb = np.take_along_axis(cost, kb[None], 0)[0]
        km, kp = np.maximum(kb - 1, 0), np.minimum(kb + 1, k - 1)
        cm, cp = np.take_along_axis(cost, km[None], 0)[0], np.take_along_axis(cost, kp[None], 0)[0]
        den = cm - 2 * cb + cp
        off = np.where(
            (den > 1e-6) & (km != kb) & (kp != kb), 0.5 * (cm - cp) / np.maximum(den, 1e-6), 0.0
        )
        tb = tpar[kb] + np.where(off > 0, off * (tpar[kp] - tpar[kb]), off * (tpar[kb] - tpar[km]))
        better = cb < best[region]
        u = np.float32([math.cos(a * math.pi / nang), math.sin(a * math.pi / nang)])
        best[region] = np.where(better, cb, best[region])
        bvec[region] = np.where(better[..., None], (tb * sub)[..., None] * u, bvec[region])
        # cost at DIS's own vector: its position on the line, interpolated between the shifts around
        # it
        t_dis = (fm[ys, xs] @ u) / sub
        cc = cost[:, ys - ty0, xs - tx0]
        j = np.clip(np.searchsorted(tpar, t_dis), 1, k - 1)
        f = np.clip((t_dis - tpar[j - 1]) / (tpar[j] - tpar[j - 1]), 0.0, 1.0)
        n = np.arange(len(ys))
        c_dis[ys, xs] = (1 - f) * cc[j - 1, n] + f * cc[j, n]
    looks_static = ~np.isnan(c_zero) & (mag < ALIAS_MIN_MOTION)
    # NaN (never compared true) for fast cells off every line
    ref = np.where(looks_static, c_zero, c_dis)
    with np.errstate(invalid="ignore"):
        cand = suspect & (check | looks_static) & (best < ALIAS_BETTER * ref)
    cand &= np.hypot(bvec[..., 0] - fm[..., 0], bvec[..., 1] - fm[..., 1]) >= ALIAS_MIN_CHANGE
    # it finds motion; stopping it is DIS's call
    cand &= np.hypot(bvec[..., 0], bvec[..., 1]) >= ALIAS_MIN_CHANGE
    if info is not None:
        info["checked"] = int(check.sum())
    if not cand.any():
        return flow
    delta = np.where(cand[..., None], bvec - fm, 0.0).astype(np.float32)
    r_new = residual(fs + cv2.resize(delta, (ww, hh), interpolation=cv2.INTER_NEAREST))
    cand &= r_new < ALIAS_ACCEPT * r_dis
    if info is not None:
        info["corrected"] = int(cand.sum())
    if not cand.any():
        return flow
    delta[~cand] = 0.0
    ys, xs = np.nonzero(cand)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    flow[y0 * cell : y1 * cell, x0 * cell : x1 * cell] += cv2.resize(
        delta[y0:y1, x0:x1], ((x1 - x0) * cell, (y1 - y0) * cell), interpolation=cv2.INTER_NEAREST
    )
    return flow


# --------------------------------------------------------------------------------------------
# colour bleeding
def bleed_colours(
    cur: np.ndarray,
    prev: np.ndarray,
    flow: np.ndarray,
    rng: np.random.Generator,
    config: FlowGuidedConfig | None = None,
    count: int | None = None,
) -> tuple[np.ndarray, list[Ellipse]]:
    """Blend ellipses of previous-frame colour into `cur` inside its moving regions.

    cur, prev: uint8 [H, W, 3]; flow: [H, W, 2] from cur to prev. `count` overrides the random
    number of ellipses. Returns the new frame (cur is not modified) and the ellipses drawn.
    """
    config = config or FlowGuidedConfig()
    _check_pair(cur, prev, flow)
    h, w = cur.shape[:2]
    thr = config.motion_threshold
    if count is None:
        count = (
            int(rng.integers(config.ellipses[0], config.ellipses[1] + 1))
            if rng.random() < config.bleed_prob
            else 0
        )
    if count <= 0 or config.strength <= 0:
        return cur.copy(), []
    # candidate centres on a sparse grid: cheap, and plenty of them
    step = 4 if min(h, w) >= 32 else 1
    sub = flow[::step, ::step]
    cand = np.flatnonzero((sub[..., 0] ** 2 + sub[..., 1] ** 2) >= thr * thr)
    out = cur.copy()
    drawn: list[Ellipse] = []
    if cand.size == 0:
        return out, drawn
    for _ in range(count):
        iy, ix = divmod(int(cand[rng.integers(cand.size)]), sub.shape[1])
        cy = min(h - 1, iy * step + int(rng.integers(step)))
        cx = min(w - 1, ix * step + int(rng.integers(step)))
        fx, fy = (float(v) for v in flow[cy, cx])
        angle = math.atan2(fy, fx) + float(rng.normal(0.0, config.ellipse_angle_jitter))
        a = max(2.0, float(rng.uniform(*config.ellipse_size)) * min(h, w))
        b = max(1.5, a * float(rng.uniform(*config.ellipse_aspect)))
        peak = min(1.0, float(rng.uniform(*config.bleed_weight)) * config.strength)
        s = float(rng.normal(config.bleed_offset_mean, config.bleed_offset_std))
        smooth = float(rng.uniform(*config.bleed_smooth)) * b
        e = Ellipse(float(cx), float(cy), a, b, angle, s, peak, smooth)
        _draw_ellipse(out, prev, flow, e, thr)
        drawn.append(e)
    return out, drawn


def _draw_ellipse(
    out: np.ndarray, prev: np.ndarray, flow: np.ndarray, e: Ellipse, thr: float
) -> None:
    h, w = out.shape[:2]
    r = math.ceil(e.a) + 1
    y0, y1 = max(0, int(e.cy) - r), min(h, int(e.cy) + r + 1)
    x0, x1 = max(0, int(e.cx) - r), min(w, int(e.cx) + r + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - e.cx, yy - e.cy
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    r2 = ((dx * ca + dy * sa) / e.a) ** 2 + ((dy * ca - dx * sa) / e.b) ** 2
    fl = flow[y0:y1, x0:x1]
    mag = np.sqrt(fl[..., 0] ** 2 + fl[..., 1] ** 2)
    # weight: peak at the centre, 0 at the edge, and only where things move (soft mask 0.5-1.5 x
    # threshold)
    wgt = (e.weight * np.clip(1.0 - r2, 0.0, 1.0) * np.clip(mag / thr - 0.5, 0.0, 1.0)).astype(
        np.float32
    )
    if not wgt.any():
        return
    src = cv2.remap(
        prev,
        xx + e.offset * fl[..., 0],
        yy + e.offset * fl[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if e.smooth >= 0.3:
        src = cv2.GaussianBlur(src, (0, 0), e.smooth, borderType=cv2.BORDER_REPLICATE)
    out[y0:y1, x0:x1] = cv2.blendLinear(out[y0:y1, x0:x1], src, 1.0 - wgt, wgt)


# --------------------------------------------------------------------------------------------
# motion-adaptive blur
def kernel_levels(max_kernel: int) -> np.ndarray:
    """The kernel bank's lengths: LENGTH_LEVELS below max_kernel, then max_kernel."""
    return np.array([v for v in LENGTH_LEVELS if v < max_kernel] + [max_kernel], dtype=np.float32)


def block_motion(flow: np.ndarray, block_size: int) -> np.ndarray:
    """Mean flow per block [ceil(H/b), ceil(W/b), 2]; the frame is edge-padded to whole blocks."""
    h, w = flow.shape[:2]
    nby, nbx = -(-h // block_size), -(-w // block_size)
    if (nby * block_size, nbx * block_size) != (h, w):
        flow = cv2.copyMakeBorder(
            flow, 0, nby * block_size - h, 0, nbx * block_size - w, cv2.BORDER_REPLICATE
        )
    return cv2.resize(flow, (nbx, nby), interpolation=cv2.INTER_AREA).reshape(nby, nbx, 2)


@functools.lru_cache(maxsize=256)
def line_kernel(length: float, angle: float) -> np.ndarray:
    """The bank's line kernel for (length, angle) as a 2-D filter (for cv2.filter2D): `_odd` taps
    along the major axis, offsets round(k*j) across it (k = the slope). `directional_blur` applies
    this exact kernel where k * x_abs is an integer (everywhere for 0, 45 and 90 degrees) and the
    same digital line with another rounding phase elsewhere."""
    c, s = math.cos(angle), math.sin(angle)
    horiz = abs(c) >= abs(s)
    n = _odd(length * (abs(c) if horiz else abs(s)))
    k = (s / c) if horiz else (c / s)
    half = n // 2
    offs = np.rint(k * np.arange(-half, half + 1)).astype(int)
    ext = int(np.abs(offs).max())
    ker = np.zeros((2 * max(ext, half) + 1,) * 2, np.float32)
    mid = ker.shape[0] // 2
    for j, o in zip(range(-half, half + 1), offs):
        if horiz:
            ker[mid + o, mid + j] += 1.0 / n
        else:
            ker[mid + j, mid + o] += 1.0 / n
    ker.setflags(write=False)  # cached: shared between calls
    return ker


def _odd(x: float) -> int:
    return max(1, 2 * int(round((x - 1) / 2)) + 1)


def directional_blur(
    img: np.ndarray, angle: float, length: float, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Box blur of `img` along `angle` (rad; x right, y down) over `length` px.

    Axis-aligned: cv2.blur. Up to SHORT_KERNEL taps: cv2.filter2D with `line_kernel`. Longer: an
    exact integer shear (cv2.warpAffine, nearest, wrapping), a 1-D cv2.blur and the inverse shear,
    whose digital line is anchored to absolute coordinates (`origin` = the (y, x) of img[0, 0] in
    the frame), so a pixel gets the same kernel whatever crop it is blurred in. Shears wrap around:
    the caller pads by length/2 + 2 on every side."""
    c, s = math.cos(angle), math.sin(angle)
    horiz = abs(c) >= abs(s)
    h, w = img.shape[:2]
    n = _odd(length * (abs(c) if horiz else abs(s)))
    if n == 1:
        return img
    k = (s / c) if horiz else (c / s)
    ksize = (n, 1) if horiz else (1, n)
    if abs(k) < 1e-6:
        return cv2.blur(img, ksize, borderType=cv2.BORDER_REPLICATE)
    if n <= SHORT_KERNEL:  # a small 2-D filter is cheaper than two remaps and their maps
        return cv2.filter2D(img, -1, line_kernel(length, angle), borderType=cv2.BORDER_REPLICATE)
    # horizontal-ish: sheared[y, x] = img[y + round(k * x_abs) (mod h), x], so a line of slope k
    # becomes a row; vertical-ish: sheared[y, x] = img[y, x + round(k * y_abs) (mod w)].
    # Nearest-neighbour affine shears with a wrapping border are exact integer shifts, and the
    # inverse shear undoes them exactly.
    if horiz:
        fwd = np.float64([[1, 0, 0], [k, 1, k * origin[1]]])
        inv = np.float64([[1, 0, 0], [-k, 1, -k * origin[1]]])
    else:
        fwd = np.float64([[1, k, k * origin[0]], [0, 1, 0]])
        inv = np.float64([[1, -k, -k * origin[0]], [0, 1, 0]])
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    sheared = cv2.warpAffine(img, fwd, (w, h), flags=flags, borderMode=cv2.BORDER_WRAP)
    blurred = cv2.blur(sheared, ksize, borderType=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(blurred, inv, (w, h), flags=flags, borderMode=cv2.BORDER_WRAP)


_BLEND_MAPS: dict = {}


def _blend_maps(hp: int, wp: int, bs: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-grid coordinates of every pixel, for cv2.remap of a per-block grid to per-pixel
    weights: constant inside a block, a linear ramp `width` px wide across each block edge (width =
    bs is plain bilinear interpolation between block centres). Cached per size."""
    key = (hp, wp, bs, width)
    maps = _BLEND_MAPS.get(key)
    if maps is None:

        def axis(n):
            u = (np.arange(n) + 0.5) / bs - 0.5  # in block units, 0 at the centre of block 0
            i = np.floor(u)
            f = np.clip((u - i - 0.5) * bs / width + 0.5, 0.0, 1.0)
            return np.clip(i + f, 0, n // bs - 1).astype(np.float32)

        mx = np.ascontiguousarray(np.broadcast_to(axis(wp)[None, :], (hp, wp)))
        my = np.ascontiguousarray(np.broadcast_to(axis(hp)[:, None], (hp, wp)))
        if len(_BLEND_MAPS) >= 8:
            _BLEND_MAPS.clear()
        _BLEND_MAPS[key] = maps = (mx, my)
    return maps


_DILATE3 = np.ones((3, 3), np.uint8)


def _kernel_groups(grids: np.ndarray, angles: np.ndarray):
    """(angle bin, level, block mask) for every group of blocks blurred with one crop: the blocks
    sharing a kernel, split into connected groups (a zoom's opposite sides share an angle, and its
    lengths grow in rings, so one box around all of them would cover most of the frame)."""
    for a in np.unique(angles):
        for i in range(1, grids.shape[1]):
            used = grids[a, i] > 0
            if not used.any():
                continue
            ncomp, labels, stats, _ = cv2.connectedComponentsWithStats(
                cv2.dilate(used.astype(np.uint8), _DILATE3), connectivity=8
            )
            if ncomp <= 2:
                yield a, i, used
                continue
            for comp in range(1, ncomp):
                # dilated box: the group's blocks plus one around
                x, y, w, h = (int(v) for v in stats[comp, :4])
                mine = np.zeros_like(used)
                mine[y : y + h, x : x + w] = used[y : y + h, x : x + w] & (
                    labels[y : y + h, x : x + w] == comp
                )
                yield a, i, mine


@functools.lru_cache(maxsize=16)
def _same_kernels(levels: tuple, nang: int) -> list[tuple[int, int, int]]:
    """(level, angle bin, first bin with the identical kernel): a 3-tap line at 22.5 degrees is the
    horizontal one, so blocks of both are blurred in one pass. Only short kernels (cv2.filter2D)
    coincide."""
    out = []
    for i, length in enumerate(levels):
        if not 1 < _odd(length) <= SHORT_KERNEL:
            continue
        seen = {}
        for a in range(nang):
            key = line_kernel(float(length), a * math.pi / nang).tobytes()
            if key in seen:
                out.append((i, a, seen[key]))
            else:
                seen[key] = a
    return out


def motion_blur(
    frame: np.ndarray, flow: np.ndarray, gain: float, config: FlowGuidedConfig | None = None
) -> np.ndarray:
    """Block-wise motion-adaptive line blur of a uint8 [H, W, 3] frame given its flow [H, W, 2].

    Block length L = gain * |mean flow| (1 = untouched below the motion threshold), clipped to
    max_kernel; direction = mean flow direction quantised to `blur_angles`. Each block uses the bank
    length nearest L (LENGTH_LEVELS: within ~20 %); the per-(angle, length) block weights are
    interpolated to pixels with a `blend_width` ramp across block edges, so neighbouring blocks
    cross-fade without seams and the weights sum to 1 at every pixel. Pixels farther than
    blend_width/2 from any moving block are returned bit-exact.
    """
    config = config or FlowGuidedConfig()
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
    ):
        raise ValueError(
            f"frame is {getattr(frame, 'dtype', type(frame).__name__)} "
            f"{getattr(frame, 'shape', '')}: expected uint8 [H,W,3]"
        )
    if not isinstance(flow, np.ndarray) or flow.shape != frame.shape[:2] + (2,):
        raise ValueError(
            f"flow has shape {getattr(flow, 'shape', None)}: expected "
            f"{frame.shape[:2] + (2,)} (H, W, 2)"
        )
    if gain < 0:
        raise ValueError(f"gain={gain}: expected >= 0 (kernel length per px of motion)")
    h, w = frame.shape[:2]
    bs = config.block_size
    bm = block_motion(flow, bs)
    nby, nbx = bm.shape[:2]
    mag = np.sqrt(bm[..., 0] ** 2 + bm[..., 1] ** 2)
    # direction from the motion-weighted neighbourhood (DIS is noisy on flat areas)
    if config.block_smooth > 0:
        sm = cv2.GaussianBlur(bm, (0, 0), config.block_smooth, borderType=cv2.BORDER_REPLICATE)
        bm = np.where((sm[..., 0] ** 2 + sm[..., 1] ** 2 > 1e-6)[..., None], sm, bm)
    levels = kernel_levels(config.max_kernel)
    length = np.where(mag >= config.motion_threshold, gain * mag, 1.0).clip(1.0, levels[-1])
    moving = length > 1.0
    if not moving.any():
        return frame.copy()
    # lengths smoothed over the moving neighbours (static blocks stay untouched)
    if config.block_smooth > 0:
        mw = moving.astype(np.float32)
        num = cv2.GaussianBlur(
            length.astype(np.float32) * mw,
            (0, 0),
            config.block_smooth,
            borderType=cv2.BORDER_REPLICATE,
        )
        den = cv2.GaussianBlur(mw, (0, 0), config.block_smooth, borderType=cv2.BORDER_REPLICATE)
        length = np.where(moving, num / np.maximum(den, 1e-6), 1.0).clip(1.0, levels[-1])
    nang = config.blur_angles
    abin = (
        np.rint((np.arctan2(bm[..., 1], bm[..., 0]) % np.pi) / (np.pi / nang)).astype(np.int64)
        % nang
    )
    # each moving block takes the bank length nearest its own, at least the shortest blur (one
    # kernel per block; neighbours cross-fade at the edges)
    j = np.where(moving, np.abs(length[..., None] - levels[1:]).argmin(-1) + 1, 0)

    # blend weight of each (angle, level > 0) per block; level 0 (identity) keeps the rest
    nlev = len(levels)
    grids = np.zeros((nang, nlev, nby, nbx), np.float32)
    by, bx = np.nonzero(moving)
    ab = abin[by, bx]
    grids[ab, j[by, bx], by, bx] = 1.0
    # short kernels of neighbouring bins coincide
    for i, a, a0 in _same_kernels(tuple(levels.tolist()), nang):
        grids[a0, i] += grids[a, i]
        grids[a, i] = 0.0
    ab = np.nonzero(grids.any((1, 2, 3)))[0]

    # work on the frame padded to whole blocks: block b covers pixels [b*bs, (b+1)*bs)
    hp, wp = nby * bs, nbx * bs
    img = (
        cv2.copyMakeBorder(frame, 0, hp - h, 0, wp - w, cv2.BORDER_REPLICATE)
        if (hp, wp) != (h, w)
        else frame.copy()
    )
    mpad = int(levels[-1]) // 2 + 2  # kernel context around any crop; replicate at the frame border
    src = cv2.copyMakeBorder(img, mpad, mpad, mpad, mpad, cv2.BORDER_REPLICATE)
    mx, my = _blend_maps(hp, wp, bs, config.blend_width)
    ring = config.blend_width // 2  # how far a block's weight reaches into its neighbours

    def upsample(grid, y0, y1, x0, x1):  # pixel weights over [y0:y1, x0:x1] of a block grid
        return cv2.remap(
            grid,
            mx[y0:y1, x0:x1],
            my[y0:y1, x0:x1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )

    # weight of the unblurred frame
    keep = upsample(np.ascontiguousarray(1.0 - grids.sum((0, 1))), 0, hp, 0, wp)
    for a, i, mine in _kernel_groups(grids, ab):
        theta, length_i = float(a) * np.pi / nang, float(levels[i])
        bys, bxs = np.nonzero(mine)
        y0, y1 = max(0, int(bys.min()) * bs - ring), min(hp, (int(bys.max()) + 1) * bs + ring)
        x0, x1 = max(0, int(bxs.min()) * bs - ring), min(wp, (int(bxs.max()) + 1) * bs + ring)
        m = int(length_i) // 2 + 2  # kernel context
        crop = src[mpad + y0 - m : mpad + y1 + m, mpad + x0 - m : mpad + x1 + m]
        blurred = directional_blur(crop, theta, length_i, (y0 - m, x0 - m))[
            m : m + y1 - y0, m : m + x1 - x0
        ]
        wgt = upsample(mine.astype(np.float32), y0, y1, x0, x1)
        acc = keep[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = cv2.blendLinear(img[y0:y1, x0:x1], blurred, acc, wgt)
        keep[y0:y1, x0:x1] = cv2.add(acc, wgt)
    return np.ascontiguousarray(img[:h, :w])


# --------------------------------------------------------------------------------------------
# the whole clip
def _check_pair(cur, prev, flow) -> None:
    for name, f in (("cur", cur), ("prev", prev)):
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(
                f"{name} is {getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}: "
                "expected uint8 [H,W,3]"
            )
    if prev.shape != cur.shape:
        raise ValueError(f"prev has shape {prev.shape}: expected cur's shape {cur.shape}")
    if not isinstance(flow, np.ndarray) or flow.shape != cur.shape[:2] + (2,):
        raise ValueError(
            f"flow has shape {getattr(flow, 'shape', None)}: expected {cur.shape[:2] + (2,)}"
        )


def iter_flow_guided(
    frames: Iterable[np.ndarray],
    config: FlowGuidedConfig | None = None,
    seed: int | np.random.Generator | None = None,
) -> Iterator[np.ndarray]:
    """Degrade a stream of uint8 RGB frames [H, W, 3] one at a time (one frame of look-ahead)."""
    config = config or FlowGuidedConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    gain = float(rng.uniform(*config.blur_gain)) * config.strength
    dis = make_dis(config.dis_preset)
    # search range in px of the (possibly resized) flow frames, even
    search = (
        max(4, 2 * round(config.alias_search * config.flow_scale / 2)) if config.alias_check else 0
    )
    it = iter(frames)

    def take(i):
        f = next(it, None)
        if f is None:
            return None, None
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(
                f"frame {i} is {getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}: "
                "expected uint8 [H,W,3]"
            )
        if i and f.shape != size:
            raise ValueError(f"frame {i} has shape {f.shape}: expected {size} like frame 0")
        return f, to_gray(f, config.flow_scale)

    size = None
    prev, prev_g = take(0)
    if prev is None:
        raise ValueError("frames is empty: expected at least one [H,W,3] uint8 frame")
    size = prev.shape
    cur, cur_g = take(1)
    if cur is None:  # a single frame has no motion to degrade with
        yield prev.copy()
        return
    hw = size[:2]
    if config.blur and gain > 0:
        # frame 0: blur only
        yield motion_blur(prev, compute_flow(prev_g, cur_g, dis, hw, search), gain, config)
    else:
        yield prev.copy()
    t = 1
    while cur is not None:
        flow = compute_flow(cur_g, prev_g, dis, hw, search)
        out = cur
        if config.bleed:
            out, _ = bleed_colours(cur, prev, flow, rng, config)
        if config.blur and gain > 0:
            out = motion_blur(out, flow, gain, config)
        yield out if out is not cur else cur.copy()
        prev, prev_g = cur, cur_g
        t += 1
        cur, cur_g = take(t)


def flow_guided(
    frames, config: FlowGuidedConfig | None = None, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """Flow-guided degradation of a clip: uint8 [T, H, W, 3] in, same shape and dtype out."""
    frames = check_frames(frames, "frames")
    return np.stack(list(iter_flow_guided(frames, config, seed)))
