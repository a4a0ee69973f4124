#!/usr/bin/env bash
# The main job, end to end, on the shipped sample album:
# build av1pack, pack samples/album into one .mkv, inspect it, unpack it, verify it against the
# originals, and (where FUSE is available) mount it as a folder, list it and unmount it.
#
#   scripts/demo.sh [OUT_DIR]        (default OUT_DIR: target/demo; env OUT works too)
#
# Environment: ALBUM (default samples/album), AV1PACK_ARGS (extra `pack` options, e.g.
# "--crf 16 --gop 8"), SKIP_BUILD=1 to use an existing target/release/av1pack.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

OUT=${1:-${OUT:-target/demo}}
ALBUM=${ALBUM:-samples/album}
BIN=$ROOT/target/release/av1pack
read -r -a PACK_ARGS <<<"${AV1PACK_ARGS:-}"

step=0
header() {
  step=$((step + 1))
  echo
  echo "=================================================================="
  echo "== $step. $*"
  echo "=================================================================="
}
run() {
  echo "\$ $*"
  "$@"
}

header "install system packages"
run scripts/install-deps.sh

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  header "build (cargo build --release)"
  run cargo build --release
fi
[ -x "$BIN" ] || { echo "demo: $BIN not found; build it first" >&2; exit 1; }
BIN_REL=target/release/av1pack

mkdir -p "$OUT"
MNT=$OUT/mnt
cleanup() {
  # Leave no mount behind if a step fails after mounting.
  if mountpoint -q "$MNT" 2>/dev/null; then
    "$BIN" umount "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT" 2>/dev/null || true
  fi
}
trap cleanup EXIT

header "the album to pack: $ALBUM"
run find "$ALBUM" -type f -exec ls -l {} +
echo "total: $(find "$ALBUM" -type f | wc -l) files, $(du -sb "$ALBUM" | cut -f1) bytes"

header "pack $ALBUM into $OUT/album.mkv"
run "$BIN_REL" pack --force "${PACK_ARGS[@]}" "$ALBUM" "$OUT/album.mkv"

header "the archive"
run ls -l "$OUT/album.mkv"

header "info"
run "$BIN_REL" info "$OUT/album.mkv"

header "ls (the archive's table of contents)"
run "$BIN_REL" ls "$OUT/album.mkv"

header "unpack into $OUT/restored"
run "$BIN_REL" unpack --force "$OUT/album.mkv" "$OUT/restored"
run find "$OUT/restored" -type f -exec ls -l {} +

header "verify against the originals"
run "$BIN_REL" verify "$OUT/album.mkv" "$ALBUM"

if [ -e /dev/fuse ]; then
  header "mount $OUT/album.mkv on $MNT"
  mkdir -p "$MNT"
  cleanup # a mount left over from an earlier, interrupted run
  run "$BIN_REL" mount "$OUT/album.mkv" "$MNT"

  header "browse the mounted archive"
  run ls -lR "$MNT"

  header "umount $MNT"
  run "$BIN_REL" umount "$MNT"
else
  header "mount: skipped (/dev/fuse does not exist on this machine)"
fi

echo
echo "demo: done; outputs are in $OUT"
