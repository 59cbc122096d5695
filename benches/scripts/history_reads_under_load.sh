#!/bin/bash
# History reads (or deposit requests) and a /health probe during the 128-client create load
# (README, Decisions: "That wait ... runs off the async workers", "externalIds").
# Usage: benches/scripts/history_reads_under_load.sh [path/to/bourse] [clients] [reads|deposits]
# Serves on 127.0.0.1:18090 with a fresh data dir under /tmp, stops the server at the end.
set -euo pipefail
BIN=${1:-target/release/bourse}
READERS=${2:-8}
MODE=${3:-reads}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$(mktemp -d /tmp/bourse-reads.XXXXXX)
export BOURSE_ADMIN_CLIENT_ID=benchadmin BOURSE_ADMIN_CLIENT_SECRET=benchsecret
BOURSE_RATE_LIMIT_PER_SEC=0 RUST_LOG=warn "$BIN" serve --bind 127.0.0.1:18090 --data-dir "$DATA" >"$DATA.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DATA" "$DATA.log"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18090/health >/dev/null && break; sleep 0.1; done
# Registration of the bench's 128 accounts takes a few seconds; the readers start after it.
python3 "$HERE/history_reads_under_load.py" http://127.0.0.1:18090 benchadmin benchsecret 9 6 "$READERS" "$MODE" &
PY=$!
"$BIN" bench http --url http://127.0.0.1:18090 --clients 128 --no-cancel --no-health --duration 10s 2>&1 | grep -E '^place'
wait $PY
