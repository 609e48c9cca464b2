#!/usr/bin/env bash
# The project's one test command: starts a throwaway PostgreSQL cluster (from the Debian
# postgresql-15 binaries), runs every test of the workspace against it and SQLite, and
# removes the cluster again, after checking formatting (rustfmt) and lints (clippy, warnings
# are errors). Extra arguments go to `cargo test` (e.g. a test name filter).
#
# Needs: the Rust toolchain and the postgresql-15 server package (fails loudly, saying what
# to install, when the binaries are missing). Set CARGO_TARGET_DIR to reuse a build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(bash scripts/pg-throwaway.sh start)"
trap 'bash scripts/pg-throwaway.sh stop "$PG_THROWAWAY_DIR" >/dev/null 2>&1 || true' EXIT

export RUST_BACKTRACE=1
# Style and lints first: they are part of the suite, and they fail fast.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --tests --locked
cargo test --workspace --locked "$@"
