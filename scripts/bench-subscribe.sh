#!/usr/bin/env bash
# Load test of POST /subscribe (issue #7, then issue 23: >= 10,000 requests/s, p99 < 20 ms on
# both backends). Starts the release `squeeze serve` on a free 127.0.0.1 port with an SQLite
# file in a temp folder (or, with DATABASE=postgres, a fresh PostgreSQL database on
# $PGHOST, default 127.0.0.1, made for the run and dropped after it) and the per-IP sign-up
# limit off (SQUEEZE_SUBSCRIBE_PER_MINUTE=0: every request comes
# from one IP), drives it with wrk posting distinct JSON sign-ups, prints requests/s and p99,
# and stops the server. Extra arguments go to `squeeze serve` (e.g. --no-worker to leave the
# confirmation emails queued instead of written to the outbox while the load runs).
#
#   cargo build --release --bins && scripts/bench-subscribe.sh
#   DURATION=30s CONNECTIONS=64 THREADS=2 scripts/bench-subscribe.sh --no-worker
#   DATABASE=postgres scripts/bench-subscribe.sh   # PGHOST/PGPORT/PGUSER: 127.0.0.1, 5432, postgres
#   KEEP=1 RUST_LOG=squeeze=info,sqlx::query=debug scripts/bench-subscribe.sh   # keep logs and DB
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
squeeze="${CARGO_TARGET_DIR:-$root/target}/release/squeeze"
duration="${DURATION:-10s}"
connections="${CONNECTIONS:-32}"
threads="${THREADS:-2}"
database="${DATABASE:-sqlite}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
case "$database" in
  sqlite | postgres) ;;
  *) echo "bench-subscribe.sh: DATABASE must be sqlite or postgres, not $database" >&2; exit 2 ;;
esac

if [[ ! -x "$squeeze" ]]; then
  echo "bench-subscribe.sh: $squeeze is missing; run: cargo build --release --bins" >&2
  exit 1
fi
if ! command -v wrk >/dev/null 2>&1; then
  # Debian's wrk; `apt-get update` only when the package lists do not know it yet.
  apt-get install -y -q wrk >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null
  }
fi

tmp="$(mktemp -d -t squeeze-subscribe.XXXXXX)"
server=""
pgdb=""
cleanup() {
  if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    # The server drains for at most its shutdown_timeout; don't wait forever.
    for _ in $(seq 1 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server" 2>/dev/null || true
  fi
  if [[ -n "$pgdb" ]]; then
    if [[ -n "${KEEP:-}" ]]; then
      echo "kept: PostgreSQL database $pgdb"
    else
      psql -qX -d postgres -c "DROP DATABASE IF EXISTS $pgdb" >/dev/null || true
    fi
  fi
  if [[ -n "${KEEP:-}" ]]; then echo "kept: $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
: >"$tmp/squeeze.toml" # so no squeeze.toml from elsewhere is read
if [[ $database == postgres ]]; then
  pgdb="squeeze_subscribe_$$"
  psql -qX -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE $pgdb" >/dev/null
  database_url="postgres://$PGUSER@$PGHOST:$PGPORT/$pgdb"
  backend=PostgreSQL
else
  database_url="sqlite://$tmp/squeeze.db"
  backend=SQLite
fi
(
  cd "$tmp"
  for v in $(env | grep -o '^SQUEEZE_[A-Z_]*' || true); do unset "$v"; done
  export SQUEEZE_CONFIG="$tmp/squeeze.toml" \
    SQUEEZE_DATABASE_URL="$database_url" \
    SQUEEZE_BIND="127.0.0.1:$port" \
    SQUEEZE_PUBLIC_URL="$url" \
    SQUEEZE_SUBSCRIBE_PER_MINUTE=0 \
    SQUEEZE_TEMPLATES="$root/templates" \
    SQUEEZE_OUTBOX="$tmp/outbox"
  exec "$squeeze" serve "$@" >"$tmp/squeeze.log" 2>&1
) &
server=$!

for _ in $(seq 1 100); do
  curl -fs "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$tmp/squeeze.log" >&2; exit 1; }
  sleep 0.1
done
curl -fs "$url/healthz" >/dev/null || { echo "squeeze did not come up" >&2; cat "$tmp/squeeze.log" >&2; exit 1; }

# Every request is a new address: a counter per wrk thread, the thread's number in the name.
cat >"$tmp/subscribe.lua" <<'LUA'
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  counter = 0
end
function request()
  counter = counter + 1
  local body = string.format('{"email": "load%d.%d@example.com", "name": "Load %d"}', tid, counter, counter)
  return wrk.format("POST", "/subscribe", { ["Content-Type"] = "application/json" }, body)
end
LUA

echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "squeeze serve $* on $url ($backend, per-IP limit off); wrk -t$threads -c$connections -d$duration"
wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$tmp/subscribe.lua" "$url/subscribe" | tee "$tmp/wrk.out"

rps="$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.out")"
p99="$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")"
bad="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$tmp/wrk.out")"
if [[ $database == postgres ]]; then
  stored="$(psql -qXAt -d "$pgdb" -c "select count(*) from subscribers")"
else
  stored="$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from subscribers").fetchone()[0])' "$tmp/squeeze.db")"
fi
echo "subscribe ($backend): ${rps:-?} requests/s, p99 ${p99:-?}, non-2xx ${bad:-0}, ${stored} sign-ups stored"
kill -0 "$server" 2>/dev/null || { echo "squeeze died during the load test" >&2; cat "$tmp/squeeze.log" >&2; exit 1; }
[[ -z "$bad" ]] || { echo "bench-subscribe.sh: some requests failed" >&2; tail -n 20 "$tmp/squeeze.log" >&2; exit 1; }
