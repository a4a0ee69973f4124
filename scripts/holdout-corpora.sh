#!/usr/bin/env bash
# Builds three hold-out albums that none of av1pack's tuning has seen, from Debian packages,
# to check that the issue 4 targets hold beyond ../shared's corpora:
#   gimp-screenshots  GIMP manual screenshots: images/menus and images/dialogs of gimp-help-en
#                     (508 files, 11 MB: RGB, palette, RGBA and 16-bit PNGs, a few JPEGs)
#   gnucash-pages     pages 101-140 of the GnuCash help manual at 150 dpi (40 grey PNGs)
#   megamind-burst    the first 40 frames of opencv-doc's Megamind.avi as JPEG (-q:v 2)
# Usage: scripts/holdout-corpora.sh OUT_DIR   (needs apt-get, dpkg, ffmpeg, pdftoppm; root)
# Then: scripts/bench-pack.sh --no-ffmpeg --no-jxl OUT_DIR target/bench-holdout
set -euo pipefail
out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work="$out/.work"
mkdir -p "$work/debs" "$work/x"
fetch() {
  local p=$1
  (cd "$work/debs" && { ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get download "$p" >/dev/null; }; })
  [ -d "$work/x/$p" ] || { mkdir -p "$work/x/$p" && dpkg -x "$work/debs/${p}"_*.deb "$work/x/$p"; }
}

if [ ! -d "$out/gimp-screenshots" ]; then
  fetch gimp-help-en
  images="$work/x/gimp-help-en/usr/share/gimp/2.0/help/en/images"
  mkdir -p "$out/gimp-screenshots.tmp"
  cp -r "$images/menus" "$images/dialogs" "$out/gimp-screenshots.tmp/"
  mv "$out/gimp-screenshots.tmp" "$out/gimp-screenshots"
fi

if [ ! -d "$out/gnucash-pages" ]; then
  fetch gnucash-docs
  zcat "$work/x/gnucash-docs/usr/share/doc/gnucash-docs/gnucash-help-en.pdf.gz" >"$work/help.pdf"
  mkdir -p "$out/gnucash-pages.tmp"
  pdftoppm -r 150 -f 101 -l 140 -png "$work/help.pdf" "$out/gnucash-pages.tmp/page"
  mv "$out/gnucash-pages.tmp" "$out/gnucash-pages"
fi

if [ ! -d "$out/megamind-burst" ]; then
  fetch opencv-doc
  mkdir -p "$out/megamind-burst.tmp"
  ffmpeg -v error -i "$work/x/opencv-doc/usr/share/doc/opencv-doc/examples/data/Megamind.avi" \
    -frames:v 40 -fps_mode passthrough -q:v 2 "$out/megamind-burst.tmp/frame_%03d.jpg"
  mv "$out/megamind-burst.tmp" "$out/megamind-burst"
fi
du -sb "$out"/gimp-screenshots "$out"/gnucash-pages "$out"/megamind-burst
