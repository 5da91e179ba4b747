#!/usr/bin/env bash
# CI hook for the benchmark (issue #7): runs the already built squeeze-bench once at a tiny N,
# so the benchmark keeps compiling and working. It builds nothing and judges no timing: it
# fails only when the run fails (sink, seeding, fan-out, worker or floor).
# Uses whichever of the debug and release builds is newer (`cargo build --bins` builds the
# debug ones; the benchmark is the workspace's `bench/` crate).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bench=""
for candidate in "$target/release/squeeze-bench" "$target/debug/squeeze-bench"; do
  if [[ -x "$candidate" && -x "$(dirname "$candidate")/squeeze" ]]; then
    if [[ -z "$bench" || "$candidate" -nt "$bench" ]]; then bench="$candidate"; fi
  fi
done
if [[ -z "$bench" ]]; then
  echo "bench-smoke.sh: no squeeze-bench (with squeeze beside it) under $target; build first (cargo build --bins)" >&2
  exit 1
fi
echo "== $bench --subscribers 200"
"$bench" --subscribers 200 "$@"
