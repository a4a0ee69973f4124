#!/usr/bin/env bash
# Benchmark: reading a mounted archive (`av1pack mount`), against the in-process decode cost,
# bare ffmpeg decoding, and ffmpegfs's frame-set mode.
#
#   scripts/bench-mount.sh [OUT_DIR]
#
# OUT_DIR (default target/bench-mount) receives the work files (synthetic album, archives),
# logs, and the Markdown report bench-mount.md, which is also printed on stdout. Progress goes
# to stderr. One run measures:
#
#   1. listing a 10,000-image synthetic album (cold and warm `ls -lR`, `find`), and that
#      listing decodes nothing (the daemon's own counters, from its log);
#   2. for each corpus (packed with PACK_ARGS, default --crf 18): cold read of one random image in a fresh mount,
#      the in-process cost of the same work (examples/decode_cost.rs: decode the GOP up to the
#      frame and render the file, no FUSE), warm read, sequential read of every image against
#      `ffmpeg -f null` decoding speed, and the daemon's peak RSS under 8 random readers;
#   3. ffmpegfs (Debian package ffmpegfs), frame-set mode (--desttype=jpg) on the same video:
#      the MKV as is, and, when ffmpegfs lists no frame in it, the same stream copied into MP4.
#
# Run it on an otherwise idle machine (WAIT_IDLE helps): the report gives the load average at
# the start and the CPU time that other processes used during the run.
#
# Environment:
#   PACK_ARGS     how the corpora are packed for part 2 (default "--crf 18"; e.g.
#                 "--codec hevc --crf 20" to time another codec's decoding)
#   SKIP_LISTING=1   skip part 1 (the synthetic 10,000-image listing)
#   SKIP_FFMPEGFS=1  skip part 3 (ffmpegfs)
#   AV1PACK       the binary (default: target/release/av1pack of this repo; built if missing)
#   DECODE_COST   the example (default: target/release/examples/decode_cost; built if missing)
#   BUILD=1       run `cargo build --release --bin av1pack --example decode_cost` first
#   CORPORA_DIR   where the corpora are (default $HOME/.cache/av1pack-corpora)
#   CORPORA       corpora to measure, comma-separated (default burst-1080p,album-kphotoalbum)
#   FFMPEGFS_CORPUS  the corpus whose archive ffmpegfs serves (default burst-1080p)
#   SAMPLES       cold/warm read samples per corpus (default 15)
#   SEQ_ROUNDS    rounds of the sequential read against ffmpeg, median kept (default 7)
#   FFMPEGFS_SAMPLES  cold read samples for ffmpegfs (default: SAMPLES)
#   REPEAT        runs per image of decode_cost, median kept (default 3)
#   READERS       concurrent readers for the RSS test (default 8)
#   RSS_CACHE     --cache-size for the RSS test (default 128M)
#   SEED          seed of the random choices (default 42)
#   TIME_LIMIT    seconds before the whole run is stopped (default 900)
#   WAIT_IDLE     wait up to this many seconds for the machine to be idle first (default 0)
#
# Times are wall-clock, from bash's $EPOCHREALTIME around each command (so they include
# starting `cat`, about a millisecond). Medians of an even count average the two middle
# values; p90 is the nearest-rank 90th percentile.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
case ${1:-} in
  -h | --help) usage; exit 0 ;;
  -*) echo "bench-mount: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
if [ $# -gt 1 ]; then usage >&2; exit 2; fi

OUT_DIR=${1:-$ROOT/target/bench-mount}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$OUT_DIR/work
LOGS=$OUT_DIR/logs
MNT_ROOT=$OUT_DIR/mnt
REPORT=$OUT_DIR/bench-mount.md
PARTIAL=$OUT_DIR/bench-mount.md.partial
rm -rf "$LOGS"
mkdir -p "$WORK" "$LOGS" "$MNT_ROOT"

AV1PACK=${AV1PACK:-$ROOT/target/release/av1pack}
read -r -a CORPUS_PACK <<<"${PACK_ARGS:---crf 18}"
DECODE_COST=${DECODE_COST:-$ROOT/target/release/examples/decode_cost}
CORPORA_DIR=${CORPORA_DIR:-$HOME/.cache/av1pack-corpora}
IFS=, read -r -a CORPUS_LIST <<<"${CORPORA:-burst-1080p,album-kphotoalbum}"
SAMPLES=${SAMPLES:-15}
SEQ_ROUNDS=${SEQ_ROUNDS:-7}
FFMPEGFS_SAMPLES=${FFMPEGFS_SAMPLES:-$SAMPLES}
FFMPEGFS_CORPUS=${FFMPEGFS_CORPUS:-burst-1080p}
REPEAT=${REPEAT:-3}
READERS=${READERS:-8}
RSS_CACHE=${RSS_CACHE:-128M}
SEED=${SEED:-42}
TIME_LIMIT=${TIME_LIMIT:-900}

# ---------------------------------------------------------------------------------------------
# Helpers

log() { printf '[bench-mount %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
md() { printf '%s\n' "$@" >>"$PARTIAL"; }

# Wall-clock timing in microseconds: tick; COMMAND; tock → $ELAPSED_US.
T0=0 ELAPSED_US=0
tick() { T0=${EPOCHREALTIME/[.,]/}; }
tock() { ELAPSED_US=$((${EPOCHREALTIME/[.,]/} - T0)); }

# us_to_ms US → "12.3" (in $REPLY)
us_to_ms() { printf -v REPLY '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
us_to_s() { printf -v REPLY '%d.%02d' $(($1 / 1000000)) $((($1 % 1000000) / 10000)); }

# summary VALUE... → "median p90 min max n" (same unit as the values, 1 decimal)
summary() {
  printf '%s\n' "$@" | awk '$1 ~ /^-?[0-9]+([.][0-9]*)?$/' | sort -g | awk '
    { v[NR] = $1 }
    END {
      n = NR
      if (n == 0) { print "n/a n/a n/a n/a 0"; exit }
      m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      r = int(0.9 * n); if (r < 0.9 * n) r++; if (r < 1) r = 1
      printf "%.1f %.1f %.1f %.1f %d\n", m, v[r], v[1], v[n], n
    }'
}

# ms values from microsecond values
to_ms_list() { local x; for x in "$@"; do us_to_ms "$x"; printf '%s\n' "$REPLY"; done; }

# shuffle SEED < lines → lines in a reproducible random order
shuffle() {
  awk -v seed="$1" 'BEGIN { srand(seed) } { printf "%.12f\t%s\n", rand(), $0 }' |
    sort -k1,1 | cut -f2-
}

# ratio A B → A/B with 2 decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# Mounts we made, to clean up on exit; daemon PIDs to wait for.
declare -a AV_MOUNTS=() BG_PIDS=()
FFS_PID="" FFS_MNT="" FSRC="" WATCHDOG=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$WATCHDOG" ]; then kill "$WATCHDOG" 2>/dev/null; fi
  local p m
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for m in "${AV_MOUNTS[@]}"; do
    if mountpoint -q "$m" 2>/dev/null; then
      "$AV1PACK" umount "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m"
    fi
  done
  if [ -n "$FFS_MNT" ] && mountpoint -q "$FFS_MNT" 2>/dev/null; then
    fusermount3 -u "$FFS_MNT" 2>/dev/null || fusermount -u "$FFS_MNT" 2>/dev/null ||
      umount -l "$FFS_MNT"
  fi
  if [ -n "$FFS_PID" ]; then kill "$FFS_PID" 2>/dev/null; wait "$FFS_PID" 2>/dev/null; fi
  if [ "$rc" -ne 0 ] && [ -f "$PARTIAL" ]; then
    {
      echo
      echo "**Run aborted (exit $rc): the report above is incomplete.**"
    } >>"$PARTIAL"
    mv "$PARTIAL" "$REPORT"
    cat "$REPORT"
    log "aborted (exit $rc); partial report in $REPORT"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "stopped (time limit of ${TIME_LIMIT}s or SIGTERM)"; exit 143' TERM

# Optionally wait for the machine to be idle (< 10 % busy over 3 s) before measuring.
if [ "${WAIT_IDLE:-0}" -gt 0 ]; then
  deadline=$((SECONDS + WAIT_IDLE))
  while :; do
    b0=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat)
    sleep 3
    b1=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat)
    busy=$(awk -v a="$b0" -v b="$b1" 'BEGIN { split(a, x, " "); split(b, y, " ")
      d = y[2] - x[2]; printf "%d", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }')
    if [ "$busy" -lt 10 ]; then break; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "warning: still ${busy}% busy after waiting ${WAIT_IDLE}s; measuring anyway"
      break
    fi
    log "machine ${busy}% busy; waiting for it to be idle"
    sleep 10
  done
fi

# The whole run is time-limited: the watchdog signals the script and its current command.
(
  sleep "$TIME_LIMIT"
  kill -TERM $$ 2>/dev/null
  pkill -TERM -P $$ 2>/dev/null
) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

# av_mount ARCHIVE MNT LOGFILE [mount options...]: mounts, sets MOUNT_PID and MOUNT_US.
MOUNT_PID="" MOUNT_US=0
av_mount() {
  local archive=$1 mnt=$2 logf=$3 out
  shift 3
  mkdir -p "$mnt"
  if mountpoint -q "$mnt"; then die "$mnt is already a mount point"; fi
  AV_MOUNTS+=("$mnt")
  tick
  if ! out=$("$AV1PACK" -v mount --log-file "$logf" "$@" "$archive" "$mnt" 2>&1); then
    printf '%s\n' "$out" >&2
    die "av1pack mount $archive failed"
  fi
  tock
  MOUNT_US=$ELAPSED_US
  MOUNT_PID=$(printf '%s\n' "$out" | sed -n 's/.*daemon \([0-9][0-9]*\).*/\1/p' | head -n 1)
  [ -n "$MOUNT_PID" ] || die "no daemon PID in the output of av1pack mount: $out"
}

# CPU accounting, to tell whether something else ran during the benchmark: busy ticks of the
# whole machine, against this script's own (itself, its children, and the mount daemons, which
# are not its children).
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# proc_ticks PID [CHILDREN]: utime+stime (and cutime+cstime with CHILDREN=1) of PID
proc_ticks() {
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null |
    awk -v c="${2:-0}" '{ t = $12 + $13; if (c) t += $14 + $15; print t }' || echo 0
}
DAEMON_TICKS=0

# av_umount MNT: unmounts and waits for the daemon (MOUNT_PID) to exit, so its log is complete.
av_umount() {
  local mnt=$1 i t last
  last=$(proc_ticks "$MOUNT_PID")
  "$AV1PACK" umount "$mnt" || die "av1pack umount $mnt failed"
  # The daemon finishes its prefetches before exiting: count its CPU time until the end.
  for ((i = 0; i < 400; i++)); do
    t=$(proc_ticks "$MOUNT_PID")
    if [ -z "$t" ] || ! kill -0 "$MOUNT_PID" 2>/dev/null; then break; fi
    last=$t
    sleep 0.025
  done
  DAEMON_TICKS=$((DAEMON_TICKS + ${last:-0}))
  if kill -0 "$MOUNT_PID" 2>/dev/null; then
    log "warning: daemon $MOUNT_PID still running 10 s after unmounting $mnt"
  fi
}

# frame_stats LOGFILE → "N frames decoded, M files rendered, ..." (the daemon's exit line)
frame_stats() {
  local line
  line=$(grep -o 'frame source: .*' "$1" | tail -n 1 || true)
  printf '%s\n' "${line#frame source: }"
}
frames_decoded() { frame_stats "$1" | sed -n 's/^\([0-9][0-9]*\) frames decoded.*/\1/p'; }

# coded_images ARCHIVE → paths of the images coded as video, in index order
coded_images() {
  "$AV1PACK" ls "$1" | sed -n -E 's/^image +[0-9]+x[0-9]+ +[0-9]+ +[0-9]+ //p'
}

# ff_fps ARCHIVE FRAMES [INPUT_OPTIONS...] -- OUTPUT_OPTIONS... → frames/s of ffmpeg decoding
# every video track of ARCHIVE
ff_fps() {
  local archive=$1 frames=$2
  local -a in=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do in+=("$1"); shift; done
  shift
  tick
  ffmpeg -nostdin -v error "${in[@]}" -i "$archive" -map 0:v "$@" >/dev/null
  tock
  awk -v n="$frames" -v us="$ELAPSED_US" 'BEGIN { printf "%.1f", n / (us / 1e6) }'
}

# ffs_mount LOGFILE [LEVEL]: ffmpegfs in the foreground (as a background job) on $FFS_MNT, with
# an empty disk cache; sets FFS_PID and FFS_US.
ffs_mount() {
  local cache=$WORK/ffmpegfs-cache i
  rm -rf "$cache"
  mkdir -p "$cache"
  tick
  ffmpegfs -f --desttype=jpg --cachepath="$cache" --logfile="$1" \
    --log_maxlevel="${2:-INFO}" "$FSRC" "$FFS_MNT" >>"$LOGS/ffmpegfs.stderr" 2>&1 &
  FFS_PID=$!
  for ((i = 0; i < 200; i++)); do
    if mountpoint -q "$FFS_MNT"; then tock; FFS_US=$ELAPSED_US; return 0; fi
    kill -0 "$FFS_PID" 2>/dev/null || break
    sleep 0.02
  done
  die "ffmpegfs did not mount (see $1 and $LOGS/ffmpegfs.stderr)"
}

ffs_umount() {
  local i
  fusermount3 -u "$FFS_MNT" 2>/dev/null || fusermount -u "$FFS_MNT" 2>/dev/null ||
    umount "$FFS_MNT"
  for ((i = 0; i < 200; i++)); do
    kill -0 "$FFS_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill "$FFS_PID" 2>/dev/null || true
  wait "$FFS_PID" 2>/dev/null || true
  FFS_PID=""
}

vm_status() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# ---------------------------------------------------------------------------------------------
# Preflight

for tool in ffmpeg ffprobe jq awk fusermount3 mountpoint; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
if [ "${BUILD:-0}" = 1 ] || [ ! -x "$AV1PACK" ] || [ ! -x "$DECODE_COST" ]; then
  log "building av1pack and examples/decode_cost"
  (cd "$ROOT" && cargo build --release --bin av1pack --example decode_cost) >&2
fi
[ -x "$AV1PACK" ] || die "no binary at $AV1PACK"
[ -x "$DECODE_COST" ] || die "no decode_cost at $DECODE_COST"
[ -d "$CORPORA_DIR" ] || die "no corpora in $CORPORA_DIR"

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=""
if [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  DIRTY=" + uncommitted changes in src/"
fi
START_US=${EPOCHREALTIME/[.,]/}
START_BUSY=$(busy_ticks)
START_OWN=$(proc_ticks $$ 1)

: >"$PARTIAL"
md "# Mount benchmark" ""
md "- av1pack commit: \`$COMMIT\`$DIRTY; binary $AV1PACK built $(date -r "$AV1PACK" '+%F %T')"
md "- date: $(date '+%F %T %Z'); host: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
md "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
md "- ffmpeg: $(ffmpeg -version | head -n 1 | cut -d' ' -f1-3)"
md "- settings: SAMPLES=$SAMPLES REPEAT=$REPEAT READERS=$READERS RSS_CACHE=$RSS_CACHE SEED=$SEED"
md ""

# ---------------------------------------------------------------------------------------------
# 1. Listing a 10,000-image synthetic album

MNT=$MNT_ROOT/av1pack
if [ "${SKIP_LISTING:-0}" = 1 ]; then
  log "1. listing: skipped (SKIP_LISTING=1)"
  md "## 1. Listing" "" "Skipped (SKIP_LISTING=1)." ""
else
log "1. listing: synthetic album of 10,000 images"
SYN=$WORK/synthetic-10k
if [ "$(find "$SYN" -type f -name '*.png' 2>/dev/null | wc -l)" -ne 10000 ]; then
  rm -rf "$SYN" "$SYN.flat"
  mkdir -p "$SYN.flat"
  ffmpeg -v error -f lavfi -i testsrc2=size=64x48:rate=25 -frames:v 10000 \
    "$SYN.flat/img%05d.png"
  for ((d = 0; d < 100; d++)); do
    printf -v sub '%s/sub%02d' "$SYN" "$d"
    mkdir -p "$sub"
    files=()
    for ((n = d * 100 + 1; n <= d * 100 + 100; n++)); do
      printf -v f '%s/img%05d.png' "$SYN.flat" "$n"
      files+=("$f")
    done
    mv "${files[@]}" "$sub/"
  done
  rmdir "$SYN.flat"
fi
SYN_MKV=$WORK/synthetic-10k.mkv
tick
"$AV1PACK" pack --force --crf 23 --gop 8 "$SYN" "$SYN_MKV" 2>"$LOGS/pack-synthetic.log" ||
  die "pack of the synthetic album failed (see $LOGS/pack-synthetic.log)"
tock
us_to_s "$ELAPSED_US"
SYN_PACK_S=$REPLY
read -r syn_images syn_verbatim syn_bytes < <(jq -r '"\(.images) \(.verbatim) \(.archive_bytes)"' \
  < <("$AV1PACK" info --json "$SYN_MKV"))

md "## 1. Listing: synthetic album, 10,000 images in 100 folders" ""
md "64x48 PNG frames of ffmpeg's testsrc2, packed with \`--crf 23 --gop 8\` in ${SYN_PACK_S} s" \
  "($syn_images coded, $syn_verbatim kept as is, archive $((syn_bytes / 1024)) KiB)." \
  "Each round is a fresh mount (\`-v --log-file\`); frames decoded come from the daemon's exit line." ""
md "| round | mount | \`ls -lR\` cold | \`ls -lR\` warm | \`find -type f \| wc -l\` | files found | frames decoded |"
md "|---|---|---|---|---|---|---|"
cold_ls=() syn_frames_total=0 syn_frames_unknown=0
for round in 1 2 3; do
  logf=$LOGS/mount-synthetic-$round.log
  av_mount "$SYN_MKV" "$MNT" "$logf"
  us_to_ms "$MOUNT_US"; m_ms=$REPLY
  tick; ls -lR "$MNT" >/dev/null; tock
  cold_ls+=("$ELAPSED_US"); us_to_s "$ELAPSED_US"; c_s=$REPLY
  tick; ls -lR "$MNT" >/dev/null; tock
  us_to_s "$ELAPSED_US"; w_s=$REPLY
  tick; found=$(find "$MNT" -type f | wc -l); tock
  us_to_s "$ELAPSED_US"; f_s=$REPLY
  av_umount "$MNT"
  fd=$(frames_decoded "$logf")
  if [ -z "$fd" ]; then syn_frames_unknown=1; fi
  syn_frames_total=$((syn_frames_total + ${fd:-0}))
  md "| $round | ${m_ms} ms | ${c_s} s | ${w_s} s | ${f_s} s | $found | ${fd:-n/a} |"
done
# Where the time goes: the same walk without extended attributes. ls -l asks for the
# security label and ACLs of every file; the kernel caches neither the attributes nor their
# absence (ENODATA), so each file costs FUSE round trips of its own.
logf=$LOGS/mount-synthetic-stat.log
av_mount "$SYN_MKV" "$MNT" "$logf"
tick; find "$MNT" -printf '%s %p\n' >/dev/null; tock
us_to_s "$ELAPSED_US"; stat_cold=$REPLY
tick; find "$MNT" -printf '%s %p\n' >/dev/null; tock
us_to_s "$ELAPSED_US"; stat_warm=$REPLY
av_umount "$MNT"
max_cold=$(printf '%s\n' "${cold_ls[@]}" | sort -n | tail -n 1)
us_to_s "$max_cold"
verdict="met"
if [ "$syn_frames_total" -ne 0 ] || [ "$max_cold" -ge 500000 ]; then verdict="**missed**"; fi
if [ "$syn_frames_unknown" = 1 ]; then verdict="$verdict (frames decoded unknown: no counters in a log)"; fi
md "" "Same walk with stat only, no extended-attribute requests (\`find -printf '%s %p'\`, fresh mount):" \
  "cold ${stat_cold} s, warm ${stat_warm} s." ""
md "Target (0 frames decoded, cold \`ls -lR\` < 0.5 s): $verdict (worst cold ${REPLY} s," \
  "$syn_frames_total frames decoded in all)." ""
fi

# ---------------------------------------------------------------------------------------------
# 2. Reading images from the mount

# readers_rss CORPUS: peak RSS of a mount of $ARCH with $READERS concurrent readers, each
# reading every file of seq_files twice in its own random order, with a small cache (2e).
readers_rss() {
  local corpus=$1 logf rss_pid r hwm rss_now fails reads cache_mib limit verdict
  log "2e. $corpus: $READERS random readers, --cache-size $RSS_CACHE"
  logf=$LOGS/mount-$corpus-rss.log
  av_mount "$ARCH" "$MNT" "$logf" --cache-size "$RSS_CACHE"
  rss_pid=$MOUNT_PID
  BG_PIDS=()
  tick
  for ((r = 0; r < READERS; r++)); do
    (
      fails=0
      while IFS= read -r p; do
        cat "$MNT/$p" >/dev/null 2>&1 || fails=$((fails + 1))
      done < <(printf '%s\n' "${seq_files[@]}" "${seq_files[@]}" | shuffle $((SEED + r + 1)))
      echo "$fails" >"$LOGS/reader-$corpus-$r.fails"
    ) &
    BG_PIDS+=($!)
  done
  wait "${BG_PIDS[@]}"
  tock
  BG_PIDS=()
  hwm=$(vm_status "$rss_pid" VmHWM)
  rss_now=$(vm_status "$rss_pid" VmRSS)
  av_umount "$MNT"
  fails=$(cat "$LOGS"/reader-"$corpus"-*.fails | awk '{ s += $1 } END { print s + 0 }')
  reads=$((READERS * 2 * ${#seq_files[@]}))
  cache_mib=$(awk -v s="$RSS_CACHE" 'BEGIN {
    u = toupper(substr(s, length(s))); n = s + 0
    if (u == "K") n /= 1024; else if (u == "G") n *= 1024; else if (u != "M") n /= 1048576
    printf "%d", n }')
  limit=$((cache_mib + 100))
  verdict=$(awk -v h="$hwm" -v l="$limit" 'BEGIN { print (h <= l) ? "met" : "**missed**" }')
  us_to_s "$ELAPSED_US"
  md "### Peak memory under $READERS random readers (\`--cache-size $RSS_CACHE\`)" ""
  md "Each reader \`cat\`s every file twice, in its own random order: $reads reads in $REPLY s" \
    "($(awk -v n="$reads" -v us="$ELAPSED_US" 'BEGIN { printf "%.1f", n / (us / 1e6) }') files/s), $fails failed." \
    "Daemon VmHWM ${hwm} MiB (VmRSS at the end ${rss_now} MiB); counters: $(frame_stats "$logf")." \
    "Target (≤ cache + 100 MiB = $limit MiB): $verdict." ""
}

# kept_files_only CORPUS: an archive in which every file is kept as it is (a JPEG album whose
# files Lepton keeps smaller than any coding at the target): nothing is decoded from video, so
# the in-process decode cost and ffmpeg do not apply; cold and warm reads of kept files (each
# decoded whole on its first read), every file in order, and the readers' peak RSS.
kept_files_only() {
  local corpus=$1 path pos i
  md "## 2. $corpus" ""
  md "Packed with \`${CORPUS_PACK[*]}\` in ${pack_s} s: no image coded, ${n_verbatim} kept as is" \
    "(JPEGs Lepton-compressed, PNGs recoded: decoded whole on their first read); archive" \
    "$((a_bytes / 1024)) KiB, originals $((o_bytes / 1024)) KiB. The in-process decode cost and" \
    "ffmpeg's decoding do not apply (no video frames)." ""
  av_mount "$ARCH" "$MNT" "$LOGS/mount-$corpus-list.log"
  mapfile -t seq_files < <(cd "$MNT" && find . -type f | sed 's|^\./||' | sort)
  av_umount "$MNT"
  log "2a. $corpus: $SAMPLES cold reads of kept files, each in a fresh mount"
  mapfile -t order < <(printf '%s\n' "${!seq_files[@]}" | shuffle "$SEED")
  local cold=() warm=()
  for ((i = 0; i < SAMPLES; i++)); do
    path=${seq_files[${order[i % ${#order[@]}]}]}
    av_mount "$ARCH" "$MNT" "$LOGS/mount-$corpus-cold.log"
    tick; cat "$MNT/$path" >/dev/null; tock
    cold+=("$ELAPSED_US")
    tick; cat "$MNT/$path" >/dev/null; tock
    warm+=("$ELAPSED_US")
    av_umount "$MNT"
  done
  local c_med c_p90 c_min c_max w_med w_p90 w_min w_max
  read -r c_med c_p90 c_min c_max _ < <(summary $(to_ms_list "${cold[@]}"))
  read -r w_med w_p90 w_min w_max _ < <(summary $(to_ms_list "${warm[@]}"))
  md "### Cold and warm reads of one random kept file ($SAMPLES samples, fresh mount each)" ""
  md "| | median ms | p90 ms | min ms | max ms |" "|---|---|---|---|---|"
  md "| mount cold read | $c_med | $c_p90 | $c_min | $c_max |"
  md "| warm read | $w_med | $w_p90 | $w_min | $w_max |" ""
  log "2d. $corpus: sequential read"
  av_mount "$ARCH" "$MNT" "$LOGS/mount-$corpus-seq.log"
  tick
  (cd "$MNT" && cat "${seq_files[@]}") >/dev/null
  tock
  av_umount "$MNT"
  us_to_s "$ELAPSED_US"
  md "### Sequential read of every file" ""
  md "\`cat\` of all ${#seq_files[@]} files in \`ls\` order, fresh mount: $REPLY s" \
    "($(awk -v n="${#seq_files[@]}" -v us="$ELAPSED_US" 'BEGIN { printf "%.1f", n / (us / 1e6) }') files/s)." ""
  readers_rss "$corpus"
}

declare -A FIRST_SAMPLE_POS=()
for corpus in "${CORPUS_LIST[@]}"; do
  src=$CORPORA_DIR/$corpus
  [ -d "$src" ] || die "no corpus $src"
  log "2. $corpus: pack ${CORPUS_PACK[*]}"
  ARCH=$WORK/$corpus.mkv
  tick
  "$AV1PACK" pack --force "${CORPUS_PACK[@]}" "$src" "$ARCH" 2>"$LOGS/pack-$corpus.log" ||
    die "pack of $corpus failed (see $LOGS/pack-$corpus.log)"
  tock
  us_to_s "$ELAPSED_US"; pack_s=$REPLY
  info=$("$AV1PACK" info --json "$ARCH")
  read -r n_images n_verbatim a_bytes o_bytes r_bytes < <(jq -r \
    '"\(.images) \(.verbatim) \(.archive_bytes) \(.original_bytes) \(.restored_bytes)"' <<<"$info")
  tracks=$(jq -r '[.tracks[] | "\(.[0])x\(.[1])×\(.[2])"] | join(", ")' <<<"$info")
  mapfile -t images < <(coded_images "$ARCH")
  if [ "${#images[@]}" -eq 0 ]; then
    kept_files_only "$corpus"
    continue
  fi

  md "## 2. $corpus" ""
  md "Packed with \`${CORPUS_PACK[*]}\` (gop 8) in ${pack_s} s: ${n_images} images coded, ${n_verbatim} kept as is;" \
    "tracks (width x height × frames): $tracks; archive $((a_bytes / 1024)) KiB," \
    "originals $((o_bytes / 1024)) KiB, files as served $((r_bytes / 1024)) KiB." ""

  # 2a/2c: cold then warm read of one random image, each in a fresh mount.
  log "2a. $corpus: $SAMPLES cold reads, each in a fresh mount"
  mapfile -t order < <(printf '%s\n' "${!images[@]}" | shuffle "$SEED")
  samples=()
  for ((i = 0; i < SAMPLES; i++)); do samples+=("${order[i % ${#order[@]}]}"); done
  FIRST_SAMPLE_POS[$corpus]="${samples[*]}"
  cold=() warm=() mounts=() sizes=()
  for pos in "${samples[@]}"; do
    path=${images[pos]}
    av_mount "$ARCH" "$MNT" "$LOGS/mount-$corpus-cold.log"
    mounts+=("$MOUNT_US")
    tick; cat "$MNT/$path" >/dev/null; tock
    cold+=("$ELAPSED_US")
    tick; cat "$MNT/$path" >/dev/null; tock
    warm+=("$ELAPSED_US")
    sizes+=("$(stat -c %s "$MNT/$path")")
    av_umount "$MNT"
  done

  # 2b: the same images, in process (decode the GOP up to the frame + render).
  log "2b. $corpus: decode_cost (in process, fresh frame source per run)"
  paths=()
  for pos in "${samples[@]}"; do paths+=("${images[pos]}"); done
  "$DECODE_COST" --repeat "$REPEAT" "$ARCH" "${paths[@]}" >"$LOGS/decode-cost-$corpus.tsv" ||
    die "decode_cost failed on $ARCH"
  declare -A dc_ms=() dc_frames=() dc_dec=() dc_ren=()
  while IFS=$'\t' read -r ms fr de re p; do
    dc_ms[$p]=$ms dc_frames[$p]=$fr dc_dec[$p]=$de dc_ren[$p]=$re
  done < <(awk -F '\t' '$1 ~ /^[0-9.]+$/' "$LOGS/decode-cost-$corpus.tsv")

  md "### Cold and warm reads of one random image ($SAMPLES samples)" ""
  md "Each sample: fresh mount (empty daemon cache, empty page cache for that mount)," \
    "\`cat FILE\` (cold), \`cat FILE\` again (warm), unmount. In process: examples/decode_cost," \
    "a fresh \`FrameSource\` (no prefetch) timing \`source.file(entry)\`, median of $REPEAT runs;" \
    "its split into decoding (with RGB conversion of every frame decoded) and rendering is timed" \
    "separately with the library's decoder and renderer." ""
  md "| # | image | bytes | frames decoded (in process) | mount cold ms | in-process ms | decode ms | render ms | warm ms |"
  md "|---|---|---|---|---|---|---|---|---|"
  inproc=() over=() dec_l=() ren_l=()
  for ((i = 0; i < ${#samples[@]}; i++)); do
    p=${images[${samples[i]}]}
    us_to_ms "${cold[i]}"; c=$REPLY
    us_to_ms "${warm[i]}"; w=$REPLY
    ip=${dc_ms[$p]:-n/a}
    inproc+=("$ip") dec_l+=("${dc_dec[$p]:-}") ren_l+=("${dc_ren[$p]:-}")
    over+=("$(awk -v a="$c" -v b="$ip" 'BEGIN { printf "%.1f", a - b }')")
    md "| $((i + 1)) | $p | ${sizes[i]} | ${dc_frames[$p]:-n/a} | $c | $ip | ${dc_dec[$p]:-n/a} | ${dc_ren[$p]:-n/a} | $w |"
  done
  mapfile -t cold_ms < <(to_ms_list "${cold[@]}")
  mapfile -t warm_ms < <(to_ms_list "${warm[@]}")
  mapfile -t mount_ms < <(to_ms_list "${mounts[@]}")
  read -r c_med c_p90 c_min c_max _ < <(summary "${cold_ms[@]}")
  read -r w_med w_p90 w_min w_max _ < <(summary "${warm_ms[@]}")
  read -r i_med i_p90 i_min i_max _ < <(summary "${inproc[@]}")
  read -r o_med o_p90 _ _ _ < <(summary "${over[@]}")
  read -r d_med _ _ _ _ < <(summary "${dec_l[@]}")
  read -r r_med _ _ _ _ < <(summary "${ren_l[@]}")
  read -r m_med m_p90 _ _ _ < <(summary "${mount_ms[@]}")
  md "" "| | median ms | p90 ms | min ms | max ms |" "|---|---|---|---|---|"
  md "| mount cold read (2a) | $c_med | $c_p90 | $c_min | $c_max |"
  md "| in process: decode GOP to frame + render (2b) | $i_med | $i_p90 | $i_min | $i_max |"
  md "| of which decoding / rendering | $d_med / $r_med | | | |"
  md "| mount overhead (cold − in process, per image) | $o_med | $o_p90 | | |"
  md "| warm read (2c) | $w_med | $w_p90 | $w_min | $w_max |"
  md "| \`av1pack mount\` until usable | $m_med | $m_p90 | | |"
  md ""

  # 2d: sequential read of every image, against ffmpeg's decoding speed: SEQ_ROUNDS rounds,
  # each a fresh mount read through with one `cat`, then ffmpeg decoding the archive.
  log "2d. $corpus: sequential read ($SEQ_ROUNDS rounds)"
  frames=$(ffprobe -v error -count_packets -select_streams v -show_entries stream=nb_read_packets \
    -of csv=p=0 "$ARCH" | awk -F, '{ s += $1 } END { print s + 0 }')
  seq_l=() ffs_l=() rel_l=()
  for ((round = 1; round <= SEQ_ROUNDS; round++)); do
    logf=$LOGS/mount-$corpus-seq-$round.log
    av_mount "$ARCH" "$MNT" "$logf"
    mapfile -t seq_files < <(cd "$MNT" && find . -type f | sed 's|^\./||' | sort)
    tick
    (cd "$MNT" && cat "${seq_files[@]}") >/dev/null
    tock
    av_umount "$MNT"
    seq_l+=("$(awk -v n="${#seq_files[@]}" -v us="$ELAPSED_US" 'BEGIN { printf "%.1f", n / (us / 1e6) }')")
    ffs_l+=("$(ff_fps "$ARCH" "$frames" -- -f null -)")
    rel_l+=("$(ratio "${seq_l[-1]}" "${ffs_l[-1]}")")
  done
  seq_stats=$(frame_stats "$logf")
  read -r seq_ips _ seq_min seq_max _ < <(summary "${seq_l[@]}")
  read -r fps_auto _ _ _ _ < <(summary "${ffs_l[@]}")
  read -r rel rel_min < <(printf '%s\n' "${rel_l[@]}" | sort -g | awk '{ v[NR] = $1 } END {
    n = NR; m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; printf "%.2f %.2f\n", m, v[1] }')
  fps_one=$(ff_fps "$ARCH" "$frames" -threads 1 -- -f null -)
  fps_jpeg=$(ff_fps "$ARCH" "$frames" -- -c:v mjpeg -q:v 2 -f null -)
  verdict=$(awk -v r="$rel" -v m="$rel_min" 'BEGIN {
    print (m >= 0.8) ? "met in every round" : (r >= 0.8) ? "met by the median, not in every round" : "**missed**" }')
  md "### Sequential read of every image ($SEQ_ROUNDS rounds)" ""
  md "Each round: a fresh mount, one \`cat\` of every file in \`ls\` order, unmount; then ffmpeg" \
    "decoding the archive. Medians (min–max):" ""
  md "| reader | images | images/s |" "|---|---|---|"
  md "| \`cat\` of every file in \`ls\` order, fresh mount | ${#seq_files[@]} | $seq_ips ($seq_min–$seq_max) |"
  md "| \`ffmpeg -i ARCHIVE -map 0:v -f null -\` (decode only, default threads) | $frames | $fps_auto |"
  md "| same with \`-threads 1\` (one run) | $frames | $fps_one |"
  md "| ffmpeg decode + JPEG encode (\`-c:v mjpeg -q:v 2 -f null\`, one run) | $frames | $fps_jpeg |"
  md "" "Ratio per round: ${rel_l[*]}." \
    "Daemon counters for the last round: $seq_stats." \
    "Target (≥ 0.8 × ffmpeg decode-only fps): $verdict (median ${rel}×, min ${rel_min}×)." ""

  readers_rss "$corpus"
done

# ---------------------------------------------------------------------------------------------
# 3. ffmpegfs, frame-set mode

md "## 3. ffmpegfs side by side" ""
if [ "${SKIP_FFMPEGFS:-0}" = 1 ]; then
  log "3. ffmpegfs: skipped (SKIP_FFMPEGFS=1)"
  md "Skipped (SKIP_FFMPEGFS=1)." ""
elif ! command -v ffmpegfs >/dev/null; then
  log "3. ffmpegfs: not installed, skipped"
  md "ffmpegfs is not installed (\`apt-get install ffmpegfs\`): skipped." ""
else
  corpus=$FFMPEGFS_CORPUS
  ARCH=$WORK/$corpus.mkv
  if [ ! -f "$ARCH" ]; then
    log "3. packing $corpus for ffmpegfs"
    "$AV1PACK" pack --force "${CORPUS_PACK[@]}" "$CORPORA_DIR/$corpus" "$ARCH" 2>"$LOGS/pack-$corpus.log" ||
      die "pack of $corpus failed (see $LOGS/pack-$corpus.log)"
  fi
  log "3. ffmpegfs on $corpus"
  mapfile -t images < <(coded_images "$ARCH")
  FSRC=$WORK/ffmpegfs-src
  rm -rf "$FSRC"
  mkdir -p "$FSRC/mkv" "$FSRC/mp4"
  cp "$ARCH" "$FSRC/mkv/$corpus.mkv"
  # The same coded video stream-copied into MP4 (no re-encoding), in case ffmpegfs cannot
  # enumerate the frames of the Matroska file.
  ffmpeg -nostdin -v error -i "$ARCH" -map 0:v:0 -c copy "$FSRC/mp4/$corpus.mp4"
  FFS_MNT=$MNT_ROOT/ffmpegfs
  mkdir -p "$FFS_MNT"
  FFS_US=0
  ffs_version=$(ffmpegfs --version 2>&1 || true)
  ffs_version=$(sed -n -E 's/^FFMPEGFS (Version *: *|V)([0-9][^ ]*).*/\2/p' <<<"$ffs_version" |
    head -n 1)
  ffs_version=${ffs_version:-unknown version}

  # Listing, cold: first walk of each frame folder after mounting.
  ffs_mount "$LOGS/ffmpegfs-list.log"
  us_to_ms "$FFS_US"; ffs_mount_ms=$REPLY
  tick; ls -lR "$FFS_MNT/mkv" >/dev/null 2>&1 || true; tock
  us_to_s "$ELAPSED_US"; ls_mkv=$REPLY
  tick; ls -lR "$FFS_MNT/mp4" >/dev/null 2>&1 || true; tock
  us_to_s "$ELAPSED_US"; ls_mp4=$REPLY
  n_mkv=$(find "$FFS_MNT/mkv/$corpus.mkv" -type f 2>/dev/null | wc -l)
  n_mp4=$(find "$FFS_MNT/mp4/$corpus.mp4" -type f 2>/dev/null | wc -l)
  if [ "$n_mkv" -gt 0 ]; then
    FDIR=mkv/$corpus.mkv
  else
    FDIR=mp4/$corpus.mp4
  fi
  mapfile -t ffs_frames < <(cd "$FFS_MNT/$FDIR" 2>/dev/null && find . -type f | sed 's|^\./||' | sort)
  n_ffs=${#ffs_frames[@]}
  # st_size before reading, bytes read, st_size after; sum of the sizes listed.
  size_rows=() guessed_total=0 probe=()
  for f in "${ffs_frames[@]}"; do
    guessed_total=$((guessed_total + $(stat -c %s "$FFS_MNT/$FDIR/$f")))
  done
  if [ "$n_ffs" -gt 0 ]; then
    probe=("${ffs_frames[0]}" "${ffs_frames[$((n_ffs / 2))]}" "${ffs_frames[$((n_ffs - 1))]}")
  fi
  for f in "${probe[@]}"; do
    before=$(stat -c %s "$FFS_MNT/$FDIR/$f")
    # Through a pipe: wc -c given the file itself would trust st_size.
    # shellcheck disable=SC2002
    got=$(cat "$FFS_MNT/$FDIR/$f" | wc -c)
    size_rows+=("$f $before $got")
  done
  sleep 1.2 # the kernel keeps attributes for 1 s (FUSE's default attr_timeout)
  for ((i = 0; i < ${#size_rows[@]}; i++)); do
    read -r f _ _ <<<"${size_rows[i]}"
    size_rows[i]="${size_rows[i]} $(stat -c %s "$FFS_MNT/$FDIR/$f")"
  done
  ffs_umount
  mkv_says=""
  if [ "$n_mkv" -ne "${#images[@]}" ]; then
    # ffmpegfs's own account of the MKV, at debug level.
    logf=$LOGS/ffmpegfs-mkv-debug.log
    ffs_mount "$logf" DEBUG
    ls -la "$FFS_MNT/mkv/$corpus.mkv" >/dev/null 2>&1 || true
    ffs_umount
    mkv_says=$(grep -E "$corpus\.mkv/?\].*(Frames|rror)|Could not find codec" "$logf" |
      sed -E 's/^[0-9-]+ [0-9:]+ +//; s/ +/ /g; s/@ 0x[0-9a-f]+/@ …/' |
      sed -E 's/(Segments: [0-9]+).*/\1/' | sort -u | head -n 4 | paste -s -d '|' - || true)
  fi

  # Cold random reads (fresh mount and empty disk cache for each, same positions as in 2a when
  # the corpus was measured there), then a sequential read of every frame in a fresh mount.
  ffs_cold=() read_total=0 ffs_seq_us=0
  if [ "$n_ffs" -gt 0 ]; then
    read -r -a pos_list <<<"${FIRST_SAMPLE_POS[$corpus]:-}"
    if [ ${#pos_list[@]} -eq 0 ]; then
      mapfile -t pos_list < <(seq 0 $((n_ffs - 1)) | shuffle "$SEED")
    fi
    cold_rows=()
    for ((i = 0; i < FFMPEGFS_SAMPLES; i++)); do
      f=${ffs_frames[${pos_list[i % ${#pos_list[@]}]} % n_ffs]}
      ffs_mount "$LOGS/ffmpegfs-cold.log"
      tick; cat "$FFS_MNT/$FDIR/$f" >/dev/null; tock
      ffs_cold+=("$ELAPSED_US")
      us_to_ms "$ELAPSED_US"
      cold_rows+=("$f: $REPLY ms")
      ffs_umount
    done
    ffs_mount "$LOGS/ffmpegfs-seq.log"
    tick
    read_total=$( (cd "$FFS_MNT/$FDIR" && cat "${ffs_frames[@]}") | wc -c)
    tock
    ffs_seq_us=$ELAPSED_US
    ffs_umount
  fi

  md "ffmpegfs $ffs_version, \`ffmpegfs -f --desttype=jpg --cachepath=EMPTY_DIR SRC MNT\`" \
    "(frame-set mode: each video becomes a folder of JPEG frames); SRC/mkv holds a copy of the" \
    "$corpus archive, SRC/mp4 the same H.264 stream copied into MP4 without re-encoding" \
    "(\`ffmpeg -i $corpus.mkv -map 0:v:0 -c copy $corpus.mp4\`). Each mount gets an empty disk cache." ""
  md "- The MKV as is: its frame folder lists **$n_mkv** files (the archive has ${#images[@]} images)."
  if [ -n "$mkv_says" ]; then
    md "  ffmpegfs's log (debug level) about it: \`${mkv_says//|/\` · \`}\`"
  fi
  md "- The MP4: its frame folder lists $n_mp4 files."
  md "- Measured below: \`$FDIR\`. Mount until usable ${ffs_mount_ms} ms; cold \`ls -lR\` of the" \
    "MKV folder ${ls_mkv} s, of the MP4 folder ${ls_mp4} s."
  if [ "$n_ffs" -gt 0 ]; then
    md "" "| frame | st_size before reading | bytes read | st_size after reading (> 1 s later) |" \
      "|---|---|---|---|"
    for row in "${size_rows[@]}"; do
      read -r f b g a <<<"$row"
      md "| $f | $b | $g | $a |"
    done
    mapfile -t fc_ms < <(to_ms_list "${ffs_cold[@]}")
    read -r f_med f_p90 f_min f_max _ < <(summary "${fc_ms[@]}")
    us_to_s "$ffs_seq_us"
    ffs_fps=$(awk -v n="$n_ffs" -v us="$ffs_seq_us" 'BEGIN { printf "%.1f", n / (us / 1e6) }')
    md "" "Sum of the sizes listed before reading: $((guessed_total / 1024)) KiB;" \
      "bytes actually read by the sequential pass: $((read_total / 1024)) KiB." ""
    md "| ffmpegfs | median ms | p90 ms | min ms | max ms |" "|---|---|---|---|---|"
    md "| cold read of one frame ($FFMPEGFS_SAMPLES samples) | $f_med | $f_p90 | $f_min | $f_max |"
    samples_text=$(printf '%s, ' "${cold_rows[@]}")
    md "" "Samples: ${samples_text%, }." ""
    md "Sequential read of every frame (fresh mount): $n_ffs frames in $REPLY s = $ffs_fps frames/s."
  fi
  md ""
fi

END_US=${EPOCHREALTIME/[.,]/}
hz=$(getconf CLK_TCK)
others=$(($(busy_ticks) - START_BUSY - ($(proc_ticks $$ 1) - START_OWN) - DAEMON_TICKS))
us_to_s $((END_US - START_US))
md "Whole run: $REPLY s wall. CPU time of other processes during the run (machine busy time" \
  "minus this script's, its children's and the mount daemons'): $(awk -v t="$others" -v hz="$hz" \
    'BEGIN { printf "%.1f", (t < 0 ? 0 : t) / hz }') s (near 0 on an idle machine)."
if [ "$others" -gt $((hz * (END_US - START_US) / 1000000 / 20)) ]; then
  md "" "**Warning: other processes used more than 5 % of one CPU during the run; figures may be" \
    "disturbed.**"
fi
md "" "Logs: $LOGS."
mv "$PARTIAL" "$REPORT"
cat "$REPORT"
log "report written to $REPORT"
