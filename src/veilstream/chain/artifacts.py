"""Compiled contracts: ABI and bytecode of the Vyper sources in `contracts/`.

The compiled output is committed (`contracts/artifacts.json`) so that starting a node
never needs the compiler; each entry records the SHA-256 of its source and the compiler
version, and loading refuses an artifact whose source has changed since it was built.
Rebuild after editing a contract with:

    python -m veilstream.chain.compile

A test recompiles every source and checks that the committed bytecode is identical.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from veilstream.atomic import replace_file
from veilstream.chain.errors import ChainError

CONTRACTS_DIR = Path(__file__).parent / "contracts"
ARTIFACTS_PATH = CONTRACTS_DIR / "artifacts.json"
CONTRACT_NAMES = ("ContentRegistry", "Wallet", "AccessSales", "Anchor")
VYPER_VERSION = "0.4.3"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    source_sha256: str


def source_path(name: str) -> Path:
    return CONTRACTS_DIR / f"{name}.vy"


def source_digest(name: str) -> str:
    return hashlib.sha256(source_path(name).read_bytes()).hexdigest()


def compile_source(source: str, name: str = "contract") -> tuple[list[dict[str, Any]], bytes]:
    """Compile Vyper source text; returns (abi, deploy bytecode)."""
    import vyper
    from vyper.compiler import compile_code

    if vyper.__version__ != VYPER_VERSION:
        raise ChainError(f"vyper {VYPER_VERSION} is required, found {vyper.__version__}")
    out = compile_code(source, contract_path=f"{name}.vy", output_formats=["abi", "bytecode"])
    return out["abi"], bytes.fromhex(out["bytecode"].removeprefix("0x"))


def build_all() -> dict[str, Any]:
    """Compile every contract into the artifact document (not written)."""
    contracts = {}
    for name in CONTRACT_NAMES:
        abi, bytecode = compile_source(source_path(name).read_text(), name)
        contracts[name] = {
            "source_sha256": source_digest(name),
            "abi": abi,
            "bytecode": "0x" + bytecode.hex(),
        }
    return {"compiler": f"vyper {VYPER_VERSION}", "contracts": contracts}


def write_artifacts(doc: dict[str, Any], path: Path = ARTIFACTS_PATH) -> None:
    replace_file(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o644)


@cache
def load(name: str) -> Artifact:
    """The committed artifact of one contract, checked against its source."""
    try:
        doc = json.loads(ARTIFACTS_PATH.read_text())
        entry = doc["contracts"][name]
    except (OSError, ValueError, KeyError) as exc:
        raise ChainError(
            f"no compiled artifact for {name}: run `python -m veilstream.chain.compile`"
        ) from exc
    if entry["source_sha256"] != source_digest(name):
        raise ChainError(
            f"{name}.vy changed since it was compiled: run `python -m veilstream.chain.compile`"
        )
    return Artifact(
        name=name,
        abi=entry["abi"],
        bytecode=bytes.fromhex(entry["bytecode"].removeprefix("0x")),
        source_sha256=entry["source_sha256"],
    )
