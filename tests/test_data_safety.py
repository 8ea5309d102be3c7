"""Issue 29, "never touch what the user owns": each defect the hostile-input battery found, as a
test.

1 the temporary cleaner deletes only its own exact names   2 one write policy for every writer (and
races) 3 a WebP decompression bomb is a bad file   4 demo --videos: probe before decoding, a count
guard, clip by clip 5 demo weights are installed as one set, a mixed set is refused   7 memory:
cgroup and RLIMIT_AS 9 bad data is refused   10 messages that name their file   (6 and 8, training,
are in test_training_safety.py)
"""

import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

from simplegvr_core import SimpleGVR, files, memory, save_checkpoint
from simplegvr_core.app import main
from simplegvr_core.latent_io import load_latent, save_latent

REPO = Path(__file__).resolve().parents[1]
# Names users really had beside their outputs, which the old cleaner deleted (or crashed on, the
# last one).
USER_FILES = [
    "notes.40000.v2.tmp",
    "holiday.2019.day1.part.mp4",
    ".cache.31000.a.tmp",
    "a.99999999999.b.tmp",
    "run.40000.old.tmp",
    "lecture.2023.intro.part.mp4",
]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def plant_user_files(folder: Path) -> dict[Path, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    planted = {}
    for name in USER_FILES:
        planted[folder / name] = f"the user's {name}".encode()
        (folder / name).write_bytes(planted[folder / name])
    return planted


def assert_untouched(planted: dict[Path, bytes]) -> None:
    for path, data in planted.items():
        assert path.is_file() and path.read_bytes() == data, path


def tiny_checkpoint(path: Path) -> Path:
    save_checkpoint(
        randomize_(SimpleGVR.from_config("tiny"), std=0.05),
        path,
        extra_metadata={"trained_steps": "5"},
    )
    return path


def tiny_latent(path: Path, seed: int = 0) -> Path:
    save_latent(
        torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5, path
    )
    return path


def one_line(err: str, *words: str) -> None:
    """One error line, the last one (progress and notes may precede it), and no traceback."""
    lines = [line for line in err.strip().splitlines() if line]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


# --- 1. the cleaner -------------------------------------------------------------------------------
def test_only_exact_temporary_names_of_dead_processes_are_cleaned():
    pid = dead_pid()
    ours = f".o.mp4.simplegvr-{pid}-deadbeef.part.mp4"
    assert files.is_temporary(ours) and files.is_temporary(files.temp_path("x.latent"))
    for name in USER_FILES + [
        f".o.mp4.{pid}.deadbeef.part.mp4",
        f".o.simplegvr-{pid}-DEADBEEF.tmp",
        f".o.simplegvr-{pid}-deadbeef.tmp.bak",
        f"o.simplegvr-{pid}-deadbeef.tmp",
    ]:
        assert not files.is_temporary(name), name
    with pytest.raises(ValueError, match="not a temporary of this project"):
        files.remove_temporary("notes.40000.v2.tmp")


def test_user_files_named_like_temporaries_survive_upscale_and_degrade(tmp_path, capsys):
    from simplegvr_core.degrade.video_io import write_video

    out = tmp_path / "out"
    planted = plant_user_files(out)
    stale = out / f".hr.latent.simplegvr-{dead_pid()}-0badcafe.tmp"
    stale.write_bytes(b"left by a killed run")
    ck, lr = tiny_checkpoint(tmp_path / "m.safetensors"), tiny_latent(tmp_path / "lr.latent")
    assert (
        main(
            [
                "upscale",
                "--checkpoint",
                str(ck),
                "--latent",
                str(lr),
                "--out",
                str(out / "hr.latent"),
                "--scale",
                "2",
                "--steps",
                "1",
                "--cfg",
                "1",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert_untouched(planted)
    assert not stale.exists() and f"removed {stale.name}" in err  # ours, and said so
    video = tmp_path / "v" / "lecture.mp4"
    video.parent.mkdir()
    write_video(video, np.zeros((3, 32, 32, 3), np.uint8), fps=8)
    planted_v = plant_user_files(video.parent)
    assert (
        main(
            [
                "degrade",
                str(video),
                str(video.parent / "lecture_lr.mp4"),
                "--mode",
                "none",
                "--quiet",
            ]
        )
        == 0
    )
    assert_untouched(planted_v)


# --- 2. one write policy --------------------------------------------------------------------------
def test_writers_refuse_an_existing_output_and_an_output_that_is_an_input(tmp_path, capsys):
    ck, lr = tiny_checkpoint(tmp_path / "m.safetensors"), tiny_latent(tmp_path / "lr.latent")
    common = ["--checkpoint", str(ck), "--scale", "2", "--steps", "1", "--cfg", "1"]
    existing = tmp_path / "hr.latent"
    existing.write_bytes(b"yesterday's result")
    assert main(["upscale", *common, "--latent", str(lr), "--out", str(existing)]) == 2
    one_line(capsys.readouterr().err, "exists", "--overwrite")
    assert existing.read_bytes() == b"yesterday's result"
    for out in (lr, ck):  # --out is one of the inputs: refused even with --overwrite
        before = out.read_bytes()
        assert (
            main(["upscale", *common, "--latent", str(lr), "--out", str(out), "--overwrite"]) == 2
        )
        one_line(capsys.readouterr().err, "is also an input")
        assert out.read_bytes() == before
    assert (
        main(["upscale", *common, "--latent", str(lr), "--out", str(existing), "--overwrite"]) == 0
    )
    assert load_latent(existing).shape == (1, 16, 2, 16, 16)


def _wan_file(path: Path, nan: bool = False) -> Path:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=48,
        num_layers=1,
    )
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if nan:
        sd["blocks.0.ffn.net.0.proj.weight"][0, 0] = float("nan")
    save_file(sd, str(path))
    return path


def test_import_wan_refuses_its_own_input_an_existing_output_and_nan_weights(tmp_path, capsys):
    wan = _wan_file(tmp_path / "wan.safetensors")
    before = wan.read_bytes()
    args = ["import-wan", "--num-heads", "2", "--wan", str(wan)]
    assert main([*args, "--out", str(wan), "--overwrite"]) == 2
    one_line(capsys.readouterr().err, "is also an input")
    assert wan.read_bytes() == before
    out = tmp_path / "gvr.safetensors"
    out.write_bytes(b"an earlier import")
    assert main([*args, "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, "exists")
    assert out.read_bytes() == b"an earlier import"
    bad = _wan_file(tmp_path / "nan.safetensors", nan=True)
    assert (
        main(
            [
                "import-wan",
                "--num-heads",
                "2",
                "--wan",
                str(bad),
                "--out",
                str(tmp_path / "n.safetensors"),
            ]
        )
        == 2
    )
    one_line(capsys.readouterr().err, "blocks.0.ffn.0.weight", "NaN")
    assert not (tmp_path / "n.safetensors").exists()


def test_convert_cogvideox_refuses_a_cast_that_overflows(tmp_path):
    from simplegvr_core.weights import convert_cogvideox

    sd = {
        "patch_embed.proj.weight": torch.full((4, 4), 1e6),
        "patch_embed.proj.bias": torch.zeros(4),
        "transformer_blocks.0.norm1.linear.weight": torch.ones(4, 4),
    }
    save_file(sd, str(tmp_path / "t.safetensors"))
    with pytest.raises(
        ValueError, match=r"patch_embed\.proj\.weight holds values up to 1e\+06.*float16.*bf16"
    ):
        convert_cogvideox(
            tmp_path / "t.safetensors", tmp_path / "o.safetensors", dtype=torch.float16
        )
    assert not (tmp_path / "o.safetensors").exists()
    # bf16 holds it
    convert_cogvideox(tmp_path / "t.safetensors", tmp_path / "o.safetensors", dtype=torch.bfloat16)


def _race(path: str, payload: bytes, start: float, q) -> None:
    def write(tmp):
        Path(tmp).write_bytes(payload)
        time.sleep(max(0.0, start - time.time()))  # both reach the rename at the same moment

    try:
        files.atomic_write(path, write, replace=False)
        q.put(("won", payload))
    except files.OutputExistsError as e:
        q.put(("lost", str(e)))


def test_two_processes_racing_to_one_path_one_wins_the_other_says_so(tmp_path):
    ctx = multiprocessing.get_context("fork")  # the children only write files
    q = ctx.Queue()
    target = tmp_path / "out.latent"
    for _ in range(3):
        target.unlink(missing_ok=True)
        start = time.time() + 0.5
        procs = [
            ctx.Process(target=_race, args=(str(target), f"run {i}".encode(), start, q))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        results = [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(60)
        won = [r for r in results if r[0] == "won"]
        lost = [r for r in results if r[0] == "lost"]
        assert len(won) == 1 and len(lost) == 1, results
        assert (
            target.read_bytes() == won[0][1] and "appeared while this run was writing" in lost[0][1]
        )
    assert [p.name for p in tmp_path.iterdir()] == ["out.latent"]  # no temporary left behind


def test_an_output_that_appears_while_writing_is_not_replaced(tmp_path, capsys, monkeypatch):
    """The existence check is made again at the rename: a result another run wrote meanwhile
    stays."""
    from simplegvr_core import latent_io

    ck, lr = tiny_checkpoint(tmp_path / "m.safetensors"), tiny_latent(tmp_path / "lr.latent")
    out = tmp_path / "hr.latent"
    real = latent_io.save_file

    def save_and_race(tensors, tmp, metadata=None):
        real(tensors, tmp, metadata=metadata)
        out.write_bytes(b"the other run's result")

    monkeypatch.setattr(latent_io, "save_file", save_and_race)
    assert (
        main(
            [
                "upscale",
                "--checkpoint",
                str(ck),
                "--latent",
                str(lr),
                "--out",
                str(out),
                "--scale",
                "2",
                "--steps",
                "1",
                "--cfg",
                "1",
            ]
        )
        == 2
    )
    one_line(capsys.readouterr().err, "appeared while this run was writing it")
    assert out.read_bytes() == b"the other run's result"
    assert [p.name for p in tmp_path.iterdir() if files.is_temporary(p)] == []


def test_output_paths_whose_parent_is_a_file_are_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        files.check_output(tmp_path / "afile" / "sub" / "o.latent")
    with pytest.raises(ValueError, match="is a folder"):
        files.check_output(tmp_path)
    assert main(["demo", "--out", str(tmp_path / "afile"), "--clips", "1"]) == 2
    one_line(capsys.readouterr().err, "is a file, not a folder")


# --- 3. the WebP bomb -----------------------------------------------------------------------------
def webp_bomb(path: Path) -> Path:
    """A small animated WebP whose VP8X canvas header claims 16383x16383 (a 24 KB file, a 1 GB
    canvas)."""
    from PIL import Image

    frames = [Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=60, lossless=True)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"VP8X"
    data[24:27] = (16383 - 1).to_bytes(3, "little")
    data[27:30] = (16383 - 1).to_bytes(3, "little")
    path.write_bytes(bytes(data))
    return path


def test_a_webp_decompression_bomb_is_a_bad_file_like_any_other(tmp_path, capsys):
    from simplegvr_core.degrade.video_io import probe_video

    bomb = webp_bomb(tmp_path / "bomb.webp")
    with pytest.raises(ValueError, match="bomb.webp"):
        probe_video(bomb)
    assert main(["degrade", str(bomb), str(tmp_path / "o.mp4")]) == 2
    one_line(capsys.readouterr().err, "bomb.webp")
    from simplegvr_core import demo

    skipped = []
    assert list(demo.iter_clips([bomb], skipped, log=lambda *_: None)) == []
    assert len(skipped) == 1 and skipped[0].startswith("bomb.webp: ")


# --- 4. demo --videos guards ----------------------------------------------------------------------
def test_demo_probes_before_decoding_and_refuses_oversize_video(tmp_path, monkeypatch):
    from simplegvr_core.degrade import video_io
    from simplegvr_core.demo import clips

    write = video_io.write_video
    write(tmp_path / "big.mp4", np.zeros((20, 64, 96, 3), np.uint8), fps=8)
    monkeypatch.setattr(video_io, "MAX_FRAME_PIXELS", 64 * 64)

    def no_decoding(*a, **k):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(video_io, "iter_frames", no_decoding)
    with pytest.raises(ValueError, match=r"big.mp4' is 96x64 px, above the 4096 px limit"):
        clips.read_demo_clip(tmp_path / "big.mp4", 17, 128)


def test_demo_decodes_only_its_window_and_matches_the_whole_clip_reader(tmp_path, monkeypatch):
    from simplegvr_core.degrade import video_io
    from simplegvr_core.demo import clips

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (40, 48, 80, 3), dtype=np.uint8)
    video_io.write_video(tmp_path / "v.mp4", frames, fps=8)
    whole = clips.demo_clip(video_io.read_video(tmp_path / "v.mp4")[0], 17, 32)
    decoded = []
    real = video_io.iter_frames

    def counting(path, max_frames=None):
        for f in real(path, max_frames):
            decoded.append(1)
            yield f

    monkeypatch.setattr(video_io, "iter_frames", counting)
    assert np.array_equal(clips.read_demo_clip(tmp_path / "v.mp4", 17, 32), whole)
    assert len(decoded) == (40 - 17) // 2 + 17  # never past the window


def test_demo_videos_count_guard_and_its_own_outputs_are_not_inputs(tmp_path, monkeypatch, capsys):
    from simplegvr_core import demo
    from simplegvr_core.demo import clips

    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(3):
        (folder / f"c{i}.mp4").write_bytes(b"x")
    monkeypatch.setattr(demo, "MAX_VIDEOS", 2)
    assert main(["demo", "--videos", str(folder), "--out", str(tmp_path / "o")]) == 2
    one_line(capsys.readouterr().err, "3 videos found", "--clips")
    out = folder / "results"
    out.mkdir()
    (out / "side_by_side.mp4").write_bytes(b"an earlier demo's output")
    assert [p.name for p in clips.list_media([folder], exclude=out)] == [
        "c0.mp4",
        "c1.mp4",
        "c2.mp4",
    ]


# --- 5. the demo weights are one set --------------------------------------------------------------
def _asset_copy(tmp_path: Path) -> Path:
    import shutil

    from simplegvr_core import demo

    a = tmp_path / "assets"
    shutil.copytree(demo.ASSETS, a)
    return a


def test_a_mixed_set_of_demo_weights_is_refused(tmp_path):
    from simplegvr_core import demo

    a = _asset_copy(tmp_path)
    assert set(demo.read_manifest(a)["files"]) == set(demo.ASSET_FILES)
    (a / demo.STUDENT_FILE).write_bytes((a / demo.MODEL_FILE).read_bytes())  # a half-swapped set
    with pytest.raises(
        ValueError, match="not the set their manifest records: demo_student.safetensors differs"
    ):
        demo.load_model(a)


def test_an_interrupted_install_leaves_the_old_set_whole(tmp_path, monkeypatch):
    import shutil

    from simplegvr_core import demo

    a = _asset_copy(tmp_path)
    before = {p.name: p.read_bytes() for p in a.iterdir()}
    new = tmp_path / "new"
    new.mkdir()
    for name in demo.ASSET_FILES:
        (new / name).write_bytes(b"new " + name.encode())
    calls = []
    real = shutil.copyfile

    def interrupted(src, dst, *a, **k):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # SIGTERM / Ctrl-C in the middle of the rebuild's last step
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", interrupted)
    from training import demo as lab

    with pytest.raises(KeyboardInterrupt):
        lab.install_assets(a, {n: new / n for n in demo.ASSET_FILES}, {"note": "new"})
    assert {p.name: p.read_bytes() for p in a.iterdir()} == before  # whole, and no temporary left
    monkeypatch.setattr(shutil, "copyfile", real)
    manifest = lab.install_assets(a, {n: new / n for n in demo.ASSET_FILES}, {"note": "new"})
    assert demo.read_manifest(a) == manifest and manifest["files"][
        demo.VAE_FILE
    ] == demo.file_sha256(new / demo.VAE_FILE)


# --- 7. the memory a run may plan for -------------------------------------------------------------
def test_available_memory_honours_rlimit_as():
    code = (
        "import resource; from simplegvr_core import memory; v = memory._virtual_size(); "
        "resource.setrlimit(resource.RLIMIT_AS, (v + 2**30, v + 2**30)); "
        "print(memory.host_available(), memory.address_space_available())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    host, address = (int(v) for v in r.stdout.split())
    assert 0 < address <= 2**30 and host <= address


def test_available_memory_reads_cgroup_v2_and_v1_limits(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "user.slice" / "job").mkdir(parents=True)
    (v2 / "user.slice" / "job" / "memory.max").write_text("8589934592\n")
    (v2 / "user.slice" / "job" / "memory.current").write_text("2147483648\n")
    (v2 / "user.slice" / "memory.max").write_text("max\n")
    member = tmp_path / "cgroup"
    member.write_text("0::/user.slice/job\n")
    assert memory.cgroup_available(v2, member) == 6 * 2**30
    v1 = tmp_path / "v1"
    (v1 / "memory" / "docker" / "abc").mkdir(parents=True)
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(str(4 * 2**30))
    (v1 / "memory" / "docker" / "abc" / "memory.usage_in_bytes").write_text(str(2**30))
    member.write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    assert memory.cgroup_available(v1, member) == 3 * 2**30
    # v1's "none"
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert memory.cgroup_available(v1, member) is None


def test_small_memory_figures_keep_their_digits():
    assert (
        memory.format_bytes(1000) == "1000 bytes" and memory.format_bytes(3 * 2**20) == "3.00 MiB"
    )
    assert memory.format_bytes(-5) == "0 bytes" and memory.format_bytes(2.5 * 2**30) == "2.50 GiB"
    with pytest.raises(
        ValueError, match=r"needs about 3\.00 MiB but 1000 bytes is the memory budget"
    ):
        memory.check_memory(3 * 2**20, 1000, "x")


# --- 10. messages that name their file ------------------------------------------------------------
def test_deeply_nested_json_in_a_checkpoint_names_the_file(tmp_path):
    from simplegvr_core.checkpoint import load_checkpoint

    deep = "[" * 100_000 + "]" * 100_000
    save_file(
        {"x": torch.zeros(1)},
        str(tmp_path / "deep.safetensors"),
        metadata={"format": "simplegvr", "version": "1", "config": deep},
    )
    with pytest.raises(ValueError, match=r"deep\.safetensors.*nested too deeply"):
        load_checkpoint(tmp_path / "deep.safetensors")
    with pytest.raises(ValueError, match="flow_config_json is JSON nested too deeply"):
        files.parse_json(deep, "flow_config_json")


def test_a_fifo_is_named_as_a_fifo(tmp_path, capsys):
    fifo = tmp_path / "pipe.latent"
    os.mkfifo(fifo)
    ck = tiny_checkpoint(tmp_path / "m.safetensors")
    assert (
        main(
            [
                "upscale",
                "--checkpoint",
                str(ck),
                "--latent",
                str(fifo),
                "--out",
                str(tmp_path / "o.latent"),
            ]
        )
        == 2
    )
    one_line(capsys.readouterr().err, "pipe.latent", "is a FIFO (named pipe), not a regular file")
    assert main(["info", str(fifo)]) == 2
    one_line(capsys.readouterr().err, "FIFO")


def test_a_constant_latent_is_not_called_a_cogvideox_latent():
    from simplegvr_core.latent_formats import read_latent

    with pytest.raises(ValueError, match=r"same value \(0\) everywhere \(an empty latent\?\)"):
        read_latent(torch.zeros(1, 16, 2, 8, 8), "wan21", "auto")
    # the user's word for it
    assert read_latent(torch.zeros(1, 16, 2, 8, 8), "wan21", "raw").raw.abs().max() == 0


# --- the rule behind all of it --------------------------------------------------------------------
DELETING = re.compile(
    r"\.unlink\(|\brmtree\(|os\.remove\(|os\.rmdir\(|\.rmdir\(|os\.replace\(|os\.rename\(|"
    r"shutil\.move\("
)


def test_nothing_outside_files_py_deletes_or_replaces_a_file():
    """Every deletion and every rename onto a path is made by simplegvr_core/files.py, which removes
    only this project's own temporaries, checkpoint folders and marked private folders."""
    offenders = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(("tests/", ".git/")) or rel == "simplegvr_core/files.py" or "/." in rel:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if DELETING.search(code):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []
