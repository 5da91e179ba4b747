#!/usr/bin/env bash
# The PostgreSQL server's CPU for a fan-out, without the client: the fan-out's statements as
# a PL/pgSQL procedure (chunks of 5,000, each committed), run in a scratch database built from
# this checkout's migrations, with N confirmed subscribers. Prints the backend's own CPU
# (utime + stime from /proc, so the server must run on this machine) and the wall time.
#
#   scripts/bench-fanout-server.sh old|new [N] [rounds]
#
# old: migrations up to 0025 and main 7d3c5de's statement (a queue row per delivery); new:
# every migration and the statement of store::fan_out (POSTGRES_FAN_OUT_CHUNK: one queue row
# per chunk). Alternate the two: the machine's load moves both. (Before 0026 this compared
# main 9a18742's statements, CHUNK_END then ON CONFLICT, with 0024's: BENCHMARKS.md.)
# Needs psql and a superuser (PGHOST/PGUSER, default 127.0.0.1 and postgres); the database
# squeeze_fanout_<mode> is dropped and made again.
set -euo pipefail
mode=${1:?old or new}
n=${2:-100000}
rounds=${3:-1}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGOPTIONS="-c client_min_messages=warning"
db=squeeze_fanout_$mode
here=$(cd "$(dirname "$0")/.." && pwd)

psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
for f in "$here"/migrations/postgres/*.sql; do
  v=$(basename "$f" | cut -c1-4)
  if [[ $mode == old && $v > 0025 ]]; then continue; fi
  psql -qX -d "$db" -v ON_ERROR_STOP=1 -f "$f" >/dev/null
done
psql -qX -d "$db" -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO subscribers (id, email, name, status, unsubscribe_token, consent_at,
    confirmed_at, created_at, updated_at)
SELECT lpad(to_hex(i), 8, '0') || '-' || substr(md5(i::text), 1, 4) || '-7'
       || substr(md5(i::text), 5, 3) || '-8' || substr(md5(i::text), 8, 3) || '-'
       || substr(md5(i::text), 11, 12),
    'reader' || i || '@example.com', 'Reader ' || i, 'confirmed', md5('t' || i) || md5('u' || i),
    1, 1, 1, 1
FROM generate_series(1, $n) i;
ANALYZE subscribers;
SQL

# The fan-out's statement (store::fan_out::POSTGRES_FAN_OUT_CHUNK); `queue` is its last
# part: old, a delivery_queue row per delivery (main 7d3c5de); new, the chunk's one
# queued_chunks row (migration 0026).
tables="delivery_queue, deliveries"
if [[ $mode == old ]]; then
  queue="queued AS (INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
           SELECT id, dg, 1 FROM made RETURNING 1)"
else
  queue="queued AS (INSERT INTO queued_chunks (id, digest_id, run_at, after_id)
           SELECT p, dg, 1, p || '-' WHERE EXISTS (SELECT 1 FROM made) RETURNING 1)"
  tables="queued_chunks, $tables"
fi
psql -qX -d "$db" -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE PROCEDURE fan(dg text, chunk int) LANGUAGE plpgsql AS \$\$
DECLARE cur text := ''; r bigint; l text; m bigint; p text;
BEGIN
  LOOP
    SET LOCAL synchronous_commit = off;
    p := gen_random_uuid()::text;
    WITH page AS MATERIALIZED (
        SELECT id, status FROM subscribers WHERE id > cur
        ORDER BY id LIMIT chunk FOR KEY SHARE),
      chunk AS MATERIALIZED (SELECT id FROM page WHERE status = 'confirmed'),
      existing AS MATERIALIZED (
        SELECT subscriber_id FROM deliveries
        WHERE digest_id = dg AND subscriber_id > cur
          AND subscriber_id <= (SELECT MAX(id) FROM page)),
      made AS (
        INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
            created_at, updated_at)
        SELECT p || '-' || lpad(to_hex(row_number() OVER (ORDER BY id)), 12, '0'),
            'digest', id, dg, 'queued', 5, 1, 1
        FROM chunk WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.subscriber_id = chunk.id)
        RETURNING id),
      $queue
    SELECT (SELECT COUNT(*) FROM page), (SELECT MAX(id) FROM page),
        (SELECT COUNT(*) FROM made) INTO r, l, m;
    UPDATE digests SET fan_out_cursor = COALESCE(l, cur) WHERE id = dg;
    COMMIT;
    EXIT WHEN r < chunk;
    cur := l;
  END LOOP;
END \$\$;
SQL

for ((k = 1; k <= rounds; k++)); do
  psql -qX -d "$db" -c "TRUNCATE $tables CASCADE" -c CHECKPOINT >/dev/null 2>&1
  coproc PSQL { psql -qXAt -d "$db" 2>&1; }
  echo "SELECT pg_backend_pid();" >&"${PSQL[1]}"
  read -r -u "${PSQL[0]}" pid
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  s0=$(date +%s%N)
  echo "CALL fan('digest', 5000); SELECT 'done';" >&"${PSQL[1]}"
  while read -r -u "${PSQL[0]}" line; do
    [[ $line == done ]] && break
    [[ $line == *ERROR* ]] && { echo "$line" >&2; exit 1; }
  done
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  s1=$(date +%s%N)
  echo '\q' >&"${PSQL[1]}"
  wait "$PSQL_PID" 2>/dev/null || true
  ticks=$(getconf CLK_TCK)
  awk -v m="$mode" -v n="$n" -v c=$((t1 - t0)) -v t="$ticks" -v w=$(((s1 - s0) / 1000000)) \
    'BEGIN { printf "%s: fan-out of %d, server CPU %.2f s, wall %d ms\n", m, n, c / t, w }'
done
psql -qX -d postgres -c "DROP DATABASE $db" >/dev/null
