#!/usr/bin/env bash
# Installs the system packages Braid's build and tests need. Idempotent: installs only what is
# missing, so every entry point can call it on every run.
set -euo pipefail

# command that must exist -> Debian package that provides it
# (librdkafka, built from source by rdkafka-sys, needs a C toolchain and make; so does mimalloc)
declare -A NEEDED=(
  [cc]=gcc
  [make]=make
)

missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not installed; install Rust from https://rustup.rs first" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
