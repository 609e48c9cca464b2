#!/usr/bin/env bash
# The project's one test command: starts a throwaway PostgreSQL cluster (from the Debian
# postgresql-15 binaries), runs every test of the workspace against it and SQLite, and
# removes the cluster again, after checking formatting (rustfmt) and lints (clippy, warnings
# are errors); then scans every log the tests captured for the tokens and message texts they
# used (tests/src/bin/scan-logs.rs). Extra arguments go to `cargo test` (e.g. a test name
# filter).
#
# Needs: the Rust toolchain, the postgresql-15 server package, python3 with venv and pip (for
# the test peers from PyPI), Node.js with npm (for socket.io-client and playwright-core), and
# Debian's chromium for the browser tests and redis-server for the cluster test (installed with
# apt-get when missing and run as root);
# fails loudly, saying what to install, when one is missing.
# Set CARGO_TARGET_DIR to reuse a build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test peers from PyPI, in a virtual environment under the cache folder, reused when present:
# aiosmtpd (a real SMTP server for the notification tests), llmock (a third party's mock of
# the OpenAI and Anthropic APIs with scripted faults, tests/tests/llmock.rs) and moto (an
# S3-compatible server, for the S3 file store in tests/tests/files.rs), and kubernetes-validate
# (the Kubernetes JSON schemas, for deploy/validate.py below). The tests run them
# as named in TEST_PYTHON, TEST_LLMOCK and TEST_MOTO (not CHAT_*: the core reads every CHAT_ variable as a
# setting) and fail when they are missing.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/chat-backend/venv"
if ! "$venv/bin/python" -c 'import aiosmtpd, llmock, moto.server, kubernetes_validate' >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "scripts/test.sh: python3 is needed for the test peers (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  if ! python3 -m venv "$venv" >&2; then
    echo "scripts/test.sh: cannot create a virtual environment in $venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6' 'llmock==0.2.2' 'moto[server]==5.1.22' 'kubernetes-validate==1.37.0' >&2; then
    echo "scripts/test.sh: cannot install aiosmtpd, llmock, moto and kubernetes-validate from PyPI into $venv (pip needs the package index)" >&2
    exit 1
  fi
fi
export TEST_PYTHON="$venv/bin/python"
export TEST_LLMOCK="$venv/bin/llmock"
export TEST_MOTO="$venv/bin/moto_server"

# The Kubernetes manifests under deploy/kubernetes, first because it takes seconds: every
# object against the schemas kubernetes-validate ships (offline, strict, two Kubernetes
# versions), each kustomization.yaml listing every manifest, references between objects, and
# the ConfigMap's settings files; --self-test then breaks copies and checks each is refused.
"$venv/bin/python" deploy/validate.py --quiet --self-test

# The real socket.io-client from npm, for seed 003's client (tests/tests/socketio.rs), into
# tests/socketio/node_modules from its lock file; reused while the lock file is unchanged.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "scripts/test.sh: Node.js 20 and npm are needed for the Socket.IO tests" >&2
  exit 1
fi
if ! cmp -s tests/socketio/package-lock.json tests/socketio/node_modules/.installed-from-lock; then
  if ! (cd tests/socketio && npm ci --no-audit --no-fund --loglevel=error >&2); then
    echo "scripts/test.sh: cannot install socket.io-client from npm into tests/socketio (npm needs the registry)" >&2
    exit 1
  fi
  cp tests/socketio/package-lock.json tests/socketio/node_modules/.installed-from-lock
fi

# Debian's redis-server for the cluster tests (tests/tests/cluster.rs: two cores sharing room
# events through Redis; tests/tests/cluster_limits.rs and the unit tests of
# core-service/src/cluster/limits.rs: limits shared through it), installed with apt-get when
# missing and run by the tests themselves.
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || true)}"
if [ -z "$REDIS_SERVER" ] || ! command -v redis-cli >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's redis-server for the cluster test" >&2
    if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2; }; then
      echo "scripts/test.sh: cannot install redis-server with apt-get (it needs the Debian package index)" >&2
      exit 1
    fi
    REDIS_SERVER="$(command -v redis-server)"
  else
    echo "scripts/test.sh: redis-server and redis-cli are needed for the cluster test (Debian: apt-get install redis-server)" >&2
    exit 1
  fi
fi
export TEST_REDIS_SERVER="$REDIS_SERVER"

# Debian's chromium for the browser tests (tests/tests/browser.rs, tests/browser/run.sh), driven
# by playwright-core from npm (its own browser download is never used).
CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's chromium for the browser tests" >&2
    if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; }; then
      echo "scripts/test.sh: cannot install chromium with apt-get (it needs the Debian package index)" >&2
      exit 1
    fi
    CHROMIUM="$(command -v chromium)"
  else
    echo "scripts/test.sh: chromium is needed for the browser tests (Debian: apt-get install chromium)" >&2
    exit 1
  fi
fi
export CHROMIUM TEST_CHROMIUM="$CHROMIUM"
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-from-lock; then
  if ! (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >&2); then
    echo "scripts/test.sh: cannot install playwright-core from npm into tests/browser (npm needs the registry)" >&2
    exit 1
  fi
  cp tests/browser/package-lock.json tests/browser/node_modules/.installed-from-lock
fi
# The browser tests' screenshots of each page at desktop and phone width, kept after the run.
export TEST_SHOT_DIR="$PWD/browser-shots" SHOT_DIR="$PWD/browser-shots"
mkdir -p "$TEST_SHOT_DIR"

eval "$(bash scripts/pg-throwaway.sh start)"
# Every end-to-end test process copies its servers' logs (at their most verbose level) and the
# tokens and message texts it used into this folder; the last step scans the one for the other.
# Kept when the run fails, removed when it passes. (Not a CHAT_* name: the core refuses unknown
# CHAT_* variables.)
TEST_LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/chat-test-logs.XXXXXX")"
export TEST_LOG_DIR
cleanup() {
    local status=$?
    bash scripts/pg-throwaway.sh stop "$PG_THROWAWAY_DIR" >/dev/null 2>&1 || true
    if [ "$status" -eq 0 ]; then
        rm -rf "$TEST_LOG_DIR"
    else
        echo "test logs kept in $TEST_LOG_DIR" >&2
    fi
}
trap cleanup EXIT

export RUST_BACKTRACE=1
# No incremental compilation: the suite builds each crate once, and incremental state of a
# reused target directory grows by gigabytes per run (it filled the disk once).
export CARGO_INCREMENTAL=0
# Style and lints first: they are part of the suite, and they fail fast.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --tests --locked
# The binaries the tests run as processes (chatctl), built exactly as tests/src/lib.rs
# builds them, so that build finds them up to date.
cargo build --workspace --bins --locked
if [ "$#" -eq 0 ]; then
    cargo test --workspace --locked -- --skip history_checker_on
    # The history checker (tests/tests/history.rs, about 35 s) prints its counts of lost,
    # duplicated, reordered and phantom events: run on its own, its output shown.
    cargo test --locked -p chat-tests --test history -- --nocapture
    # The chat page against a whole `chatctl dev` (the binary built above): send, streaming,
    # stop, reload, reconnect and resume, dark scheme, phone width.
    SKIP_BUILD=1 bash tests/browser/run.sh
    echo "screenshots: $TEST_SHOT_DIR"
else
    cargo test --workspace --locked "$@"
fi
# No token or message text in any log of the run (a filtered run may have started no stack).
cargo run --quiet --locked -p chat-tests --bin scan-logs -- "$TEST_LOG_DIR" ${1:+--partial}
