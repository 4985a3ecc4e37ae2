"""The frame loop: warps, colour coherence, cadence and output sinks. May import torch and cv2, never diffusers."""
