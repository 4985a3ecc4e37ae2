"""Finishing a video after (or while) it renders: upscaling and frame interpolation.

``upscale`` (spandrel-detected upscaler files, tiled, or a plain Lanczos resize) and ``rife``
(the project's own IFNet for Practical-RIFE ``flownet.pkl`` weights). Nothing here imports
diffusers; torch is imported by the modules that need it.
"""
