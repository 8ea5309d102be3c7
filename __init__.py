"""SimpleGVR ComfyUI pack root.

ComfyUI imports this directory from `custom_nodes/` as a package and calls `comfy_entrypoint()`. The
library lives in `simplegvr_core/` (pure PyTorch, usable without ComfyUI); the V3 nodes, the only
code that imports comfy*, live in `nodes/`. There is deliberately no NODE_CLASS_MAPPINGS: ComfyUI's
loader would then ignore comfy_entrypoint.
"""


async def comfy_entrypoint():
    """The ComfyExtension with the SimpleGVR nodes (imported here: ComfyUI is only there at load
    time)."""
    from .nodes.extension import SimpleGVRExtension

    return SimpleGVRExtension()
