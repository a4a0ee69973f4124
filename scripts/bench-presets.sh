#!/usr/bin/env bash
# Benchmark: av1pack at each quality preset, per corpus: bytes, SSIMULACRA2, pack time and
# memory, and the mount's cold-read median.
#
#   scripts/bench-presets.sh [OPTIONS] CORPORA_DIR [OUT_DIR]
#
# For every corpus (a sub-folder of CORPORA_DIR; hidden ones and *.tmp skipped) and every preset
# of --presets, it packs the corpus (`av1pack pack --quality P`, GNU time for seconds and peak
# RSS), scores every image against the originals (`av1pack verify --json`: min, p10, mean), and
# measures cold reads through a real mount: for each of --reads randomly chosen coded images, a
# fresh `av1pack mount`, one `cat` of that file, unmount; the median is reported. OUT_DIR (default
# target/bench-presets) gets the archives, logs, bench-presets.tsv and bench-presets.md.
#
# Options:
#   --presets A,B,...   presets to run (default visually-lossless,high,lossless)
#   --only A,B,...      only these corpora
#   --reads N           cold reads per archive (default 7; 0 skips the mount)
#   --seed N            seed of the random choice of images (default 42)
#   -h, --help          this help
#
# Environment:
#   AV1PACK        the binary (default target/release/av1pack of this repo)
#   AV1PACK_ARGS   extra options for every `av1pack pack` (e.g. "--codec hevc")
#
# Run it on an otherwise idle machine: times are wall-clock. Needs root or /dev/fuse access
# for the mount part.
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

PRESETS=visually-lossless,high,lossless ONLY="" READS=7 SEED=42
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --presets) PRESETS=${2:?}; shift ;;
    --only) ONLY=${2:?}; shift ;;
    --reads) READS=${2:?}; shift ;;
    --seed) SEED=${2:?}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "bench-presets: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
if [ ${#ARGS[@]} -lt 1 ] || [ ${#ARGS[@]} -gt 2 ]; then usage >&2; exit 2; fi
CORPORA=$(cd "${ARGS[0]}" && pwd)
OUT=${ARGS[1]:-$ROOT/target/bench-presets}
mkdir -p "$OUT/work" "$OUT/logs" "$OUT/mnt"
OUT=$(cd "$OUT" && pwd)
AV1PACK=${AV1PACK:-$ROOT/target/release/av1pack}
read -r -a PACK_EXTRA <<<"${AV1PACK_ARGS:-}"
[ -x "$AV1PACK" ] || { echo "bench-presets: $AV1PACK not built (cargo build --release)" >&2; exit 1; }
TSV=$OUT/bench-presets.tsv MD=$OUT/bench-presets.md
MNT=$OUT/mnt

log() { printf '[bench-presets] %s\n' "$*" >&2; }
cleanup() { mountpoint -q "$MNT" && "$AV1PACK" umount "$MNT" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# commas N → N with thousands separators
commas() { echo "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/; ta'; }
# median of numbers on stdin (mean of the two middle values for an even count)
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# cold_reads ARCHIVE LOGFILE → median milliseconds of a first read in a fresh mount
cold_reads() {
  local archive=$1 logf=$2 images t0 t1
  mapfile -t images < <("$AV1PACK" ls "$archive" | sed -n -E 's/^image +[0-9]+x[0-9]+ +[0-9]+ +[0-9]+ //p' |
    awk -v s="$SEED" 'BEGIN { srand(s) } { printf "%.12f\t%s\n", rand(), $0 }' | sort | cut -f2- | head -n "$READS")
  if [ ${#images[@]} -eq 0 ]; then echo "n/a"; return; fi
  for p in "${images[@]}"; do
    "$AV1PACK" mount --log-file "$logf" "$archive" "$MNT" >/dev/null
    t0=$EPOCHREALTIME
    cat "$MNT/$p" >/dev/null
    t1=$EPOCHREALTIME
    "$AV1PACK" umount "$MNT" >/dev/null
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
  done | median
}

printf 'corpus\tpreset\tfiles\toriginal_bytes\tarchive_bytes\tratio\tmin\tp10\tmean\tpack_s\tpack_rss_mib\tcold_read_ms\tcoded_images\n' >"$TSV"
for dir in "$CORPORA"/*/; do
  corpus=$(basename "$dir")
  case $corpus in .* | *.tmp) continue ;; esac
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$corpus,"* ]]; then continue; fi
  files=$(find "$dir" -type f | wc -l)
  orig=$(find "$dir" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  IFS=, read -r -a presets <<<"$PRESETS"
  for preset in "${presets[@]}"; do
    archive=$OUT/work/$corpus-$preset.mkv
    log "$corpus: pack --quality $preset ${PACK_EXTRA[*]}"
    /usr/bin/time -f '%e %M' -o "$OUT/logs/time-$corpus-$preset" \
      "$AV1PACK" pack -q --force --quality "$preset" "${PACK_EXTRA[@]}" "$dir" "$archive" \
      2>"$OUT/logs/pack-$corpus-$preset.log"
    read -r secs kb <"$OUT/logs/time-$corpus-$preset"
    bytes=$(stat -c %s "$archive")
    log "$corpus: verify"
    "$AV1PACK" verify --json "$archive" "$dir" >"$OUT/logs/verify-$corpus-$preset.json" 2>/dev/null || true
    read -r vmin vp10 vmean < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
f = lambda k: "n/a" if d.get(k) is None else "%.2f" % d[k]
print(f("min"), f("p10"), f("mean"))' "$OUT/logs/verify-$corpus-$preset.json")
    coded=$("$AV1PACK" ls "$archive" | grep -c '^image' || true)
    cold=n/a
    if [ "$READS" -gt 0 ] && [ "$coded" -gt 0 ]; then
      log "$corpus: $READS cold reads"
      cold=$(cold_reads "$archive" "$OUT/logs/mount-$corpus-$preset.log")
    fi
    ratio=$(awk -v a="$bytes" -v o="$orig" 'BEGIN { printf "%.3f", a / o }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$corpus" "$preset" "$files" "$orig" \
      "$bytes" "$ratio" "$vmin" "$vp10" "$vmean" "$secs" $((kb / 1024)) "$cold" "$coded" >>"$TSV"
  done
done

{
  echo "# av1pack quality presets"
  echo
  echo "\`scripts/bench-presets.sh\`, $(date -u +%Y-%m-%d), $(nproc) cores, pack options: \`${PACK_EXTRA[*]:-(defaults)}\`."
  echo "Scores are SSIMULACRA2 from \`av1pack verify\` (images kept as files score 100); cold read"
  echo "is the median of $READS first reads of a random coded image, each in a fresh mount."
  echo
  echo "| corpus | preset | archive bytes | × originals | min | p10 | mean | pack s | pack MiB | cold read ms | coded images |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  tail -n +2 "$TSV" | while IFS=$'\t' read -r c p f o b r mi p1 me s m cr ci; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s/%s |\n' "$c" "$p" \
      "$(commas "$b")" "$r" "$mi" "$p1" "$me" "$s" "$m" "$cr" "$ci" "$f"
  done
} >"$MD"
cat "$MD"
