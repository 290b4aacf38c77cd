#!/usr/bin/env bash
# with_pg.sh CMD...  — runs CMD with DATABASE_URL pointing at a PostgreSQL server.
#
#   DATABASE_URL set      → CMD runs against it unchanged.
#   PG_DATA_DIR set       → a private cluster kept in that folder (created on first use, started now,
#                           stopped when CMD exits; the data stays). `make run` uses .data/pg.
#   neither               → a throwaway cluster in a temporary folder, deleted when CMD exits (`make test`).
#
# The private clusters listen on a unix socket only (no TCP port to clash with), use trust auth, and run
# the machine's PostgreSQL server binaries, as the `postgres` OS user when this script runs as root
# (PostgreSQL refuses to run as root).
set -euo pipefail

if [ -n "${DATABASE_URL:-}" ]; then exec "$@"; fi

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  PGBIN=$(dirname "$(command -v initdb || command -v pg_ctl || echo /nonexistent/initdb)")
fi
if [ ! -x "$PGBIN/initdb" ]; then
  cat >&2 <<'MSG'
with_pg.sh: no PostgreSQL server binaries (initdb, pg_ctl) found.
  Either install them:   sudo apt-get install postgresql      (Debian/Ubuntu; 14 or newer)
                         sudo dnf install postgresql-server   (Fedora/RHEL)
                         brew install postgresql@16           (macOS)
  or point Flowline at an existing server:
                         export DATABASE_URL=postgresql://user:password@host:5432/dbname
MSG
  exit 1
fi

AS=()
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "with_pg.sh: running as root needs an OS user named 'postgres' to run the server (Debian's postgresql package creates it)." >&2
    exit 1
  fi
  AS=(runuser -u postgres --)
fi

if [ -n "${PG_DATA_DIR:-}" ]; then
  mkdir -p "$PG_DATA_DIR"
  DATA=$(cd "$PG_DATA_DIR" && pwd)
  # A short, stable socket folder: unix socket paths are limited to ~107 bytes.
  SOCK="${TMPDIR:-/tmp}/flowline-pg-$(printf '%s' "$DATA" | cksum | cut -d' ' -f1)"
  mkdir -p "$SOCK"
  KEEP=1
else
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/pgtmp.XXXXXX")
  DATA="$DIR/data"
  SOCK="$DIR"
  KEEP=0
fi
LOG="$SOCK/server.log"

if [ ${#AS[@]} -gt 0 ]; then
  chown postgres: "$SOCK"
  [ "$KEEP" = 1 ] && chown postgres: "$DATA"
  if ! "${AS[@]}" test -w "$([ "$KEEP" = 1 ] && echo "$DATA" || echo "$DIR")"; then
    echo "with_pg.sh: the 'postgres' OS user cannot write $DATA (a parent folder is probably private to root)." >&2
    echo "  Clone Flowline somewhere the postgres user can reach, or set DATABASE_URL." >&2
    exit 1
  fi
fi

cleanup() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
  if [ "$KEEP" = 0 ]; then rm -rf "$DIR"; fi
}

if [ ! -f "$DATA/PG_VERSION" ]; then
  "${AS[@]}" "$PGBIN/initdb" -D "$DATA" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >"$SOCK/initdb.log" 2>&1 \
    || { cat "$SOCK/initdb.log" >&2; [ "$KEEP" = 0 ] && rm -rf "$DIR"; exit 1; }
fi

OPTS="-k $SOCK -c listen_addresses='' -p 5432 -c max_connections=200"
if [ "$KEEP" = 0 ]; then
  # A throwaway cluster keeps nothing, so it need not survive a crash: skip the disk flushes.
  OPTS="$OPTS -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
if "${AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  echo "with_pg.sh: a server is already running on $DATA; using it and leaving it running." >&2
else
  trap cleanup EXIT
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o "$OPTS" start >/dev/null \
    || { cat "$LOG" >&2; exit 1; }
fi

export DATABASE_URL="postgresql://postgres@/postgres?host=$SOCK&port=5432"
export PGBIN
# A SIGTERM sent to the whole process group (as for Ctrl-C's SIGINT) waits until the command has stopped on its
# own signal, so a draining worker keeps its database; bash runs the trap once the command is done.
trap : TERM
# Not exec: the EXIT trap must run to stop the server.
"$@"
