#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that av1pack needs to build, test and run.
#
#   scripts/install-deps.sh [EXTRA_PACKAGE...]
#
# Idempotent and non-interactive: when every package is already installed it returns at once,
# without touching apt. Otherwise it runs `apt-get update` once and installs what is missing.
# Runs apt as root, or through sudo when not root.
set -euo pipefail

PACKAGES=(
  pkg-config
  clang
  libclang-dev
  libavcodec-dev
  libavformat-dev
  libavutil-dev
  libswscale-dev
  libswresample-dev
  libavfilter-dev
  libavdevice-dev
  ffmpeg
  fuse3
  libimage-exiftool-perl
  mpv
  zip
  p7zip-full
  fonts-dejavu-core
  libglib2.0-bin
  libgdk-pixbuf2.0-bin
  # build the libjpeg-turbo bundled with the turbojpeg crate (the renderer's JPEG encoder)
  cmake
  nasm
  # qemu-x86_64: the test that runs av1pack as on a CPU older than x86-64-v3
  qemu-user
  # cjxl/djxl (0.7 on Debian 12): only for the JPEG XL columns of scripts/bench-pack.sh;
  # av1pack itself and its tests do not use them.
  libjxl-tools
)
PACKAGES+=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: apt-get not found; please install these packages by hand: ${missing[*]}" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-deps: not root and no sudo; cannot install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
echo "install-deps: done"
