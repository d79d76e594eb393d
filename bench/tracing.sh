#!/usr/bin/env bash
# bench/tracing.sh — what recording spans costs: the embedded shop with tracing off, at 10%
# sampling and at 100% sampling with the OTLP exporter on, side by side.
#
# Three `tideway up` shops run at once on loopback, SQLite in their own data directories:
#   off  — :9480, no telemetry.* set (no span of the hops is opened);
#   s10  — :9481, telemetry.otlp_endpoint set, telemetry.sample_ratio=0.1;
#   s100 — :9482, telemetry.otlp_endpoint set, telemetry.sample_ratio=1.0.
# The exporters send to one OTLP/HTTP sink on :9499 (a few lines of Python answering 200,
# not counted). Tideway logs at `warn`. Each round runs the shapes in turn (A B C A B C …):
#   shop — `tideway load --mix shop --rate R_SHOP --users 16` (open loop).
# CPU ("req/cpu-s"): the tested shop's process only, around the measured phase. Idle wait,
# steal and foreign CPU as in bench/lib.sh. The machine is shared: only the ratios between
# the three, measured in one run, hold.
#
# Usage: bash bench/tracing.sh     (BENCH_ROUNDS=3 BENCH_SECS=8 R_SHOP=300)
# Results: target/bench/tracing-*/runs.tsv, summary.txt, each run's report.json/plot.png.

source "$(dirname "$0")/lib.sh"
R_SHOP=${R_SHOP:-300}
bench_setup tracing

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
export TIDEWAY_GATEWAY__RATE_LIMIT__ENABLED=false
mkdir -p "$BENCH_OUT/off" "$BENCH_OUT/s10" "$BENCH_OUT/s100"

start sink python3 -c '
import http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 9499), Sink).serve_forever()'

start off env TIDEWAY_DATA_DIR="$BENCH_OUT/off" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9480 \
    "$TIDEWAY_BIN" up
start s10 env TIDEWAY_DATA_DIR="$BENCH_OUT/s10" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9481 \
    TIDEWAY_TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:9499 TIDEWAY_TELEMETRY__SAMPLE_RATIO=0.1 \
    "$TIDEWAY_BIN" up
start s100 env TIDEWAY_DATA_DIR="$BENCH_OUT/s100" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9482 \
    TIDEWAY_TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:9499 TIDEWAY_TELEMETRY__SAMPLE_RATIO=1.0 \
    "$TIDEWAY_BIN" up
for port in 9480 9481 9482; do
    for i in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/ready") == 200 ]] && break
        sleep 0.2
    done
done

declare -A BASE=([off]=http://127.0.0.1:9480 [s10]=http://127.0.0.1:9481 [s100]=http://127.0.0.1:9482)
declare -A TESTED=([off]="$PID_off" [s10]="$PID_s10" [s100]="$PID_s100")

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for shape in off s10 s100; do
        own="$PID_sink"
        for other in off s10 s100; do [[ $other == "$shape" ]] || own="$own ${TESTED[$other]}"; done
        measure "shop $shape" "${TESTED[$shape]}" "$own" load --target "${BASE[$shape]}" \
            --mix shop --users 16 --rate "$R_SHOP"
    done
    log "round $round done"
done

{
    echo "tracing off vs 10% vs 100% sampled, OTLP exporter on · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    echo "shop at $R_SHOP/s (tideway load, open loop); CPU of the tested process only"
    summary 2 "ok/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 8 "cpu s"
    summary 9 "req/cpu-s"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
