#!/usr/bin/env bash
# Benchmark: thumbnailing every image of an album, as a file manager does, through the mount
# (`av1pack mount`) against the unpacked folder, and with the thumbnail cache pre-filled by
# `av1pack thumbnails`.
#
#   scripts/bench-thumbnails.sh [ALBUM_DIR...]
#
# For each album (default samples/album): pack it (default settings), unpack it, mount it in a
# fresh daemon, then time
#   1. gdk-pixbuf-thumbnailer -s 256 over every image of the fresh mount (cold: each file is
#      decoded and rendered by the daemon, then decoded and scaled by the thumbnailer),
#   2. the same again over the mount (warm: the daemon's cache holds the rendered files),
#   3. the same over the unpacked folder (plain files on disk),
#   4. `av1pack thumbnails ARCHIVE MOUNTPOINT` (normal and large, into a scratch
#      XDG_CACHE_HOME),
#   5. `gio info -a thumbnail::path,thumbnail::is-valid` over every image of the mount: the
#      lookup GLib-based file managers do before thumbnailing; it counts the images whose
#      thumbnail is found current, which then need no thumbnailer at all.
# Prints a Markdown table (also in OUT_DIR/bench-thumbnails.md).
#
# Environment:
#   AV1PACK     the binary (default: target/release/av1pack of this repo)
#   OUT_DIR     work folder (default target/bench-thumbnails)
#   PACK_ARGS   extra options for `av1pack pack` (default: none)
#   REUSE       1: reuse OUT_DIR/NAME.mkv when it exists instead of packing again
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AV1PACK=${AV1PACK:-$ROOT/target/release/av1pack}
OUT_DIR=${OUT_DIR:-$ROOT/target/bench-thumbnails}
read -r -a PACK_EXTRA <<<"${PACK_ARGS:-}"
REUSE=${REUSE:-0}
[ $# -gt 0 ] || set -- "$ROOT/samples/album"

for tool in gdk-pixbuf-thumbnailer gio; do
  command -v "$tool" >/dev/null || { echo "bench-thumbnails: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
[ -x "$AV1PACK" ] || { echo "bench-thumbnails: no binary at $AV1PACK (cargo build --release)" >&2; exit 1; }

mkdir -p "$OUT_DIR"
MOUNTED=()
cleanup() {
  for m in "${MOUNTED[@]}"; do
    mountpoint -q "$m" 2>/dev/null && { "$AV1PACK" umount "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true; }
  done
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
log() { printf '[bench-thumbnails %(%T)T] %s\n' -1 "$*" >&2; }

# thumb_all LIST OUTDIR: runs the thumbnailer on every file of LIST (one path per line).
thumb_all() {
  local n=0
  rm -rf "$2"; mkdir -p "$2"
  while IFS= read -r f; do
    n=$((n + 1))
    gdk-pixbuf-thumbnailer -s 256 "$f" "$2/$n.png" 2>/dev/null || echo "failed: $f" >&2
  done <"$1"
}

REPORT=$OUT_DIR/bench-thumbnails.md
{
  echo "| album | images | thumbnailer, fresh mount s | thumbnailer, mount again s | thumbnailer, unpacked folder s | \`av1pack thumbnails\` s | cache lookup (gio) s | found current |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$REPORT"

for album in "$@"; do
  name=$(basename "$album")
  W=$OUT_DIR/$name
  archive=$OUT_DIR/$name.mkv
  mkdir -p "$W"
  if [ "$REUSE" = 1 ] && [ -f "$archive" ]; then
    log "$name: reusing $archive"
  else
    log "$name: pack"
    "$AV1PACK" -q pack --force "${PACK_EXTRA[@]}" "$album" "$archive"
  fi
  rm -rf "$W/unpacked"
  "$AV1PACK" -q unpack "$archive" "$W/unpacked"
  # The images: files the archive holds as images (coded, or kept as is but not "not an image").
  "$AV1PACK" ls --json "$archive" | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["kind"] == "image" or (e["kind"] == "file" and e.get("reason") not in ("not an image", "empty file")):
        print(e["path"])' >"$W/images.txt"
  count=$(wc -l <"$W/images.txt")

  mnt=$W/mnt
  mkdir -p "$mnt"
  mountpoint -q "$mnt" && "$AV1PACK" umount "$mnt"
  "$AV1PACK" mount "$archive" "$mnt" >/dev/null
  MOUNTED+=("$mnt")
  sed "s|^|$mnt/|" "$W/images.txt" >"$W/in-mount.txt"
  sed "s|^|$W/unpacked/|" "$W/images.txt" >"$W/in-folder.txt"

  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  log "$name: thumbnailer over the fresh mount ($count images)"
  t=$(now); thumb_all "$W/in-mount.txt" "$W/thumbs-mount"; cold=$(since "$t")
  log "$name: thumbnailer over the mount again"
  t=$(now); thumb_all "$W/in-mount.txt" "$W/thumbs-mount2"; warm=$(since "$t")
  log "$name: thumbnailer over the unpacked folder"
  t=$(now); thumb_all "$W/in-folder.txt" "$W/thumbs-folder"; folder=$(since "$t")

  # A fresh mount for the cache path too: av1pack thumbnails reads the archive, not the mount.
  "$AV1PACK" umount "$mnt"
  "$AV1PACK" mount "$archive" "$mnt" >/dev/null
  export XDG_CACHE_HOME=$W/cache
  rm -rf "$XDG_CACHE_HOME"
  log "$name: av1pack thumbnails"
  t=$(now); "$AV1PACK" -q thumbnails "$archive" "$mnt"; fill=$(since "$t")
  log "$name: cache lookup with gio"
  t=$(now)
  tr '\n' '\0' <"$W/in-mount.txt" | xargs -0 gio info -a thumbnail::path,thumbnail::is-valid >"$W/gio.txt"
  lookup=$(since "$t")
  found=$(grep -c "thumbnail::is-valid: TRUE" "$W/gio.txt" || true)
  unset XDG_CACHE_HOME
  "$AV1PACK" umount "$mnt"

  echo "| $name | $count | $cold | $warm | $folder | $fill | $lookup | $found of $count |" >>"$REPORT"
done
cat "$REPORT"
