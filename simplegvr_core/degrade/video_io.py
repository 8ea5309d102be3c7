"""Video files <-> uint8 RGB frames [T, H, W, 3]: PyAV for mp4/mkv/webm/mov/avi, Pillow for animated
WebP (what ComfyUI's SaveAnimatedWEBP writes); H.264 mp4 out.

Every read failure (missing, not a video, unreadable, truncated) is a ValueError naming the file, so
a folder run can report it and continue. Writers produce the whole file under a temporary name and
rename it when complete (`files.atomic_write`, `files.temp_path`), so an interrupted run leaves no
half-written video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..files import check_input_file, commit, remove_temporary, temp_path

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".webp")
# near-transparent H.264: the degradations, not the container, should make the LR look
DEFAULT_CRF = 10


@dataclass
class VideoInfo:
    """What the container says about its first video stream (frames may be 0 when unknown)."""

    width: int
    height: int
    fps: Fraction
    frames: int
    codec: str


def parse_wxh(text: str, what: str = "size") -> tuple[int, int]:
    """A user-facing 'WIDTHxHEIGHT' pixel size, e.g. '848x480', as the (H, W) the code uses."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(
            f"{what} {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 848x480"
        ) from None
    if w < 2 or h < 2:
        raise ValueError(f"{what} {text!r}: expected a width and height of at least 2 pixels")
    return h, w


def check_frames(frames, name: str = "frames") -> np.ndarray:
    """`frames` as a uint8 array [T, H, W, 3] (a list of [H, W, 3] frames is stacked); ValueError
    otherwise."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError(f"{name} is empty: expected at least one [H,W,3] uint8 frame")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) != 1:
            raise ValueError(
                f"{name} has frames of different shapes {sorted(shapes)[:3]}: expected one size"
            )
        frames = np.stack(frames)
    if not isinstance(frames, np.ndarray):
        raise ValueError(
            f"{name} is a {type(frames).__name__}: expected a uint8 numpy array [T,H,W,3]"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} has dtype {frames.dtype}: expected uint8 RGB in [0, 255]")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) < 1:
        raise ValueError(f"{name} has shape {frames.shape}: expected [T,H,W,3] with T, H, W >= 1")
    return frames


def _fps(value, name: str = "fps") -> Fraction:
    try:
        fps = (
            Fraction(value).limit_denominator(1_000_000)
            if not isinstance(value, Fraction)
            else value
        )
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name}={value!r}: expected a positive number of frames per second"
        ) from e
    if fps <= 0:
        raise ValueError(f"{name}={value!r}: expected a positive number of frames per second")
    return fps


def _open_error(path: Path, e: BaseException) -> ValueError:
    msg = getattr(e, "strerror", None) or (
        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    )
    return ValueError(f"cannot read video {str(path)!r}: {msg}")


def _is_webp(path: Path) -> bool:
    return path.suffix.lower() == ".webp"


MAX_FRAME_PIXELS = 8192 * 8192  # a canvas larger than this is refused before a frame is decoded


def _open_webp(path: Path):
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(
            f"reading {str(path)!r} (WebP) needs Pillow: pip install 'simplegvr[demo]'"
        ) from None
    import warnings

    try:
        with warnings.catch_warnings():
            # our own limit below says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:  # the header's canvas is absurd: a bad file like any other
        raise ValueError(
            f"cannot read video {str(path)!r}: its canvas is larger than Pillow's "
            f"decompression-bomb limit (a hostile or corrupt file)"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise _open_error(path, e) from None
    if im.width * im.height > MAX_FRAME_PIXELS:
        im.close()
        raise ValueError(
            f"cannot read video {str(path)!r}: its canvas is {im.width}x{im.height} px, above the "
            f"{MAX_FRAME_PIXELS} px limit for one frame"
        )
    return im


def _probe_webp(path: Path) -> VideoInfo:
    with _open_webp(path) as im:
        if im.format != "WEBP":
            raise ValueError(f"{str(path)!r} is a {im.format} image, not a WebP")
        n = int(getattr(im, "n_frames", 1))
        im.seek(0)
        im.load()
        ms = im.info.get("duration") or 0
        fps = Fraction(1000, int(ms)).limit_denominator(1000) if ms else Fraction(16)
        return VideoInfo(im.width, im.height, fps, n, "webp")


def _iter_webp(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    with _open_webp(path) as im:
        n = int(getattr(im, "n_frames", 1))
        for i in range(n if max_frames is None else min(n, max_frames)):
            try:
                im.seek(i)
                frame = np.asarray(im.convert("RGB"))
            except (OSError, ValueError, EOFError) as e:
                raise ValueError(
                    f"video {str(path)!r} is truncated or corrupt at frame {i} of {n}: {e}"
                ) from None
            yield frame


def probe_video(path) -> VideoInfo:
    """Size, fps, frame count (0 when the container does not store it) and codec, without
    decoding."""
    import av

    path = check_input_file(path, "video")
    if _is_webp(path):
        return _probe_webp(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise ValueError(f"{str(path)!r} has no video stream")
            st = c.streams.video[0]
            rate = st.average_rate or st.guessed_rate or st.base_rate
            if not rate:
                raise ValueError(f"{str(path)!r} does not state a frame rate")
            return VideoInfo(
                st.codec_context.width,
                st.codec_context.height,
                Fraction(rate),
                int(st.frames or 0),
                st.codec_context.name,
            )
    except av.FFmpegError as e:
        raise _open_error(path, e) from e


def _expected_frames(st) -> int:
    """Frames the container promises (stored count, else duration x rate); 0 when it does not
    say."""
    if st.frames:
        return int(st.frames)
    rate = st.average_rate or st.guessed_rate
    if st.duration and st.time_base and rate:
        return int(round(float(st.duration * st.time_base * rate)))
    return 0


def iter_frames(path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode the first video stream frame by frame as uint8 RGB [H, W, 3].

    Raises ValueError naming the file when it cannot be opened or decoded, or when it ends before
    the frame count its container states (a truncated download or copy).
    """
    import av

    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames={max_frames}: expected None or >= 1")
    check_input_file(path, "video")
    if _is_webp(path):
        yield from _iter_webp(path, max_frames)
        return
    n = 0
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise ValueError(f"{str(path)!r} has no video stream")
            st = c.streams.video[0]
            st.thread_type = "AUTO"
            expected = _expected_frames(st)
            # Read while open: PyAV >= 18.1.1 refuses stream attributes once the container is
            # closed.
            exact = bool(st.frames)
            for frame in c.decode(st):
                yield frame.to_ndarray(format="rgb24")
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
    except av.FFmpegError as e:
        raise _open_error(path, e) from e
    if n == 0:
        raise ValueError(f"cannot read video {str(path)!r}: no frame could be decoded")
    # Duration-based estimates can be off by one at either end; a stored count is exact.
    if expected and n < expected - (0 if exact else 1):
        raise ValueError(
            f"video {str(path)!r} is truncated: decoded {n} of the {expected} frames its "
            f"container states"
        )


def read_video(path, max_frames: int | None = None) -> tuple[np.ndarray, Fraction]:
    """(frames uint8 [T, H, W, 3], fps) of a video file; ValueError naming the file on any
    failure."""
    info = probe_video(path)
    frames = list(iter_frames(path, max_frames))
    return np.stack(frames), info.fps


# A seed must reproduce a degraded clip, and a written file, byte for byte. libx264 does not, even
# with one thread: its SIMD paths pick CPU- and alignment-dependent algorithms (measured at 32x32 on
# a loaded CPU: 4 different bitstreams over 5 processes x 30 identical encodes). `cpu-independent`
# makes it exact (1 of 150, also at 30x30), as does asm=0 at a far higher cost; the lookahead
# threads stay off as well.
X264_DETERMINISTIC = (
    "threads=1:lookahead-threads=1:sync-lookahead=0:deterministic=1:cpu-independent=1"
)


def make_deterministic(stream, options: dict[str, str] | None = None) -> None:
    """Configure a PyAV video stream's encoder for bit-exact repeatability: one thread (libx264: no
    lookahead threads either). `options` are the codec's other private options (e.g. preset,
    crf)."""
    stream.codec_context.thread_count = 1
    opts = dict(options or {})
    if stream.codec_context.name == "libx264":
        params = opts.pop("x264-params", "")
        opts["x264-params"] = X264_DETERMINISTIC + (":" + params if params else "")
    stream.options = opts


def encoder_frame(frame: np.ndarray, pix_fmt: str, pts: int):
    """An RGB uint8 frame [H, W, 3] as a PyAV frame in the encoder's pixel format, with its pts set
    (converted explicitly, not inside encode())."""
    import av

    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(
        format=pix_fmt
    )
    vf.pts = pts
    return vf


class VideoWriter:
    """Streaming H.264 (libx264) mp4 writer; the file appears under `path` only when `close()`
    succeeds.

    Odd sizes, which 4:2:0 chroma cannot hold, are written as yuv444p instead of yuv420p.
    Use as a context manager: an exception inside the block deletes the temporary file.
    """

    def __init__(
        self,
        path,
        fps,
        crf: int = DEFAULT_CRF,
        codec: str = "libx264",
        preset: str = "medium",
        *,
        replace: bool = True,
    ):
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf={crf}: expected an integer in [0, 51] (lower is better quality)")
        self.path = Path(path)
        self.fps = _fps(fps)
        self.crf, self.codec, self.preset, self.replace = int(crf), codec, preset, replace
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path(self.path, "part.mp4")
        self._container = None
        self._stream = None
        self._size = None
        self.frames_written = 0

    def _open(self, h: int, w: int) -> None:
        import av

        self._container = av.open(
            str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"}
        )
        st = self._container.add_stream(self.codec, rate=self.fps)
        st.width, st.height = w, h
        st.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
        make_deterministic(st, {"crf": str(self.crf), "preset": self.preset})
        self._stream = st
        self._size = (h, w)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame [H, W, 3]; every frame must have the first frame's size."""

        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.uint8
            or frame.ndim != 3
            or frame.shape[2] != 3
        ):
            raise ValueError(
                f"frame {self.frames_written} for {str(self.path)!r} is "
                f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}: "
                "expected uint8 [H,W,3]"
            )
        if self._container is None:
            self._open(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(
                f"frame {self.frames_written} for {str(self.path)!r} is "
                f"{frame.shape[1]}x{frame.shape[0]}: expected {self._size[1]}x{self._size[0]} "
                f"like the first frame"
            )
        vf = encoder_frame(frame, self._stream.pix_fmt, self.frames_written)
        vf.time_base = 1 / self.fps
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file to `path`."""
        if self._container is None:
            raise ValueError(f"no frame was written to {str(self.path)!r}: expected at least one")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            commit(self._tmp, self.path, self.replace)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the partial file is removed either way
                pass
            self._container = None
        remove_temporary(self._tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps,
    crf: int = DEFAULT_CRF,
    *,
    replace: bool = True,
) -> Path:
    """Write uint8 RGB frames ([T,H,W,3] array or an iterable of [H,W,3]) as an H.264 mp4,
    atomically (replace=False: never over an existing file, `files.commit`)."""
    if isinstance(frames, (np.ndarray, list, tuple)):
        frames = check_frames(frames)
    with VideoWriter(path, fps, crf=crf, replace=replace) as w:
        for f in frames:
            w.write(f)
    return Path(path)


def list_videos(folder) -> list[Path]:
    """Video files directly inside `folder` or below it, sorted, by extension."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")
    )
