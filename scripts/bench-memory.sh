#!/usr/bin/env bash
# Pack memory against album size: packs synthetic albums of 100 and 1,000 images (640x480
# PNG frames of FFmpeg's testsrc2, every 10th one a new scene) and prints peak RSS for each.
# The target: peak RSS does not grow with the number of images.
#
#   scripts/bench-memory.sh [OUT_DIR]      (default target/bench-memory)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/target/bench-memory}
BIN=${AV1PACK:-$ROOT/target/release/av1pack}
mkdir -p "$OUT"
echo "| images | pack args | wall s | peak RSS MiB | archive bytes |"
echo "|---:|---|---:|---:|---:|"
for n in 100 1000; do
  dir=$OUT/album-$n
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir.tmp"
    ffmpeg -v error -f lavfi -i "testsrc2=size=640x480:rate=10" -frames:v "$n" "$dir.tmp/img%05d.png"
    mv "$dir.tmp" "$dir"
  fi
  for args in "" "--crf 18"; do
    read -r -a a <<<"$args"
    /usr/bin/time -f '%e %M' -o "$OUT/time" "$BIN" -q pack --force "${a[@]}" "$dir" "$OUT/a.mkv"
    read -r secs kb <"$OUT/time"
    printf '| %s | `%s` | %s | %d | %s |\n' "$n" "${args:-defaults}" "$secs" $((kb / 1024)) "$(stat -c %s "$OUT/a.mkv")"
  done
done
