#!/usr/bin/env bash
# bench/proxies.sh — the gateway as a reverse proxy vs nginx vs haproxy, side by side.
#
# The three proxies front the same two upstreams on loopback:
#   hello  — `tideway bench-upstream` (bare axum, answers `hello` to anything) on :9100,
#            reached as /hello;
#   item   — `tideway serve catalog` (SQLite, seeded) on :9102, reached as
#            /api/v1/catalog/items/{id} (one seeded item).
# Proxies: the gateway (`tideway gateway`, routes from a generated tideway.toml) on :9180,
# nginx 1.22 (upstream keepalive 64, access log off) on :9181, haproxy 2.6 (http-reuse
# always, nbthread 2) on :9182. Tideway logs at `warn` so no proxy writes access logs.
#
# For each endpoint, each load and each round, the targets run in turn (A B C A B C …):
#   c8, c64 — wrk -t2 at saturation (closed loop): req/s and wrk's p99;
#   rate    — `tideway load --path … --rate R` (open loop, latency from the intended send
#             time): p50/p99/p99.9 at a fixed rate below saturation (R_HELLO, R_ITEM).
# Before each run the machine must be idle (< 5% busy for 3 s); CPU seconds of the proxy
# (all its threads and worker processes) come from /proc/<pid>/stat, and a run where other
# processes took more than BENCH_MAX_FOREIGN cores is discarded and repeated.
#
# Usage: bash bench/proxies.sh            (BENCH_ROUNDS=3 BENCH_SECS=8 R_HELLO=2000 R_ITEM=1000)
# Needs root for apt-get when nginx/haproxy/wrk are missing. Results: target/bench/proxies-*/
# runs.tsv (one line per run, columns in bench/lib.sh) and summary.txt.

source "$(dirname "$0")/lib.sh"
R_HELLO=${R_HELLO:-2000}
R_ITEM=${R_ITEM:-1000}
bench_setup proxies

DATA=$BENCH_OUT/data
mkdir -p "$DATA"
cat >"$BENCH_OUT/tideway.toml" <<EOF
data_dir = "$DATA"
demo_users = false

[log]
filter = "warn"

# The gateway knows upstreams by service name: "basket" stands for the hello server here.
[urls]
identity = "http://127.0.0.1:9101"
catalog = "http://127.0.0.1:9102"
basket = "http://127.0.0.1:9100"

[gateway]
listen = "127.0.0.1:9180"

[[gateway.routes]]
prefix = "/hello"
upstream = "basket"
read = "public"
write = "public"

[[gateway.routes]]
prefix = "/api/v1/catalog"
upstream = "catalog"
read = "public"
write = "role:admin"

[catalog]
listen = "127.0.0.1:9102"
EOF

cat >"$BENCH_OUT/nginx.conf" <<EOF
worker_processes 2;
pid $BENCH_OUT/nginx.pid;
error_log $BENCH_OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $BENCH_OUT/nginx-body;
    proxy_temp_path $BENCH_OUT/nginx-proxy;
    upstream hello { server 127.0.0.1:9100; keepalive 64; }
    upstream catalog { server 127.0.0.1:9102; keepalive 64; }
    server {
        listen 127.0.0.1:9181 reuseport;
        location /hello { proxy_pass http://hello; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location /api/v1/catalog/ { proxy_pass http://catalog; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF

cat >"$BENCH_OUT/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend proxy
    bind 127.0.0.1:9182
    use_backend hello if { path_beg /hello }
    default_backend catalog
backend hello
    server hello 127.0.0.1:9100
backend catalog
    server catalog 127.0.0.1:9102
EOF

export TIDEWAY_LOG__FILTER=warn
start upstream "$TIDEWAY_BIN" bench-upstream --listen 127.0.0.1:9100
start catalog "$TIDEWAY_BIN" --config "$BENCH_OUT/tideway.toml" serve catalog
wait_http http://127.0.0.1:9102/health/ready
start gateway "$TIDEWAY_BIN" --config "$BENCH_OUT/tideway.toml" gateway
start nginx nginx -c "$BENCH_OUT/nginx.conf" -g 'daemon off;'
start haproxy haproxy -db -f "$BENCH_OUT/haproxy.cfg"
for port in 9100 9180 9181 9182; do wait_http "http://127.0.0.1:$port/hello"; done

ITEM=$(curl -s 'http://127.0.0.1:9102/api/v1/catalog/items?page_size=1' | jq -r '.items[0].id')
log "item $ITEM"
for port in 9180 9181 9182; do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/v1/catalog/items/$ITEM")
    [[ $status == 200 ]] || { log "proxy :$port answered $status for the item"; exit 1; }
done

declare -A PORT=([gateway]=9180 [nginx]=9181 [haproxy]=9182)
declare -A TESTED=([gateway]=$PID_gateway [nginx]=$PID_nginx [haproxy]=$PID_haproxy)
declare -A PATHS=([hello]=/hello [item]=/api/v1/catalog/items/$ITEM)
declare -A RATE=([hello]=$R_HELLO [item]=$R_ITEM)
ALL="$PID_upstream $PID_catalog $PID_gateway $PID_nginx $PID_haproxy"

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for endpoint in hello item; do
        for load in c8 c64 rate; do
            for target in gateway nginx haproxy; do
                tested=${TESTED[$target]}
                own=$(tr ' ' '\n' <<<"$ALL" | grep -vx "$tested" | tr '\n' ' ')
                url="http://127.0.0.1:${PORT[$target]}${PATHS[$endpoint]}"
                label="$endpoint $load $target"
                if [[ $load == rate ]]; then
                    measure "$label" "$tested" "$own" load --target "http://127.0.0.1:${PORT[$target]}" \
                        --path "${PATHS[$endpoint]}" --rate "${RATE[$endpoint]}"
                else
                    measure "$label" "$tested" "$own" wrk "${load#c}" "$url"
                fi
            done
        done
    done
    log "round $round done"
done

{
    echo "proxies · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    echo "rate runs: hello $R_HELLO/s, item $R_ITEM/s (tideway load, open loop)"
    summary 2 "req/s|ok/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 7 "p99.9 ms"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
