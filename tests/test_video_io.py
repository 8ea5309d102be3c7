"""Video files <-> uint8 frames with PyAV: round trips keep count, size and fps; broken files fail
clearly."""

from fractions import Fraction

import numpy as np
import pytest

from simplegvr_core.degrade.video_io import (
    VideoWriter,
    check_frames,
    iter_frames,
    list_videos,
    probe_video,
    read_video,
    write_video,
)


def smooth_clip(t=9, h=48, w=64, seed=0):
    """Smooth moving colour gradients: compress well, so decoded frames stay close to the
    originals."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = [
        np.stack([127 + 100 * np.sin(xx / 9 + yy / 13 + phase[c] + 0.3 * i) for c in range(3)], -1)
        for i in range(t)
    ]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.mark.parametrize("size", [(48, 64), (47, 63)])  # odd sizes go through yuv444p
def test_round_trip_keeps_frame_count_size_and_fps(tmp_path, size):
    frames = smooth_clip(9, *size)
    path = write_video(tmp_path / "clip.mp4", frames, fps=Fraction(25, 2))
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.fps, info.codec) == (
        size[1],
        size[0],
        9,
        Fraction(25, 2),
        "h264",
    )
    back, fps = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8 and fps == Fraction(25, 2)
    # crf 10; 4:2:0 chroma costs most of the loss on this colourful clip
    assert psnr(back, frames) > 30
    assert len(list(iter_frames(path, max_frames=4))) == 4


def test_ntsc_rate_survives(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", smooth_clip(5), fps=30000 / 1001)
    assert read_video(path)[1] == Fraction(30000, 1001)


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.9])  # header gone; frames missing
def test_truncated_file_gives_a_clear_error_naming_it(tmp_path, keep):
    rng = np.random.default_rng(1)
    # noise: every frame carries many bytes
    frames = rng.integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / "full.mp4", frames, fps=24)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="cut.mp4"):
        read_video(cut)


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(ValueError, match="cannot read video .*notes.mp4"):
        read_video(bad)
    with pytest.raises(ValueError, match="nothing.mp4.*does not exist"):
        read_video(tmp_path / "nothing.mp4")


def test_writer_leaves_nothing_when_interrupted(tmp_path):
    frames = smooth_clip(4)
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "out.mp4", fps=24) as w:
            w.write(frames[0])
            w.write(frames[1])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="expected uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=24)
    with VideoWriter(tmp_path / "g.mp4", fps=24) as w:
        w.write(np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match="expected 8x8 like the first frame"):
            w.write(np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "h.mp4", fps=0)
    with pytest.raises(ValueError, match="crf"):
        VideoWriter(tmp_path / "h.mp4", fps=24, crf=60)


def test_check_frames_names_what_is_wrong():
    assert check_frames([np.zeros((4, 4, 3), np.uint8)] * 2).shape == (2, 4, 4, 3)
    with pytest.raises(ValueError, match="dtype float64"):
        check_frames(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"shape \(4, 4, 3\)"):
        check_frames(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="different shapes"):
        check_frames([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])


def test_list_videos_skips_hidden_partial_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "sub/b.MKV", ".a.mp4.123.part.mp4", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_videos(tmp_path)] == [
        "a.mp4",
        "sub/b.MKV",
    ]
