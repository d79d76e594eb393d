#!/usr/bin/env bash
# bench/admission.sh — what the gateway's rate limit check costs per request: the gateway's
# whole router in one process with an in-process hello upstream, rules off vs a local
# (governor) rule vs the same rule on Redis, interleaved rounds, CPU time of the one
# runtime thread per request (crates/gateway/examples/admission_cost.rs). No sockets, so
# the difference between the rows is the admission step alone; bench/limits.sh measures
# the same over HTTP with wrk, next to nginx-style CPU accounting.
#
# Usage: bash bench/admission.sh [ROUNDS] [REQUESTS]   (defaults 5 and 100000)
# Needs Redis on 127.0.0.1:6379 (TIDEWAY_BENCH_REDIS_URL to change; scripts/deps.sh starts it).

set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$REPO/target/bench/admission-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cd "$REPO"
cargo build --release -q -p tideway-gateway --example admission_cost
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/admission_cost
{
    echo "commit $(git rev-parse --short HEAD) · $(date -u +%FT%TZ) · load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BIN" "$@"
} | tee "$OUT/summary.txt"
