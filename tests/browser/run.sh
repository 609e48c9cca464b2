#!/usr/bin/env bash
# End-to-end check of the chat page in a real headless Chromium:
#   builds chatctl, starts `chatctl dev` on free ports with a throwaway data dir, opens the demo
#   user's URL in Debian's chromium (driven by playwright-core, see check.mjs), and stops chatctl
#   again whatever happens.
#
#   tests/browser/run.sh              # screenshots: /tmp/browser-check-*.png
#
# Needs: the Rust toolchain, Node.js + npm, and Debian's chromium
#   (apt-get update && apt-get install -y chromium). Playwright's own browser download is not
#   used. Env: CHROMIUM (default /usr/bin/chromium), SHOT_DIR (default /tmp), SKIP_STOP=1,
#   SKIP_BUILD=1 (reuse target/debug/chatctl), KEEP_DATA=1 (keep the data dir for inspection).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMIUM SHOT_DIR="${SHOT_DIR:-/tmp}"
die() { echo "run.sh: $*" >&2; exit 1; }

[ -x "$CHROMIUM" ] || die "no chromium at $CHROMIUM; install it: apt-get update && apt-get install -y chromium"
command -v node >/dev/null || die "node is not installed"

if [ ! -d "$HERE/node_modules/playwright-core" ]; then
  echo "== npm ci (playwright-core)"
  (cd "$HERE" && npm ci --no-audit --no-fund) || die "npm ci failed in $HERE"
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "== cargo build -p chatctl"
  cargo build -p chatctl || die "cargo build -p chatctl failed"
fi
CHATCTL="${CARGO_TARGET_DIR:-$ROOT/target}/debug/chatctl"
[ -x "$CHATCTL" ] || die "no $CHATCTL"

DATA_DIR="$(mktemp -d /tmp/browsercheck-data.XXXXXX)"
LOG="$DATA_DIR.log"
CHATCTL_PID=""
cleanup() {
  local rc=$?
  if [ -n "$CHATCTL_PID" ] && kill -0 "$CHATCTL_PID" 2>/dev/null; then
    kill -TERM "$CHATCTL_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$CHATCTL_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$CHATCTL_PID" 2>/dev/null; then
      echo "run.sh: chatctl did not stop on SIGTERM within 5 s; killing it" >&2
      kill -KILL "$CHATCTL_PID" 2>/dev/null || true
    fi
    wait "$CHATCTL_PID" 2>/dev/null || true
  fi
  if [ "${KEEP_DATA:-0}" = 1 ]; then echo "data dir kept: $DATA_DIR (log $LOG)"; else rm -rf "$DATA_DIR"; fi
  if [ $rc -ne 0 ]; then echo "chatctl log: $LOG"; elif [ "${KEEP_DATA:-0}" != 1 ]; then rm -f "$LOG"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Port 0: the OS picks free ports; chatctl prints the addresses it actually bound.
echo "== chatctl dev (data dir $DATA_DIR, log $LOG)"
"$CHATCTL" dev --port 0 --grpc-port 0 --data-dir "$DATA_DIR" >"$LOG" 2>&1 &
CHATCTL_PID=$!

URL=""
for _ in $(seq 1 300); do
  URL="$(sed -n 's/^ *open: *\(http[^ ]*\).*$/\1/p' "$LOG" | head -n1)"
  [ -n "$URL" ] && break
  kill -0 "$CHATCTL_PID" 2>/dev/null || { cat "$LOG" >&2; die "chatctl dev exited before printing its URL"; }
  sleep 0.1
done
[ -n "$URL" ] || { cat "$LOG" >&2; die "chatctl dev printed no 'open:' URL within 30 s"; }
BASE="${URL%%\?*}"
echo "   edge at $BASE"
for _ in $(seq 1 50); do
  curl -fsS "${BASE%/}/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== browser check"
node "$HERE/check.mjs" "$URL"
