#!/usr/bin/env bash
# The project's one test command: starts a throwaway PostgreSQL cluster (from the Debian
# postgresql-15 binaries), runs every test of the workspace against it and SQLite, and
# removes the cluster again, after checking formatting (rustfmt) and lints (clippy, warnings
# are errors). Extra arguments go to `cargo test` (e.g. a test name filter).
#
# Needs: the Rust toolchain, the postgresql-15 server package, and python3 with venv and pip
# (for the test peers from PyPI); fails loudly, saying what to install, when one is missing.
# Set CARGO_TARGET_DIR to reuse a build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test peers from PyPI, in a virtual environment under the cache folder, reused when present:
# aiosmtpd (a real SMTP server for the notification tests). The tests run it with the python
# named in TEST_PYTHON (not CHAT_*: the core reads every CHAT_ variable as a setting) and fail
# when it is missing.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/chat-backend/venv"
if ! "$venv/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "scripts/test.sh: python3 is needed for the test peers (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  if ! python3 -m venv "$venv" >&2; then
    echo "scripts/test.sh: cannot create a virtual environment in $venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6' >&2; then
    echo "scripts/test.sh: cannot install aiosmtpd from PyPI into $venv (pip needs the package index)" >&2
    exit 1
  fi
fi
export TEST_PYTHON="$venv/bin/python"

eval "$(bash scripts/pg-throwaway.sh start)"
trap 'bash scripts/pg-throwaway.sh stop "$PG_THROWAWAY_DIR" >/dev/null 2>&1 || true' EXIT

export RUST_BACKTRACE=1
# Style and lints first: they are part of the suite, and they fail fast.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --tests --locked
cargo test --workspace --locked "$@"
