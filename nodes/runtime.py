"""ComfyUI's side of the SimpleGVR nodes: model folders, device loading, progress bar, previews,
interruption."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import latent_preview
from comfy_api.latest import io

from . import glue
from ._core import SimpleGVR, files

MODEL_FOLDER = "simplegvr"  # models/simplegvr/
# ComfyUI's folder for latent upscalers; only SimpleGVR files are listed from it
SHARED_FOLDER = "latent_upscale_models"
# ComfyUI's folder for TAESD/TAEHV preview decoders; only TAEHV decoders are listed from it
DECODER_FOLDER = "vae_approx"

SimpleGVRModel = io.Custom("SIMPLEGVR_MODEL")  # a ModelPatcher around simplegvr_core.SimpleGVR
# Inputs the example workflows open with, copied into ComfyUI's input/ folder when the pack loads
# (if absent).
EXAMPLE_INPUTS = Path(__file__).resolve().parents[1] / "workflows" / "input"

log = logging.getLogger("SimpleGVR")


def register_folders() -> None:
    """models/simplegvr (plus any extra_model_paths entry named `simplegvr`)."""
    folder_paths.add_model_folder_path(
        MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER), is_default=True
    )


_header_cache: dict[tuple[str, float, int], bool] = {}


def _is_simplegvr(path: str) -> bool:
    st = os.stat(path)
    key = (path, st.st_mtime, st.st_size)
    if key not in _header_cache:
        _header_cache[key] = glue.is_simplegvr_file(path)
    return _header_cache[key]


def list_models() -> list[str]:
    """Every .safetensors in models/simplegvr, plus the SimpleGVR checkpoints in
    models/latent_upscale_models."""
    names = [n for n in folder_paths.get_filename_list(MODEL_FOLDER) if glue.is_model_file(n)]
    for n in folder_paths.get_filename_list(SHARED_FOLDER):
        path = folder_paths.get_full_path(SHARED_FOLDER, n)
        if n not in names and glue.is_model_file(n) and path and _is_simplegvr(path):
            names.append(n)
    return names


def entries(*folders: str) -> list[tuple[str, str]]:
    """(name, full path) of every file in ComfyUI's model folders `folders`, in that order."""
    out = []
    for folder in folders:
        for n in folder_paths.get_filename_list(folder):
            out.append((n, folder_paths.get_full_path(folder, n)))
    return out


FLAGGED_MARK = "\n\nIn this folder now: "  # what the loader's tooltip adds about the files it lists


def model_name_tooltip(base: str) -> str:
    """`base` plus, when the listed checkpoints include untrained or demo-world ones, which they
    are: a combo entry must be the file's name (workflows and the missing-models panel match it), so
    the tooltip says it."""
    names = set(list_models())
    listed = [(n, p) for n, p in entries(MODEL_FOLDER, SHARED_FOLDER) if n in names]
    flagged = glue.flagged_checkpoints(listed)
    if not flagged:
        return base
    return base + FLAGGED_MARK + "; ".join(f"{n}: {h}" for n, h in sorted(flagged.items()))


def file_path(name: str, folders: tuple[str, ...], what: str) -> str:
    """The full path of `name` in the first of ComfyUI's model `folders` that has it; ValueError
    naming them."""
    for folder in folders:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    raise ValueError(f"{what} {name!r} not found in {', '.join(f'models/{f}/' for f in folders)}")


def interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user pressed Cancel (the core calls it
    between blocks)."""
    mm.throw_exception_if_processing_interrupted()


def progress():
    """on_chunk(done, total) for a loop of chunks: ComfyUI's progress bar under the node (made at
    the first call)."""
    bar = []

    def on_chunk(done: int, total: int) -> None:
        if not bar:
            bar.append(comfy.utils.ProgressBar(total))
        bar[0].update_absolute(done, total)

    return on_chunk


def model_path(name: str) -> str:
    for folder in (MODEL_FOLDER, SHARED_FOLDER):
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    searched = folder_paths.get_folder_paths(MODEL_FOLDER) + folder_paths.get_folder_paths(
        SHARED_FOLDER
    )
    raise ValueError(
        f"SimpleGVR model {name!r} not found in models/{MODEL_FOLDER}/ or models/{SHARED_FOLDER}/ "
        f"(searched {searched})"
    )


def wrap(model) -> comfy.model_patcher.ModelPatcher:
    """Hand the model to ComfyUI's memory manager: it loads it onto the GPU when a node needs it and
    offloads it when another model needs the room."""
    return comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def wrap_once(model) -> comfy.model_patcher.ModelPatcher:
    """`wrap` for a model a loader keeps between runs: the same ModelPatcher every time, so
    ComfyUI's memory manager never holds two patchers of one module (unloading one would move the
    weights under the other)."""
    patcher = getattr(model, "_simplegvr_patcher", None)
    if patcher is None:
        patcher = wrap(model)
        model._simplegvr_patcher = patcher
    return patcher


def module(patcher):
    """The SimpleGVR module inside a SIMPLEGVR_MODEL (wherever it is now)."""
    if not isinstance(patcher, comfy.model_patcher.ModelPatcher) or not isinstance(
        patcher.model, SimpleGVR
    ):
        raise ValueError(
            f"model: expected a SIMPLEGVR_MODEL from Load SimpleGVR Model, got "
            f"{type(patcher).__name__}"
        )
    return patcher.model


def load(patcher, memory_required: int = 0):
    """Load a SIMPLEGVR_MODEL onto ComfyUI's torch device (freeing `memory_required` bytes more for
    the activations) and return its SimpleGVR module.

    Fully loaded: the core runs plain torch modules, which cannot be half on the GPU the way
    ComfyUI's own layers can."""
    net = module(patcher)
    mm.load_models_gpu([patcher], memory_required=int(memory_required), force_full_load=True)
    return net


def free_memory(patcher) -> int:
    """Bytes free on the model's device now, as ComfyUI's model management reports them (CUDA free
    plus what torch has cached but unused; the host's available RAM on the CPU), minus ComfyUI's
    reserve for other applications."""
    dev = patcher.load_device
    return max(0, int(mm.get_free_memory(dev)) - int(mm.extra_reserved_memory()))


def show_text(node_id, text: str) -> None:
    """Text under the node in the frontend (ComfyUI's progress text: it stays until the node runs
    again)."""
    if not node_id:
        return
    from server import PromptServer

    if getattr(PromptServer, "instance", None) is not None:
        PromptServer.instance.send_progress_text(text, node_id)


def install_example_inputs() -> list[str]:
    """Copy the example workflows' inputs (workflows/input/*) into ComfyUI's input folder where no
    file of that name exists yet, so a workflow runs the first time it is opened; never overwrites.
    Returns the names copied."""
    import folder_paths as fp

    copied = []
    if not EXAMPLE_INPUTS.is_dir():
        return copied
    dest = Path(fp.get_input_directory())
    for src in sorted(EXAMPLE_INPUTS.iterdir()):
        target = dest / src.name
        if not src.is_file() or target.exists():
            continue
        try:
            files.atomic_write(
                target, lambda tmp, src=src: shutil.copyfile(src, tmp), replace=False
            )
            copied.append(src.name)
        except files.OutputExistsError:  # the user put one there meanwhile: theirs stays
            continue
        except OSError as e:  # a read-only input folder is not a reason to fail loading the pack
            log.warning(
                "SimpleGVR: could not copy the example input %s to %s: %s", src.name, dest, e
            )
    if copied:
        log.info("SimpleGVR: copied the example workflows' input %s to %s", ", ".join(copied), dest)
    return copied


def memory_budget(patcher) -> int:
    """The most memory a SimpleGVR run may plan for on the model's device: its total memory (what
    ComfyUI can free by offloading other models), so absurd sizes are refused before anything is
    allocated."""
    return int(mm.get_total_memory(patcher.load_device))


def model_name(patcher) -> str:
    return getattr(patcher.model, "simplegvr_name", "")


def host(patcher) -> glue.Host:
    """ComfyUI's model management for one SIMPLEGVR_MODEL, as the callables the glue plans with."""
    return glue.Host(
        load=lambda need: load(patcher, need),
        free=lambda: free_memory(patcher),
        budget=memory_budget(patcher),
        model_name=model_name(patcher),
    )


def _comfy_latent_format(name: str):
    import comfy.latent_formats as lf

    return {
        "wan21": lf.Wan21,
        "wan22": lf.Wan22,
        "cogvideox_2b": lf.CogVideoX,
        "cogvideox_5b": lf.CogVideoX1_5,
    }[name]()


def sampling_callback(patcher, steps: int):
    """callback(d) for simplegvr_core's samplers: progress bar with latent previews, and stop on
    Cancel.

    `d["denoised"]` is the normalised x0 [B,C,T,H,W], which is what ComfyUI's previewers expect."""
    pbar = comfy.utils.ProgressBar(steps)
    previewer = latent_preview.get_previewer(
        patcher.load_device, _comfy_latent_format(patcher.model.latent_format.name)
    )

    def callback(d):
        mm.throw_exception_if_processing_interrupted()
        preview = (
            previewer.decode_latent_to_preview_image("JPEG", d["denoised"].float())
            if previewer
            else None
        )
        pbar.update_absolute(d["i"] + 1, d["total"], preview)

    return callback
