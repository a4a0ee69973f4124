#!/usr/bin/env bash
# Benchmark: av1pack against zip, 7z, JPEG XL, the bare ffmpeg CLI and (optionally) the seed
# project.
#
#   scripts/bench-pack.sh [OPTIONS] CORPORA_DIR [OUT_DIR]
#
# CORPORA_DIR holds one sub-folder per corpus (build them with
# /work/shared/datasets/fetch-corpora.sh, default $HOME/.cache/av1pack-corpora). Hidden folders
# and folders ending in .tmp are skipped. OUT_DIR (default target/bench) receives the archives,
# logs, a raw TSV (bench-pack.tsv) and the Markdown report (bench-pack.md).
#
# Options:
#   --seed           also run the seed project's pack.py (python, Pillow + tqdm + ffmpeg CLI)
#   --no-av1pack     skip av1pack (e.g. before the binary is built); its columns print n/a
#   --no-baselines   skip zip and 7z
#   --no-ffmpeg      skip the bare ffmpeg comparison
#   --no-jxl         skip the JPEG XL columns (cjxl/djxl from libjxl-tools, installed on demand):
#                    jxl-lossless: every image file through `cjxl -e 7` (its default effort),
#                      `--lossless_jpeg=1` (bit-exact JPEG recompression) for .jpg/.jpeg and
#                      `-d 0` (mathematically lossless) for the others;
#                    jxl-d1: every image through `cjxl -d 1 -e 7` (`--lossless_jpeg=0` for JPEGs,
#                      so that their pixels are coded), decoded back with djxl to PNG and scored
#                      against the originals by the score_dirs example (the SSIMULACRA2 of
#                      `av1pack verify`; both images upright, since djxl applies EXIF orientation).
#                    Files that are not images count at their original size in both; images
#                    cjxl refuses count at their original size too, and are counted (refused).
#   --only A,B,...   only these corpora (by folder name)
#   --build          run `cargo build --release` first
#   --charts         also run `av1pack report` per corpus: OUT_DIR/report-NAME.svg (chart) and
#                    OUT_DIR/report-NAME.txt (its table); copy a chart to docs/ to publish it
#   -h, --help       this help
#
# Environment:
#   AV1PACK          the binary (default: target/release/av1pack of this repo)
#   AV1PACK_ARGS     extra options for `av1pack pack`, e.g. "--crf 18 --preset medium --gop 8"
#                    (default: none, i.e. the binary's defaults)
#   VERIFY_ARGS      extra options for `av1pack verify --json` (default: none)
#   JXL_EFFORT, JXL_DISTANCE, JXL_JOBS
#                    cjxl's effort and the lossy distance (defaults 7 and 1), and how many files
#                    cjxl/djxl run on at once (default 2, each with --num_threads=1)
#   JXL_LOSSLESS     0: skip the jxl-lossless column (e.g. to measure another JXL_DISTANCE only)
#                    (the TSV's jxl_d1* columns hold the run at JXL_DISTANCE, whatever it is)
#   SCORE_DIRS       the scoring tool (default: target/release/examples/score_dirs of this repo,
#                    built with `cargo build --release --example score_dirs` when missing)
#   FFMPEG_PRESET, FFMPEG_CRF, FFMPEG_GOP, FFMPEG_PIX_FMT, FFMPEG_THREADS, FFMPEG_FRAMERATE
#                    the bare ffmpeg run's settings (defaults: medium, 18, 8, yuv444p, 2, 25)
#   SEED_DIR         where the seed's files are (default /tmp/av1pack-seed); filled from
#   SEED_GIT_DIR     a git directory of undefinedDarkness/av1pack (default
#                    /work/.mirror/undefinedDarkness+av1pack/repo) when SEED_DIR has no pack.py
#   SEED_REF         the commit to export (default HEAD)
#   SEED_ARGS        extra options for the seed's pack.py (its defaults: --crf 17 --qp 15
#                    --preset slow)
#   SEED_PYTHON      the python to make the seed's venv with (default python3)
#   SEED_FLATTEN     1 (default): give the seed a flat folder of symlinks for a nested corpus,
#                    since its pack.py reads only top-level files; 0: give it the folder as is
#
# Times are wall-clock seconds and peak RSS is the maximum resident set size of the process and
# its children, both from GNU time (`/usr/bin/time -f '%e %M'`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

RUN_SEED=0 RUN_AV1PACK=1 RUN_BASELINES=1 RUN_FFMPEG=1 RUN_JXL=1 BUILD=0 CHARTS=0 ONLY=""
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --seed) RUN_SEED=1 ;;
    --no-av1pack) RUN_AV1PACK=0 ;;
    --no-baselines) RUN_BASELINES=0 ;;
    --no-ffmpeg) RUN_FFMPEG=0 ;;
    --no-jxl) RUN_JXL=0 ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    --build) BUILD=1 ;;
    --charts) CHARTS=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; ARGS+=("$@"); break ;;
    -*) echo "bench-pack: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
if [ ${#ARGS[@]} -lt 1 ] || [ ${#ARGS[@]} -gt 2 ]; then usage >&2; exit 2; fi

CORPORA=$(cd "${ARGS[0]}" && pwd)
OUT_DIR=${ARGS[1]:-$ROOT/target/bench}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$OUT_DIR/work
LOGS=$OUT_DIR/logs
mkdir -p "$WORK" "$LOGS"

AV1PACK=${AV1PACK:-$ROOT/target/release/av1pack}
read -r -a PACK_ARGS <<<"${AV1PACK_ARGS:-}"
read -r -a VERIFY_EXTRA <<<"${VERIFY_ARGS:-}"
read -r -a SEED_EXTRA <<<"${SEED_ARGS:-}"
FF_PRESET=${FFMPEG_PRESET:-medium}
FF_CRF=${FFMPEG_CRF:-18}
FF_GOP=${FFMPEG_GOP:-8}
FF_PIX=${FFMPEG_PIX_FMT:-yuv444p}
FF_THREADS=${FFMPEG_THREADS:-2}
FF_RATE=${FFMPEG_FRAMERATE:-25}
SEED_DIR=${SEED_DIR:-/tmp/av1pack-seed}
SEED_GIT_DIR=${SEED_GIT_DIR:-/work/.mirror/undefinedDarkness+av1pack/repo}
SEED_REF=${SEED_REF:-HEAD}
SEED_PYTHON=${SEED_PYTHON:-python3}
JXL_EFFORT=${JXL_EFFORT:-7}
JXL_DISTANCE=${JXL_DISTANCE:-1}
JXL_JOBS=${JXL_JOBS:-2}
JXL_LOSSLESS=${JXL_LOSSLESS:-1}
SCORE_DIRS=${SCORE_DIRS:-$ROOT/target/release/examples/score_dirs}
TIME=/usr/bin/time

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- tools
need_pkgs=()
[ -x "$TIME" ] || need_pkgs+=(time)
command -v exiftool >/dev/null 2>&1 || need_pkgs+=(libimage-exiftool-perl)
if [ $RUN_BASELINES = 1 ]; then
  command -v zip >/dev/null 2>&1 || need_pkgs+=(zip)
  command -v 7z >/dev/null 2>&1 || need_pkgs+=(p7zip-full)
fi
{ [ $RUN_FFMPEG = 1 ] || [ $RUN_SEED = 1 ]; } && ! command -v ffmpeg >/dev/null 2>&1 && need_pkgs+=(ffmpeg)
[ $RUN_JXL = 1 ] && ! { command -v cjxl && command -v djxl; } >/dev/null 2>&1 && need_pkgs+=(libjxl-tools)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  "$ROOT/scripts/install-deps.sh" "${need_pkgs[@]}"
fi

if [ $BUILD = 1 ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release)
fi
if [ $RUN_JXL = 1 ] && { [ $BUILD = 1 ] || [ ! -x "$SCORE_DIRS" ]; }; then
  if [ "$SCORE_DIRS" = "$ROOT/target/release/examples/score_dirs" ]; then
    log "cargo build --release --example score_dirs"
    (cd "$ROOT" && cargo build --release --example score_dirs)
  fi
  [ -x "$SCORE_DIRS" ] || { echo "bench-pack: $SCORE_DIRS not found (or pass --no-jxl)" >&2; exit 1; }
fi
if [ $RUN_AV1PACK = 1 ] && [ ! -x "$AV1PACK" ]; then
  echo "bench-pack: $AV1PACK not found: build it (--build) or pass --no-av1pack" >&2
  exit 1
fi

# The seed: exported from its git directory into SEED_DIR (outside this repo), with a venv.
SEED_PY=""
setup_seed() {
  case $SEED_DIR/ in "$ROOT"/*) echo "bench-pack: SEED_DIR must be outside the repo" >&2; exit 1 ;; esac
  if [ ! -f "$SEED_DIR/pack.py" ]; then
    [ -d "$SEED_GIT_DIR" ] || { echo "bench-pack: no $SEED_DIR/pack.py and no git dir $SEED_GIT_DIR" >&2; exit 1; }
    log "exporting the seed ($SEED_REF) from $SEED_GIT_DIR into $SEED_DIR"
    mkdir -p "$SEED_DIR"
    git --git-dir="$SEED_GIT_DIR" archive "$SEED_REF" pack.py unpack.py pyproject.toml README.md LICENSE |
      tar -x -C "$SEED_DIR"
    git --git-dir="$SEED_GIT_DIR" rev-parse "$SEED_REF" >"$SEED_DIR/COMMIT"
  fi
  if [ ! -x "$SEED_DIR/.venv/bin/python" ] || ! "$SEED_DIR/.venv/bin/python" -c 'import PIL, tqdm' 2>/dev/null; then
    log "making the seed's venv in $SEED_DIR/.venv (pip install pillow tqdm)"
    "$SEED_PYTHON" -m venv "$SEED_DIR/.venv" ||
      { "$ROOT/scripts/install-deps.sh" python3-venv && "$SEED_PYTHON" -m venv "$SEED_DIR/.venv"; }
    "$SEED_DIR/.venv/bin/pip" install -q --disable-pip-version-check pillow tqdm
  fi
  SEED_PY=$SEED_DIR/.venv/bin/python
}
[ $RUN_SEED = 1 ] && setup_seed

# ---------------------------------------------------------------- helpers
NA=n/a
fmt_int() { # 1234567 -> 1,234,567 ; anything else unchanged
  case $1 in '' | *[!0-9]*) echo "$1" ;; *) echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' ;; esac
}
pct() { # pct PART WHOLE -> 12.3%
  case $1$2 in *[!0-9]* | '') echo "$NA" ;; *) awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.1f%%", 100*a/b; else print "n/a" }' ;; esac
}
mib() { case $1 in '' | *[!0-9]*) echo "$NA" ;; *) awk -v k="$1" 'BEGIN{ printf "%.0f", k/1024 }' ;; esac; }
fsize() { if [ -f "$1" ]; then stat -c %s "$1"; else echo "$NA"; fi; }
norm_ext() { local e=${1##*.}; e=${e,,}; case $e in jpeg) e=jpg ;; tif) e=tiff ;; esac; echo "$e"; }
is_image() { case ${1,,} in *.jpg | *.jpeg | *.png | *.gif | *.webp | *.bmp | *.tif | *.tiff) return 0 ;; *) return 1 ;; esac; }

# timed LOGFILE CMD... : runs CMD with GNU time; sets T_SEC, T_KB and T_RC.
timed() {
  local logf=$1 tf
  shift
  tf=$(mktemp)
  T_RC=0
  "$TIME" -f '%e %M' -o "$tf" "$@" >"$logf" 2>&1 || T_RC=$?
  read -r T_SEC T_KB <"$tf" 2>/dev/null || true
  # GNU time writes "Command exited with non-zero status N" first on failure.
  if [ "$T_RC" -ne 0 ]; then read -r T_SEC T_KB < <(tail -n 1 "$tf") || true; fi
  rm -f "$tf"
  T_SEC=${T_SEC:-$NA} T_KB=${T_KB:-$NA}
}

# jxl_one MODE SRC_ROOT OUT_ROOT REL: cjxl on one file (run by xargs, JXL_JOBS at once). MODE
# lossless: --lossless_jpeg=1 for JPEGs, -d 0 otherwise; d1: -d JXL_DISTANCE, --lossless_jpeg=0
# for JPEGs, then djxl to OUT_ROOT.png/REL.png. A file cjxl refuses leaves no output behind.
jxl_one() {
  local mode=$1 src=$2/$4 out=$3/$4.jxl opts
  case $mode:${4,,} in
    lossless:*.jpg | lossless:*.jpeg) opts=(--lossless_jpeg=1) ;;
    lossless:*) opts=(-d 0) ;;
    d1:*.jpg | d1:*.jpeg) opts=(--lossless_jpeg=0 -d "$JXL_DISTANCE") ;;
    d1:*) opts=(-d "$JXL_DISTANCE") ;;
  esac
  mkdir -p "$(dirname "$out")"
  echo "== cjxl ${opts[*]} -e $JXL_EFFORT $4"
  if ! cjxl "$src" "$out" "${opts[@]}" -e "$JXL_EFFORT" --num_threads=1 2>&1 || [ ! -s "$out" ]; then
    echo "REFUSED $4"
    rm -f "$out"
  fi
}
# jxl_dec REL: djxl OUT_ROOT/REL.jxl to DEC_ROOT/REL.png (run by xargs).
jxl_dec() {
  local in=$1/$3.jxl out=$2/$3.png
  [ -f "$in" ] || return 0
  mkdir -p "$(dirname "$out")"
  djxl "$in" "$out" --num_threads=1 2>&1 || { echo "DJXL FAILED $3"; rm -f "$out"; }
}
export -f jxl_one jxl_dec
export JXL_EFFORT JXL_DISTANCE

# jxl_total LIST ROOT : prints "bytes refused" for the files of LIST (relative to the corpus):
# each image's ROOT/REL.jxl when it exists, else (refused, or not an image) its original size.
jxl_total() {
  local total=0 refused=0 f s
  while IFS= read -r -d '' f; do
    if [ -f "$2/$f.jxl" ]; then
      s=$(stat -c %s "$2/$f.jxl")
    else
      s=$(stat -c %s "$dir/$f")
      is_image "$f" && refused=$((refused + 1))
    fi
    total=$((total + s))
  done <"$1"
  echo "$total $refused"
}

# verify_json FILE : prints "min mean p10" from av1pack's JSON (n/a for missing fields).
verify_fields() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" <<'PY' 2>/dev/null || echo "n/a n/a n/a"
import json, sys
try:
    text = open(sys.argv[1]).read()
    start = text.find("{")
    data = json.loads(text[start:]) if start >= 0 else {}
except Exception:
    data = {}
def pick(key):
    if isinstance(data, dict):
        if isinstance(data.get(key), (int, float)):
            return data[key]
        for v in data.values():  # one level down, e.g. {"summary": {...}}
            if isinstance(v, dict) and isinstance(v.get(key), (int, float)):
                return v[key]
    return None
out = []
for k in ("min", "mean", "p10"):
    v = pick(k)
    out.append("n/a" if v is None else f"{v:.2f}")
print(" ".join(out))
PY
  else
    local k v out=()
    for k in min mean p10; do
      v=$(grep -o "\"$k\"[[:space:]]*:[[:space:]]*[-0-9.eE+]*" "$1" 2>/dev/null | head -n 1 | sed 's/.*:[[:space:]]*//')
      out+=("${v:-n/a}")
    done
    echo "${out[*]}"
  fi
}

# ---------------------------------------------------------------- the corpora
mapfile -t CORPUS_DIRS < <(find "$CORPORA" -mindepth 1 -maxdepth 1 -type d ! -name '.*' ! -name '*.tmp' | sort)
if [ -n "$ONLY" ]; then
  sel=()
  for d in "${CORPUS_DIRS[@]}"; do
    case ",$ONLY," in *",$(basename "$d"),"*) sel+=("$d") ;; esac
  done
  CORPUS_DIRS=("${sel[@]}")
fi
[ ${#CORPUS_DIRS[@]} -gt 0 ] || { echo "bench-pack: no corpora in $CORPORA" >&2; exit 1; }

TSV=$OUT_DIR/bench-pack.tsv
printf '%s\n' "corpus	images	files	originals	zip9	7zmx9	av1pack	pack_s	pack_rss_kb	ssim2_min	ssim2_mean	ssim2_p10	same_size	ffmpeg	ffmpeg_s	ffmpeg_rss_kb	seed	seed_s	seed_rss_kb	seed_images	jxl_lossless	jxl_lossless_s	jxl_lossless_refused	jxl_d1	jxl_d1_s	jxl_d1_refused	jxl_d1_djxl_s	jxl_d1_scored	jxl_d1_min	jxl_d1_mean	jxl_d1_p10	jxl_d1_alpha_max_diff" >"$TSV"

MAIN_ROWS=()
JXL_ROWS=()
CMP_ROWS=()
NOTES=()

for dir in "${CORPUS_DIRS[@]}"; do
  name=$(basename "$dir")
  W=$WORK/$name
  rm -rf "$W"
  mkdir -p "$W"
  log "== $name"

  # Files, images, sizes, dimensions.
  mapfile -t files < <(cd "$dir" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
  images=()
  for f in "${files[@]}"; do is_image "$f" && images+=("$f"); done
  n_files=${#files[@]}
  n_img=${#images[@]}
  orig=$(cd "$dir" && find . -type f -printf '%s\n' | awk '{s+=$1} END{print s+0}')
  same_size=no
  exts=""
  if [ "$n_img" -gt 0 ]; then
    printf '%s\n' "${images[@]/#/$dir/}" >"$W/images.lst"
    n_sizes=$(exiftool -q -q -T -ImageSize -@ "$W/images.lst" | sort -u | wc -l)
    [ "$n_sizes" -eq 1 ] && same_size=yes
    exts=$(for f in "${images[@]}"; do norm_ext "$f"; done | sort -u | tr '\n' ' ')
  fi

  # zip -9 and 7z -mx9 of the whole folder.
  zip_b=$NA sz_b=$NA
  if [ $RUN_BASELINES = 1 ]; then
    log "$name: zip -9"
    (cd "$dir" && zip -9 -r -q "$W/corpus.zip" .) >"$LOGS/$name.zip.log" 2>&1 && zip_b=$(fsize "$W/corpus.zip")
    log "$name: 7z -mx9"
    (cd "$dir" && 7z a -bd -mx9 "$W/corpus.7z" .) >"$LOGS/$name.7z.log" 2>&1 && sz_b=$(fsize "$W/corpus.7z")
  fi

  # JPEG XL, file by file (images only; see --no-jxl in the help).
  jl_b=$NA jl_s=$NA jl_ref=$NA jd_b=$NA jd_s=$NA jd_ref=$NA jd_ds=$NA jd_n=$NA jd_min=$NA jd_mean=$NA jd_p10=$NA jd_alpha=$NA
  if [ $RUN_JXL = 1 ]; then
    : >"$W/images.lst0"
    [ "$n_img" -gt 0 ] && printf '%s\0' "${images[@]}" >"$W/images.lst0"
    printf '%s\0' "${files[@]}" >"$W/files.lst0"
    if [ "$JXL_LOSSLESS" = 1 ]; then
      log "$name: cjxl lossless (-e $JXL_EFFORT; --lossless_jpeg=1 for JPEGs, -d 0 otherwise), $JXL_JOBS at once"
      timed "$LOGS/$name.jxl-lossless.log" xargs -0 -r -a "$W/images.lst0" -P "$JXL_JOBS" -n 1 \
        bash -c 'jxl_one lossless "$@"' _ "$dir" "$W/jxl-lossless"
      jl_s=$T_SEC
      read -r jl_b jl_ref < <(jxl_total "$W/files.lst0" "$W/jxl-lossless")
      [ "$jl_ref" -gt 0 ] && NOTES+=("$name: cjxl refused $jl_ref images for jxl-lossless (counted at their original size; see logs/$name.jxl-lossless.log)")
      rm -rf "$W/jxl-lossless"
    fi

    log "$name: cjxl -d $JXL_DISTANCE -e $JXL_EFFORT, djxl to PNG, score_dirs"
    timed "$LOGS/$name.jxl-d1.log" xargs -0 -r -a "$W/images.lst0" -P "$JXL_JOBS" -n 1 \
      bash -c 'jxl_one d1 "$@"' _ "$dir" "$W/jxl-d1"
    jd_s=$T_SEC
    read -r jd_b jd_ref < <(jxl_total "$W/files.lst0" "$W/jxl-d1")
    [ "$jd_ref" -gt 0 ] && NOTES+=("$name: cjxl refused $jd_ref images for jxl-d1 (counted at their original size, not scored; see logs/$name.jxl-d1.log)")
    timed "$LOGS/$name.jxl-d1-djxl.log" xargs -0 -r -a "$W/images.lst0" -P "$JXL_JOBS" -n 1 \
      bash -c 'jxl_dec "$@"' _ "$W/jxl-d1" "$W/jxl-d1-png"
    jd_ds=$T_SEC
    mkdir -p "$W/jxl-d1-png"
    "$SCORE_DIRS" --upright --jobs 2 "$dir" "$W/jxl-d1-png" >"$W/jxl-d1-scores.tsv" 2>"$LOGS/$name.jxl-d1-score.log" ||
      log "$name: score_dirs exited with $? (see $LOGS/$name.jxl-d1-score.log)"
    field() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$W/jxl-d1-scores.tsv"; }
    jd_n=$(field count) jd_min=$(field min) jd_mean=$(field mean) jd_p10=$(field p10)
    jd_n=${jd_n:-$NA} jd_min=${jd_min:-$NA} jd_mean=${jd_mean:-$NA} jd_p10=${jd_p10:-$NA}
    # Largest alpha difference over the images with alpha ("-" when none has alpha).
    jd_alpha=$(awk -F'\t' 'NF == 5 && $3 ~ /^[0-9]+$/ { n++; if ($3 > m) m = $3 } END { print n ? m + 0 : "-" }' "$W/jxl-d1-scores.tsv")
    rm -rf "$W/jxl-d1" "$W/jxl-d1-png"
  fi

  # av1pack pack + verify.
  av_b=$NA av_s=$NA av_kb=$NA q_min=$NA q_mean=$NA q_p10=$NA
  if [ $RUN_AV1PACK = 1 ]; then
    log "$name: av1pack pack ${PACK_ARGS[*]}"
    timed "$LOGS/$name.av1pack-pack.log" "$AV1PACK" pack --force "${PACK_ARGS[@]}" "$dir" "$W/av1pack.mkv"
    if [ "$T_RC" -eq 0 ]; then
      av_b=$(fsize "$W/av1pack.mkv") av_s=$T_SEC av_kb=$T_KB
      log "$name: av1pack verify --json"
      "$AV1PACK" verify --json "${VERIFY_EXTRA[@]}" "$W/av1pack.mkv" "$dir" >"$W/verify.json" 2>"$LOGS/$name.av1pack-verify.log" ||
        log "$name: verify exited with $? (see $LOGS/$name.av1pack-verify.log)"
      read -r q_min q_mean q_p10 < <(verify_fields "$W/verify.json")
      if [ $CHARTS = 1 ]; then
        log "$name: av1pack report --chart $OUT_DIR/report-$name.svg"
        "$AV1PACK" report --originals "$dir" --chart "$OUT_DIR/report-$name.svg" "$W/av1pack.mkv" \
          >"$OUT_DIR/report-$name.txt" 2>"$LOGS/$name.av1pack-report.log" ||
          log "$name: report exited with $? (see $LOGS/$name.av1pack-report.log)"
      fi
    else
      log "$name: av1pack pack failed ($T_RC), see $LOGS/$name.av1pack-pack.log"
      NOTES+=("$name: av1pack pack failed with status $T_RC")
    fi
  fi

  # The bare ffmpeg CLI, same-size corpora only: frames linked in the same (sorted) order.
  ff_b=$NA ff_s=$NA ff_kb=$NA
  if [ $RUN_FFMPEG = 1 ] && [ "$same_size" = yes ]; then
    ext=${exts%% *}
    if [ "$(echo "$exts" | wc -w)" -eq 1 ]; then
      mkdir -p "$W/frames"
      i=0
      for f in "${images[@]}"; do
        i=$((i + 1))
        ln -s "$dir/$f" "$W/frames/$(printf '%06d' "$i").$ext"
      done
      log "$name: ffmpeg libx264 -preset $FF_PRESET -crf $FF_CRF -g $FF_GOP -pix_fmt $FF_PIX"
      timed "$LOGS/$name.ffmpeg.log" ffmpeg -nostdin -hide_banner -loglevel error -y \
        -f image2 -framerate "$FF_RATE" -pattern_type glob -i "$W/frames/*.$ext" \
        -c:v libx264 -preset "$FF_PRESET" -crf "$FF_CRF" -pix_fmt "$FF_PIX" -g "$FF_GOP" \
        -threads "$FF_THREADS" "$W/ffmpeg.mkv"
      if [ "$T_RC" -eq 0 ]; then
        ff_b=$(fsize "$W/ffmpeg.mkv") ff_s=$T_SEC ff_kb=$T_KB
      else
        NOTES+=("$name: bare ffmpeg failed with status $T_RC")
      fi
      rm -rf "$W/frames"
    else
      NOTES+=("$name: bare ffmpeg skipped, mixed file types ($exts)")
    fi
  fi

  # The seed: python pack.py DIR, run in its own folder (it writes ./output.mkv). It reads only
  # the top-level files of DIR, so a nested corpus is given to it as a flat folder of symlinks
  # (named after the relative path, '/' -> '__', in the same sorted order) unless SEED_FLATTEN=0.
  sd_b=$NA sd_s=$NA sd_kb=$NA sd_n=$NA
  if [ $RUN_SEED = 1 ]; then
    sd_in=$dir
    sd_n=0
    for f in "${images[@]}"; do [ "${f#*/}" = "$f" ] && sd_n=$((sd_n + 1)); done
    if [ "$sd_n" -lt "$n_img" ] && [ "${SEED_FLATTEN:-1}" = 1 ]; then
      sd_in=$W/seed-input
      mkdir -p "$sd_in"
      for f in "${images[@]}"; do ln -s "$dir/$f" "$sd_in/${f//\//__}"; done
      sd_n=$n_img
      NOTES+=("$name: the seed reads only top-level files, so it was given a flattened view (symlinks) of the $n_img images")
    fi
    mkdir -p "$W/seed" "$W/seed-tmp"
    log "$name: seed pack.py ${SEED_EXTRA[*]} (sees $sd_n of $n_img images)"
    timed "$LOGS/$name.seed.log" env -C "$W/seed" TMPDIR="$W/seed-tmp" "$SEED_PY" "$SEED_DIR/pack.py" "${SEED_EXTRA[@]}" "$sd_in"
    if [ "$T_RC" -eq 0 ] && [ -f "$W/seed/output.mkv" ]; then
      sd_b=$(fsize "$W/seed/output.mkv") sd_s=$T_SEC sd_kb=$T_KB
    else
      NOTES+=("$name: the seed failed with status $T_RC (see logs/$name.seed.log)")
    fi
    rm -rf "$W/seed-tmp" "$W/seed-input"
    [ "$sd_n" -lt "$n_img" ] && NOTES+=("$name: the seed only reads top-level files: it packed $sd_n of $n_img images")
  fi

  printf '%s\t' "$name" "$n_img" "$n_files" "$orig" "$zip_b" "$sz_b" "$av_b" "$av_s" "$av_kb" \
    "$q_min" "$q_mean" "$q_p10" "$same_size" "$ff_b" "$ff_s" "$ff_kb" "$sd_b" "$sd_s" "$sd_kb" "$sd_n" \
    "$jl_b" "$jl_s" "$jl_ref" "$jd_b" "$jd_s" "$jd_ref" "$jd_ds" "$jd_n" "$jd_min" "$jd_mean" "$jd_p10" >>"$TSV"
  printf '%s\n' "$jd_alpha" >>"$TSV"

  row="| $name | $n_img | $(fmt_int "$orig") | $(fmt_int "$zip_b") | $(fmt_int "$sz_b") | $(fmt_int "$jl_b") | $(fmt_int "$jd_b") | $(fmt_int "$av_b") | $(pct "$av_b" "$orig") | $av_s | $(mib "$av_kb") | $q_min | $q_mean | $q_p10 |"
  MAIN_ROWS+=("$row")
  echo "$row"
  jrow="| $name | $(fmt_int "$orig") | $(fmt_int "$sz_b") | $(fmt_int "$jl_b") | $(pct "$jl_b" "$orig") | $(pct "$jl_b" "$sz_b") | $jl_s | $jl_ref | $(fmt_int "$jd_b") | $(pct "$jd_b" "$orig") | $jd_s | $jd_ds | $jd_ref | $jd_n | $jd_min | $jd_mean | $jd_p10 | $jd_alpha | $(fmt_int "$av_b") | $q_min | $q_mean |"
  JXL_ROWS+=("$jrow")
  cmp="| $name | $same_size | $(fmt_int "$av_b") | $av_s | $(fmt_int "$ff_b") | $ff_s | $(mib "$ff_kb")"
  [ $RUN_SEED = 1 ] && cmp+=" | $(fmt_int "$sd_b") | $sd_s | $(mib "$sd_kb") | $sd_n/$n_img"
  CMP_ROWS+=("$cmp |")
done

# ---------------------------------------------------------------- report
{
  echo "# av1pack pack benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
  echo "- corpora: \`$CORPORA\`"
  if [ $RUN_AV1PACK = 1 ]; then
    if [ ${#PACK_ARGS[@]} -gt 0 ]; then settings="\`pack ${PACK_ARGS[*]}\`"; else settings="\`pack\` with its defaults (AV1PACK_ARGS empty)"; fi
    echo "- av1pack: \`$AV1PACK\` ($("$AV1PACK" --version 2>/dev/null | head -n 1 || echo '?')), $settings"
  else
    echo "- av1pack: not run"
  fi
  echo "- ffmpeg: $(ffmpeg -hide_banner -version 2>/dev/null | head -n 1 | cut -d' ' -f1-3)"
  if [ $RUN_JXL = 1 ]; then
    echo "- JPEG XL: $(cjxl --version 2>/dev/null | head -n 1 | cut -d' ' -f1-2), effort $JXL_EFFORT (cjxl's default), $JXL_JOBS files at once, --num_threads=1 each"
  else
    echo "- JPEG XL: not run"
  fi
  echo
  echo "Sizes in bytes; time is wall-clock seconds, RSS is peak resident memory in MiB (GNU time)."
  echo "Quality is SSIMULACRA2 from \`av1pack verify --json\` (min, mean, 10th percentile over images)."
  echo "jxl lossless and jxl d$JXL_DISTANCE: every image file through cjxl on its own (see the next section)."
  echo
  echo "| corpus | images | originals | zip -9 | 7z -mx9 | jxl lossless | jxl d$JXL_DISTANCE | av1pack | av1pack/orig | pack s | pack RSS MiB | q min | q mean | q p10 |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${MAIN_ROWS[@]}"
  if [ $RUN_JXL = 1 ]; then
    echo
    echo "## JPEG XL, image by image"
    echo
    echo "lossless: \`cjxl -e $JXL_EFFORT --lossless_jpeg=1\` for .jpg/.jpeg (bit-exact JPEG recompression),"
    echo "\`cjxl -e $JXL_EFFORT -d 0\` for other images. d$JXL_DISTANCE: \`cjxl -e $JXL_EFFORT -d $JXL_DISTANCE\` (\`--lossless_jpeg=0\` for JPEGs:"
    echo "their pixels are coded), decoded with \`djxl\` to PNG and scored against the originals by"
    echo "\`score_dirs --upright\` (examples/score_dirs.rs: the SSIMULACRA2 of \`av1pack verify\`; images"
    echo "with alpha over black and over white, the worse; both turned upright by their EXIF"
    echo "orientation, as djxl applies it). Files that are not images, and images cjxl refuses"
    echo "(\"refused\"), count at their original size; refused images are not scored. Times: cjxl"
    echo "(and djxl) wall seconds for the whole corpus, $JXL_JOBS files at once. alpha max diff: the"
    echo "largest difference of a decoded alpha plane from the original's (- when no image has alpha)."
    echo
    echo "| corpus | originals | 7z -mx9 | jxl lossless | /orig | /7z | s | refused | jxl d$JXL_DISTANCE | /orig | cjxl s | djxl s | refused | scored | q min | q mean | q p10 | alpha max diff | av1pack | av1pack q min | av1pack q mean |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${JXL_ROWS[@]}"
  fi
  echo
  echo "## Against the bare ffmpeg CLI$([ $RUN_SEED = 1 ] && echo ' and the seed')"
  echo
  echo "ffmpeg: \`ffmpeg -f image2 -framerate $FF_RATE -pattern_type glob -i 'DIR/*.EXT' -c:v libx264"
  echo "-preset $FF_PRESET -crf $FF_CRF -pix_fmt $FF_PIX -g $FF_GOP -threads $FF_THREADS out.mkv\`, only for corpora"
  echo "whose images all have the same dimensions and file type (n/a otherwise); it keeps no alpha,"
  echo "no metadata and no original bytes, so it is a lower bound on what the frames alone cost."
  if [ $RUN_SEED = 1 ]; then
    echo
    echo "seed: undefinedDarkness/av1pack \`pack.py\` at $(cat "$SEED_DIR/COMMIT" 2>/dev/null || echo '?'),"
    echo "run as \`python pack.py ${SEED_EXTRA[*]:+${SEED_EXTRA[*]} }DIR\` (its defaults: libx264 -preset slow -crf 17 -tune stillimage,"
    echo "frames padded to the largest image, top-level files only; its quality is not measured)."
  fi
  echo
  if [ $RUN_SEED = 1 ]; then
    echo "| corpus | same size | av1pack | av1pack s | ffmpeg | ffmpeg s | ffmpeg RSS MiB | seed | seed s | seed RSS MiB | seed images |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  else
    echo "| corpus | same size | av1pack | av1pack s | ffmpeg | ffmpeg s | ffmpeg RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|"
  fi
  printf '%s\n' "${CMP_ROWS[@]}"
  if [ ${#NOTES[@]} -gt 0 ]; then
    echo
    echo "Notes:"
    printf -- '- %s\n' "${NOTES[@]}"
  fi
} >"$OUT_DIR/bench-pack.md"

echo
cat "$OUT_DIR/bench-pack.md"
log "report: $OUT_DIR/bench-pack.md, raw data: $TSV"
