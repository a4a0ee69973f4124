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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# `--all-targets` leaves out doc tests, so they get their own run.
if [ -f src/lib.rs ]; then
  echo "== cargo test --release --doc"
  cargo test --release --doc "$@" 2>&1 | tee -a "$log"
  s=${PIPESTATUS[0]}; [ "$s" -eq 0 ] || status=$s
fi

echo "== cargo test --release --all-targets"
cargo test --release --all-targets "$@" 2>&1 | tee -a "$log"
s=${PIPESTATUS[0]}; [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s

# One closing line for the whole suite (cargo prints one summary per test binary, and the
# last binary, an example, has no tests of its own).
passed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
