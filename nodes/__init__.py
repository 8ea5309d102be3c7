"""ComfyUI V3 nodes of SimpleGVR: the only code in this repository that imports `comfy*`.

Not written yet (tracked by the ComfyUI nodes issue); `simplegvr_core` is usable on its own.
"""
