#!/usr/bin/env bash
# bench/profile.sh — where the CPU goes: a flat perf profile (self time per symbol) of
#   gateway — `tideway gateway` proxying /hello to `tideway bench-upstream`, and
#   item      — `tideway up` serving /api/v1/catalog/items/{id} (gateway → catalog in-process),
# each under wrk -t2 -c8 for PROFILE_SECS (default 10).
#
# perf's hardware counters are not available in this VM (`perf stat -e instructions true`
# says <not supported>), so this samples the software clock: perf record -e cpu-clock.
# Needs linux-perf (installed from Debian when missing). Release builds keep line tables
# (profile.release debug = "line-tables-only"), so symbols resolve.
#
# Usage: bash bench/profile.sh    Results: target/bench/profile-*/{gateway,item}.txt

source "$(dirname "$0")/lib.sh"
PROFILE_SECS=${PROFILE_SECS:-10}
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
bench_setup profile

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
cat >"$BENCH_OUT/tideway.toml" <<EOF
data_dir = "$BENCH_OUT/data"
[urls]
identity = "http://127.0.0.1:9401"
catalog = "http://127.0.0.1:9402"
basket = "http://127.0.0.1:9400"
[gateway]
listen = "127.0.0.1:9480"
[[gateway.routes]]
prefix = "/hello"
upstream = "basket"
read = "public"
write = "public"
EOF
start upstream "$TIDEWAY_BIN" bench-upstream --listen 127.0.0.1:9400
start gateway "$TIDEWAY_BIN" --config "$BENCH_OUT/tideway.toml" gateway
start one env TIDEWAY_DATA_DIR="$BENCH_OUT/one" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9490 "$TIDEWAY_BIN" up
wait_http http://127.0.0.1:9480/hello
for i in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9490/health/ready) == 200 ]] && break
    sleep 0.2
done
ITEM=$(curl -s 'http://127.0.0.1:9490/api/v1/catalog/items?page_size=1' | jq -r '.items[0].id')

# Context switches of a process and its children, all threads.
switches() {
    local pid t sum=0
    for pid in "$1" $(pgrep -P "$1" || true); do
        for t in /proc/"$pid"/task/*/status; do
            sum=$((sum + $(awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "$t" 2>/dev/null || echo 0)))
        done
    done
    echo $sum
}

# Context switches per request under wrk -c8, perf off (a handoff between threads costs a
# wakeup, which is dear in a VM).
per_request_switches() {
    local name=$1 pid=$2 url=$3 s0 s1 n
    wait_idle
    s0=$(switches "$pid")
    n=$(wrk -t2 -c8 -d5s "$url" | awk '/requests in/ { print $1 }')
    s1=$(switches "$pid")
    awk -v s=$((s1 - s0)) -v n="$n" -v name="$name" 'BEGIN { printf "%s: %d requests, %.2f context switches per request\n", name, n, s / n }' |
        tee -a "$BENCH_OUT/switches.txt"
}

profile() {
    local name=$1 pid=$2 url=$3
    wait_idle
    perf record -q -e cpu-clock -F 1999 -p "$pid" -o "$BENCH_OUT/$name.data" -- sleep "$PROFILE_SECS" &
    local perf_pid=$!
    wrk -t2 -c8 -d"${PROFILE_SECS}s" "$url" >"$BENCH_OUT/$name.wrk"
    wait "$perf_pid" || true
    perf report -i "$BENCH_OUT/$name.data" --no-children --sort symbol --percent-limit 0.7 --stdio \
        2>/dev/null | grep -v '^#' | grep -v '^$' >"$BENCH_OUT/$name.txt"
    log "$name: $(grep Requests/sec "$BENCH_OUT/$name.wrk"); profile in $BENCH_OUT/$name.txt"
}
cat >"$BENCH_OUT/nginx.conf" <<EOF
worker_processes 2;
pid $BENCH_OUT/nginx.pid;
error_log $BENCH_OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream hello { server 127.0.0.1:9400; keepalive 64; }
    server {
        listen 127.0.0.1:9481;
        location /hello { proxy_pass http://hello; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
start nginx nginx -c "$BENCH_OUT/nginx.conf" -g 'daemon off;'
wait_http http://127.0.0.1:9481/hello
per_request_switches "gateway /hello" "$PID_gateway" http://127.0.0.1:9480/hello
per_request_switches "nginx /hello" "$PID_nginx" http://127.0.0.1:9481/hello
per_request_switches "bench-upstream (behind nginx)" "$PID_upstream" http://127.0.0.1:9481/hello
per_request_switches "up /api/v1/catalog/items/{id}" "$PID_one" "http://127.0.0.1:9490/api/v1/catalog/items/$ITEM"
profile gateway "$PID_gateway" http://127.0.0.1:9480/hello
profile item "$PID_one" "http://127.0.0.1:9490/api/v1/catalog/items/$ITEM"
