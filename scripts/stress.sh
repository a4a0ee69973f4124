#!/usr/bin/env bash
# Load test of the mount: packs an album, mounts it with a small cache, and runs
# examples/stress_mount.rs: READERS threads reading random files at random offsets and
# lengths, LISTERS threads listing the tree with metadata, for SECONDS; every read is compared
# with a single-threaded read made first; the daemon's RSS is sampled. Figures:
# docs/RELIABILITY.md.
#
#   scripts/stress.sh [ALBUM] [SECONDS] [CACHE] [READERS] [LISTERS] [-- PACK_FLAGS...]
#   default: ~/.cache/av1pack-corpora/burst-1080p (else samples/album), 180 s, 64M, 16, 2,
#   packed with --crf 18
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_ALBUM=$HOME/.cache/av1pack-corpora/burst-1080p
[ -d "$DEFAULT_ALBUM" ] || DEFAULT_ALBUM=$ROOT/samples/album
ALBUM=${1:-$DEFAULT_ALBUM}
SECONDS_=${2:-180}
CACHE=${3:-64M}
READERS=${4:-16}
LISTERS=${5:-2}
shift $(( $# < 5 ? $# : 5 ))
[ "${1:-}" = "--" ] && shift
PACK_FLAGS=("$@")
[ ${#PACK_FLAGS[@]} -gt 0 ] || PACK_FLAGS=(--crf 18)

cd "$ROOT"
cargo build --release --quiet --bin av1pack --example stress_mount
WORK=$(mktemp -d "${TMPDIR:-/tmp}/av1pack-stress.XXXXXX")
BIN=$WORK/av1pack
cp target/release/av1pack target/release/examples/stress_mount "$WORK/"
MNT=$WORK/mnt
mkdir -p "$MNT"
cleanup() {
  if grep -q " $MNT " /proc/self/mountinfo; then "$BIN" umount "$MNT" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
echo "packing $ALBUM ${PACK_FLAGS[*]}"
"$BIN" pack -q "${PACK_FLAGS[@]}" "$ALBUM" "$WORK/a.mkv"
"$BIN" info "$WORK/a.mkv" | sed -n '1,5p'
out=$("$BIN" -v mount --cache-size "$CACHE" --log-file "$WORK/daemon.log" "$WORK/a.mkv" "$MNT" 2>&1)
echo "$out"
PID=$(echo "$out" | sed -n 's/.*daemon \([0-9]*\),.*/\1/p')
[ -n "$PID" ] || { echo "no daemon pid in: $out" >&2; exit 1; }
echo "cache budget $CACHE; daemon $PID; $(nproc) cores"
status=0
"$WORK/stress_mount" "$MNT" "$PID" "$SECONDS_" "$READERS" "$LISTERS" || status=$?
echo "daemon peak RSS over its life (VmHWM): $(sed -n 's/VmHWM:\s*//p' /proc/$PID/status)"
grep -ci "error\|panick" "$WORK/daemon.log" | sed 's/^/daemon log lines with error\/panic: /' || true
"$BIN" umount "$MNT"
sleep 1
grep -h "frame source:" "$WORK/daemon.log" | sed 's/^/daemon: /' || true
exit $status
