#!/usr/bin/env bash
# Benchmark: cold reads of kept files through the mount, for archives side by side (for
# example the same album packed by two builds: files stored alone against files stored as
# their difference from the one before, whose first read decodes their chain).
#
#   scripts/bench-kept-reads.sh ARCHIVE...
#
# For each archive: every kept file is read once in a fresh mount (`cat FILE > /dev/null`,
# the mount started for that read alone, the archive itself in the page cache), and the
# median, 90th percentile and largest time are printed, with the file that took longest, as
# a Markdown table on stdout. Progress goes to stderr.
#
# Environment:
#   AV1PACK   the binary (default: target/release/av1pack of this repo)
#   LIMIT     files read per archive, spread evenly over the listing (default: all)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
AV1PACK=${AV1PACK:-$ROOT/target/release/av1pack}
LIMIT=${LIMIT:-0}
[ $# -ge 1 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ -x "$AV1PACK" ] || { echo "bench-kept-reads: no binary at $AV1PACK" >&2; exit 2; }

log() { printf '[bench-kept-reads %(%T)T] %s\n' -1 "$*" >&2; }
MNT=$(mktemp -d)
cleanup() {
  "$AV1PACK" umount "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null || true
  rmdir "$MNT" 2>/dev/null || true
}
trap cleanup EXIT

echo "| archive | files read | median ms | p90 ms | max ms | slowest file |"
echo "|---|---:|---:|---:|---:|---|"
for archive in "$@"; do
  cat "$archive" > /dev/null
  mapfile -t files < <("$AV1PACK" ls --json "$archive" |
    python3 -c 'import json,sys
for e in json.load(sys.stdin):
    if e.get("kind") == "file" and e.get("reason") is not None:
        print(e["path"])')
  total=${#files[@]}
  [ "$total" -gt 0 ] || { log "$archive: no kept files"; continue; }
  step=1
  if [ "$LIMIT" -gt 0 ] && [ "$total" -gt "$LIMIT" ]; then step=$(( (total + LIMIT - 1) / LIMIT )); fi
  times=()
  slowest=""
  worst=0
  for ((k = 0; k < total; k += step)); do
    f=${files[$k]}
    "$AV1PACK" mount "$archive" "$MNT" > /dev/null 2>&1
    t0=$(date +%s%N)
    cat "$MNT/$f" > /dev/null
    t1=$(date +%s%N)
    "$AV1PACK" umount "$MNT"
    ms=$(( (t1 - t0) / 1000000 ))
    times+=("$ms")
    if [ "$ms" -gt "$worst" ]; then worst=$ms; slowest=$f; fi
  done
  read -r median p90 < <(printf '%s\n' "${times[@]}" | sort -n |
    awk '{v[NR]=$1} END {m=v[int((NR+1)/2)]; p=v[int(NR*0.9+0.999)]; if (p=="") p=v[NR]; print m, p}')
  log "$archive: ${#times[@]} files, median $median ms"
  echo "| $(basename "$(dirname "$archive")")/$(basename "$archive") | ${#times[@]} | $median | $p90 | $worst | $slowest |"
done
