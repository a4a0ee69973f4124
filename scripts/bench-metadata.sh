#!/usr/bin/env bash
# Metadata through av1pack: exiftool tag sets of every image, original vs unpacked vs mounted.
#
#   scripts/bench-metadata.sh [CORPUS...]     (default: album-kphotoalbum camera-12mp icons-alpha)
#
# Corpora are folders below $CORPORA (default ~/.cache/av1pack-corpora, made by
# ../shared/datasets/fetch-corpora.sh). Each corpus is packed twice: at the default quality
# (JPEG photos mostly stay byte-identical files) and at `--crf 18` without the quality check,
# so that every image goes through the codec and the renderer writes its metadata back. Each
# archive is unpacked and mounted, and scripts/compare-tags.py compares the tags (file-level
# tags aside). Needs root or fusermount3 for the mount.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPORA=${CORPORA:-$HOME/.cache/av1pack-corpora}
BIN=$ROOT/target/release/av1pack
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -q) || exit 1
command -v exiftool >/dev/null || { echo "exiftool missing (libimage-exiftool-perl)" >&2; exit 1; }
W=$(mktemp -d)
trap 'fusermount3 -u "$W/mnt" 2>/dev/null; rm -rf "$W"' EXIT
corpora=("$@")
[ ${#corpora[@]} -gt 0 ] || corpora=(album-kphotoalbum camera-12mp icons-alpha)
status=0
for c in "${corpora[@]}"; do
  src=$CORPORA/$c
  [ -d "$src" ] || { echo "$c: not found in $CORPORA" >&2; status=1; continue; }
  for mode in default crf18; do
    args=()
    [ "$mode" = crf18 ] && args=(--crf 18)
    rm -rf "$W/a.mkv" "$W/out"
    "$BIN" pack -q "${args[@]}" "$src" "$W/a.mkv" || { status=1; continue; }
    coded=$("$BIN" info --json "$W/a.mkv" | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"])')
    "$BIN" unpack -q "$W/a.mkv" "$W/out" >/dev/null
    echo "== $c, $mode ($coded images coded as video): unpacked"
    python3 "$ROOT/scripts/compare-tags.py" "$src" "$W/out" | tail -4 || status=1
    mkdir -p "$W/mnt"
    "$BIN" mount "$W/a.mkv" "$W/mnt" || { status=1; continue; }
    echo "== $c, $mode: mounted"
    python3 "$ROOT/scripts/compare-tags.py" "$src" "$W/mnt" | tail -4 || status=1
    "$BIN" umount "$W/mnt"
  done
done
exit $status
