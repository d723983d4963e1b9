"""The layering is a checked contract (import-linter, configured in pyproject.toml), and docs/architecture.md
shows that contract and the tree as they are."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_the_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_the_doc_shows_the_layers_of_the_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [layers] = [c["layers"] for c in contracts if c["type"] == "layers"]
    shown = re.search(r"```layers\n(.*?)```", DOC, re.S)
    assert shown is not None, "docs/architecture.md has no ```layers block"
    assert shown.group(1).strip().splitlines() == layers


def _listed() -> dict[str, set[str]]:
    block = re.search(r"```\n(appserver/.*?)```", DOC, re.S)
    assert block is not None
    listed: dict[str, set[str]] = {}
    package = ""
    for line in block.group(1).splitlines():
        head = re.match(r"^(\s*)([\w]+/)?\s*(.*)$", line)
        assert head is not None
        indent, folder, rest = head.groups()
        if folder is not None:
            package = folder.rstrip("/") if not indent else f"{'appserver' if package.startswith('appserver') else package.split('/')[0]}/{folder.rstrip('/')}"
        if package.endswith("/js"):
            continue
        names = {name.removesuffix(".py") for name in rest.split()}
        listed.setdefault(package, set()).update(names)
    return listed


def test_the_doc_lists_every_module_of_the_tree_and_no_other() -> None:
    listed = _listed()
    for package in ("appserver", "shared", "redirector", *(f"appserver/{p.name}" for p in (ROOT / "appserver").iterdir()
                                                           if p.is_dir() and (p / "__init__.py").exists())):  # fmt: skip
        actual = {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
        assert listed.get(package) == actual, f"{package}: listed {sorted(listed.get(package, set()))}, tree {sorted(actual)}"
