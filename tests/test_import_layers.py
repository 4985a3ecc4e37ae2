"""The import directions docs/architecture.md states hold in the code (every import, also inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dreamreel"

GROUND = {"errors", "fileio", "generation", "pnginfo", "testcard", "progress"}
WIRING = {"jobs"}

# unit -> the units it may import (besides itself); "*" = anything
ALLOWED: dict[str, set[str] | str] = {
    **{name: GROUND for name in GROUND},
    "keyframes": GROUND,
    "settings": GROUND | {"keyframes"},
    "pipelines": GROUND | {"keyframes"},
    "anim": GROUND | {"keyframes"},
    "media": GROUND | {"keyframes", "anim"},
    "controlnet": GROUND | {"keyframes", "settings", "anim", "media"},
    "finish": GROUND | {"keyframes", "anim", "media"},
    "plan": GROUND | {"keyframes", "settings"},
    **{
        name: GROUND | {"keyframes", "settings", "anim", "media", "controlnet", "pipelines", "plan", "finish"} | WIRING
        for name in WIRING
    },
    "testing": GROUND | {"keyframes", "pipelines", "controlnet", "anim", "finish"},
    "cli": "*",
    "dreamreel": GROUND,
}

# Known exceptions, each with its reason; the list only shrinks.
EXCEPTIONS = {
    ("settings", "dreamreel.pipelines.samplers"),  # the A1111 sampler-name table (pure Python, imported lazily)
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dreamreel"


def _imports() -> list[tuple[str, str, str]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [(module, name, str(path)) for name in names if name.startswith("dreamreel.")]
    return found


def test_every_unit_has_a_rule() -> None:
    units = {_unit(module) for module, _, _ in _imports()}
    assert units <= set(ALLOWED), f"no import rule for {sorted(units - set(ALLOWED))}"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, imported, path in _imports():
        source, target = _unit(module), _unit(imported)
        allowed = ALLOWED[source]
        if source == target or allowed == "*" or target in allowed:
            continue
        if any(source == unit and imported.startswith(prefix) for unit, prefix in EXCEPTIONS):
            continue
        wrong.append(f"{path}: {module} imports {imported}")
    assert not wrong, "imports against the layering of docs/architecture.md:\n" + "\n".join(wrong)


def test_the_exceptions_are_still_needed() -> None:
    used = {
        (unit, prefix)
        for module, imported, _ in _imports()
        for unit, prefix in EXCEPTIONS
        if _unit(module) == unit and imported.startswith(prefix)
    }
    assert used == EXCEPTIONS, f"no longer needed, remove from EXCEPTIONS: {sorted(EXCEPTIONS - used)}"
