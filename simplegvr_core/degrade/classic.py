"""Classic second-order degradation of RealBasicVSR / Real-ESRGAN (reference-facts.md §4), written
here.

    blur -> resize -> noise -> JPEG -> video compression            (first order)
    blur -> resize -> noise -> JPEG                                  (second order)
    shuffled {video compression, [resize to the LR size -> sinc]}    (final step)

Ranges and probabilities are those of mmagic's `realbasicvsr_wogan-c64b20-2x30x8` config; every
parameter drifts from frame to frame as a clipped random walk (the `*_step` fields), as in mmagic.
Frames stay in [0, 255] (float32 between stages; rounded to uint8 where a codec needs it). Each
stage has `enabled` and `prob`; with every stage disabled the pipeline is the final resize to the LR
size.

Deliberate differences from mmagic, each for a reason:
* Video bitrates are bits per frame for a 256x256 frame (RealBasicVSR's GT crop, encoded at rate=1)
  and scale with the frame's area (`reference_area`), so a 540p clip is not crushed to 1e4 bits.
* Poisson noise uses its Gaussian limit when the intensity quantisation has >= 64 levels (then every
  non-zero rate is >= 64 and the two agree to well under a grey level); numpy's exact sampler
  costs ~40 ms per 540p frame.
* Frames whose sizes drifted apart (resize `step`) are brought to the first frame's size before
  video compression (PyAV's encoder would do the same, less visibly).
* libx264 runs with preset `veryfast` (VideoStage.x264_preset); mmagic's default `medium` costs ~0.4
  s per 540p frame here, and both give the same kind of blocking and ringing at these bitrates.
* The first blur filters the uint8 input directly (OpenCV's uint8 path is ~2x faster; the rounding
  is far below the noise that follows).
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .video_io import check_frames, encoder_frame, make_deterministic

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
    "sinc",
)
RESIZE_METHODS = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC}
VIDEO_CODECS = ("libx264", "h264", "mpeg4")
STAGES = (
    "blur",
    "resize",
    "noise",
    "jpeg",
    "video",
    "blur2",
    "resize2",
    "noise2",
    "jpeg2",
    "final_video",
    "final_sinc",
)


# --------------------------------------------------------------------------------------------
# stage parameters
def _range(obj, name, lo_min=-math.inf, hi_max=math.inf):
    v = tuple(float(x) for x in getattr(obj, name))
    if len(v) != 2 or not lo_min <= v[0] <= v[1] <= hi_max:
        raise ValueError(
            f"{type(obj).__name__}.{name}={getattr(obj, name)}: expected (lo, hi) with "
            f"{lo_min} <= lo <= hi <= {hi_max}"
        )
    setattr(obj, name, v)


def _probs(obj, name, n):
    p = tuple(float(x) for x in getattr(obj, name))
    if len(p) != n or min(p) < 0 or abs(sum(p) - 1) > 1e-6:
        raise ValueError(
            f"{type(obj).__name__}.{name}={getattr(obj, name)}: expected {n} probabilities "
            f"summing to 1"
        )
    setattr(obj, name, p)


def _check_prob(obj):
    if not 0 <= obj.prob <= 1:
        raise ValueError(f"{type(obj).__name__}.prob={obj.prob}: expected a probability in [0, 1]")


@dataclass
class BlurStage:
    """Random blur kernel (Real-ESRGAN families), sizes 7-21, drifting per frame."""

    enabled: bool = True
    prob: float = 1.0
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernels: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.405, 0.225, 0.108, 0.027, 0.108, 0.027, 0.1)
    sigma_x: tuple[float, float] = (0.2, 3.0)
    sigma_y: tuple[float, float] = (0.2, 3.0)
    rotate_angle: tuple[float, float] = (-math.pi, math.pi)
    beta_gaussian: tuple[float, float] = (0.5, 4.0)
    beta_plateau: tuple[float, float] = (1.0, 2.0)
    # sinc cut-off; None: [pi/3, pi] for size < 13, else [pi/5, pi]
    omega: tuple[float, float] | None = None
    sigma_step: float = 0.02
    rotate_angle_step: float = 0.31416
    beta_gaussian_step: float = 0.05
    beta_plateau_step: float = 0.1
    omega_step: float = 0.0628

    def __post_init__(self):
        _check_prob(self)
        if not self.kernel_sizes or any(
            int(k) != k or k < 3 or k % 2 == 0 for k in self.kernel_sizes
        ):
            raise ValueError(f"BlurStage.kernel_sizes={self.kernel_sizes}: expected odd sizes >= 3")
        unknown = [k for k in self.kernels if k not in KERNEL_TYPES]
        if unknown or not self.kernels:
            raise ValueError(
                f"BlurStage.kernels has {unknown or 'nothing'}: expected names from {KERNEL_TYPES}"
            )
        _probs(self, "kernel_prob", len(self.kernels))
        for name in ("sigma_x", "sigma_y"):
            _range(self, name, 1e-3)
        _range(self, "rotate_angle")
        _range(self, "beta_gaussian", 1e-3)
        _range(self, "beta_plateau", 1e-3)
        if self.omega is not None:
            _range(self, "omega", 1e-3, math.pi)


@dataclass
class ResizeStage:
    """Random up / down / keep resize (scale drifting per frame, even sizes),
    bilinear/area/bicubic."""

    enabled: bool = True
    prob: float = 1.0
    mode_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    scale: tuple[float, float] = (0.15, 1.5)
    methods: tuple[str, ...] = ("bilinear", "area", "bicubic")
    method_prob: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    step: float = 0.015

    def __post_init__(self):
        _check_prob(self)
        _probs(self, "mode_prob", 3)
        _range(self, "scale", 1e-3)
        if not self.scale[0] <= 1 <= self.scale[1]:
            raise ValueError(
                f"ResizeStage.scale={self.scale}: expected lo <= 1 <= hi (down and up "
                f"both possible)"
            )
        unknown = [m for m in self.methods if m not in RESIZE_METHODS]
        if unknown or not self.methods:
            raise ValueError(
                f"ResizeStage.methods has {unknown or 'nothing'}: expected names from "
                f"{sorted(RESIZE_METHODS)}"
            )
        _probs(self, "method_prob", len(self.methods))


@dataclass
class NoiseStage:
    """Gaussian (sigma on the 0-255 scale) or Poisson noise, colour or grey, level drifting per
    frame."""

    enabled: bool = True
    prob: float = 1.0
    gaussian_prob: float = 0.5  # else Poisson
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)
    gaussian_gray_prob: float = 0.4
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    poisson_gray_prob: float = 0.4
    gaussian_sigma_step: float = 0.1
    poisson_scale_step: float = 0.005

    def __post_init__(self):
        _check_prob(self)
        for name in ("gaussian_prob", "gaussian_gray_prob", "poisson_gray_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"NoiseStage.{name}={getattr(self, name)}: expected a probability in [0, 1]"
                )
        _range(self, "gaussian_sigma", 0.0)
        _range(self, "poisson_scale", 0.0)


@dataclass
class JPEGStage:
    """JPEG through OpenCV, quality drifting per frame."""

    enabled: bool = True
    prob: float = 1.0
    quality: tuple[float, float] = (30.0, 95.0)
    quality_step: float = 3.0

    def __post_init__(self):
        _check_prob(self)
        _range(self, "quality", 1.0, 100.0)


@dataclass
class VideoStage:
    """The clip through a real codec (PyAV, rate=1 so bitrate = bits per frame), then decoded."""

    enabled: bool = True
    prob: float = 1.0
    codecs: tuple[str, ...] = VIDEO_CODECS
    codec_prob: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    bitrate: tuple[float, float] = (1e4, 1e5)
    # bitrate is for a frame of this many pixels; None = absolute
    reference_area: float | None = 256 * 256
    # libx264's speed preset ("medium", mmagic's implicit choice, is ~5x slower at 540p)
    x264_preset: str = "veryfast"

    def __post_init__(self):
        _check_prob(self)
        if not self.codecs:
            raise ValueError(
                "VideoStage.codecs is empty: expected e.g. ('libx264', 'h264', 'mpeg4')"
            )
        _probs(self, "codec_prob", len(self.codecs))
        _range(self, "bitrate", 100.0)
        if self.reference_area is not None and self.reference_area <= 0:
            raise ValueError(
                f"VideoStage.reference_area={self.reference_area}: expected None or > 0 pixels"
            )


@dataclass
class ClassicConfig:
    """The RealBasicVSR second-order pipeline; stages by name (see STAGES) can be switched off."""

    blur: BlurStage = field(default_factory=BlurStage)
    resize: ResizeStage = field(default_factory=ResizeStage)
    noise: NoiseStage = field(default_factory=NoiseStage)
    jpeg: JPEGStage = field(default_factory=JPEGStage)
    video: VideoStage = field(default_factory=VideoStage)
    blur2: BlurStage = field(
        default_factory=lambda: BlurStage(prob=0.8, sigma_x=(0.2, 1.5), sigma_y=(0.2, 1.5))
    )
    resize2: ResizeStage = field(
        default_factory=lambda: ResizeStage(mode_prob=(0.3, 0.4, 0.3), scale=(0.3, 1.2), step=0.03)
    )
    noise2: NoiseStage = field(
        default_factory=lambda: NoiseStage(gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5))
    )
    jpeg2: JPEGStage = field(default_factory=JPEGStage)
    final_video: VideoStage = field(default_factory=VideoStage)
    final_sinc: BlurStage = field(
        default_factory=lambda: BlurStage(
            prob=0.8, kernels=("sinc",), kernel_prob=(1.0,), omega=(math.pi / 3, math.pi)
        )
    )
    final_resize_methods: tuple[str, ...] = ("bilinear", "area", "bicubic")
    shuffle_final: bool = True  # random order of {final_video, [resize to LR, final_sinc]}

    def __post_init__(self):
        for name, cls in (
            ("blur", BlurStage),
            ("resize", ResizeStage),
            ("noise", NoiseStage),
            ("jpeg", JPEGStage),
            ("video", VideoStage),
            ("blur2", BlurStage),
            ("resize2", ResizeStage),
            ("noise2", NoiseStage),
            ("jpeg2", JPEGStage),
            ("final_video", VideoStage),
            ("final_sinc", BlurStage),
        ):
            v = getattr(self, name)
            if isinstance(v, dict):
                setattr(self, name, cls(**v))
            elif not isinstance(v, cls):
                raise ValueError(
                    f"ClassicConfig.{name} is a {type(v).__name__}: expected a "
                    f"{cls.__name__} or dict"
                )
        unknown = [m for m in self.final_resize_methods if m not in RESIZE_METHODS]
        if unknown or not self.final_resize_methods:
            raise ValueError(
                f"final_resize_methods has {unknown or 'nothing'}: expected names from "
                f"{sorted(RESIZE_METHODS)}"
            )

    def without(self, *names: str) -> ClassicConfig:
        """A copy with the named stages switched off."""
        bad = [n for n in names if n not in STAGES]
        if bad:
            raise ValueError(f"unknown stages {bad}: expected names from {STAGES}")
        return dataclasses.replace(
            self, **{n: dataclasses.replace(getattr(self, n), enabled=False) for n in names}
        )

    def only(self, *names: str) -> ClassicConfig:
        """A copy with every stage but the named ones switched off."""
        bad = [n for n in names if n not in STAGES]
        if bad:
            raise ValueError(f"unknown stages {bad}: expected names from {STAGES}")
        return self.without(*[n for n in STAGES if n not in names])

    def scaled(self, strength: float) -> ClassicConfig:
        """Severity in [0, 1]: every blur sigma, noise level, resize-down range, JPEG quality and
        bitrate range is pulled towards its mildest end (1 = RealBasicVSR's ranges, 0 = the
        mildest)."""
        if not 0 <= strength <= 1:
            raise ValueError(f"classic strength={strength}: expected a severity in [0, 1]")
        s = float(strength)

        def lerp(a, b):  # exact at both ends
            return a if s == 0 else b if s == 1 else a + (b - a) * s

        def toward_lo(r):
            return (r[0], lerp(r[0], r[1]))

        def toward_hi(r):
            return (lerp(r[1], r[0]), r[1])

        out = dataclasses.replace(self)
        for n in ("blur", "blur2"):
            b = getattr(self, n)
            setattr(
                out,
                n,
                dataclasses.replace(b, sigma_x=toward_lo(b.sigma_x), sigma_y=toward_lo(b.sigma_y)),
            )
        for n in ("noise", "noise2"):
            z = getattr(self, n)
            setattr(
                out,
                n,
                dataclasses.replace(
                    z,
                    gaussian_sigma=toward_lo(z.gaussian_sigma),
                    poisson_scale=toward_lo(z.poisson_scale),
                ),
            )
        for n in ("jpeg", "jpeg2"):
            setattr(
                out,
                n,
                dataclasses.replace(getattr(self, n), quality=toward_hi(getattr(self, n).quality)),
            )
        for n in ("video", "final_video"):
            setattr(
                out,
                n,
                dataclasses.replace(getattr(self, n), bitrate=toward_hi(getattr(self, n).bitrate)),
            )
        for n in ("resize", "resize2"):
            r = getattr(self, n)
            setattr(out, n, dataclasses.replace(r, scale=(lerp(1.0, r.scale[0]), r.scale[1])))
        return out


# --------------------------------------------------------------------------------------------
# kernels (Real-ESRGAN's families; basicsr degradations.py)
def _mesh(size: int):
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    return np.meshgrid(ax, ax)  # xx, yy


def _inv_sigma(sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    u = np.array([[c, -s], [s, c]])
    return np.linalg.inv(u @ np.diag([sigma_x**2, sigma_y**2]) @ u.T)


def _quad(size, sigma_x, sigma_y, angle):
    xx, yy = _mesh(size)
    inv = _inv_sigma(sigma_x, sigma_y, angle)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """Bessel J1 by its integral (1/pi) int_0^pi cos(t - x sin t) dt; the trapezoid rule on this
    periodic integrand is exact to ~1e-12 with 64 nodes for |x| < 40 (kernels need |x| <= pi *
    15)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.linspace(0.0, math.pi, 129)
    w = np.full(t.shape, 1.0)
    w[[0, -1]] = 0.5
    vals = (
        np.cos(t[None, :] - x.reshape(-1, 1) * np.sin(t)[None, :]) @ w * (math.pi / 128) / math.pi
    )
    return vals.reshape(x.shape)


def circular_lowpass_kernel(cutoff: float, size: int) -> np.ndarray:
    """2-D sinc (ideal circular low-pass at `cutoff` rad/px), size x size, normalised."""
    xx, yy = _mesh(size)
    r = np.sqrt(xx**2 + yy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * bessel_j1(cutoff * r) / (2 * math.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * math.pi)
    return k / k.sum()


def make_kernel(
    kind: str,
    size: int,
    sigma_x: float,
    sigma_y: float,
    angle: float,
    beta_gaussian: float,
    beta_plateau: float,
    omega: float,
) -> np.ndarray:
    """One normalised float32 kernel of a Real-ESRGAN family (iso kinds use sigma_x and no
    rotation)."""
    if kind not in KERNEL_TYPES:
        raise ValueError(f"kernel kind {kind!r}: expected one of {KERNEL_TYPES}")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size {size}: expected an odd size >= 3")
    if kind == "sinc":
        k = circular_lowpass_kernel(omega, size)
    else:
        if kind.endswith("iso") and not kind.endswith("aniso"):
            sigma_y, angle = sigma_x, 0.0
        q = _quad(size, sigma_x, sigma_y, angle)
        if kind.startswith("generalized"):
            k = np.exp(-0.5 * np.power(q, beta_gaussian))
        elif kind.startswith("plateau"):
            k = 1.0 / (np.power(q, beta_plateau) + 1.0)
        else:
            k = np.exp(-0.5 * q)
        k = k / k.sum()
    return k.astype(np.float32)


# --------------------------------------------------------------------------------------------
# stages; each takes and returns a list of frames (uint8 or float32, values in [0, 255])
class _Walk:
    """A parameter drawn uniformly in [lo, hi], then a clipped random walk of +-step per frame."""

    def __init__(self, rng, lo, hi, step, value=None):
        self.rng, self.lo, self.hi, self.step = rng, lo, hi, step
        self.value = float(rng.uniform(lo, hi)) if value is None else float(value)

    def next(self) -> float:
        v = self.value
        if self.step:
            self.value = float(
                np.clip(self.value + self.rng.uniform(-self.step, self.step), self.lo, self.hi)
            )
        return v


def _to_u8(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.uint8 else np.clip(np.rint(x), 0, 255).astype(np.uint8)


def apply_blur(
    frames: list[np.ndarray], st: BlurStage, rng: np.random.Generator
) -> list[np.ndarray]:
    kind = str(rng.choice(st.kernels, p=st.kernel_prob))
    size = int(rng.choice(st.kernel_sizes))
    omega_range = st.omega or ((math.pi / 3, math.pi) if size < 13 else (math.pi / 5, math.pi))
    walks = {
        "sigma_x": _Walk(rng, *st.sigma_x, st.sigma_step),
        "sigma_y": _Walk(rng, *st.sigma_y, st.sigma_step),
        "angle": _Walk(rng, *st.rotate_angle, st.rotate_angle_step),
        "beta_gaussian": _Walk(rng, *st.beta_gaussian, st.beta_gaussian_step),
        "beta_plateau": _Walk(rng, *st.beta_plateau, st.beta_plateau_step),
        "omega": _Walk(rng, *omega_range, st.omega_step),
    }
    out = []
    for f in frames:
        p = {k: w.next() for k, w in walks.items()}
        ker = make_kernel(
            kind,
            size,
            p["sigma_x"],
            p["sigma_y"],
            p["angle"],
            p["beta_gaussian"],
            p["beta_plateau"],
            p["omega"],
        )
        out.append(cv2.filter2D(f, -1, ker, borderType=cv2.BORDER_REFLECT_101))
    return out


def _even_size(h: float, w: float) -> tuple[int, int]:
    return max(2, 2 * int(h // 2)), max(2, 2 * int(w // 2))


def apply_resize(
    frames: list[np.ndarray], st: ResizeStage, rng: np.random.Generator
) -> list[np.ndarray]:
    method = RESIZE_METHODS[str(rng.choice(st.methods, p=st.method_prob))]
    mode = rng.choice(3, p=st.mode_prob)
    scale = (
        float(rng.uniform(1.0, st.scale[1]))
        if mode == 0
        else float(rng.uniform(st.scale[0], 1.0))
        if mode == 1
        else 1.0
    )
    walk = _Walk(rng, *st.scale, st.step, value=scale)
    h, w = frames[0].shape[:2]  # mmagic: every frame's size is relative to the first frame's
    out = []
    for f in frames:
        s = walk.next()
        oh, ow = _even_size(h * s, w * s)
        out.append(f if (oh, ow) == f.shape[:2] else cv2.resize(f, (ow, oh), interpolation=method))
    return out


def _poisson_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmagic's Poisson noise on a [0,255] image: Poisson(img*v)/v - img, v =
    2^ceil(log2(#levels))."""
    q = np.clip(np.rint(img), 0, 255)
    levels = int(np.count_nonzero(np.bincount(q.astype(np.uint8).ravel(), minlength=256)))
    v = 2.0 ** math.ceil(math.log2(max(levels, 2)))
    if v < 64:
        return (rng.poisson(q * v) / v - q).astype(np.float32)
    # rates q*v are 0 or >= 64: the Gaussian limit sqrt(q/v)*N(0,1) is what Poisson sampling gives
    return (np.sqrt(q / v) * rng.standard_normal(q.shape, dtype=np.float32)).astype(np.float32)


def apply_noise(
    frames: list[np.ndarray], st: NoiseStage, rng: np.random.Generator
) -> list[np.ndarray]:
    out = []
    if rng.random() < st.gaussian_prob:
        walk = _Walk(rng, *st.gaussian_sigma, st.gaussian_sigma_step)
        gray = rng.random() < st.gaussian_gray_prob
        for f in frames:
            sigma = walk.next()
            shape = f.shape[:2] + ((1,) if gray else (3,))
            out.append(
                f.astype(np.float32)
                + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
            )
    else:
        walk = _Walk(rng, *st.poisson_scale, st.poisson_scale_step)
        gray = rng.random() < st.poisson_gray_prob
        for f in frames:
            scale = walk.next()
            x = f.astype(np.float32)
            src = cv2.cvtColor(np.clip(x, 0, 255), cv2.COLOR_RGB2GRAY)[..., None] if gray else x
            out.append(x + _poisson_noise(src, rng) * np.float32(scale))
    return out


def apply_jpeg(
    frames: list[np.ndarray], st: JPEGStage, rng: np.random.Generator
) -> list[np.ndarray]:
    walk = _Walk(rng, *st.quality, st.quality_step, value=round(float(rng.uniform(*st.quality))))
    out = []
    for f in frames:
        q = int(round(walk.next()))
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(_to_u8(f), cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), q]
        )
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode a {f.shape} frame at quality {q}")
        out.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return out


def video_compress(
    frames: list[np.ndarray], codec: str, bits_per_frame: float, x264_preset: str = "veryfast"
) -> list[np.ndarray]:
    """Encode the frames with `codec` at rate=1 and `bits_per_frame`, decode them again (PyAV, in
    memory)."""
    import av

    h, w = frames[0].shape[:2]
    eh, ew = h + h % 2, w + w % 2  # yuv420p needs even sizes
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        st = c.add_stream(codec, rate=1)
        st.width, st.height, st.pix_fmt = ew, eh, "yuv420p"
        st.bit_rate = max(1000, int(bits_per_frame))
        make_deterministic(
            st, {"preset": x264_preset} if st.codec_context.name == "libx264" else None
        )
        for i, f in enumerate(frames):
            f = _to_u8(f)
            if f.shape[:2] != (h, w):
                f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
            if (eh, ew) != (h, w):
                f = cv2.copyMakeBorder(f, 0, eh - h, 0, ew - w, cv2.BORDER_REPLICATE)
            for packet in st.encode(encoder_frame(f, "yuv420p", i)):
                c.mux(packet)
        for packet in st.encode():
            c.mux(packet)
    buf.seek(0)
    with av.open(buf, "r", format="mp4") as c:
        c.streams.video[0].codec_context.thread_count = 1
        out = [fr.to_ndarray(format="rgb24")[:h, :w] for fr in c.decode(video=0)]
    if len(out) != len(frames):
        raise RuntimeError(f"{codec} round trip returned {len(out)} of {len(frames)} frames")
    return out


def apply_video(
    frames: list[np.ndarray], st: VideoStage, rng: np.random.Generator
) -> list[np.ndarray]:
    codec = str(rng.choice(st.codecs, p=st.codec_prob))
    bitrate = float(rng.uniform(*st.bitrate))
    if st.reference_area:
        h, w = frames[0].shape[:2]
        bitrate *= h * w / st.reference_area
    return video_compress(frames, codec, bitrate, st.x264_preset)


def _final_resize(frames, size_hw, methods, rng):
    method = RESIZE_METHODS[str(rng.choice(methods))]
    oh, ow = size_hw
    return [
        f if f.shape[:2] == (oh, ow) else cv2.resize(f, (ow, oh), interpolation=method)
        for f in frames
    ]


# --------------------------------------------------------------------------------------------
def classic_degrade(
    frames,
    lr_size: tuple[int, int] | None = None,
    config: ClassicConfig | None = None,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """RealBasicVSR second-order degradation of a clip.

    frames: uint8 [T, H, W, 3]; lr_size: (height, width) of the output, default the input size.
    Returns uint8 [T, height, width, 3].
    """
    frames = check_frames(frames, "frames")
    config = config or ClassicConfig()
    if not isinstance(config, ClassicConfig):
        raise ValueError(f"config is a {type(config).__name__}: expected a ClassicConfig")
    t, h, w = frames.shape[:3]
    if lr_size is None:
        lr_size = (h, w)
    if len(lr_size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 2 for v in lr_size):
        raise ValueError(f"lr_size={lr_size}: expected (height, width) with both >= 2")
    out_hw = (int(lr_size[0]), int(lr_size[1]))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def run(x, name, fn):
        st = getattr(config, name)
        if not st.enabled or rng.random() >= st.prob:
            return x
        return fn(x, st, rng)

    x: list[np.ndarray] = list(frames)
    x = run(x, "blur", apply_blur)
    x = run(x, "resize", apply_resize)
    x = run(x, "noise", apply_noise)
    x = run(x, "jpeg", apply_jpeg)
    x = run(x, "video", apply_video)
    x = run(x, "blur2", apply_blur)
    x = run(x, "resize2", apply_resize)
    x = run(x, "noise2", apply_noise)
    x = run(x, "jpeg2", apply_jpeg)

    def to_lr(x):
        x = _final_resize(x, out_hw, config.final_resize_methods, rng)
        return run(x, "final_sinc", apply_blur)

    steps = [lambda x: run(x, "final_video", apply_video), to_lr]
    if config.shuffle_final and rng.random() < 0.5:
        steps.reverse()
    for step in steps:
        x = step(x)
    # video compression after the resize keeps the size; be sure
    if any(f.shape[:2] != out_hw for f in x):
        x = _final_resize(x, out_hw, ("area",), rng)
    return np.stack([_to_u8(f) for f in x])
