#!/usr/bin/env bash
# serve.sh — applies pending migrations, then serves Flowline: gunicorn and one worker (the async runs), until
# Ctrl-C or SIGTERM stops both. Expects DATABASE_URL (scripts/with_pg.sh sets it) and the virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
BIND=${BIND:-127.0.0.1:8000}
export BIND

$BIN/python -m flowline.data.migrations apply

# The console signs its sessions with SECRET_KEY: unless one is given, a random one made on first use and kept in
# SECRET_KEY_FILE (default .data/secret_key, readable by this user only), so sign-ins survive a restart.
if [ -z "${SECRET_KEY:-}" ]; then
  KEY_FILE=${SECRET_KEY_FILE:-.data/secret_key}
  if [ ! -s "$KEY_FILE" ]; then
    mkdir -p "$(dirname "$KEY_FILE")"
    (umask 077 && $BIN/python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$KEY_FILE")
  fi
  SECRET_KEY=$(cat "$KEY_FILE")
  export SECRET_KEY
fi

echo
echo "Flowline is starting on http://$BIND  (Ctrl-C stops it). Try the README's walk-through in another shell:"
echo
echo "BASE=http://$BIND"
# The README's examples block, printed as is (tests/e2e/test_readme.py runs it against a live server).
sed -n '/<!-- api-examples/,/^```$/p' README.md | sed '1,2d;$d' | grep -v '^BASE='
echo

# gunicorn and the worker run in the background, each in a process group of its own (set -m): a Ctrl-C reaches
# them only through this script, once, so the worker drains instead of taking a second signal for "stop at once".
# A signal that comes while they start is noted, and passed on once both have started.
SIGNALLED=0
trap 'SIGNALLED=1' INT TERM HUP
set -m
# `python -m flowline.worker` rather than `flask --app app worker`: the flask command would also read ./.env
# (python-dotenv comes with the dev requirements), which gunicorn does not.
$BIN/python -m flowline.worker &
WORKER=$!
$BIN/gunicorn -c gunicorn.conf.py 'app:create_app()' &
GUNICORN=$!
set +m
echo "Flowline's worker started (pid $WORKER): it executes the runs POST /workflows/{id}/runs queues."

stop() { kill -TERM "$WORKER" "$GUNICORN" 2>/dev/null || true; }
on_signal() {
  if [ "$SIGNALLED" = 0 ]; then
    echo "Stopping gunicorn and the worker (the worker finishes its runs in progress; Ctrl-C again: at once)."
  fi
  SIGNALLED=1
  stop
}
trap on_signal INT TERM HUP
if [ "$SIGNALLED" = 1 ]; then stop; fi

# Until a signal, or until one of them exits on its own: then the other is stopped too.
wait -n || true
if [ "$SIGNALLED" = 0 ]; then
  echo "serve.sh: gunicorn or the worker exited; stopping the other." >&2
  stop
fi
# Not exec, and waiting for both: with_pg.sh must regain control to stop its private server once they are gone.
# A further signal interrupts wait, hence the loop.
for pid in "$WORKER" "$GUNICORN"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
done
# The script's status: the worker's, then gunicorn's (set -e stops at the first that failed).
wait "$WORKER"
wait "$GUNICORN"
