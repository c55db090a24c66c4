"""The package's layers: a module imports only from its own layer or the layers below it.

    python -m pytest tests/unit/test_layers.py -q     # prints nothing when the layers hold

The layers, bottom up, are LAYERS below (README "Architecture" draws the same). Every import
counts, including those inside functions (the lazy imports that keep `status` fast).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "iwo_lite"

LAYERS: list[tuple[str, ...]] = [
    ("errors", "times", "text", "texts", "output", "tables", "numbers", "roles", "config_checks", "config_keys", "demo_agent", "sandbox", "__init__"),  # sandbox: the bwrap command line (stdlib only)
    ("store", "home"),  # store/*: every iwo_ statement; home: the files
    ("config",),
    ("durable", "agents", "handoff"),  # durable: the only dbos importer; agents/*: what a command is
    ("runs", "workspace"),  # runs/*: journal, launcher, dispatcher (and the reaper)
    ("gates", "notify", "budget"),  # one answer path; notifiers; spending caps
    ("loop",),  # the workflow: glue over steps
    ("workers", "inbox", "intake", "cancel"),  # cancel: the one cancel path (shell, notifier, web)
    ("daemon",),
    ("status", "views", "doctor", "operations", "service", "demo"),
    ("web",),  # web/*: the dashboard over status and views; answers through gates and intake
    ("cli", "__main__"),
]


def layer_of(module: str) -> int:
    """The layer of `iwo_lite.a.b` (its first part after iwo_lite)."""
    first = module.split(".")[1] if module.startswith("iwo_lite.") else "__init__"
    for index, names in enumerate(LAYERS):
        if first in names:
            return index
    raise AssertionError(f"{module}: not in any layer of tests/unit/test_layers.py")


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("iwo_lite")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iwo_lite"):
            if node.module == "iwo_lite":  # from iwo_lite import store, durable
                found |= {f"iwo_lite.{alias.name}" for alias in node.names if alias.name != "__version__"}
            else:
                found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target in sorted(imports_of(path)):
            if layer_of(target) > layer_of(here if here != "iwo_lite" else "iwo_lite.__init__"):
                upward.append(f"{here} (layer {layer_of(here)}) imports {target} (layer {layer_of(target)})")
    assert upward == []


def test_every_module_has_a_docstring_saying_what_it_owns():
    missing = [module_name(path) for path in sorted(PACKAGE.rglob("*.py"))
               if path.name != "__main__.py" and not ast.get_docstring(ast.parse(path.read_text()))]
    assert missing == []


MAX_LINES = 600  # a module past this mixes concerns: split it along one (README "Architecture")


def test_no_product_module_is_over_600_lines():
    long = [f"{module_name(path)}: {count} lines" for path in sorted(PACKAGE.rglob("*.py"))
            if (count := len(path.read_text().splitlines())) > MAX_LINES]
    assert long == []
