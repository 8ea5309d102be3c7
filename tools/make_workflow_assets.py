"""Make the example workflows' assets: the example clip they open with and their template-browser thumbnails.

    python tools/make_workflow_assets.py

- `workflows/input/simplegvr_example.mp4`: a procedural clip (`simplegvr_core.procedural.make_clip`, textured
  shapes moving over a panning background), 33 frames at 640x360, 16 fps, H.264. The pack copies it into
  ComfyUI's `input/` folder when it loads, so the Flow Degrade and model-guided workflows run when first opened.
- `workflows/<name>.jpg`: the thumbnail ComfyUI's template browser shows for `workflows/<name>.json` (frontend
  1.43 requests exactly that file), made from real outputs: the demo model's cascade (decoded LR latent vs
  SimpleGVR), the Flow Degrade node's degradation of the example clip, and the HR / 480p pair of the example clip.
Everything is deterministic (fixed seeds); rerun after changing a workflow's subject.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKFLOWS = ROOT / "workflows"
CLIP = WORKFLOWS / "input" / "simplegvr_example.mp4"
CLIP_SEED, CLIP_FRAMES, CLIP_HW, CLIP_FPS = 6, 33, (360, 640), 16  # seed 6: fast shapes, visible degradation
THUMB = 384  # square: the browser's card is square and shows the image object-contain


def example_clip() -> np.ndarray:
    from simplegvr_core.procedural import make_clip

    return make_clip(CLIP_SEED, CLIP_FRAMES, *CLIP_HW, max_speed=8.0)


def _panel(img: np.ndarray, label: str, h: int) -> np.ndarray:
    """`img` scaled to THUMB wide and cropped (centre) to h rows, with a label bar."""
    scale = THUMB / img.shape[1]
    img = cv2.resize(img, (THUMB, max(h, round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA if scale < 1
                     else cv2.INTER_NEAREST)
    top = (img.shape[0] - h) // 2
    img = np.ascontiguousarray(img[top:top + h])
    cv2.rectangle(img, (0, 0), (THUMB, 22), (20, 20, 20), -1)
    cv2.putText(img, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def thumbnail(a: np.ndarray, a_label: str, b: np.ndarray, b_label: str, path: Path) -> None:
    half = THUMB // 2
    img = np.concatenate([_panel(a, a_label, half), _panel(b, b_label, half)], 0)
    ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    path.write_bytes(jpg.tobytes())
    print(f"wrote {path.relative_to(ROOT)} ({len(jpg) / 1024:.0f} kB)")


def main() -> None:
    from simplegvr_core import demo
    from simplegvr_core.degrade import degrade_frames
    from simplegvr_core.degrade.video_io import write_video

    clip = example_clip()
    CLIP.parent.mkdir(parents=True, exist_ok=True)
    write_video(CLIP, clip, fps=CLIP_FPS, crf=20)
    print(f"wrote {CLIP.relative_to(ROOT)} ({CLIP.stat().st_size / 1024:.0f} kB)")

    mid = CLIP_FRAMES // 2
    degraded = degrade_frames(clip, "flow", None, 0)
    # the 320x180 window where the degradation changed most, at 1.2x: the artefacts must show on a small card
    diff = cv2.blur(np.abs(degraded[mid].astype(np.float32) - clip[mid]).mean(-1), (161, 91))
    y, x = np.unravel_index(np.argmax(diff[90:-90, 160:-160]), diff[90:-90, 160:-160].shape)
    crop = (slice(y, y + 180), slice(x, x + 320))
    thumbnail(clip[mid][crop], "example clip", degraded[mid][crop], "SimpleGVR Flow Degrade (seed 0)",
              WORKFLOWS / "Flow Degrade preview.jpg")
    lr = cv2.resize(clip[mid], (CLIP_HW[1] * 480 // 1080, CLIP_HW[0] * 480 // 1080), interpolation=cv2.INTER_AREA)
    thumbnail(clip[mid], "HR clip (latent saved at 1080p)", lr, "480p input of the SDEdit pass (Wan 2.1)",
              WORKFLOWS / "Model-guided training pairs.jpg")
    model, vae, manifest = demo.load_assets()
    r = demo.evaluate(model, vae, clips=1, steps=manifest.get("steps", 2), shift=manifest.get("shift", 3.0),
                      noise_level=manifest.get("noise_level", 0.0), progress=False)
    v = r["videos"][0]
    t = v["hr"].shape[0] // 2
    thumbnail(v["pixel_bicubic"][t], "decoded LR latent (demo model world)", v["simplegvr"][t],
              "SimpleGVR: upscaled in latent space, decoded", WORKFLOWS / "Wan 2.1 T2V 480p to 1080p.jpg")


if __name__ == "__main__":
    main()
