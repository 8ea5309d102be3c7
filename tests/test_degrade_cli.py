"""`simplegvr degrade IN OUT --mode ...` on files and folders: outputs, skipping, failures, atomic
writes."""

from fractions import Fraction

import cv2
import numpy as np
import pytest

from simplegvr_core.app import main
from simplegvr_core.degrade import degrade_frames
from simplegvr_core.degrade.video_io import (
    VideoWriter,
    parse_wxh,
    probe_video,
    read_video,
    write_video,
)


def moving_clip(t=9, h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (h, w + 3 * t, 3)).astype(np.float32), (0, 0), 1.5)
    bg = np.clip((bg - bg.mean()) / bg.std() * 50 + 128, 0, 255).astype(np.uint8)
    return np.stack([bg[:, 3 * i : 3 * i + w] for i in range(t)])  # a camera pan, 3 px/frame


@pytest.fixture()
def videos(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_video(src / "a.mp4", moving_clip(seed=1), fps=24)
    write_video(src / "sub" / "b.mp4", moving_clip(seed=2), fps=Fraction(25, 2))
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return src


def test_one_file_keeps_count_size_and_fps(videos, tmp_path, capsys):
    out = tmp_path / "lr.mp4"
    assert (
        main(["degrade", str(videos / "sub" / "b.mp4"), str(out), "--mode", "flow", "--quiet"]) == 0
    )
    info = probe_video(out)
    assert (info.width, info.height, info.frames, info.fps) == (96, 64, 9, Fraction(25, 2))
    assert "wrote" in capsys.readouterr().out
    assert (
        main(
            [
                "degrade",
                str(videos / "a.mp4"),
                str(tmp_path / "c.mp4"),
                "--mode",
                "classic",
                "--lr-size",
                "48x32",
                "--quiet",
            ]
        )
        == 0
    )
    info = probe_video(tmp_path / "c.mp4")
    assert (info.width, info.height, info.frames, info.fps) == (48, 32, 9, Fraction(24))


def test_same_seed_same_video_and_flow_changes_it(videos, tmp_path):
    runs = []
    for name, seed in (("x.mp4", "3"), ("y.mp4", "3"), ("z.mp4", "4")):
        assert (
            main(
                ["degrade", str(videos / "a.mp4"), str(tmp_path / name), "--seed", seed, "--quiet"]
            )
            == 0
        )
        runs.append(read_video(tmp_path / name)[0])
    src = read_video(videos / "a.mp4")[0]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    assert np.abs(runs[0].astype(int) - src).mean() > 1  # the pan was blurred


def test_folder_skips_existing_reports_broken_and_fails_overall(videos, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "degrade",
            str(videos),
            str(out),
            "--mode",
            "flow+classic",
            "--lr-size",
            "48x32",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert rc != 0
    assert "2 done, 0 skipped, 1 failed (broken.mp4)" in captured.out
    assert (
        "failed broken.mp4: cannot read video" in captured.err and "Traceback" not in captured.err
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.mp4",
        "sub/b.mp4",
    ]
    assert probe_video(out / "sub" / "b.mp4").fps == Fraction(25, 2)
    before = (out / "a.mp4").stat().st_mtime_ns
    (videos / "broken.mp4").unlink()
    assert main(["degrade", str(videos), str(out), "--quiet"]) == 0
    assert "0 done, 2 skipped, 0 failed" in capsys.readouterr().out
    assert (out / "a.mp4").stat().st_mtime_ns == before


def test_errors_are_one_line_without_traceback(videos, tmp_path, capsys):
    assert main(["degrade", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simplegvr: error:") and "missing.mp4" in err[0]
    assert main(["degrade", str(videos / "broken.mp4"), str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.mp4" in err[0]
    assert main(["degrade", str(videos / "a.mp4"), str(tmp_path / "o.mkv")]) == 2
    assert ".mp4" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_interrupted_run_leaves_no_half_written_video(videos, tmp_path, monkeypatch):
    real_write = VideoWriter.write

    def write_then_interrupt(self, frame):
        if self.frames_written == 3:
            raise KeyboardInterrupt
        real_write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", write_then_interrupt)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["degrade", str(videos / "a.mp4"), str(out / "a.mp4"), "--quiet"]) == 130
    assert list(out.iterdir()) == []


def test_parse_size_and_library_entry_point():
    assert parse_wxh("848x480") == (480, 848)  # user-facing WIDTHxHEIGHT, (H, W) inside
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_wxh("848")
    frames = moving_clip()
    out = degrade_frames(frames, "flow", (32, 48), seed=0)
    assert out.shape == (9, 32, 48, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="mode"):
        degrade_frames(frames, "model")
