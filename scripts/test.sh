#!/usr/bin/env bash
# The project's one test command: starts a throwaway PostgreSQL cluster (from the Debian
# postgresql-15 binaries), runs every test of the workspace against it and SQLite, and
# removes the cluster again, after checking formatting (rustfmt) and lints (clippy, warnings
# are errors); then scans every log the tests captured for the tokens and message texts they
# used (tests/src/bin/scan-logs.rs). Extra arguments go to `cargo test` (e.g. a test name
# filter).
#
# Needs: the Rust toolchain and the postgresql-15 server package (fails loudly, saying what
# to install, when the binaries are missing). Set CARGO_TARGET_DIR to reuse a build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

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
# Style and lints first: they are part of the suite, and they fail fast.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --tests --locked
cargo test --workspace --locked "$@"
# No token or message text in any log of the run (a filtered run may have started no stack).
cargo run --quiet --locked -p chat-tests --bin scan-logs -- "$TEST_LOG_DIR" ${1:+--partial}
