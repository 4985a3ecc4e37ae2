"""Video in and out: ffmpeg processes, segment encoding and joining, decoding and video input,
audio, the run directory and its sinks. May import ``anim`` (the loop's state and protocols), never
diffusers; ``anim`` never imports ``media``.
"""
