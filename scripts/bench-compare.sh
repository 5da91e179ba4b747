#!/usr/bin/env bash
# Before/after for a change: the benchmark matrix (SQLite and PostgreSQL, 10,000 and 100,000,
# 40 KB and 4.4 KB), each configuration run with the old build and then the new one, so both
# see the same machine. One line per run: pipeline rate, the two floor ratios, fan-out, RSS.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --workspace --bins)
#   cargo build --release --workspace --bins
#   scripts/bench-compare.sh /tmp/old/target/release/squeeze-bench target/release/squeeze-bench [ROUNDS]
set -u
old=${1:?old squeeze-bench}
new=${2:?new squeeze-bench}
rounds=${3:-1}
for r in $(seq 1 "$rounds"); do
for db in sqlite postgres; do
for n in 10000 100000; do
for size in 40 4.4; do
  extra=""; [ "$size" = "4.4" ] && extra="--items 2 --summary-chars 260"
  for which in old new; do
    bin=${!which}
    out=$("$bin" --subscribers $n --database $db $extra 2>&1)
    p=$(echo "$out" | sed -n 's/^pipeline: .* = \([0-9]*\) emails\/s.*/\1/p')
    l=$(echo "$out" | sed -n 's/^pipeline \/ floor (lettre.s client): //p')
    s=$(echo "$out" | sed -n 's/^pipeline \/ floor (Squeeze.s sender): //p')
    f=$(echo "$out" | sed -n 's/^fan-out: .* in \(.*\)$/\1/p')
    rss=$(echo "$out" | sed -n 's/^worker peak RSS: \([0-9.]* MB\).*/\1/p')
    printf '%s %-8s %6s %4sKB %s pipeline=%s/s lettre_ratio=%s sender_ratio=%s fanout=%s rss=%s\n' "$r" "$db" "$n" "$size" "$which" "$p" "$l" "$s" "$f" "$rss"
    [ -z "$p" ] && echo "$out" | tail -5
  done
done; done; done; done
