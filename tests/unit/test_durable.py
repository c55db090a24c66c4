"""The DBOS boundary: the internals iwo-lite relies on are still where it reaches for them.

If a DBOS upgrade moves or renames them, this fails loudly here rather than the daemon
quietly falling back (gate wake-ups at the 1 s poll; no takeover of a silent worker's specs).
"""

from __future__ import annotations

import ast
from pathlib import Path

from iwo_lite import durable

PACKAGE = Path(durable.__file__).resolve().parent


def test_the_dbos_internals_behind_the_shim_exist():
    assert durable.check_internals() == []


def test_the_serializer_is_portable_json_and_the_config_keys_are_dbos_keys():
    from iwo_lite.config import load_config

    settings = durable.dbos_config(load_config(Path("/nonexistent-iwo-home")))
    assert settings["serializer"].name() == "portable_json"
    assert settings["application_version"].startswith("iwo-replay-")


def test_only_durable_imports_dbos():
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "dbos" or name.startswith("dbos.") for name in names):
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert sorted(set(importers)) == ["durable.py"]
