"""Make the example workflows' assets: the example clip they open with and their template-browser
thumbnails.

    python tools/make_workflow_assets.py

- `workflows/input/simplegvr_example.mp4`: a procedural clip (`simplegvr_core.procedural.make_clip`,
  textured shapes moving over a panning background), 33 frames at 640x360, 16 fps, H.264. The pack
  copies it into ComfyUI's `input/` folder when it loads, so the Flow Degrade and model-guided
  workflows run when first opened.
- `workflows/<name>.jpg`: the thumbnail ComfyUI's template browser shows for `workflows/<name>.json`
  (frontend 1.43 requests exactly that file), made from real outputs: the demo model's cascade
  (decoded LR latent vs SimpleGVR), the Flow Degrade node's degradation of the example clip, and the
  HR / 480p pair of the example clip.
- The Wan 2.2 TI2V-5B, CogVideoX and Ultra Flash workflows get title cards instead: nothing they
  produce can be rendered here (no SimpleGVR weights for those latents exist, Ultra Flash's weights
  are not on this machine, and the demo world only has a Wan 2.1-contract codec; tiny random models
  would render noise). Each card says so, and draws the workflow's own numbers: its T2V size and
  frames, the latent and pixel size the Latent Upsampler's size rule (`pipeline.target_size` on the
  family's config; Ultra Flash's real shapes on the meta device) gives them and, for Ultra Flash,
  the streaming groups the Sampler's plan runs.
- Every thumbnail carries, in a JPEG comment, the SHA-256 of what it was made from (`sources`: the
  demo assets' manifest, the example clip, the workflow's own settings);
  tests/test_workflow_layout.py fails when they change and the thumbnail was not remade.
Everything is deterministic (fixed seeds); rerun after changing a workflow's subject. `python
tools/make_workflow_assets.py "CogVideoX 5B 480p to 1080p"` remakes only the assets named (a
workflow name, or `clip`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKFLOWS = ROOT / "workflows"
CLIP = WORKFLOWS / "input" / "simplegvr_example.mp4"
# seed 6: fast shapes, visible degradation
CLIP_SEED, CLIP_FRAMES, CLIP_HW, CLIP_FPS = 6, 33, (360, 640), 16
THUMB = 384  # square: the browser's card is square and shows the image object-contain


def example_clip() -> np.ndarray:
    from simplegvr_core.procedural import make_clip

    return make_clip(CLIP_SEED, CLIP_FRAMES, *CLIP_HW, max_speed=8.0)


def _panel(img: np.ndarray, label: str, h: int) -> np.ndarray:
    """`img` scaled to THUMB wide and cropped (centre) to h rows, with a label bar."""
    scale = THUMB / img.shape[1]
    img = cv2.resize(
        img,
        (THUMB, max(h, round(img.shape[0] * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST,
    )
    top = (img.shape[0] - h) // 2
    img = np.ascontiguousarray(img[top : top + h])
    cv2.rectangle(img, (0, 0), (THUMB, 22), (20, 20, 20), -1)
    cv2.putText(img, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def thumbnail(a: np.ndarray, a_label: str, b: np.ndarray, b_label: str, path: Path) -> None:
    half = THUMB // 2
    write_jpeg(
        np.concatenate([_panel(a, a_label, half), _panel(b, b_label, half)], 0),
        path,
        sources(path.stem),
    )


# --- title cards: the family workflows, whose outputs cannot be rendered without their real models
# workflow -> (title lines, accent colour RGB, SimpleGVR config of its checkpoint, the node that
# sets its T2V size)
TITLE_CARDS = {
    "Wan 2.2 TI2V-5B 704p to 1080p": (
        ("Wan 2.2 TI2V-5B", "704p -> SimpleGVR -> 1080p"),
        (92, 160, 220),
        "wan2.2-ti2v-5b",
        "Wan22ImageToVideoLatent",
    ),
    "CogVideoX 5B 480p to 1080p": (
        ("CogVideoX 5B", "480p -> SimpleGVR -> 1080p"),
        (236, 150, 64),
        "cogvideox-1.3b",
        "EmptyHunyuanLatentVideo",
    ),
    "Wan 2.1 480p to 1K Ultra Flash one step": (
        ("Ultra Flash, one step", "Wan 2.1 480p -> DiT -> tiny decoder"),
        (120, 210, 120),
        "ultraflash",
        "EmptyHunyuanLatentVideo",
    ),
    "Wan 2.1 480p to 1K Ultra Flash hires fix": (
        ("Ultra Flash hires fix", "2x upsampler -> Wan KSampler 0.3"),
        (200, 120, 220),
        "ultraflash",
        "EmptyHunyuanLatentVideo",
    ),
}


def ultraflash_model():
    """Ultra Flash's published model at its real shapes on the meta device (no weights: its config
    and plan)."""
    import torch

    from simplegvr_core import SimpleGVR
    from simplegvr_core.weights import ULTRAFLASH_RECIPE, ultraflash_config

    # the key shapes ultraflash_config reads (ultraflash.md, section 1)
    def wan_dit(d=1536, layers=30):
        sd = {
            "patch_embedding.weight": torch.empty(d, 32, 1, 2, 2, device="meta"),
            "head.head.weight": torch.empty(64, d, device="meta"),
            "blocks.0.ffn.0.weight": torch.empty(8960, d, device="meta"),
            "time_embedding.0.weight": torch.empty(d, 256, device="meta"),
            "text_embedding.0.weight": torch.empty(d, 4096, device="meta"),
            "blocks.0.self_attn.norm_q.weight": torch.empty(d, device="meta"),
            "blocks.0.norm3.weight": torch.empty(d, device="meta"),
        }
        sd.update(
            {f"blocks.{i}.modulation": torch.empty(1, 6, d, device="meta") for i in range(layers)}
        )
        return sd

    up = {
        "pre_shuffle.0.weight": torch.empty(512, 16, 3, 3, device="meta"),
        **{
            f"blocks.{i}.conv.0.weight": torch.empty(128, 256, 3, 3, device="meta")
            for i in range(8)
        },
    }
    model = SimpleGVR.from_config(ultraflash_config(wan_dit(), up).to_dict(), device="meta")
    model.sampling = ULTRAFLASH_RECIPE
    return model


def _text(img, text, org, scale, colour=(255, 255, 255), thick=1, centre=False):
    if centre:
        (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        org = (org[0] - w // 2, org[1])
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def _latent_box(img, x0, y0, hw, px, colour, label):
    """A latent of `hw` latent pixels drawn at `px` screen pixels per latent pixel, its grid every 4
    latent pixels."""
    h, w = round(hw[0] * px), round(hw[1] * px)
    cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), tuple(c // 3 for c in colour), -1)
    for k in range(4, hw[1], 4):
        x = x0 + round(k * px)
        cv2.line(img, (x, y0), (x, y0 + h), tuple(c // 2 for c in colour), 1)
    for k in range(4, hw[0], 4):
        y = y0 + round(k * px)
        cv2.line(img, (x0, y), (x0 + w, y), tuple(c // 2 for c in colour), 1)
    cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), colour, 2)
    _text(img, label, (x0 + w // 2, y0 + h + 16), 0.42, centre=True)
    return w, h


def title_card(name: str) -> np.ndarray:
    """The card for workflows/<name>.json, from the workflow's own settings (RGB, THUMB x THUMB)."""
    from simplegvr_core import SimpleGVR
    from simplegvr_core.pipeline import target_size

    (title, subtitle), accent, config, size_node = TITLE_CARDS[name]
    wf = json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))
    nodes = {n["type"]: n["widgets_values"] for n in wf["nodes"]}
    width, height, frames = nodes[size_node][:3]
    resize_by, edge = nodes["SimpleGVRLatentUpsampler"][:2]
    m = (
        ultraflash_model()
        if config == "ultraflash"
        else SimpleGVR.from_config(config, device="meta")
    )
    fmt = m.latent_format
    r = fmt.spatial_ratio
    lr = fmt.latent_size(height, width)
    hr = target_size(
        m, lr, **({} if resize_by == "native" else {resize_by.replace(" ", "_"): edge})
    )
    t = fmt.latent_frames(frames)

    ramp = np.linspace(0.0, 1.0, THUMB)[:, None, None]
    img = (np.array([18, 20, 26]) * (1 - ramp) + np.array(accent) * 0.22 * ramp).astype(np.uint8)
    img = np.ascontiguousarray(np.broadcast_to(img, (THUMB, THUMB, 3)))
    cv2.rectangle(img, (0, 0), (THUMB, 6), accent, -1)
    _text(img, title, (THUMB // 2, 48), 0.9, accent, 2, centre=True)
    _text(img, subtitle, (THUMB // 2, 78), 0.6, centre=True)
    px = 180 / hr[1]  # the HR latent 180 px wide, the LR one to the same scale
    (lw, lh), (hw, hh) = (
        (round(lr[1] * px), round(lr[0] * px)),
        (round(hr[1] * px), round(hr[0] * px)),
    )
    top, x_hr = 100, THUMB - 16 - hw
    _latent_box(img, 16, top + (hh - lh) // 2, lr, px, (170, 170, 170), f"{lr[1]}x{lr[0]}")
    _latent_box(img, x_hr, top, hr, px, accent, f"{hr[1]}x{hr[0]} latent")
    cv2.arrowedLine(
        img,
        (22 + lw, top + hh // 2),
        (x_hr - 6, top + hh // 2),
        (255, 255, 255),
        2,
        cv2.LINE_AA,
        tipLength=0.3,
    )
    y = top + hh + 48
    _text(
        img,
        f"{fmt.channels}-channel {fmt.family} latent, /{r}, {t} latent frames",
        (THUMB // 2, y),
        0.45,
        centre=True,
    )
    _text(
        img,
        f"{width}x{height} px, {frames} frames -> {hr[1] * r}x{hr[0] * r} px",
        (THUMB // 2, y + 26),
        0.5,
        accent,
        1,
        centre=True,
    )
    if config == "ultraflash":
        from simplegvr_core.plan import plan_sampling

        groups = [e - s for s, e in plan_sampling(m, (1, fmt.channels, t, *hr)).t_windows]
        how = (
            f"one step in groups of {', '.join(map(str, groups))}"
            if "one step" in name
            else "hr_latent -> KSampler, denoise 0.3"
        )
        _text(
            img,
            f"resize_by native (2x); {how}",
            (THUMB // 2, y + 50),
            0.42,
            (200, 200, 200),
            centre=True,
        )
    else:
        _text(
            img,
            f"{resize_by} {edge}, aspect ratio kept",
            (THUMB // 2, y + 50),
            0.42,
            (200, 200, 200),
            centre=True,
        )
    cv2.rectangle(img, (0, THUMB - 30), (THUMB, THUMB), (12, 12, 12), -1)
    _text(
        img,
        "title card: no weights here to render a preview",
        (THUMB // 2, THUMB - 11),
        0.42,
        (190, 190, 190),
        centre=True,
    )
    return img


# --- what each thumbnail shows, recorded in it ----------------------------------------------------
STAMP = "simplegvr-thumbnail-sources "  # the JPEG comment: this prefix, then the sources as JSON


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sources(name: str) -> dict[str, str]:
    """What the thumbnail of workflows/<name>.json is made from, as SHA-256s: the demo assets'
    manifest (which vouches for every demo weight by hash), the example clip, or the workflow
    settings a title card draws."""
    if name == "Wan 2.1 T2V 480p to 1080p":
        from simplegvr_core import demo  # the manifest vouches for every demo weight by its SHA-256

        return {"demo_manifest": _sha256(json.dumps(demo.read_manifest(), sort_keys=True).encode())}
    if name in ("Flow Degrade preview", "Model-guided training pairs"):
        return {"example_clip": _sha256(CLIP.read_bytes())}
    wf = json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))
    drawn = {
        n["type"]: n["widgets_values"]
        for n in wf["nodes"]
        if n["type"] in (TITLE_CARDS[name][3], "SimpleGVRLatentUpsampler", "KSampler")
    }
    return {"workflow_settings": _sha256(json.dumps(drawn, sort_keys=True).encode())}


def read_stamp(path: Path) -> dict[str, str] | None:
    """The sources a thumbnail records (its JPEG comment), or None."""
    data = path.read_bytes()
    i = data.find(b"\xff\xfe")
    if i < 0:
        return None
    n = int.from_bytes(data[i + 2 : i + 4], "big")
    text = data[i + 4 : i + 2 + n].decode("utf-8", "replace")
    return json.loads(text[len(STAMP) :]) if text.startswith(STAMP) else None


def write_jpeg(img: np.ndarray, path: Path, stamp: dict[str, str] | None = None) -> None:
    """img (RGB) as a JPEG at `path`; `stamp` (its sources) goes into a comment segment right after
    the start marker."""
    ok, jpg = cv2.imencode(
        ".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    assert ok
    data = jpg.tobytes()
    if stamp is not None:
        text = (STAMP + json.dumps(stamp, sort_keys=True)).encode()
        data = data[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + data[2:]
    path.write_bytes(data)
    print(f"wrote {path.relative_to(ROOT)} ({len(data) / 1024:.0f} kB)")


ASSETS = (
    "clip",
    "Flow Degrade preview",
    "Model-guided training pairs",
    "Wan 2.1 T2V 480p to 1080p",
    *TITLE_CARDS,
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"assets to remake (default: all): {', '.join(ASSETS)}",
    )
    names = set(parser.parse_args(argv).names or ASSETS)
    if names - set(ASSETS):
        parser.error(
            f"unknown assets {sorted(names - set(ASSETS))}: expected among {', '.join(ASSETS)}"
        )

    from simplegvr_core.degrade import degrade_frames
    from simplegvr_core.degrade.video_io import write_video

    clip = example_clip()
    if "clip" in names:
        CLIP.parent.mkdir(parents=True, exist_ok=True)
        write_video(CLIP, clip, fps=CLIP_FPS, crf=20)
        print(f"wrote {CLIP.relative_to(ROOT)} ({CLIP.stat().st_size / 1024:.0f} kB)")

    mid = CLIP_FRAMES // 2
    if "Flow Degrade preview" in names:
        degraded = degrade_frames(clip, "flow", None, 0)
        # the 320x180 window where the degradation changed most, at 1.2x: the artefacts must show on
        # a small card
        diff = cv2.blur(np.abs(degraded[mid].astype(np.float32) - clip[mid]).mean(-1), (161, 91))
        y, x = np.unravel_index(np.argmax(diff[90:-90, 160:-160]), diff[90:-90, 160:-160].shape)
        crop = (slice(y, y + 180), slice(x, x + 320))
        thumbnail(
            clip[mid][crop],
            "example clip",
            degraded[mid][crop],
            "SimpleGVR Flow Degrade (seed 0)",
            WORKFLOWS / "Flow Degrade preview.jpg",
        )
    if "Model-guided training pairs" in names:
        lr = cv2.resize(
            clip[mid],
            (CLIP_HW[1] * 480 // 1080, CLIP_HW[0] * 480 // 1080),
            interpolation=cv2.INTER_AREA,
        )
        thumbnail(
            clip[mid],
            "HR clip (latent saved at 1080p)",
            lr,
            "480p input of the SDEdit pass (Wan 2.1)",
            WORKFLOWS / "Model-guided training pairs.jpg",
        )
    if "Wan 2.1 T2V 480p to 1080p" in names:
        from simplegvr_core import demo
        from simplegvr_core.demo.clips import split_files

        # what `simplegvr demo` runs now (the one-step student by default)
        model, vae, chosen = demo.load_model()
        r = demo.evaluate(
            model,
            vae,
            demo.iter_clips(split_files("test")[:1], [], print),
            steps=chosen["steps"],
            shift=chosen["shift"],
            noise_level=chosen["noise_level"],
            progress=False,
            role=chosen["model"],
        )
        v = r["videos"][0]
        t = v["hr"].shape[0] // 2
        thumbnail(
            v["pixel_bicubic"][t],
            "demo world: decoded LR latent, bicubic",
            v["simplegvr"][t],
            f"demo SimpleGVR ({chosen['model']}, {chosen['steps']} step), decoded",
            WORKFLOWS / "Wan 2.1 T2V 480p to 1080p.jpg",
        )
    for name in TITLE_CARDS:
        if name in names:
            write_jpeg(title_card(name), WORKFLOWS / f"{name}.jpg", sources(name))


if __name__ == "__main__":
    main()
