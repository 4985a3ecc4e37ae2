"""Model backends: the only package that imports diffusers and transformers."""
