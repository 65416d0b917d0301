"""The import rules of the project's layers, checked in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_modules(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


PRODUCER = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts)
    for p in (REPO / "producer").rglob("*.py")
    if p.stem != "__init__"
)


def test_no_producer_module_imports_torch_when_loaded():
    modules = ", ".join(PRODUCER)
    loaded = imported_modules(f"import {modules}")
    assert not {"torch", "transformers", "diffusers"} & loaded


def first_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return names & {"db", "tasks", "workers", "producer", "celery", "sqlalchemy"}


@pytest.mark.parametrize("path", sorted((REPO / "db").rglob("*.py")), ids=lambda p: p.name)
def test_db_imports_none_of_the_other_layers(path):
    assert not first_party_imports(path) & {"tasks", "workers", "producer"}


RUNTIMES = [
    "translator",
    "extractor",
    "renderer",
    "scorer",
    "prompts",
    "text_models",
    "profiles",
    "hub",
    "hub_mirror",
    "doctor",
    "placement",
    "executor",
]


@pytest.mark.parametrize("name", RUNTIMES)
def test_model_runtimes_import_no_celery_no_sql_and_no_tasks(name):
    imports = first_party_imports(REPO / "workers" / f"{name}.py")
    assert not imports & {"celery", "sqlalchemy", "db", "tasks", "producer"}


@pytest.mark.parametrize("path", sorted((REPO / "workers").rglob("*.py")), ids=lambda p: p.name)
def test_nothing_in_workers_imports_the_tasks_the_database_or_the_producer(path):
    assert not first_party_imports(path) & {"tasks", "db", "producer"}


@pytest.mark.parametrize("path", sorted((REPO / "tasks").rglob("*.py")), ids=lambda p: p.name)
def test_tasks_never_import_the_producer(path):
    assert "producer" not in first_party_imports(path)
