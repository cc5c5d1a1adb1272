"""DESIGN's claim, checked: the modules each package docstring lists as sans-IO import no
asyncio, socket or thread module and read no clock (time comes in as `now`)."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import veilstream

SRC = Path(veilstream.__file__).parent
FORBIDDEN_MODULES = {"asyncio", "socket", "selectors", "threading", "concurrent", "subprocess"}
CLOCKS = {"time", "monotonic", "perf_counter", "sleep"}


def listed_sans_io(package: str) -> list[str]:
    """The module names in the package docstring's "Sans-IO (...): a.py, b.py, ..." sentence."""
    doc = importlib.import_module(f"veilstream.{package}").__doc__
    sentence = doc[doc.index("Sans-IO (no"):].split(":", 1)[1].split(". ")[0]
    names = set(re.findall(r"\b([a-z_]+)\.py\b(?!'s)", sentence)) | set(re.findall(r"^\s*([a-z_]+)\b", sentence))
    return sorted(name for name in names if (SRC / package / f"{name}.py").exists())


def io_used(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [f"time.{a.name}" for a in node.names if a.name in CLOCKS]
        elif (isinstance(node, ast.Attribute) and node.attr in CLOCKS and isinstance(node.value, ast.Name)
              and node.value.id == "time"):
            found.append(f"time.{node.attr}")
    return found


@pytest.mark.parametrize("package", ["swarm", "market", "social"])
def test_the_modules_listed_as_sans_io_use_no_clock_socket_asyncio_or_thread(package):
    modules = listed_sans_io(package)
    assert modules
    for name in modules:
        used = io_used(ast.parse((SRC / package / f"{name}.py").read_text()))
        assert not used, f"veilstream.{package}.{name} is listed as sans-IO but uses {used}"


def test_the_dht_core_reads_no_clock():
    tree = ast.parse((SRC / "swarm" / "dht.py").read_text())
    [core] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "DhtCore"]
    assert not io_used(core)
