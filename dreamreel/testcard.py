"""A deterministic, colourful test card: the first frame of motion previews without an init image."""

from __future__ import annotations

import cv2
import numpy as np

from dreamreel.generation import Image


def make_test_card(width: int, height: int) -> Image:
    """A (height, width, 3) uint8 RGB card: colour gradient, grid, rings and a label.

    Asymmetric on purpose, so rotation, zoom and translation are easy to see in a preview.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    card = np.stack([255 * u, 255 * v, 255 * (1 - u) * (1 - v) + 60 * u * v], axis=-1)
    step = max(8, min(width, height) // 8)
    card[(x.astype(int) % step) < 2] = 230
    card[(y.astype(int) % step) < 2] = 230
    image: Image = np.clip(card, 0, 255).astype(np.uint8)
    center = (width // 2, height // 2)
    for radius, color in ((min(width, height) // 3, (255, 255, 255)), (min(width, height) // 5, (20, 20, 20))):
        cv2.circle(image, center, radius, color, thickness=max(2, radius // 12), lineType=cv2.LINE_AA)
    cv2.rectangle(image, (width // 10, height // 10), (width // 10 + step, height // 10 + step), (255, 40, 40), -1)
    scale = max(0.4, min(width, height) / 400)
    cv2.putText(image, "dreamreel", (width // 10, height - height // 10), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), max(1, int(scale * 2)), cv2.LINE_AA)  # fmt: skip
    return image
