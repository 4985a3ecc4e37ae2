"""ControlNet units and preprocessors (controlnet-aux, imported lazily)."""
