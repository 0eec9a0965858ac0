#!/usr/bin/env bash
# The project's test command (README): builds the rackd binary the integration tests spawn,
# then runs every test in the workspace (unit, storage conformance, multi-process clusters).
set -euo pipefail
cd "$(dirname "$0")/.."
# Installs the missing Debian packages (libclang-dev, the real peers); says what to run if not root.
scripts/install-deps.sh test
cargo build -p rackd --bin rackd
cargo test --workspace --no-fail-fast "$@"
