"""Every workflow in workflows/ reads well in ComfyUI's frontend: rules from tests/workflow_lint.py
(which says what each rests on). They apply to any workflow added later: a new one passes them or is
fixed."""

import json
import sys
from itertools import combinations
from pathlib import Path

import pytest
from comfy_workflows import load_object_info
from workflow_lint import (
    DESKTOP_CANVAS,
    LAPTOP_CANVAS,
    LOD_SCALE,
    MIN_TEMPLATE_SCALE,
    NOTE_TYPES,
    SIDEBAR_W,
    TOPBAR_H,
    box,
    fit_view,
    group_box,
    inside,
    min_height,
    model_entry_problems,
    note_fits,
    note_text_height,
    on_screen,
    overlaps,
    real_box,
)

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
INPUTS = REPO / "workflows" / "input"  # copied into ComfyUI's input/ by the pack (nodes/runtime.py)
OBJECT_INFO = load_object_info()


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_two_nodes_overlap(path):
    """At the sizes the frontend draws them (a node saved smaller than its widgets need grows:
    real_box)."""
    nodes = load(path)["nodes"]
    boxes = {n["id"]: real_box(n, OBJECT_INFO.get(n["type"])) for n in nodes}
    hits = [
        (a["id"], b["id"])
        for a, b in combinations(nodes, 2)
        if overlaps(boxes[a["id"]], boxes[b["id"]], gap=4)
    ]
    assert not hits, f"{path.name}: nodes (title bars included, 4 px apart) overlap: {hits}"


def test_the_lint_grows_nodes_as_the_frontend_does():
    """Frontend 1.43.18 draws Colour Fix (saved 80 px tall) 102 px tall, and Create Video 78 px."""
    for kind, height in (("SimpleGVRColourFix", 102), ("CreateVideo", 78), ("VAEDecode", 46)):
        assert min_height({"type": kind}, OBJECT_INFO[kind]) == height, kind


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_node_belongs_to_two_groups(path):
    """Groups do not overlap, and every node is wholly inside one group or outside all of them."""
    wf = load(path)
    groups = wf.get("groups") or []
    for a, b in combinations(groups, 2):
        assert not overlaps(group_box(a), group_box(b)), (
            f"{path.name}: groups {a['title']!r} and {b['title']!r} overlap"
        )
    for n in wf["nodes"]:
        touched = [g["title"] for g in groups if overlaps(box(n), group_box(g))]
        assert len(touched) <= 1, (
            f"{path.name}: node {n['id']} ({n['type']}) is in groups {touched}"
        )
        for g in groups:
            if overlaps(box(n), group_box(g)):
                assert inside(box(n), group_box(g)), (
                    f"{path.name}: node {n['id']} sticks out of group {g['title']!r}"
                )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_template_browser_opens_it_at_a_readable_zoom(path):
    """fitView (the template browser ignores extra.ds) must zoom no lower than 0.8 on a 1920x1080
    screen (10 px note text at 8 px or more), and above 0.571 on a 1366x768 laptop, where notes
    would otherwise be drawn empty."""
    wf = load(path)
    desktop, laptop = fit_view(wf, DESKTOP_CANVAS)["scale"], fit_view(wf, LAPTOP_CANVAS)["scale"]
    assert desktop >= MIN_TEMPLATE_SCALE, (
        f"{path.name}: fitView zoom {desktop:.2f} on 1920x1080: make the graph compact"
    )
    assert laptop > LOD_SCALE, f"{path.name}: fitView zoom {laptop:.3f} on a laptop hides the notes"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_notes_are_on_the_first_screen_when_opened_from_a_file(path):
    """Opened from a file, extra.ds places the view: every note is wholly visible, clear of the
    sidebar and the top bars, at the zoom the template browser would use too."""
    wf = load(path)
    notes = [n for n in wf["nodes"] if n["type"] in NOTE_TYPES]
    assert notes, f"{path.name}: no note explains the workflow"
    ds = (wf.get("extra") or {}).get("ds")
    assert ds, f"{path.name}: no extra.ds"
    assert ds["scale"] >= MIN_TEMPLATE_SCALE
    w, h = DESKTOP_CANVAS
    for n in notes:
        x0, y0, x1, y1 = on_screen(box(n), ds)
        assert x0 >= SIDEBAR_W and y0 >= TOPBAR_H and x1 <= w and y1 <= h, (
            f"{path.name}: note {n['id']} is at screen {x0:.0f},{y0:.0f}-{x1:.0f},{y1:.0f}, not "
            f"on the first screen"
        )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_notes_fit_their_text_without_scrolling(path):
    problems = [p for n in load(path)["nodes"] if n["type"] in NOTE_TYPES for p in note_fits(n)]
    assert not problems, f"{path.name}: {problems}"


def test_the_note_estimate_catches_a_note_that_scrolls():
    text = (
        "# Title\n\n"
        + "a line of prose that is long enough to wrap once or twice in a narrow note. " * 20
    )
    h, _ = note_text_height(text, 300)
    assert h > 300
    _, wide = note_text_height(
        "| `umt5_xxl_fp8_e4m3fn_scaled.safetensors` | `models/text_encoders/` | a third column |",
        300,
    )
    assert wide
    assert note_fits(
        {"id": 1, "type": "MarkdownNote", "size": [300, 120], "widgets_values": [text]}
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_model_file_has_a_properties_models_entry(path):
    """The missing-models panel offers a download for each Wan/CogVideoX file, and says where the
    SimpleGVR checkpoint comes from."""
    problems = [p for n in load(path)["nodes"] for p in model_entry_problems(n)]
    assert not problems, f"{path.name}: {problems}"


def test_a_model_entry_is_a_direct_download_or_for_a_file_the_user_makes_the_readme():
    from workflow_lint import MADE_BY_USER, SIMPLEGVR_MODEL_DOC

    def node(kind, file, url):
        return {
            "id": 1,
            "type": kind,
            "widgets_values": [file, "default"],
            "properties": {"models": [{"name": file, "url": url, "directory": "diffusion_models"}]},
        }

    hf = (
        "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
        "diffusion_models/"
    )
    assert (
        model_entry_problems(
            node(
                "UNETLoader",
                "wan2.2_ti2v_5B_fp16.safetensors",
                hf + "wan2.2_ti2v_5B_fp16.safetensors?download=true",
            )
        )
        == []
    )
    assert (
        "not a direct"
        in model_entry_problems(
            node(
                "UNETLoader",
                "wan2.2_ti2v_5B_fp16.safetensors",
                # a public file needs its download
                SIMPLEGVR_MODEL_DOC,
            )
        )[0]
    )
    made = next(iter(MADE_BY_USER))  # the converted CogVideoX transformer: no download exists
    assert model_entry_problems(node("UNETLoader", made, MADE_BY_USER[made])) == []
    assert "made by the user" in model_entry_problems(node("UNETLoader", made, hf + made))[0]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_file_name_is_a_human_title_with_a_real_thumbnail(path):
    """Frontend 1.43 titles a custom template with its file name, verbatim, and shows <name>.jpg as
    its thumbnail."""
    import cv2
    import numpy as np

    name = path.stem
    assert "_" not in name and name[0].isupper() and len(name) <= 40, (
        f"{name!r}: the file name is the template's title: words with spaces, capitalised, at "
        f"most 40 characters"
    )
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"no thumbnail {thumb.name} for {path.name}"
    data = thumb.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and len(data) <= 150_000, (
        f"{thumb.name}: a JPEG of at most 150 kB"
    )
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and 256 <= min(img.shape[:2]) and max(img.shape[:2]) <= 1024
    assert img.std() > 10, f"{thumb.name} looks blank"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_input_files_ship_with_the_pack_so_the_workflow_runs_when_first_opened(path):
    for n in load(path)["nodes"]:
        if n["type"] in ("LoadVideo", "LoadImage", "LoadAudio", "LoadLatent"):
            name = n["widgets_values"][0]
            assert (INPUTS / name).is_file(), (
                f"{path.name}: {n['type']} opens {name!r}, which workflows/input/ lacks"
            )


def test_the_example_clip_is_small_and_playable():
    from simplegvr_core.degrade.video_io import read_video

    clip = INPUTS / "simplegvr_example.mp4"
    assert clip.stat().st_size < 600_000
    frames, fps = read_video(clip)
    assert frames.shape == (33, 360, 640, 3) and frames.std() > 20 and fps == 16


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_thumbnail_is_not_older_than_what_it_shows(path):
    """Each thumbnail records the SHA-256 of what it was made from (the demo assets' manifest, the
    example clip, or the settings its title card draws); when those change, `python
    tools/make_workflow_assets.py "<name>"` must remake it."""
    sys.path.insert(0, str(REPO / "tools"))
    import make_workflow_assets as assets

    recorded = assets.read_stamp(path.with_suffix(".jpg"))
    assert recorded is not None, (
        f"{path.stem}.jpg records no sources: remake it with tools/make_workflow_assets.py"
    )
    assert recorded == assets.sources(path.stem), (
        f"{path.stem}.jpg is older than what it shows: python tools/make_workflow_assets.py "
        f'"{path.stem}"'
    )


def test_a_stale_thumbnail_is_caught(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "tools"))
    import make_workflow_assets as assets

    name = "Wan 2.1 T2V 480p to 1080p"
    import simplegvr_core.demo as demo

    monkeypatch.setattr(demo, "read_manifest", lambda: {"files": {}})  # the demo assets rebuilt
    assert assets.read_stamp(REPO / "workflows" / f"{name}.jpg") != assets.sources(name)
