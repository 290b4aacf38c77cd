#!/usr/bin/env bash
# serve.sh — applies pending migrations, then serves Flowline with gunicorn in the foreground.
# Expects DATABASE_URL (scripts/with_pg.sh sets it) and the virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
BIND=${BIND:-127.0.0.1:8000}
export BIND

$BIN/python -m flowline.migrations apply

echo
echo "Flowline is starting on http://$BIND  (Ctrl-C stops it). Try the README's walk-through in another shell:"
echo
echo "BASE=http://$BIND"
# The README's examples block, printed as is (tests/test_readme.py runs it against a live server).
sed -n '/<!-- api-examples/,/^```$/p' README.md | sed '1,2d;$d' | grep -v '^BASE='
echo
# Not exec: with_pg.sh must regain control to stop its private server when gunicorn exits.
$BIN/gunicorn -c gunicorn.conf.py 'app:create_app()'
