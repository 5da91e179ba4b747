#!/usr/bin/env bash
# The first message's delay from due (issue 23: within 100 ms at 1,000,000), without waiting
# for the rest of the send: runs a squeeze-bench command, polls its database for the first
# delivery sent, prints how long after the digest's due time (`digests.send_at`) and after
# its fan-out's start (`started_at`) it left, then interrupts the bench (Ctrl-C: it drops its
# PostgreSQL schema or its folder). In the bench's normal mode `send_at` is when the digest
# was made, before the worker started: read the delay from `started_at` there (the bench's
# tick, its due instant); with --kill-restart `send_at` is the due time. Wrap it in `flock`
# when others measure on the machine.
#
#   flock /tmp/squeeze-bench.lock scripts/bench-first-message.sh target/release/squeeze-bench \
#       --subscribers 1000000 --kill-restart
#   flock /tmp/squeeze-bench.lock scripts/bench-first-message.sh target/release/squeeze-bench \
#       --database postgres --subscribers 1000000 --kill-restart   # PGHOST etc.: 127.0.0.1, postgres
set -uo pipefail
log="$(mktemp /tmp/bench-first-message.XXXXXX.log)"
psql=(psql -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}" -d "${PGDATABASE:-test}" -At)
first="SELECT MIN(d.sent_at) - g.send_at, MIN(d.sent_at) - g.started_at FROM digests g
       JOIN deliveries d ON d.digest_id = g.id AND d.sent_at IS NOT NULL AND d.kind = 'digest'
       GROUP BY g.id"
postgres=0
[[ " $* " == *" postgres "* ]] && postgres=1
before=""
((postgres)) && before="$("${psql[@]}" -c "SELECT string_agg(nspname, ',') FROM pg_namespace WHERE nspname LIKE 'bench_%'")"
"$@" >"$log" 2>&1 &
pid=$!
schema=""
result=""
while kill -0 "$pid" 2>/dev/null; do
  if ((postgres)); then
    [[ -z "$schema" ]] && schema="$("${psql[@]}" -c "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'
        AND nspname <> ALL (string_to_array('$before', ',')) LIMIT 1")"
    [[ -n "$schema" ]] && result="$(PGOPTIONS="-c search_path=$schema" "${psql[@]}" -c "$first" 2>/dev/null)"
  else
    dir="$(grep -o 'log /tmp/squeeze-bench-[^/]*' "$log" | head -1 | sed 's/^log //')"
    [[ -n "$dir" && -f "$dir/squeeze.db" ]] &&
      result="$(sqlite3 -readonly "file:$dir/squeeze.db?mode=ro" "$first" 2>/dev/null)"
  fi
  if [[ -n "$result" ]]; then
    IFS='|' read -r from_due from_start <<<"$result"
    echo "first message sent ${from_due} ms after send_at, ${from_start} ms after the fan-out started ($(uptime))"
    kill -INT "$pid"
    wait "$pid"
    echo "bench log: $log"
    exit 0
  fi
  sleep 0.2
done
wait "$pid"
echo "the bench ended before a first message was seen; its log: $log" >&2
tail -5 "$log" >&2
exit 1
