#!/usr/bin/env bash
# Scale check: an album of N small files (default 100,000: 1,000 folders of 100 text files,
# plus 100 copies of a small photo): pack, ls, unpack, mount and list; time and peak RSS of
# each; the restored text files must be identical. Figures: docs/RELIABILITY.md.
#
#   scripts/many-files.sh [N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-100000}
cd "$ROOT"
cargo build --release --quiet --bin av1pack
WORK=$(mktemp -d "${TMPDIR:-/tmp}/av1pack-many.XXXXXX")
BIN=$WORK/av1pack
cp target/release/av1pack "$BIN"
MNT=$WORK/mnt
cleanup() {
  if grep -q " $MNT " /proc/self/mountinfo 2>/dev/null; then "$BIN" umount "$MNT" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
A=$WORK/album
per=100
dirs=$(( (N + per - 1) / per ))
t0=$EPOCHREALTIME
for ((d = 0; d < dirs; d++)); do
  mkdir -p "$A/d$d"
  for ((f = 0; f < per && d * per + f < N; f++)); do
    printf 'file %d of folder %d\n' "$f" "$d" > "$A/d$d/f$f.txt"
  done
done
mkdir -p "$A/photos"
ffmpeg -v error -f lavfi -i testsrc=size=320x240:rate=1 -frames:v 1 "$A/photos/p.jpg"
for ((i = 1; i < 100; i++)); do cp "$A/photos/p.jpg" "$A/photos/p$i.jpg"; done
echo "album: $(find "$A" -type f | wc -l) files in $(find "$A" -type d | wc -l) folders, $(du -sh "$A" | cut -f1) on disk; made in $(echo "$EPOCHREALTIME - $t0" | bc) s"
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "$label: %e s wall, %U s user, peak RSS %M KiB" "$@"
}
measure "pack" "$BIN" pack -q --crf 18 "$A" "$WORK/a.mkv"
ls -l "$WORK/a.mkv" | awk '{print "archive: " $5 " bytes"}'
measure "ls" "$BIN" ls "$WORK/a.mkv" > "$WORK/ls.txt"
echo "ls lines: $(wc -l < "$WORK/ls.txt")"
measure "info" "$BIN" info "$WORK/a.mkv" > /dev/null
measure "unpack" "$BIN" unpack -q "$WORK/a.mkv" "$WORK/out"
diff -r --exclude=photos "$A" "$WORK/out" && echo "unpack: every text file identical"
echo "unpack: $(find "$WORK/out/photos" -type f | wc -l) photos restored"
mkdir -p "$MNT"
out=$("$BIN" mount --log-file "$WORK/daemon.log" "$WORK/a.mkv" "$MNT" 2>&1)
PID=$(echo "$out" | sed -n 's/.*daemon \([0-9]*\),.*/\1/p')
t0=$EPOCHREALTIME; n=$(ls -lR "$MNT" | wc -l); echo "mount: ls -lR ($n lines) $(echo "$EPOCHREALTIME - $t0" | bc) s"
t0=$EPOCHREALTIME; n=$(find "$MNT" -type f | wc -l); echo "mount: find ($n files) $(echo "$EPOCHREALTIME - $t0" | bc) s"
t0=$EPOCHREALTIME; diff -r --exclude=photos "$A" "$MNT" && echo "mount: every text file identical ($(echo "$EPOCHREALTIME - $t0" | bc) s)"
echo "mount: daemon RSS $(sed -n 's/VmRSS:\s*//p' /proc/$PID/status), peak $(sed -n 's/VmHWM:\s*//p' /proc/$PID/status)"
"$BIN" umount "$MNT"
