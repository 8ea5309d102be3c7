"""The ComfyExtension that ComfyUI's loader gets from the pack's `comfy_entrypoint()`."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import runtime
from .colour_fix import SimpleGVRColourFix
from .fast_decode import SimpleGVRFastDecode
from .flow_degrade import SimpleGVRFlowDegrade
from .loader import SimpleGVRModelLoader
from .sampler import SimpleGVRSampler
from .ultraflash import SimpleGVRUltraFlashLoader
from .upsampler import SimpleGVRLatentUpsampler

NODES = [
    SimpleGVRModelLoader,
    SimpleGVRUltraFlashLoader,
    SimpleGVRLatentUpsampler,
    SimpleGVRSampler,
    SimpleGVRFastDecode,
    SimpleGVRFlowDegrade,
    SimpleGVRColourFix,
]


class SimpleGVRExtension(ComfyExtension):
    async def on_load(self) -> None:
        runtime.register_folders()
        runtime.install_example_inputs()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
