"""Rules a workflow in workflows/ follows so it reads well when opened in ComfyUI's frontend (1.43,
ComfyUI v0.22).

Facts they rest on (frontend 1.43.18, read from its bundle; see README "Example workflows"):
- A node's on-screen box is `pos`/`size` plus its title bar above `pos` (LiteGraph NODE_TITLE_HEIGHT
  30).
- Opened from the template browser, the view is `fitView`: the nodes' bounding box (+10 padding) is
  centred and scaled to fill at most 75% of the canvas; `extra.ds` is ignored. Opened from a file,
  `extra.ds` is applied (screen = (graph + offset) * scale).
- Below a zoom of 8 / 14 = 0.571 (device pixel ratio 1) note widgets are hidden: a note is an empty
  box.
- Note text is 10 px (setting Comfy.TextareaWidget.FontSize), about 15 px a line; markdown h1/h2/h3
  are 22/18/16 px.
- The left sidebar (56 px) and the top menu + workflow tabs (about 80 px) are drawn over the canvas.
- Template titles are the file names (no metadata is read), thumbnails are exactly `<name>.jpg`
  beside the json.
- The missing-models panel downloads an entry of a node's `properties.models` when it has a url on
  huggingface.co / civitai.com and a name ending in .safetensors/.sft/.ckpt/.pth/.pt; its directory
  is where the file goes (ComfyUI Desktop). Files the user makes (MADE_BY_USER, the SimpleGVR
  checkpoint) point to the README instead.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlparse

TITLE_H = 30
NOTE_TYPES = ("Note", "MarkdownNote")
LOD_SCALE = 8 / 14  # below this zoom notes are not drawn
DESKTOP_CANVAS = (1920, 960)  # a 1920x1080 screen less the browser's own bars
LAPTOP_CANVAS = (1366, 650)
SIDEBAR_W, TOPBAR_H = 56, 80
MIN_TEMPLATE_SCALE = 0.8  # fitView zoom on DESKTOP_CANVAS: 10 px note text at >= 8 px
# Model loaders of ComfyUI core (and ours) -> the models/ folder their file widget reads.
LOADER_DIRECTORIES = {
    "UNETLoader": "diffusion_models",
    "CLIPLoader": "text_encoders",
    "DualCLIPLoader": "text_encoders",
    "VAELoader": "vae",
    "CheckpointLoaderSimple": "checkpoints",
    "LoraLoader": "loras",
    "LoraLoaderModelOnly": "loras",
    "CLIPVisionLoader": "clip_vision",
    "UpscaleModelLoader": "upscale_models",
    "LatentUpscaleModelLoader": "latent_upscale_models",
    "SimpleGVRModelLoader": "simplegvr",
    "SimpleGVRUltraFlashLoader": "simplegvr",
    "SimpleGVRFastDecode": "simplegvr",
}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt", ".bin", ".gguf", ".onnx")
DOWNLOAD_HOSTS = ("https://huggingface.co/", "https://civitai.com/")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")
# Files with no download, which the user makes: their entries point to the README section that says
# how. The SimpleGVR checkpoint (train it, or `simplegvr import-wan`) and the CogVideoX transformer
# in ComfyUI's key names (`simplegvr convert-cogvideox`: the published one has diffusers' names).
SIMPLEGVR_MODEL_DOC = "https://github.com/simplegvr/simplegvr#model-files"
# beside every models/simplegvr/ file
MADE_BY_USER = {"cogvideox_5b_transformer_bf16.safetensors": SIMPLEGVR_MODEL_DOC}
# The published files that go into models/simplegvr/: Ultra Flash's (Apache-2.0), which the panel
# downloads.
ULTRAFLASH_URL = "https://huggingface.co/xin1u/UltraFlash/resolve/main/"
PUBLISHED_SIMPLEGVR = {
    f: ULTRAFLASH_URL + f for f in ("sr_dit_sparse.pth", "latent_upsampler.pth", "tiny_decoder.pth")
}


# --- geometry -------------------------------------------------------------------------------------
def box(node) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a node on the canvas, title bar included."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE_H, x + w, y + h


# LiteGraph's computeSize (frontend 1.43.18): a node opened with a smaller saved size grows to its
# minimum height, slots x NODE_SLOT_HEIGHT + every widget's NODE_WIDGET_HEIGHT + 4 (+ 8 after the
# widgets) + 6. Colour Fix, saved at 80 px, is drawn 102 px tall (2 input slots, 2 widgets): the
# lint checks the sizes the frontend really gives.
SLOT_H, WIDGET_H = 20, 20
WIDGET_INPUTS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def min_height(node, info: dict | None) -> float:
    """The height LiteGraph gives `node` at least, from its node spec (`/object_info` entry); 0
    without one."""
    if not info:
        return 0
    widgets, slots = 0, 0
    for section in ("required", "optional"):
        for spec in (info["input"].get(section) or {}).values():
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if kind in WIDGET_INPUTS and not opts.get("forceInput"):
                widgets += (
                    1
                    + bool(opts.get("control_after_generate"))
                    + bool(
                        any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload"))
                    )
                )
            else:
                slots += 1
    slots = max(slots, len(info.get("output") or []), 1)
    return slots * SLOT_H + (widgets * (WIDGET_H + 4) + 8 if widgets else 0) + 6


def real_box(node, info: dict | None) -> tuple[float, float, float, float]:
    """`box` with the height the frontend really draws (the saved one, or min_height when that is
    larger)."""
    x0, y0, x1, y1 = box(node)
    return x0, y0, x1, max(y1, node["pos"][1] + min_height(node, info))


def overlaps(a, b, gap: float = 0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def inside(a, b) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def group_box(group) -> tuple[float, float, float, float]:
    x, y, w, h = group["bounding"]
    return x, y, x + w, y + h


def bounds(wf) -> tuple[float, float, float, float]:
    """The frontend's createBounds(nodes, 10): every node box, padded by 10."""
    boxes = [box(n) for n in wf["nodes"]]
    return (
        min(b[0] for b in boxes) - 10,
        min(b[1] for b in boxes) - 10,
        max(b[2] for b in boxes) + 10,
        max(b[3] for b in boxes) + 10,
    )


def fit_view(wf, canvas=DESKTOP_CANVAS) -> dict:
    """The view fitView gives (the template browser): {'scale', 'offset'} as in LiteGraph's
    DragAndScale."""
    x0, y0, x1, y1 = bounds(wf)
    bw, bh = x1 - x0, y1 - y0
    scale = min(0.75 * canvas[0] / max(bw, 300), 0.75 * canvas[1] / max(bh, 300), 10)
    return {
        "scale": scale,
        "offset": [-x0 - bw / 2 + canvas[0] / scale / 2, -y0 - bh / 2 + canvas[1] / scale / 2],
    }


def on_screen(b, ds) -> tuple[float, float, float, float]:
    s, (ox, oy) = ds["scale"], ds["offset"]
    return (b[0] + ox) * s, (b[1] + oy) * s, (b[2] + ox) * s, (b[3] + oy) * s


# --- notes ----------------------------------------------------------------------------------------
# 10 px text: a conservative average glyph width (code is wider than prose)
CHAR_W, LINE_H = 6.0, 15
HEADING_H = {1: 32, 2: 27, 3: 24}
PAD_X, PAD_Y = 24, 20  # widget margins inside the note


def _visible(text: str) -> str:
    """Markdown source -> roughly the characters a reader sees (links show their text, marks
    vanish)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[*_`]", "", text)


def note_text_height(text: str, width: float, markdown: bool = True) -> tuple[float, list[str]]:
    """Estimated rendered height of a note's text at 100% zoom in a note `width` wide, and the lines
    that cannot fit its width (table rows wider than the note)."""
    usable = width - PAD_X
    height, too_wide = 0.0, []
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            height += 8
            continue
        if markdown and s.startswith("#"):
            level = len(s) - len(s.lstrip("#"))
            height += HEADING_H.get(level, 22) * math.ceil(
                len(_visible(s.lstrip("# "))) * CHAR_W * 1.6 / usable
            )
            continue
        if markdown and s.startswith("|"):
            if re.fullmatch(r"\|[\s:|-]+\|?", s):
                continue  # the header separator row
            cells = [c.strip() for c in s.strip("|").split("|")]
            row_w = sum(len(_visible(c)) * CHAR_W + 16 for c in cells)
            if row_w > usable:
                too_wide.append(s)
            height += 22
            continue
        indent = 16 if markdown and re.match(r"([-*]|\d+\.)\s", s) else 0
        height += LINE_H * math.ceil(
            len(_visible(s)) / max(1, int((usable - indent) / CHAR_W)) or 1
        )
    return height, too_wide


def note_fits(node) -> list[str]:
    """Why a note's text does not fit its box at 100% (it would scroll), or [] when it does."""
    text = str((node.get("widgets_values") or [""])[0])
    h, wide = note_text_height(text, node["size"][0], node["type"] == "MarkdownNote")
    problems = [
        f"note {node['id']}: table row wider than the note ({node['size'][0]} px): {row[:60]}..."
        for row in wide
    ]
    if h > node["size"][1] - PAD_Y:
        problems.append(
            f"note {node['id']}: its text needs about {h:.0f} px but the note is "
            f"{node['size'][1]} px tall"
        )
    return problems


# --- model files ----------------------------------------------------------------------------------
def model_widget_values(node) -> list[str]:
    return [
        v
        for v in node.get("widgets_values") or []
        if isinstance(v, str) and v.lower().endswith(MODEL_SUFFIXES)
    ]


def model_entry_problems(node) -> list[str]:
    """What is wrong with a loader node's properties.models for the files its widgets name."""
    where = f"node {node['id']} ({node['type']})"
    files = model_widget_values(node)
    if not files:
        return []
    directory = LOADER_DIRECTORIES.get(node["type"])
    if directory is None:
        return [
            f"{where} names model files {files} but is not in LOADER_DIRECTORIES: add its "
            f"models/ folder"
        ]
    entries = {
        e.get("name"): e
        for e in (node.get("properties") or {}).get("models", [])
        if isinstance(e, dict)
    }
    problems = []
    for f in files:
        e = entries.get(f)
        if e is None:
            problems.append(f"{where}: no properties.models entry named {f!r}")
            continue
        if e.get("directory") != directory:
            problems.append(
                f"{where}: {f} has directory {e.get('directory')!r}, expected {directory!r}"
            )
        url = e.get("url", "")
        if directory == "simplegvr" and f in PUBLISHED_SIMPLEGVR:
            if url != PUBLISHED_SIMPLEGVR[f]:
                problems.append(
                    f"{where}: {f} is published; its url should be "
                    f"{PUBLISHED_SIMPLEGVR[f]}, got {url!r}"
                )
            continue
        if directory == "simplegvr":
            if url != SIMPLEGVR_MODEL_DOC:
                problems.append(
                    f"{where}: the SimpleGVR checkpoint's url should be {SIMPLEGVR_MODEL_DOC} "
                    f"(train or import it: see README), got {url!r}"
                )
            continue
        if f in MADE_BY_USER:
            if url != MADE_BY_USER[f]:
                problems.append(
                    f"{where}: {f} is made by the user; its url should be {MADE_BY_USER[f]} (the "
                    f"README section that says how), got {url!r}"
                )
            continue
        parsed = urlparse(url)
        if (
            not url.startswith(DOWNLOAD_HOSTS)
            or "/resolve/" not in parsed.path
            and "civitai" not in parsed.netloc
        ):
            problems.append(
                f"{where}: {f}: url {url!r} is not a direct huggingface.co/.../resolve/... (or "
                f"civitai) download the panel offers"
            )
        elif parsed.path.rsplit("/", 1)[-1] != f:
            problems.append(f"{where}: {f}: url {url!r} downloads a file of another name")
        if not f.endswith(DOWNLOAD_SUFFIXES):
            problems.append(f"{where}: {f}: the panel only downloads {DOWNLOAD_SUFFIXES}")
    return problems
