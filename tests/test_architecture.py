"""The rooms of docs/ARCHITECTURE.md and who may import whom, enforced on every import in the tree.

Static: every ``import``/``from`` statement (module level and inside functions) of every file of a
room is checked against the room's allowed neighbours and forbidden engines. Dynamic: importing a
room's entry points in a fresh interpreter must not pull a forbidden engine in transitively.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: room -> the project rooms it may import (itself is always allowed).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "evaluation": {"core"},
    "models": {"core", "evaluation"},
    "training": {"core", "evaluation", "models", "jobs"},
    "serving": {"core", "models"},
    "jobs": {"core"},
    "expectations": {"core", "jobs"},
    "dags": {"core", "jobs", "expectations", "training"},
    "bench": {"core", "evaluation", "models", "training", "serving", "jobs", "expectations"},
}
ROOMS = set(ALLOWED) | {"tests"}

#: Engines a room must never import (serving loads any model without MLflow, Spark or Airflow).
FORBIDDEN: dict[str, set[str]] = {
    "core": {"mlflow", "pyspark", "airflow", "great_expectations", "fastapi"},
    "evaluation": {"mlflow", "pyspark", "airflow", "great_expectations", "fastapi"},
    "models": {"mlflow", "pyspark", "airflow", "great_expectations", "fastapi"},
    "serving": {"mlflow", "pyspark", "airflow", "great_expectations"},
    "training": {"pyspark", "airflow", "great_expectations", "fastapi"},
    "jobs": {"mlflow", "airflow", "torch", "fastapi"},
    "expectations": {"mlflow", "airflow", "torch", "fastapi"},
}

#: Deliberate exceptions, each with its reason.
EXCEPTIONS: dict[tuple[str, str], str] = {
    (
        "models/offline.py",
        "training",
    ): "`python -m models.offline` is the command users type; it forwards to training.offline",
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend([(node.lineno, node.module)])
    return found


def _room_files(room: str) -> list[Path]:
    return sorted((ROOT / room).rglob("*.py"))


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_room_imports_only_what_it_may(room: str) -> None:
    files = _room_files(room)
    assert files, f"room {room}/ has no Python files; update ALLOWED in this test and docs/ARCHITECTURE.md"
    problems = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in ROOMS and top != room and top not in ALLOWED[room] and (rel, top) not in EXCEPTIONS:
                problems.append(f"{rel}:{line} imports {module} ({room} may import {sorted(ALLOWED[room])})")
            if top in FORBIDDEN.get(room, set()):
                problems.append(f"{rel}:{line} imports {module} (never in {room}/)")
    assert not problems, "\n".join(problems)


def test_every_project_package_is_a_known_room() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {
        p.name for p in ROOT.iterdir() if p.is_dir() and any(p.glob("*.py"))
    }
    unknown = packages - ROOMS - {".ci"}
    assert not unknown, f"new top-level package(s) {sorted(unknown)}: give them a row in ALLOWED and ARCHITECTURE.md"


def test_exceptions_are_still_needed() -> None:
    for (rel, room), reason in EXCEPTIONS.items():
        assert reason
        assert any(m.split(".")[0] == room for _, m in _imports(ROOT / rel)), f"{rel} no longer imports {room}"


@pytest.mark.parametrize(
    ("entry", "engines"),
    [
        ("serving.app", ("mlflow", "pyspark", "airflow", "great_expectations")),
        ("models.zoo", ("mlflow", "pyspark", "airflow", "great_expectations", "fastapi")),
        ("evaluation.evaluate", ("mlflow", "pyspark", "airflow", "torch", "fastapi")),
        ("jobs.clean", ("mlflow", "airflow", "torch")),
    ],
)
def test_entry_points_do_not_load_forbidden_engines(entry: str, engines: tuple[str, ...]) -> None:
    code = (
        f"import sys, importlib; importlib.import_module({entry!r}); "
        f"print(','.join(sorted(e for e in {engines!r} if e in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing {entry} loaded {out.stdout.strip()}"


def test_the_image_copies_every_room_it_runs() -> None:
    """infra/Dockerfile must ship every room the services import (bench and tests stay out of the image)."""
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    missing = sorted(set(ALLOWED) - {"bench"} - copied)
    assert not missing, f"infra/Dockerfile does not COPY {missing}"
