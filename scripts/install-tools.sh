#!/usr/bin/env bash
# Installs the external programs the integration tests drive. Idempotent: each step
# checks before it installs. Sections are added by the layers that need them.
set -euo pipefail
cd "$(dirname "$0")/.."
