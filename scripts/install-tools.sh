#!/usr/bin/env bash
# Installs the external programs the integration tests drive. Idempotent: each step
# checks before it installs. Sections are added by the layers that need them.
set -euo pipefail
cd "$(dirname "$0")/.."

# anvil (Foundry's local EVM node): the chain tests run the contract suite on it and
# `veil devnet` serves it to nodes in separate processes. npm ships the binary.
ANVIL_VERSION=1.7.1
ANVIL_BIN=.tools/node_modules/.bin/anvil
if ! { [ -x "$ANVIL_BIN" ] && "$ANVIL_BIN" --version 2>/dev/null | grep -q "Version: ${ANVIL_VERSION}"; }; then
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --loglevel=error "@foundry-rs/anvil@${ANVIL_VERSION}"
    "$ANVIL_BIN" --version >/dev/null
fi
