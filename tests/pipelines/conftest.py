"""Shared fixtures for tests/pipelines: tiny models built once per session, a private cache dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dreamreel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's dreamreel cache folder (CLIP vocabulary, hashes)."""
    return tmp_path_factory.mktemp("dreamreel-cache")


@pytest.fixture(autouse=True)
def _private_cache(dreamreel_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's cache writes out of the user's ~/.cache."""
    monkeypatch.setenv("DREAMREEL_CACHE_DIR", str(dreamreel_cache))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny diffusers model folder with ControlNets ``controlnet-openpose`` and ``controlnet-hed``."""
    from dreamreel.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", controlnets=("openpose", "hed"))


@pytest.fixture(scope="session")
def tiny_single_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny LDM-layout ``.safetensors`` checkpoint and the diffusers folder it was made from."""
    from dreamreel.testing import save_tiny_single_file

    root = tmp_path_factory.mktemp("single")
    config = root / "tiny-sd1"
    return save_tiny_single_file(root / "tiny-sd1.safetensors", config_dir=config), config
