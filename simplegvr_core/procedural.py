"""Deterministic procedural video clips: textured shapes moving over panning, detailed backgrounds.

They stand in for real footage wherever no data can be downloaded (the CPU smoke training, the demo
world, tests): stripes (5-12 px), checkerboards, text-like glyph rows with 2-px strokes and smooth
blobs give the mid and high frequency bands something to recover while staying about as compressible
as natural video (a /8, 16-channel latent can hold them), and sub-pixel motion at several speeds
gives the temporal side something to keep consistent. `make_clip(seed, ...)` always returns the same
uint8 [T, H, W, 3] clip.
"""

from __future__ import annotations

import cv2
import numpy as np


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float32 [h, w, 3] texture in [0, 1]: one of stripes, checker, glyphs, blobs, mixed with
    colour."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(0, 4)
    if kind == 0:  # oriented stripes, 5-12 px period
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(5.0, 12.0)
        g = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
    elif kind == 1:  # checkerboard, slightly soft edges
        cell = int(rng.integers(4, 11))
        g = (((yy // cell) + (xx // cell)) % 2).astype(np.float32)
        g = cv2.GaussianBlur(g, (3, 3), 0.7)
    elif kind == 2:  # text-like rows of glyphs drawn with 2-px strokes
        g = np.zeros((h, w), np.float32)
        row_h = int(rng.integers(4, 6))
        for y0 in range(1, h // 2 - row_h, row_h + 1):
            x0 = 1
            while x0 < w // 2 - 3:
                gw = int(rng.integers(2, 4))
                glyph = rng.random((row_h - 1, gw)) > 0.45
                g[y0 : y0 + row_h - 1, x0 : x0 + gw] = glyph[
                    : max(0, min(row_h - 1, h // 2 - y0)), : max(0, min(gw, w // 2 - x0))
                ]
                x0 += gw + (2 if rng.random() < 0.2 else 1)
        g = (
            cv2.resize(g[: h // 2, : w // 2], (w, h), interpolation=cv2.INTER_NEAREST)
            if h >= 2 and w >= 2
            else g
        )
        g = cv2.GaussianBlur(g, (3, 3), 0.6)
    else:  # smooth blobs with a finer layer on top
        coarse = rng.random((max(2, h // 12), max(2, w // 12))).astype(np.float32)
        fine = rng.random((max(2, h // 4), max(2, w // 4))).astype(np.float32)
        g = 0.75 * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) + 0.25 * cv2.resize(
            fine, (w, h), interpolation=cv2.INTER_CUBIC
        )
    c1, c2 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    tex = c1[None, None] * g[..., None] + c2[None, None] * (1 - g[..., None])
    return np.clip(tex, 0, 1)


def make_clip(
    seed: int, frames: int = 17, height: int = 128, width: int = 128, max_speed: float = 3.0
) -> np.ndarray:
    """A procedural clip as uint8 [frames, height, width, 3]; same seed, same clip."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(
            f"clip size {frames}x{height}x{width}: expected >= 1 frame and >= 8x8 pixels"
        )
    rng = np.random.default_rng(seed)
    pan = rng.uniform(-1, 1, 2) * max_speed * rng.choice([0.0, 0.5, 1.0])  # camera pan, px/frame
    margin = int(np.ceil(np.abs(pan).max() * frames)) + 2
    bg = _texture(rng, height + 2 * margin, width + 2 * margin)
    shade = np.linspace(0.75, 1.15, width + 2 * margin, dtype=np.float32)[None, :, None]
    bg = np.clip(bg * shade, 0, 1)
    sprites = []
    for _ in range(int(rng.integers(1, 4))):
        sh, sw = (
            int(rng.integers(height // 6, height // 2)),
            int(rng.integers(width // 6, width // 2)),
        )
        tex = _texture(rng, sh, sw)
        mask = np.zeros((sh, sw), np.float32)
        if rng.random() < 0.5:
            cv2.ellipse(
                mask,
                (sw // 2, sh // 2),
                (sw // 2 - 1, sh // 2 - 1),
                0,
                0,
                360,
                1.0,
                -1,
                cv2.LINE_AA,
            )
        else:
            mask[1:-1, 1:-1] = 1.0
        pos = np.array([rng.uniform(0, width - sw), rng.uniform(0, height - sh)], np.float32)
        vel = rng.uniform(-1, 1, 2).astype(np.float32) * max_speed * rng.uniform(0.3, 1.0)
        sprites.append((tex, mask, pos, vel))
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        ox, oy = margin + pan[0] * t, margin + pan[1] * t
        m = np.float32([[1, 0, -ox], [0, 1, -oy]])
        frame = cv2.warpAffine(
            bg, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        for tex, mask, pos, vel in sprites:
            x, y = pos + vel * t
            m = np.float32([[1, 0, x], [0, 1, y]])
            st = cv2.warpAffine(tex, m, (width, height), flags=cv2.INTER_LINEAR)
            sm = cv2.warpAffine(mask, m, (width, height), flags=cv2.INTER_LINEAR)[..., None]
            frame = frame * (1 - sm) + st * sm
        out[t] = np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


CAPTION_WORDS = {0: "striped", 1: "checkered", 2: "lettered", 3: "mottled"}


def clip_caption(seed: int) -> str:
    """A short deterministic caption for clip `seed` (the smoke/demo text prompts)."""
    rng = np.random.default_rng(seed)
    kind = CAPTION_WORDS[int(rng.integers(0, 4))]
    return f"a {kind} scene with textured shapes moving over a detailed background, clip {seed}"
