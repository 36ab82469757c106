#!/usr/bin/env bash
# Installs the system packages Braid's build and tests need. Idempotent: installs only what is
# missing, so every entry point can call it on every run.
set -euo pipefail

WITH_TANSU=0
for arg in "$@"; do
  case "$arg" in
    --tansu) WITH_TANSU=1 ;;
    *) echo "install-deps: unknown argument $arg (known: --tansu)" >&2; exit 2 ;;
  esac
done

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

# The test command checks formatting and lints.
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# With --tansu (the test command passes it): also the Kafka-compatible broker that one end-to-end
# test runs as a separate process. Building it takes about 12 minutes on two cores, so it is built
# only when missing, and `scripts/braid` (which needs no broker of its own) does not ask for it.
TANSU_VERSION=0.6.0
install_tansu() {
  [ "$WITH_TANSU" = 1 ] || return 0
  if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  echo "install-deps: building tansu $TANSU_VERSION (once; about 12 minutes)" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --quiet
}

if [ ${#missing[@]} -eq 0 ]; then
  install_tansu
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
install_tansu
