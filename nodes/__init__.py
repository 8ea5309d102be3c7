"""ComfyUI V3 nodes of SimpleGVR: the only code in this repository that imports `comfy*`.

- `loader.py`     Load SimpleGVR Model        -> SIMPLEGVR_MODEL (a ModelPatcher)
- `ultraflash.py` Load Ultra Flash Model      Ultra Flash's two published files -> SIMPLEGVR_MODEL
- `upsampler.py`  SimpleGVR Latent Upsampler  LR LATENT -> target-size LATENT carrying the
  condition,
                                              and hr_latent (the upsampler's HR estimate)
- `sampler.py`    SimpleGVR Sampler           -> HR LATENT for VAE Decode
- `fast_decode.py` SimpleGVR Fast Decode      Wan LATENT -> IMAGE frames with a TAEHV tiny decoder
- `flow_degrade.py` SimpleGVR Flow Degrade    IMAGE frames -> degraded IMAGE frames
- `colour_fix.py` SimpleGVR Colour Fix       HR IMAGE frames + LR IMAGE frames -> colour-corrected
  HR frames
- `glue.py`       ComfyUI data types <-> simplegvr_core, comfy-free (tested in CI)
- `runtime.py`    model folders, device loading, progress bar, previews, interruption

Nothing is imported here, so `nodes.glue` imports without ComfyUI; the pack's `__init__.py` imports
`nodes.extension` inside `comfy_entrypoint()`.
"""
