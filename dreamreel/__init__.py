"""dreamreel: Deforum-style keyframed animation and mov2mov video restyling on diffusers.

Importing this package imports neither torch nor diffusers.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
