#!/usr/bin/env bash
# Installs the system packages Braid's build and tests need. Idempotent: installs only what is
# missing, so every entry point can call it on every run.
#
#   scripts/install-deps.sh           what building and running Braid needs
#   scripts/install-deps.sh --tests   also what the tests run: the tansu broker, Prometheus
#                                     (server and promtool), headless Chromium, and the Python
#                                     validators of deploy/ (docker-compose, kubernetes-validate)
#                                     and moto's S3 server in virtualenvs under $BRAID_TOOLS_DIR
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
  [curl]=curl   # fetches the DuckDB library below
)
if [ "$WITH_TESTS" = 1 ]; then
  NEEDED+=(
    [prometheus]=prometheus   # the server the observability test scrapes Braid with
    [promtool]=prometheus     # checks and unit-tests deploy/prometheus
    [chromium]=chromium       # loads the dashboard page in the page test
    [python3]=python3
    [logger]=bsdutils         # util-linux's logger writes the syslog lines a format test reads
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

# DuckDB's official shared library (the SQL endpoint links it; building DuckDB from C++ would
# take half an hour on two cores). The npm package @duckdb/node-bindings-linux-x64 ships the
# release build of libduckdb.so with the parquet and json extensions linked in; its sha256 is
# pinned. It goes to $DUCKDB_PREFIX/lib with an ld.so.conf.d entry, so the binary, the tests and
# their child processes find it. `.cargo/config.toml` points DUCKDB_LIB_DIR at the same place.
DUCKDB_VERSION=1.5.6
DUCKDB_PREFIX=/opt/braid/duckdb-$DUCKDB_VERSION
DUCKDB_TARBALL=https://registry.npmjs.org/@duckdb/node-bindings-linux-x64/-/node-bindings-linux-x64-$DUCKDB_VERSION-r.1.tgz
DUCKDB_TARBALL_SHA256=1b9f82478539bb9a1d1df44bd103121a12ae52142c07158dc52b97d2ec1d69ff
DUCKDB_LIB_SHA256=3f4962cdd266eab2b479a5b5a4a6d063d279b2954ae814ed00385d553b747633
duckdb_installed() {
  [ -f "$DUCKDB_PREFIX/lib/libduckdb.so" ] \
    && echo "$DUCKDB_LIB_SHA256  $DUCKDB_PREFIX/lib/libduckdb.so" | sha256sum --quiet -c - 2>/dev/null \
    && [ -f /etc/ld.so.conf.d/braid-duckdb.conf ] \
    && grep -qx "$DUCKDB_PREFIX/lib" /etc/ld.so.conf.d/braid-duckdb.conf
}
if ! duckdb_installed; then
  if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    echo "install-deps: no pinned DuckDB $DUCKDB_VERSION library for $(uname -s)-$(uname -m); put libduckdb.so $DUCKDB_VERSION in a directory and set DUCKDB_LIB_DIR to it (see the README)" >&2
    exit 1
  fi
  echo "install-deps: installing libduckdb $DUCKDB_VERSION into $DUCKDB_PREFIX" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL --retry 3 -o "$tmp/duckdb.tgz" "$DUCKDB_TARBALL"
  echo "$DUCKDB_TARBALL_SHA256  $tmp/duckdb.tgz" | sha256sum --quiet -c - \
    || { echo "install-deps: the DuckDB download does not match its pinned sha256" >&2; exit 1; }
  tar -xzf "$tmp/duckdb.tgz" -C "$tmp" package/libduckdb.so package/LICENSE
  $sudo install -d "$DUCKDB_PREFIX/lib"
  $sudo install -m 0644 "$tmp/package/libduckdb.so" "$DUCKDB_PREFIX/lib/libduckdb.so"
  $sudo install -m 0644 "$tmp/package/LICENSE" "$DUCKDB_PREFIX/LICENSE"
  echo "$DUCKDB_PREFIX/lib" | $sudo tee /etc/ld.so.conf.d/braid-duckdb.conf >/dev/null
  $sudo ldconfig
  rm -rf "$tmp"
  trap - EXIT
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
# moto's S3 server: the object storage the storage tests write to.
venv="$BRAID_TOOLS_DIR/moto"
pins="moto[server]==5.2.1"
if ! venv_fresh "$venv" "$pins"; then
  new_venv "$venv" "$pins"
  pip_in "$venv" "$pins"
  echo "$pins" > "$venv/.pins"
fi

# The Confluent Python client and its serializers: the Avro and Protobuf producers the format
# tests read messages from, registering their schemas the way real producers do.
venv="$BRAID_TOOLS_DIR/confluent"
pins="confluent-kafka[avro,protobuf,schemaregistry]==2.12.1"
if ! venv_fresh "$venv" "$pins"; then
  new_venv "$venv" "$pins"
  pip_in "$venv" "$pins"
  echo "$pins" > "$venv/.pins"
fi

# The Kafka-compatible broker that one end-to-end test runs as a separate process. Building it
# takes about 12 minutes on two cores, so it is built only when missing.
TANSU_VERSION=0.6.0
if ! { command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; }; then
  echo "install-deps: building tansu $TANSU_VERSION (once; about 12 minutes)" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --quiet
fi
