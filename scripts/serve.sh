#!/usr/bin/env bash
# serve.sh — applies pending migrations, then serves Flowline with gunicorn in the foreground.
# Expects DATABASE_URL (scripts/with_pg.sh sets it) and the virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
BIND=${BIND:-127.0.0.1:8000}
export BIND

$BIN/python -m flowline.migrations apply

cat <<MSG

Flowline is starting on http://$BIND  (Ctrl-C stops it)
Try:
  curl -s -X POST http://$BIND/workflows -H 'Content-Type: application/json' -d '{"name": "demo"}'
  curl -s -X POST http://$BIND/workflows/<id>/nodes -H 'Content-Type: application/json' -d '{"node_type": "formatter", "config": {"rules": ["strip", "uppercase"]}}'
  curl -s -X POST http://$BIND/workflows/<id>/run -H 'Content-Type: application/json' -d '{"input_text": "  hello  "}'
  curl -s http://$BIND/workflows/<id>/runs

MSG
# Not exec: with_pg.sh must regain control to stop its private server when gunicorn exits.
$BIN/gunicorn -c gunicorn.conf.py 'app:create_app()'
