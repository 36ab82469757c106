#!/usr/bin/env bash
# Installs the system packages Braid's build and tests need. Idempotent: installs only what is
# missing, so every entry point can call it on every run.
#
#   scripts/install-deps.sh           what building and running Braid needs
#   scripts/install-deps.sh --tests   also what the tests run: the tansu broker, Prometheus
#                                     (server and promtool), headless Chromium, and the Python
#                                     validators of deploy/ (docker-compose, kubernetes-validate)
#                                     in virtualenvs under $BRAID_TOOLS_DIR
set -euo pipefail

WITH_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests|--tansu) WITH_TESTS=1 ;;
    *) echo "install-deps: unknown argument $arg (known: --tests)" >&2; exit 2 ;;
  esac
done

# Where the tests' Python tools live; the tests look there too.
BRAID_TOOLS_DIR="${BRAID_TOOLS_DIR:-$HOME/.cache/braid-tools}"

# command that must exist -> Debian package that provides it
# (librdkafka, built from source by rdkafka-sys, needs a C toolchain and make; so does mimalloc)
declare -A NEEDED=(
  [cc]=gcc
  [make]=make
)
if [ "$WITH_TESTS" = 1 ]; then
  NEEDED+=(
    [prometheus]=prometheus   # the server the observability test scrapes Braid with
    [promtool]=prometheus     # checks and unit-tests deploy/prometheus
    [chromium]=chromium       # loads the dashboard page in the page test
    [python3]=python3
  )
fi

missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
# Virtualenvs need Debian's venv module (other Pythons ship it).
if [ "$WITH_TESTS" = 1 ] && command -v python3 >/dev/null 2>&1 \
  && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not installed; install Rust from https://rustup.rs first" >&2
  exit 1
fi

# The test command checks formatting and lints.
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

if [ ${#missing[@]} -gt 0 ]; then
  # Each package once (prometheus provides two commands).
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "$WITH_TESTS" = 1 ] || exit 0

# Each Python tool in its own virtualenv, remade only when its pins change (`.pins` records them).
venv_fresh() { [ -f "$1/.pins" ] && [ "$(cat "$1/.pins")" = "$2" ]; }
new_venv() { echo "install-deps: installing $2 into $1" >&2; rm -rf "$1"; python3 -m venv "$1"; }
pip_in() { "$1/bin/pip" install --quiet --disable-pip-version-check "${@:2}"; }
mkdir -p "$BRAID_TOOLS_DIR"

# docker-compose 1.29.2 validates compose files without a Docker engine. It needs PyYAML 5,
# whose source build needs Cython < 3: built first, without build isolation.
venv="$BRAID_TOOLS_DIR/compose"
pins="docker-compose==1.29.2 PyYAML==5.4.1 Cython==0.29.37"
if ! venv_fresh "$venv" "$pins"; then
  new_venv "$venv" "$pins"
  pip_in "$venv" Cython==0.29.37 wheel setuptools
  pip_in "$venv" --no-build-isolation PyYAML==5.4.1
  pip_in "$venv" docker-compose==1.29.2
  echo "$pins" > "$venv/.pins"
fi
# kubernetes-validate checks manifests offline against the Kubernetes schemas it ships.
venv="$BRAID_TOOLS_DIR/kubernetes-validate"
pins="kubernetes-validate==1.33.1"
if ! venv_fresh "$venv" "$pins"; then
  new_venv "$venv" "$pins"
  pip_in "$venv" $pins
  echo "$pins" > "$venv/.pins"
fi

# The Kafka-compatible broker that one end-to-end test runs as a separate process. Building it
# takes about 12 minutes on two cores, so it is built only when missing.
TANSU_VERSION=0.6.0
if ! { command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; }; then
  echo "install-deps: building tansu $TANSU_VERSION (once; about 12 minutes)" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --quiet
fi
