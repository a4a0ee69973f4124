#!/usr/bin/env bash
# The project's test command: installs the system packages, then runs every test in release
# mode: doc tests first, then all targets (library, binary, integration tests, examples).
#
#   scripts/test.sh [EXTRA_CARGO_TEST_ARGS...]
#
# Exits with cargo's status (the first failing cargo run's, else 0).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

"$ROOT/scripts/install-deps.sh" || exit $?

status=0
# `--all-targets` leaves out doc tests, so they get their own run, before the main one so that
# the last test summary printed is the one of the real test suite.
if [ -f src/lib.rs ]; then
  echo "== cargo test --release --doc"
  cargo test --release --doc "$@" || status=$?
fi

echo "== cargo test --release --all-targets"
cargo test --release --all-targets "$@" || { s=$?; [ $status -ne 0 ] || status=$s; }

exit $status
