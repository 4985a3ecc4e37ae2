"""Fixtures for the render tests: a tiny model folder built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamreel.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", controlnets=())
