"""Package layering: the library packages (`operators`, `priors`, `solvers`) never import `recon`."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tests.conftest import ROOT

LOW_PACKAGES = ("operators", "priors", "solvers")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in a file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", LOW_PACKAGES)
def test_low_packages_never_import_recon(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    upward = [f"{f.relative_to(ROOT)}:{line} imports {mod}" for f in files for line, mod in _imported_modules(f)
              if mod == "recon" or mod.startswith("recon.")]
    assert not upward, "\n".join(upward)
