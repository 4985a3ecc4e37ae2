"""Random-weight ControlNet detectors, built once per session (no big files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def hed_network() -> torch.nn.Module:
    from dreamreel.testing import tiny_annotator_network

    return tiny_annotator_network("hed", seed=0)


@pytest.fixture(scope="session")
def annotators_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a random fp16 ``ControlNetHED.pth`` (29 MB), written by save_tiny_annotators."""
    from dreamreel.testing import save_tiny_annotators

    return save_tiny_annotators(tmp_path_factory.mktemp("annotators"), detectors=("hed",))


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Hugging Face cache at an empty folder (a real cache must not satisfy a test)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache
