#!/usr/bin/env bash
# A/B benchmark of two av1pack binaries packing the same corpora, run alternately in one
# session so that both see the same machine load.
#
#   scripts/bench-ab.sh BIN_A BIN_B CORPORA_DIR [OUT_DIR]
#
# Environment: ONLY (comma-separated corpus names, default all), RUNS (per binary and
# setting, default 3), ARGS_LIST (settings separated by '|', default "|--crf 18 --gop 8 --order path":
# the defaults, then fixed settings as in the ffmpeg comparison).
# Prints one Markdown row per corpus and setting: median wall time and peak RSS (GNU time) of
# each binary, B/A time, and both archives' sizes (equal sizes: same decisions).
set -euo pipefail
A=$1 B=$2 CORPORA=$3 OUT=${4:-target/bench-ab}
RUNS=${RUNS:-3}
ARGS_LIST=${ARGS_LIST:-"|--crf 18 --gop 8 --order path"}
mkdir -p "$OUT"
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "| corpus | settings | A s | B s | B/A | A RSS MiB | B RSS MiB | A bytes | B bytes |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
IFS='|' read -r -a SETTINGS <<<"$ARGS_LIST"
for dir in "$CORPORA"/*/; do
  name=$(basename "$dir")
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  for args in "${SETTINGS[@]}"; do
    : >"$OUT/$name.A.times"; : >"$OUT/$name.B.times"
    for _ in $(seq "$RUNS"); do
      for which in A B; do
        bin=$A; [ "$which" = B ] && bin=$B
        # shellcheck disable=SC2086
        /usr/bin/time -f '%e %M' -o "$OUT/time" "$bin" pack -q --force $args "$dir" "$OUT/$name.$which.mkv"
        cat "$OUT/time" >>"$OUT/$name.$which.times"
      done
    done
    ta=$(cut -d' ' -f1 "$OUT/$name.A.times" | median); tb=$(cut -d' ' -f1 "$OUT/$name.B.times" | median)
    ra=$(cut -d' ' -f2 "$OUT/$name.A.times" | sort -n | tail -1); rb=$(cut -d' ' -f2 "$OUT/$name.B.times" | sort -n | tail -1)
    sa=$(stat -c %s "$OUT/$name.A.mkv"); sb=$(stat -c %s "$OUT/$name.B.mkv")
    printf '| %s | %s | %.2f | %.2f | %.2f | %d | %d | %s | %s |\n' "$name" "${args:-default}" "$ta" "$tb" \
      "$(echo "$tb / $ta" | bc -l)" $((ra / 1024)) $((rb / 1024)) "$sa" "$sb"
  done
done
