#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests: no docker, no systemd, nothing installed.
#
#   eval "$(scripts/pg-throwaway.sh start)"   # sets TEST_DATABASE_URL and PG_THROWAWAY_DIR
#   cargo test ...
#   scripts/pg-throwaway.sh stop "$PG_THROWAWAY_DIR"
#   scripts/pg-throwaway.sh pause DIR / resume DIR   # stop the server, start it again (outage tests)
#
# `start` creates a temp dir holding the cluster, its log and its socket, starts the server on
# a free 127.0.0.1 port with durability off (fsync, synchronous_commit, full_page_writes: the
# data is thrown away anyway), and prints `export` lines on stdout; progress and errors go to
# stderr. `stop DIR` stops that server and deletes DIR.
#
# The server binaries live in `pg_config --bindir` (usually /usr/lib/postgresql/15/bin), not on
# PATH. initdb refuses to run as root, so as root (CI) the cluster is owned and run by the
# `postgres` system user.
set -euo pipefail

log() { printf 'pg-throwaway: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

find_bindir() {
    local dir=""
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
    fi
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
        dir=/usr/lib/postgresql/15/bin
    fi
    if [[ ! -x "$dir/initdb" || ! -x "$dir/pg_ctl" || ! -x "$dir/postgres" ]]; then
        die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in \`pg_config --bindir\` or /usr/lib/postgresql/15/bin; install them with: apt-get install postgresql-15"
    fi
    printf '%s' "$dir"
}

# Runs a command line as the cluster owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        su postgres -s /bin/sh -c "$1"
    else
        sh -c "$1"
    fi
}

port_in_use() {
    # bash's /dev/tcp: the connect succeeds only if something listens.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    local bindir dir port attempt
    bindir=$(find_bindir)
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        die "running as root but there is no 'postgres' user to own the cluster (initdb refuses root); apt-get install postgresql-15 creates it"
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/pg-throwaway.XXXXXX")
    touch "$dir/.pg-throwaway"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres "$dir"
    fi

    log "initdb in $dir/data"
    if ! as_owner "'$bindir/initdb' -D '$dir/data' -A trust -U postgres --no-sync -E UTF8 >'$dir/initdb.log' 2>&1"; then
        cat "$dir/initdb.log" >&2 || true
        rm -rf "$dir"
        die "initdb failed"
    fi

    # Pick a random free port; retry if another process grabs it between the check and start.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" && continue
        printf '%s' "-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >"$dir/options"
        if server_start "$bindir" "$dir"; then
            log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') listening on 127.0.0.1:$port"
            printf 'export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$port"
            printf 'export PG_THROWAWAY_DIR=%s\n' "$dir"
            return 0
        fi
        log "start on port $port failed (attempt $attempt), retrying"
    done
    tail -n 20 "$dir/server.log" >&2 || true
    rm -rf "$dir"
    die "could not start PostgreSQL"
}

# Starts the cluster in DIR with the options `start` saved there.
server_start() {
    as_owner "'$1/pg_ctl' -D '$2/data' -l '$2/server.log' -w -t 30 -o \"$(cat "$2/options")\" start >/dev/null"
}

checked_dir() {
    local dir=${1:-}
    [[ -n "$dir" && -f "$dir/.pg-throwaway" ]] || die "$dir is not a pg-throwaway directory"
    printf '%s' "$dir"
}

# Stops the server and keeps its data: clients see the database go away.
pause() {
    local dir
    dir=$(checked_dir "${1:-}")
    as_owner "'$(find_bindir)/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null" || die "pg_ctl stop failed"
    log "paused $dir"
}

# Starts a paused server again on the same port with the same data.
resume() {
    local dir
    dir=$(checked_dir "${1:-}")
    server_start "$(find_bindir)" "$dir" || die "pg_ctl start failed; see $dir/server.log"
    log "resumed $dir"
}

stop() {
    local dir=${1:-${PG_THROWAWAY_DIR:-}}
    [[ -n "$dir" ]] || die "usage: $0 stop DIR (the PG_THROWAWAY_DIR that start printed)"
    # Refuse to delete anything this script did not create.
    [[ -f "$dir/.pg-throwaway" ]] || die "$dir is not a pg-throwaway directory; not touching it"
    local bindir
    bindir=$(find_bindir)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_owner "'$bindir/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null" \
            || log "pg_ctl stop failed; deleting $dir anyway"
    fi
    rm -rf "$dir"
    log "stopped and removed $dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    pause) pause "${2:-}" ;;
    resume) resume "${2:-}" ;;
    *) die "usage: $0 start | stop DIR | pause DIR | resume DIR" ;;
esac
