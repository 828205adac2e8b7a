#!/usr/bin/env bash
# Schemathesis against the server's own OpenAPI: zero 5xx and zero schema violations.
#
#   bench/fuzz.sh [MAX_EXAMPLES_PER_OPERATION] [SEED]     (defaults: 50, 1)
#
# Starts `python -m server.app` on a free loopback port with a throwaway Takeflow home (one
# project, `demo`, so project routes reach real data), runs the examples, coverage and
# fuzzing phases with the checks below, prints the number of cases, and exits non-zero on any
# failure. Needs `schemathesis` (the `test` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-50}"
SEED="${2:-1}"
PY=".venv/bin/python"
ST=".venv/bin/schemathesis"
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance"
CHECKS="$CHECKS,response_schema_conformance,response_headers_conformance"
WORK="$(mktemp -d)"
PORT="$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

TAKEFLOW_HOME="$WORK/home" $PY -m server.app --home "$WORK/home" --port "$PORT" --workers 2 \
  >"$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

for _ in $(seq 1 300); do
  curl -fs "$BASE/api/v1/projects" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs -X POST "$BASE/api/v1/projects" -H 'content-type: application/json' \
  -d '{"project_id": "demo"}' >/dev/null

set +e
timeout 1200 "$ST" run "$BASE/schema/openapi.json" \
  --checks "$CHECKS" --max-examples "$EXAMPLES" --seed "$SEED" \
  --phases examples,coverage,fuzzing --workers 1 --request-timeout 30 \
  --report ndjson --report-ndjson-path "$WORK/events.ndjson" \
  | tee "$WORK/out.txt" | tail -25
STATUS=${PIPESTATUS[0]}
set -e
CASES="$(grep -Eo '[0-9]+ generated' "$WORK/out.txt" | tail -1 | cut -d' ' -f1)"
SERVER_ERRORS="$(grep -c '"status_code": *5[0-9][0-9]' "$WORK/events.ndjson" || true)"
echo "fuzz: cases=${CASES:-?} 5xx_responses=${SERVER_ERRORS:-0} max_examples=$EXAMPLES seed=$SEED exit=$STATUS"
if grep -q "Traceback\|internal_error" "$WORK/server.log"; then
  echo "fuzz: the server logged an internal error:"; grep -B2 -A20 "Traceback" "$WORK/server.log" | head -60
  STATUS=1
fi
exit "$STATUS"
