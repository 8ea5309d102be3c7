"""Training data for SimpleGVR: (HR latent, LR latent, caption features) triples, two ways.

(a) `VideoPairs`: a folder of videos + `captions.jsonl` (one `{"video": "rel/path.mp4", "caption":
    "..."}` a line). Each sample reads a clip, crops it to the HR size, degrades it (classic / flow
    / flow+classic) to the LR size; the training loop encodes both with the video VAE. Corrupt or
    too short videos are skipped, counted and replaced by another clip (`ResampleBroken`), never
    crash the run.
(b) `PairShards`: pre-computed shards from `training/make_pairs.py` (HR latent, LR latent from any
    degradation incl. model-guided, caption features) - the paper's stage-2 data.

Sampling is stateless: the i-th sample of the whole run is fixed by (seed, i) - which item (a seeded
permutation per epoch), which clip start and which degradation parameters - so a resumed run draws
exactly the samples the uninterrupted run would have drawn, and N processes draw together what one
process draws with the same global batch (`StepSampler`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from simplegvr_core.checkpoint import CODEC_KEY
from simplegvr_core.degrade import check_modes, degrade_frames
from simplegvr_core.model import SimpleGVR
from simplegvr_core.weights import read_safetensors

SHARD_KIND = "simplegvr-pairs"


def read_captions(folder: str | Path, captions: str = "captions.jsonl") -> list[tuple[Path, str]]:
    """(video path, caption) for every line of `folder/captions.jsonl`: a JSON object with "video"
    (a path, relative to `folder`) and "caption" (a string). A line without "caption" has the empty
    caption (the null prompt); a caption that is not a string - null, a number, a table - is refused
    (ValueError naming the file and the line: use "" for no caption), as is a line that is not such
    an object or is nested too deeply to be read."""
    from simplegvr_core.files import check_input_file, parse_json, short

    folder = Path(folder)
    path = folder / captions
    if not path.exists():
        raise ValueError(
            f"no captions file {str(path)!r}: expected one JSON object per line "
            '{"video": "clip.mp4", "caption": "..."}'
        )
    check_input_file(path, "captions file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"captions file {str(path)!r} is not UTF-8 text (JSON lines)") from None
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{str(path)!r} line {n}"
        row = parse_json(line, where)
        if not isinstance(row, dict) or not isinstance(row.get("video"), str) or not row["video"]:
            raise ValueError(
                f'{where}: expected {{"video": "clip.mp4", "caption": "..."}}, got {short(line)}'
            )
        caption = row.get("caption", "")
        if not isinstance(caption, str):
            shown = json.dumps(caption)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ValueError(
                f"{where}: the caption of {short(row['video'])} is {shown}, not a "
                'string (use "" for no caption)'
            )
        items.append((folder / row["video"], caption))
    if not items:
        raise ValueError(f"{str(path)!r} lists no videos")
    return items


def resize_crop(
    frames: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None
) -> np.ndarray:
    """Scale [T,H,W,3] so it covers size=(H, W), then crop (random with rng, else centre)."""
    th, tw = size
    t, h, w, _ = frames.shape
    s = max(th / h, tw / w)
    nh, nw = max(th, round(h * s)), max(tw, round(w * s))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
        frames = np.stack([cv2.resize(f, (nw, nh), interpolation=interp) for f in frames])
    y = int(rng.integers(0, nh - th + 1)) if rng is not None else (nh - th) // 2
    x = int(rng.integers(0, nw - tw + 1)) if rng is not None else (nw - tw) // 2
    return np.ascontiguousarray(frames[:, y : y + th, x : x + tw])


SYNTHETIC_FILES = re.compile(r"^(clip_[0-9]{4,}\.mp4|captions\.jsonl)$")


def make_synthetic_videos(
    folder: str | Path, count: int, frames: int, size: tuple[int, int], seed: int = 0
) -> Path:
    """Write `count` procedural clips (mp4) and their captions.jsonl into `folder` (for smoke runs
    and tests). `folder` is new, empty or holds only what this function writes (clip_NNNN.mp4,
    captions.jsonl: an interrupted run's, made again); a folder holding anything else is refused
    (ValueError) and nothing in it is touched."""
    from simplegvr_core.degrade.video_io import write_video
    from simplegvr_core.files import check_output_folder, is_temporary
    from simplegvr_core.procedural import clip_caption, make_clip

    folder = check_output_folder(folder, "the folder for procedural clips")
    foreign = sorted(
        p.name
        for p in folder.iterdir()
        if not SYNTHETIC_FILES.match(p.name) and not is_temporary(p)
    )
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ValueError(
            f"cannot write procedural clips into {str(folder)!r}: it holds other "
            f"files ({', '.join(foreign[:3])}{more}); give a new or empty folder"
        )
    rows = []
    for i in range(count):
        name = f"clip_{i:04d}.mp4"
        write_video(folder / name, make_clip(seed + i, frames, size[0], size[1]), fps=16)
        rows.append(json.dumps({"video": name, "caption": clip_caption(seed + i)}))
    from simplegvr_core.files import atomic_write

    atomic_write(
        folder / "captions.jsonl", lambda tmp: Path(tmp).write_text("\n".join(rows) + "\n")
    )
    return folder


def clip_pair(
    path: Path, frames: int, hr_size, lr_size, degradation: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(HR, LR) uint8 frames of one clip: a random `frames`-long window of the video, cropped to
    hr_size=(H, W) and degraded to lr_size=(H, W) by `degrade.degrade_frames` (mode list allowed),
    all drawn from `rng`. ValueError naming the file when it is unreadable or too short."""
    from simplegvr_core.degrade.video_io import read_video

    video, _ = read_video(path)
    if len(video) < frames:
        raise ValueError(
            f"video {str(path)!r} has {len(video)} frames, fewer than the {frames} a clip needs"
        )
    start = int(rng.integers(0, len(video) - frames + 1))
    hr = resize_crop(video[start : start + frames], tuple(hr_size), rng)
    lr = degrade_frames(hr, degradation, tuple(lr_size), int(rng.integers(0, 2**63 - 1)))
    return hr, np.ascontiguousarray(lr)


class VideoPairs(Dataset):
    """Clips of `frames` frames from captioned videos, degraded on the fly. Keys are (index, sample
    seed)."""

    def __init__(
        self,
        items: list[tuple[Path, str]],
        frames: int,
        hr_size,
        lr_size,
        degradation: str = "classic",
    ):
        self.items = items
        self.frames, self.hr_size, self.lr_size = frames, tuple(hr_size), tuple(lr_size)
        check_modes(degradation)  # here, not per sample, where a ValueError reads as a broken video
        self.degradation = degradation

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        idx, seed = key
        path, caption = self.items[idx]
        try:
            hr, lr = clip_pair(
                path,
                self.frames,
                self.hr_size,
                self.lr_size,
                self.degradation,
                np.random.default_rng(seed),
            )
        except ValueError as e:
            return {"error": str(e), "path": str(path)}
        return {"hr": torch.from_numpy(hr), "lr": torch.from_numpy(lr), "caption": caption}


def scan_videos(
    items: list[tuple[Path, str]], frames: int, decode: bool = True
) -> tuple[list[tuple[Path, str]], list[str]]:
    """Keep the videos that open and are long enough; return (kept, reasons for the skipped ones).

    decode=True decodes the first `frames` frames of each video (catches truncated files whose
    container still claims its full length); decode=False trusts the container's frame count (fast,
    for huge lists: a broken file is then skipped and counted when it is drawn)."""
    from simplegvr_core.degrade.video_io import iter_frames, probe_video

    kept, skipped = [], []
    for path, caption in items:
        try:
            info = probe_video(path)
            n = (
                sum(1 for _ in iter_frames(path, frames))
                if decode or not info.frames
                else info.frames
            )
            if n < frames:
                raise ValueError(
                    f"video {str(path)!r} has {n} frames, fewer than the {frames} a clip needs"
                )
            kept.append((path, caption))
        except ValueError as e:
            skipped.append(str(e))
    return kept, skipped


def declared_codec(config: dict) -> str | None:
    """The codec the run's latents come from, where a file declares one (its `codec` metadata: only
    the demo world's codec does, `checkpoint.DEMO_CODEC`): the pair shards of data.path (data.kind
    'shards': make_pairs copies its VAE's), the VAE file (data.kind 'videos', vae.kind 'file') and
    the pixel metric's codec file (train.pixel_metric); several are joined with '; '. None when none
    declares one (a real VAE). Reads headers only. The exported checkpoint carries it, so that a
    demo-world model says so wherever it goes."""
    from simplegvr_core.weights import read_metadata

    metas = []
    if config["data"]["kind"] == "shards":
        folder = Path(config["data"]["path"])
        for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            meta = read_metadata(f)
            metas += [meta] if meta.get("kind") == SHARD_KIND else []
    elif config["vae"]["kind"] == "file" and config["vae"]["path"]:
        metas.append(read_metadata(config["vae"]["path"]))
    if config["train"]["pixel_metric"]:
        metas.append(read_metadata(config["train"]["pixel_metric"]))
    found = []
    for codec in (m.get(CODEC_KEY) for m in metas):
        if codec and codec not in found:
            found.append(codec)
    return "; ".join(found) or None


class PairShards(Dataset):
    """Rows of pair shards (safetensors: hr [N,C,T,H,W], lr [N,C,T,h,w], context [N,L,D],
    context_len [N])."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        self.shards, self.index = [], []
        for f in files:
            tensors, meta = read_safetensors(f)
            if meta.get("kind") != SHARD_KIND:
                continue
            for k in ("hr", "lr", "context", "context_len"):
                if k not in tensors:
                    raise ValueError(f"pair shard {str(f)!r} lacks tensor {k!r}")
            n = tensors["hr"].shape[0]
            if not (
                tensors["lr"].shape[0]
                == tensors["context"].shape[0]
                == tensors["context_len"].shape[0]
                == n
            ):
                raise ValueError(
                    f"pair shard {str(f)!r}: hr, lr, context and context_len disagree on "
                    f"the row count"
                )
            self.shards.append(tensors)
            self.index += [(len(self.shards) - 1, r) for r in range(n)]
        if not self.index:
            raise ValueError(
                f"no pair shards in {str(folder)!r}: make them with training/make_pairs.py"
            )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        idx, _seed = key
        s, r = self.index[idx]
        t = self.shards[s]
        n = int(t["context_len"][r])
        return {
            "hr_latent": t["hr"][r].float(),
            "lr_latent": t["lr"][r].float(),
            "context": t["context"][r, :n].float(),
        }


class StepSampler:
    """Yields, for training steps start, start+1, ..., the batch keys [(index, sample seed), ...] of
    this rank, one list per micro-batch (`grad_accum` of them a step).

    The run draws G = batch * world * grad_accum samples a step, whatever the split across processes
    and micro-batches: sample j of the run is drawn by (step, micro, rank, b) with j = step * G +
    (micro * world + rank)
    * batch + b (`sample_indices`). It is item perm_epoch[j % N] of epoch j // N, where perm_epoch
      is a permutation
    seeded by (seed, epoch), and its seed is derived from (seed, j). So 2 processes x batch 2, 1
    process x batch 4 and 1 process x batch 2 x 2 accumulation steps draw the same samples, and a
    resumed run draws what the uninterrupted run would have drawn.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        world: int = 1,
        rank: int = 0,
        overfit: bool = False,
        grad_accum: int = 1,
    ):
        if n_items < 1:
            raise ValueError("the training set is empty")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world {world}: expected 0 <= rank < world")
        self.n, self.bs, self.seed, self.step = n_items, batch_size, seed, start_step
        self.world, self.rank, self.overfit, self.accum = world, rank, overfit, grad_accum
        self.global_batch = batch_size * world * grad_accum
        self._perm_epoch, self._perm = -1, None

    def sample_indices(self, step: int, micro: int = 0) -> list[int]:
        """Run-wide indices j of the samples this rank draws in micro-batch `micro` of `step`."""
        base = step * self.global_batch + (micro * self.world + self.rank) * self.bs
        return list(range(base, base + self.bs))

    def _item(self, j: int) -> int:
        if self.overfit:  # the same global batch every step
            return j % min(self.n, self.global_batch)
        epoch = j // self.n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[j % self.n])

    def __iter__(self):
        while True:
            for micro in range(self.accum):
                keys = []
                for j in self.sample_indices(self.step, micro):
                    # Overfitting keeps each item's clip and degradation fixed; otherwise every
                    # sample is new.
                    fresh = int(np.random.default_rng([self.seed, 7, j]).integers(0, 2**63 - 1))
                    keys.append((self._item(j), self._item(j) if self.overfit else fresh))
                yield keys
            self.step += 1


class ResampleBroken(Dataset):
    """A dataset whose samples are never missing: when the clip of a key cannot be read, another
    item of `indices` is tried, chosen from the key's seed (so every process and every resumed run
    makes the same choice), up to `tries` times. Every rank therefore trains on full batches and
    runs the same collectives (a rank that skipped a batch would leave the others waiting); the
    unreadable clips are reported under 'skipped'."""

    def __init__(self, dataset: Dataset, indices: list[int], tries: int = 8):
        self.dataset, self.indices, self.tries = dataset, list(indices), tries

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        idx, seed = key
        skipped = []
        for attempt in range(self.tries):
            sample = self.dataset[(idx, seed)]
            if "error" not in sample:
                sample["skipped"] = skipped
                return sample
            skipped.append(sample["error"])
            rng = np.random.default_rng([seed, 11, attempt])
            idx, seed = (
                self.indices[int(rng.integers(len(self.indices)))],
                int(rng.integers(0, 2**63 - 1)),
            )
        return {
            "error": f"{self.tries} clips in a row could not be read (the last: {skipped[-1]})",
            "skipped": skipped[:-1],
        }


def collate(samples: list[dict]) -> dict:
    """Stack the good samples; report the broken ones under 'errors'."""
    good = [s for s in samples if "error" not in s]
    errors = [e for s in samples for e in s.get("skipped", [])] + [
        s["error"] for s in samples if "error" in s
    ]
    out: dict = {"errors": errors}
    if not good:
        return out
    for k in good[0]:
        if k == "skipped":
            continue
        if k == "caption":
            out[k] = [s[k] for s in good]
        elif k == "context":
            out[k] = [s[k] for s in good]
        else:
            out[k] = torch.stack([s[k] for s in good])
    return out


def write_shard(
    path: str | Path,
    hr: torch.Tensor,
    lr: torch.Tensor,
    contexts: list[torch.Tensor],
    captions: list[str],
    latent_format: str,
    extra: dict | None = None,
    *,
    replace: bool = True,
) -> Path:
    """Write one pair shard atomically (latents in model space, i.e. normalised); replace=False
    leaves an existing file, or one that appears meanwhile, as it is (`files.OutputExistsError`)."""
    from safetensors.torch import save_file

    from simplegvr_core.files import atomic_write

    n = hr.shape[0]
    if lr.shape[0] != n or len(contexts) != n or len(captions) != n:
        raise ValueError(
            f"shard rows disagree: hr {n}, lr {lr.shape[0]}, contexts {len(contexts)}, captions "
            f"{len(captions)}"
        )
    L = max(max(c.shape[0] for c in contexts), 1)
    D = contexts[0].shape[1]
    ctx = torch.zeros(n, L, D)
    for i, c in enumerate(contexts):
        ctx[i, : c.shape[0]] = c
    tensors = {
        "hr": hr.contiguous(),
        "lr": lr.contiguous(),
        "context": ctx,
        "context_len": torch.tensor([c.shape[0] for c in contexts], dtype=torch.int64),
    }
    meta = {"kind": SHARD_KIND, "latent_format": latent_format, "captions": json.dumps(captions)}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), replace=replace)


# --- batches in model space (what the loop trains on) -------------------------------------------
class Data:
    """Turns batch keys into model-space (hr, lr, context) tensors on the device."""

    def __init__(self, config: dict, model: SimpleGVR, device, log):
        from training import data as D

        self.config, self.device, self.fmt = config, device, model.latent_format
        dcfg = config["data"]
        self.kind = dcfg["kind"]
        self.skipped: list[str] = []
        text_dim = model.config.dit.text_dim
        if self.kind == "shards":
            self.dataset = D.PairShards(dcfg["path"])
            n_val = min(int(dcfg["val_count"]), len(self.dataset) - 1)
            self.train_idx = list(range(len(self.dataset) - n_val))
            self.val_idx = list(range(len(self.dataset) - n_val, len(self.dataset)))
            self.vae = self.text = None
        elif self.kind == "videos":
            from simplegvr_core.text import TextCache, make_text_encoder
            from simplegvr_core.vae import VideoVAE

            if int(dcfg["synthesize"]) and not (Path(dcfg["path"]) / dcfg["captions"]).exists():
                log(
                    f"writing {dcfg['synthesize']} procedural clips to {dcfg['path']} "
                    f"(data.synthesize)"
                )
                D.make_synthetic_videos(
                    dcfg["path"],
                    int(dcfg["synthesize"]),
                    int(dcfg["frames"]) + 4,
                    tuple(dcfg["hr_size"]),
                    seed=int(config["train"]["seed"]),
                )
            items = D.read_captions(dcfg["path"], dcfg["captions"])
            items, skipped = D.scan_videos(
                items, int(dcfg["frames"]), decode=dcfg["scan"] == "decode"
            )
            self.skipped += skipped
            for s in skipped:
                log(f"skipping: {s}")
            if len(items) < 2:
                raise ValueError(
                    f"{dcfg['path']!r}: {len(items)} usable videos (skipped {len(skipped)}); "
                    f"need at least 2"
                )
            self.dataset = D.VideoPairs(
                items, int(dcfg["frames"]), dcfg["hr_size"], dcfg["lr_size"], dcfg["degradation"]
            )
            n_val = min(int(dcfg["val_count"]), len(items) - 1)
            self.train_idx = list(range(len(items) - n_val))
            self.val_idx = list(range(len(items) - n_val, len(items)))
            self.vae = VideoVAE.load(
                config["vae"]["kind"],
                config["vae"]["path"] or None,
                device=device,
                seed=config["vae"]["seed"],
            )
            self.vae.check_format(self.fmt)  # the VAE of the model's latent family
            r = self.vae.spatial_ratio
            for key in ("hr_size", "lr_size"):
                if any(v % r for v in dcfg[key]):
                    raise ValueError(
                        f"config key data.{key}={dcfg[key]!r}: the {self.vae.family} VAE needs "
                        f"multiples of {r}"
                    )
            train_config = config["text"]
            enc = make_text_encoder(
                train_config["kind"],
                text_dim,
                train_config["path"] or None,
                device=device,
                family=self.fmt.family,
            )
            cache = train_config["cache"] or str(
                Path(config["log"]["output_dir"]) / "text_cache.safetensors"
            )
            self.text = TextCache(cache, enc, f"{train_config['kind']}:{text_dim}")
            n = self.text.encode_all([c for _, c in items])
            log(f"text features: {n} captions encoded, {len(self.text.features)} cached")
        else:
            raise ValueError(f"data.kind {self.kind!r}: expected 'videos' or 'shards'")

    def loader(self, keys_iter):
        from torch.utils.data import DataLoader

        from training import data as D

        workers = int(self.config["data"]["num_workers"])
        # full batches on every rank, always
        dataset = D.ResampleBroken(self.dataset, self.train_idx)
        return iter(
            DataLoader(
                dataset,
                batch_sampler=keys_iter,
                collate_fn=D.collate,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
        )

    def to_model_space(self, batch: dict):
        """(hr, lr, context list) in model space; None when no sample of the batch was usable."""
        for e in batch.get("errors", []):
            self.skipped.append(e)
        if "hr" not in batch and "hr_latent" not in batch:
            return None
        if self.kind == "shards":
            return (
                batch["hr_latent"].to(self.device),
                batch["lr_latent"].to(self.device),
                batch["context"],
            )
        hr = self.fmt.normalise(self.vae.encode(batch["hr"]))
        lr = self.fmt.normalise(self.vae.encode(batch["lr"]))
        ctx = [
            self.text[c] if c else torch.zeros(1, self.text.encoder.dim) for c in batch["caption"]
        ]
        return hr.to(self.device), lr.to(self.device), ctx


def pad_contexts(contexts: list[torch.Tensor], dim: int, device, text_len: int) -> torch.Tensor:
    """Caption features [L_i, dim] -> one [B, text_len, dim] batch, as `pipeline.prepare_context`
    pads them."""
    from simplegvr_core.pipeline import pad_text

    if not contexts:
        return torch.zeros(0, text_len, dim, device=device)
    return torch.cat([pad_text(c[None].float(), text_len) for c in contexts]).to(device)
