"""The install promise: README's Quick start, CI and the lock file agree, and the lock pins everything."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.DOTALL)


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[_normalise(name)] = version
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _normalise(match.group(0))


def test_quick_start_has_two_commands_that_install_through_the_lock() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    for command in commands:
        assert "\n" not in command.strip()
        assert "pip install -c requirements.lock -e " in command


def test_ci_runs_the_readme_test_command_exactly() -> None:
    test_command = _quick_start_commands()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in [line.strip() for line in ci]


def test_the_lock_pins_every_declared_dependency_inside_its_range() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    pins = _lock()
    for text in declared:
        requirement = Requirement(text)
        name = _requirement_name(text)
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement.specifier}"
        )


def test_the_installed_versions_are_the_locked_ones() -> None:
    """The suite runs against the lock (a stale venv would test something CI never sees)."""
    from importlib.metadata import version

    pins = _lock()
    for name in ("torch", "diffusers", "transformers", "opencv-python-headless", "numpy", "peft", "pydantic"):
        assert version(name) == pins[name], f"{name} {version(name)} is installed, the lock says {pins[name]}"
