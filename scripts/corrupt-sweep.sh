#!/usr/bin/env bash
# Corruption sweep: packs an album, then damages copies of the archive (truncated at every
# STEP bytes, FLIPS seeded random byte changes) and runs the real `av1pack info`, `ls` and
# `unpack` on each with a timeout (examples/corrupt_sweep.rs). Fails on any panic, hang,
# intact entry not restored identical, entry restored wrongly without being named, or an
# unpack exit code that does not match what was restored. Figures: docs/RELIABILITY.md.
#
#   scripts/corrupt-sweep.sh [ALBUM] [STEP] [FLIPS] [SEED] [-- PACK_FLAGS...]
#   e.g. scripts/corrupt-sweep.sh samples/album 4096 1000 1 -- --crf 18
# MOUNT_EVERY=K also mounts every K-th damaged copy and reads every file through it: intact
# files must read identical, damaged ones identical or EIO, and nothing may hang.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALBUM=${1:-$ROOT/samples/album}
STEP=${2:-4096}
FLIPS=${3:-1000}
SEED=${4:-1}
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
PACK_FLAGS=("$@")

cd "$ROOT"
cargo build --release --quiet --bin av1pack --example corrupt_sweep
WORK=$(mktemp -d "${TMPDIR:-/tmp}/av1pack-sweep.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Private copies: a rebuild during the sweep must not swap the binaries under it.
cp "$ROOT/target/release/av1pack" "$ROOT/target/release/examples/corrupt_sweep" "$WORK/"
BIN=$WORK/av1pack
echo "packing $ALBUM ${PACK_FLAGS[*]:-}"
"$BIN" pack -q ${PACK_FLAGS[@]+"${PACK_FLAGS[@]}"} "$ALBUM" "$WORK/album.mkv"
"$BIN" info "$WORK/album.mkv" | sed -n '1,6p'
/usr/bin/time -f "sweep: %e s wall, %M KiB max RSS (largest process)" \
  nice -n 10 "$WORK/corrupt_sweep" "$BIN" "$WORK/album.mkv" "$WORK" \
  "$STEP" "$FLIPS" "$SEED"
