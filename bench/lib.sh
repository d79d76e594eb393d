# Shared helpers of the bench/ scripts (sourced, not run). See shared BENCHMARKING rules in
# docs/benchmarks.md: interleaved rounds, idle machine before each run, CPU per process
# from /proc, steal and foreign CPU recorded, disturbed runs discarded and repeated.
#
# Environment:
#   TIDEWAY_BIN      the release binary (default: $CARGO_TARGET_DIR or target, /release/tideway)
#   BENCH_SECS       length of each measured run in seconds (default 8)
#   BENCH_ROUNDS     interleaved rounds (default 3)
#   BENCH_OUT        where results go (default target/bench/<script>-<UTC time>)
#   BENCH_IDLE_TRIES 3-second idle checks before a run goes ahead anyway (default 60)
#   BENCH_MAX_FOREIGN  foreign CPU (cores, averaged over a run) above which a run is
#                    discarded and repeated (default 0.25)
#   BENCH_IDLE_TRIES how many 3 s windows to wait for an idle machine before each run
#                    (default 60: 3 minutes)

set -euo pipefail

BENCH_SECS=${BENCH_SECS:-8}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_MAX_FOREIGN=${BENCH_MAX_FOREIGN:-0.25}
HZ=$(getconf CLK_TCK)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIDEWAY_BIN=${TIDEWAY_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/tideway}
PIDS=()

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# Installs nginx, haproxy, wrk, jq and GNU time from Debian when missing; builds tideway.
bench_setup() {
    local missing=()
    for tool in nginx:nginx haproxy:haproxy wrk:wrk jq:jq /usr/bin/time:time; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]} from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [[ ! -x $TIDEWAY_BIN || ${BENCH_BUILD:-1} == 1 ]]; then
        log "building tideway (release)"
        (cd "$REPO" && cargo build --release -p tideway -q)
    fi
    BENCH_OUT=${BENCH_OUT:-$REPO/target/bench/$1-$(date -u +%Y%m%d-%H%M%S)}
    mkdir -p "$BENCH_OUT"
    BENCH_COMMIT=$(git -C "$REPO" rev-parse --short HEAD)
    log "results in $BENCH_OUT (commit $BENCH_COMMIT)"
    trap bench_cleanup EXIT
}

# Starts a background process, remembering its pid for the cleanup: start NAME CMD...
start() {
    local name=$1
    shift
    "$@" >"$BENCH_OUT/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

# Waits until URL answers (any status) or 60 s pass.
wait_http() {
    local url=$1 i
    for i in $(seq 1 600); do
        curl -s -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    log "$url did not answer within 60 s"
    return 1
}

# Busy and steal ticks of the whole machine: "busy steal total".
machine_ticks() {
    awk '/^cpu / { busy=$2+$3+$4+$7+$8; print busy, $9, busy+$5+$6+$9 }' /proc/stat
}

# Waits for < 5% busy over 3 s (up to BENCH_IDLE_TRIES windows; then goes on and says so).
wait_idle() {
    local tries=0 a b busy total
    while ((tries < ${BENCH_IDLE_TRIES:-60})); do
        a=($(machine_ticks))
        sleep 3
        b=($(machine_ticks))
        busy=$((b[0] - a[0] + b[1] - a[1]))
        total=$((b[2] - a[2]))
        if ((total > 0 && busy * 100 < 5 * total)); then
            return 0
        fi
        tries=$((tries + 1))
    done
    log "the machine did not become idle within $((3 * ${BENCH_IDLE_TRIES:-60})) s; measuring anyway"
}

# utime+stime ticks of a process (all its threads) and its direct children (nginx workers).
proc_ticks() {
    local root=$1 sum=0 pid t
    for pid in $root $(pgrep -P "$root" 2>/dev/null || true); do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        sum=$((sum + t))
    done
    echo $sum
}

# Sum of proc_ticks over several pids.
pids_ticks() {
    local sum=0 pid
    for pid in "$@"; do sum=$((sum + $(proc_ticks "$pid"))); done
    echo $sum
}

# Runs one measurement with CPU accounting, repeating it while another process disturbs it.
# measure LABEL "PIDS UNDER TEST" "OTHER OWN PIDS" wrk CONNS URL
# measure LABEL "PIDS UNDER TEST" "OTHER OWN PIDS" load TIDEWAY-LOAD-ARGS...
# Appends to runs.tsv one line: 1 label, 2 req/s (wrk) or ok/s (load), 3 p50 ms, 4 p99 ms,
# 5 requests, 6 errors, 7 p99.9 ms (load only), 8 CPU seconds of the pids under test,
# 9 requests per CPU-second of them, 10 steal %, 11 foreign CPU (cores).
measure() {
    local label=$1 tested=$2 own=$3 kind=$4 attempt cmd parse
    shift 4
    for attempt in 1 2 3; do
        local dir=$BENCH_OUT/load-$(date +%s%N)
        if [[ $kind == wrk ]]; then
            # WRK_SCRIPT: a Lua script shaping the requests (method, headers, body).
            cmd=(wrk -t2 -c"$1" -d"${BENCH_SECS}s" --latency ${WRK_SCRIPT:+-s "$WRK_SCRIPT"} "$2")
            parse=(wrk_parse "$BENCH_OUT/raw")
        else
            # The generator samples CPU itself, around the measured phase only (its setup,
            # such as registering users, is not counted).
            local watch=() pid
            for pid in $tested $own; do
                watch+=(--watch-pid "$pid")
                for child in $(pgrep -P "$pid" 2>/dev/null || true); do watch+=(--watch-pid "$child"); done
            done
            cmd=("$TIDEWAY_BIN" load --quiet --duration "${BENCH_SECS}s" --out "$dir" "${watch[@]}" "$@")
            parse=(load_parse "$dir/report.json")
        fi
        wait_idle
        local m0 t0 o0 m1 t1 o1 start end
        m0=($(machine_ticks))
        t0=$(pids_ticks $tested)
        o0=$(pids_ticks $own)
        start=$(date +%s.%N)
        /usr/bin/time -f '%U %S' -o "$BENCH_OUT/gen.time" "${cmd[@]}" >"$BENCH_OUT/raw" 2>&1 ||
            log "$label: the generator failed: $(tail -3 "$BENCH_OUT/raw")"
        end=$(date +%s.%N)
        "${parse[@]}" >"$BENCH_OUT/last" || echo "failed" >"$BENCH_OUT/last"
        m1=($(machine_ticks))
        t1=$(pids_ticks $tested)
        o1=$(pids_ticks $own)
        local gen tested_s steal_pct foreign wall
        gen=$(awk '{ print $1 + $2 }' "$BENCH_OUT/gen.time")
        wall=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
        tested_s=$(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.3f", t / hz }')
        steal_pct=$(awk -v s=$((m1[1] - m0[1])) -v t=$((m1[2] - m0[2])) 'BEGIN { printf "%.1f", t ? 100 * s / t : 0 }')
        # Busy CPU that was neither the pids under test, our other processes, nor the load
        # generator: someone else's work on the machine during the run.
        foreign=$(awk -v busy=$((m1[0] - m0[0])) -v ours=$((t1 - t0 + o1 - o0)) -v gen="$gen" \
            -v hz="$HZ" -v wall="$wall" 'BEGIN { f = (busy / hz - ours / hz - gen) / wall; if (f < 0) f = 0; printf "%.2f", f }')
        # For tideway load, the CPU of the pids under test is the generator's own figure for
        # the measured phase (without its setup); steal and foreign CPU stay the outer,
        # whole-command figures above, which are consistent with one another.
        if [[ $kind == load && -f $dir/report.json ]]; then
            local tested_pids=() pid
            for pid in $tested; do tested_pids+=("$pid" $(pgrep -P "$pid" 2>/dev/null || true)); done
            tested_s=$(jq -r --argjson t "$(printf '%s\n' "${tested_pids[@]}" | jq -s .)" \
                '[.cpu[] | select(.pid as $p | $t | index($p)) | .cpu_secs] | add // 0 | . * 1000 | round / 1000' "$dir/report.json")
        fi
        if awk -v f="$foreign" -v max="$BENCH_MAX_FOREIGN" 'BEGIN { exit !(f > max) }'; then
            log "$label: discarded (foreign CPU $foreign cores, steal $steal_pct%), attempt $attempt"
            printf '%s\t%s\t%s\t%s\t%s\tdiscarded\n' "$label" "$(cat "$BENCH_OUT/last")" \
                "$tested_s" "$steal_pct" "$foreign" >>"$BENCH_OUT/discarded.tsv"
            continue
        fi
        local per_cpu
        per_cpu=$(awk -F'\t' -v c="$tested_s" '{ printf "%.0f", (c > 0 ? $4 / c : 0) }' "$BENCH_OUT/last")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$(cat "$BENCH_OUT/last")" "$tested_s" \
            "$per_cpu" "$steal_pct" "$foreign" >>"$BENCH_OUT/runs.tsv"
        log "$label: $(tr '\t' ' ' <"$BENCH_OUT/last") cpu ${tested_s}s (${per_cpu}/cpu-s) steal ${steal_pct}% foreign ${foreign}"
        return 0
    done
    log "$label: disturbed three times; kept out of the results"
}

# wrk's output: "req/s p50_ms p99_ms requests errors 0" (wrk has no p99.9).
wrk_parse() {
    awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /requests in/ { n = $1 }
        /^Requests\/sec/ { rps = $2 }
        /Non-2xx/ { e += $NF }
        /Socket errors/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
        END { if (!rps) exit 1; printf "%.0f\t%.3f\t%.3f\t%d\t%d\t0", rps, p50, p99, n, e }' "$1"
}

# A tideway load report: "ok/s p50_ms p99_ms requests errors p999_ms".
load_parse() {
    jq -r '[.achieved_rate, .total.latency_ms.p50, .total.latency_ms.p99, .total.requests,
            (.total.errors | .status_4xx + .status_5xx + .timeout + .connect + .other),
            .total.latency_ms.p999] | @tsv' "$1"
}

# Medians and min–max of column COL for each label in runs.tsv: summary COL NAME.
summary() {
    local col=$1 name=$2
    awk -F'\t' -v col="$col" '{ print $1 "\t" $col }' "$BENCH_OUT/runs.tsv" | sort -t$'\t' -k1,1 -k2,2g |
        awk -F'\t' -v name="$name" '
            { v[$1] = v[$1] " " $2; n[$1]++ }
            END {
                for (k in v) {
                    split(substr(v[k], 2), a, " ")
                    m = n[k] % 2 ? a[(n[k] + 1) / 2] : (a[n[k] / 2] + a[n[k] / 2 + 1]) / 2
                    printf "%-36s %-14s median %10.3f  min %10.3f  max %10.3f  (n=%d)\n", k, name, m, a[1], a[n[k]], n[k]
                }
            }' | sort
}
