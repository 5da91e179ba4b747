#!/usr/bin/env bash
# Issue 24: schemathesis against a live `squeeze serve` (admin token set, Postfix's smtp-sink
# as its SMTP server), once over an SQLite file and once over a fresh schema of the PostgreSQL
# `test` database. Every documented operation, generated and hostile inputs (and stateful
# sequences where the document declares links), with these checks: no 5xx, every answer's
# status documented, its content type documented, its body conforming to its schema; no
# request may take longer than the request timeout. Bounded (a fixed number of examples per
# operation, a time cap per run) and deterministic (a fixed seed, deterministic generation).
# Builds nothing: it runs target/debug/squeeze (`cargo build` first). Prints one summary line.
#
#   scripts/schemathesis.sh [sqlite|postgres]...   (default: both)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
squeeze="${CARGO_TARGET_DIR:-$root/target}/debug/squeeze"
st="$root/.venv/bin/schemathesis"
[[ -x "$squeeze" ]] || { echo "schemathesis.sh: no $squeeze; run cargo build first" >&2; exit 1; }
[[ -x "$st" ]] || { echo "schemathesis.sh: no $st; pip install schemathesis (see .ci/run)" >&2; exit 1; }
sink="$(scripts/smtp-sink.sh)"
token="schemathesis-admin-token-0123456789"
pg_base="${SQUEEZE_TEST_POSTGRES_URL:-postgres://root@127.0.0.1:5432/test}"
pg_schema="squeeze_schemathesis"
examples="${SCHEMATHESIS_EXAMPLES:-25}"
max_time="${SCHEMATHESIS_MAX_TIME:-50}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
work="$(mktemp -d)"
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

summary=()
failed=0
run() {
  local backend="$1" database_url
  case "$backend" in
    sqlite) database_url="sqlite://$work/squeeze.db?mode=rwc" ;;
    postgres)
      psql -q "$pg_base" -c "DROP SCHEMA IF EXISTS $pg_schema CASCADE" -c "CREATE SCHEMA $pg_schema" >/dev/null
      database_url="$pg_base?options=-c%20search_path%3D$pg_schema" ;;
    *) echo "schemathesis.sh: unknown backend $backend" >&2; exit 2 ;;
  esac
  local smtp_port http_port
  smtp_port="$(free_port)"
  http_port="$(free_port)"
  "$sink" -u nobody -c "127.0.0.1:$smtp_port" 100 >/dev/null 2>&1 &
  pids+=($!)
  SQUEEZE_DATABASE_URL="$database_url" \
  SQUEEZE_BIND="127.0.0.1:$http_port" \
  SQUEEZE_PUBLIC_URL="http://127.0.0.1:$http_port" \
  SQUEEZE_SMTP_URL="smtp://127.0.0.1:$smtp_port" \
  SQUEEZE_ADMIN_TOKEN="$token" \
  SQUEEZE_SUBSCRIBE_PER_MINUTE=100000 \
  SQUEEZE_FEED_INTERVAL=24h \
  SQUEEZE_OUTBOX="$work/outbox-$backend" \
    "$squeeze" serve >"$work/serve-$backend.log" 2>&1 &
  pids+=($!)
  local url="http://127.0.0.1:$http_port"
  for _ in $(seq 1 100); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "$url/healthz" >/dev/null || { cat "$work/serve-$backend.log" >&2; exit 1; }
  echo "== schemathesis on $backend ($url, $examples examples per operation, at most ${max_time}s)"
  local start end rc=0
  start=$(date +%s)
  "$st" run "$url/api/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" --max-time "$max_time" \
    --request-timeout 5 \
    --seed 24 --generation-deterministic \
    --workers 2 --no-color --suppress-health-check all \
    --report junit --report-dir "$work/report-$backend" || rc=$?
  end=$(date +%s)
  if [[ $rc -ne 0 ]]; then
    failed=1
    echo "--- squeeze serve's log ($backend), last lines:"; tail -n 30 "$work/serve-$backend.log"
  fi
  summary+=("$backend: $([[ $rc -eq 0 ]] && echo passed || echo FAILED) in $((end - start))s")
  if [[ "$backend" == postgres ]]; then
    psql -q "$pg_base" -c "DROP SCHEMA IF EXISTS $pg_schema CASCADE" >/dev/null 2>&1 || true
  fi
}

backends=("$@")
[[ ${#backends[@]} -gt 0 ]] || backends=(sqlite postgres)
for b in "${backends[@]}"; do run "$b"; done
echo "schemathesis: ${summary[*]}"
exit "$failed"
