#!/usr/bin/env bash
# The benchmark suite, by hand: builds the release binaries (chatctl, chat-bench), installs
# the Node relay's one package (ws, from bench/node/package-lock.json), raises the open-file
# limit for the idle-socket and fan-out scenarios, and runs `chat-bench run`, printing the
# markdown report (also written to --out). Timing never makes it fail; a process that cannot
# start does.
#
#   bench/run.sh                 # the full suite (about 10 minutes on two cores, after the build)
#   bench/run.sh --pg            # also ours on PostgreSQL: a throwaway server (scripts/pg-throwaway.sh), stopped at the end
#   bench/run.sh --quick         # a short run: 100 and 300 streams, 2 rounds, 5 s of turns, a 200-member room, 2,000 idle sockets
#   bench/run.sh --out run.md -- --idle 5000,10000,50000   # anything after -- goes to chat-bench run
#
# Set CARGO_TARGET_DIR to build elsewhere (default: target/ of the repository).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
out=""
pg=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--streams 100,300 --rounds 2 --turn-secs 5 --fanout 200 --fanout-replies 2 --growth 10000 --idle 2000); shift ;;
    --pg) pg=1; shift ;;
    --out) out=$2; shift 2 ;;
    --) shift; args+=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Every idle socket is a descriptor in the driver and one in the server.
want=250000
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  ulimit -Hn "$want" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)" >&2

cargo build --release -p chatctl -p chat-bench >&2

if [ ! -d bench/node/node_modules/ws ] || [ bench/node/package-lock.json -nt bench/node/node_modules ]; then
  (cd bench/node && npm ci --no-audit --no-fund >&2)
fi

if [ -n "$pg" ]; then
  # A throwaway cluster (durability off: fsync and synchronous_commit) and a fresh database.
  eval "$(bash scripts/pg-throwaway.sh start)"
  trap 'bash scripts/pg-throwaway.sh stop "$PG_THROWAWAY_DIR"' EXIT
  psql -q "$TEST_DATABASE_URL" -c "CREATE DATABASE chat_bench" >&2
  args=(--database-url "${TEST_DATABASE_URL%/*}/chat_bench" "${args[@]}")
fi

echo "uptime before: $(uptime)" >&2
if [ -n "$out" ]; then
  "$target/release/chat-bench" run --chatctl "$target/release/chatctl" ${args[@]+"${args[@]}"} | tee "$out"
else
  "$target/release/chat-bench" run --chatctl "$target/release/chatctl" ${args[@]+"${args[@]}"}
fi
echo "uptime after: $(uptime)" >&2
