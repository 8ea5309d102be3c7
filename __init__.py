"""SimpleGVR ComfyUI pack root.

ComfyUI imports this file from `custom_nodes/`. The library itself lives in `simplegvr_core/` (pure
PyTorch, usable without ComfyUI); the V3 nodes that ComfyUI registers live in `nodes/` and are exposed
here through `comfy_entrypoint()` once they exist (see the ComfyUI nodes issue). Until then this pack
registers no nodes, and ComfyUI skips it.
"""
