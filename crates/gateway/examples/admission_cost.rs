//! What the gateway's rate limit check costs per request, side by side.
//!
//! Three gateways in this process route `/hello` to an in-process hello upstream, so no
//! socket is in the way and the whole difference is the admission step:
//!
//! * `off`    — no rules;
//! * `local`  — one rule on every path keyed by client address, in process (governor);
//! * `global` — the same rule on Redis (`TIDEWAY_BENCH_REDIS_URL`, default 127.0.0.1:6379).
//!
//! Each request goes through the gateway's whole router (request id, metrics, routing,
//! admission, the in-process upstream). The rule's burst is far above what a run sends,
//! so every request is checked and none refused. Runs are interleaved (off local global
//! off …) on a current-thread runtime, and each reports the CPU time of this thread
//! (`/proc/thread-self/schedstat`) per request; the summary gives medians and min–max.
//!
//! `cargo run --release -p tideway-gateway --example admission_cost -- [ROUNDS] [REQUESTS]`
//! (`bench/admission.sh` runs it).
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark fails loudly on any unexpected error"
)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo, http::Request, routing::get};
use tideway_gateway::{
    Access, Gateway, GatewayConfig, LimitKey, LimitStore, RateLimitConfig, RateRule, RouteConfig,
};
use tideway_runtime::{
    auth::{JwtVerifier, TokenSigner},
    client::Transport,
};
use tower::ServiceExt;

fn gateway(rate_limit: RateLimitConfig) -> Router {
    let signer = TokenSigner::generate().unwrap();
    let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
    let hello = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/health/ready", get(|| async { "ok" }));
    let config = GatewayConfig {
        routes: vec![RouteConfig::new(
            "/hello",
            "hello",
            Access::Public,
            Access::Public,
        )],
        rate_limit,
        ..GatewayConfig::default()
    };
    let upstreams = HashMap::from([(
        "hello".to_owned(),
        Transport::in_process("hello", hello, Duration::from_secs(5)),
    )]);
    Gateway::new(&config, upstreams, verifier).unwrap().router()
}

/// CPU time of this thread so far.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// Sends `n` requests one after another; answers (CPU µs, wall µs) per request.
async fn run(router: &Router, n: u32) -> (f64, f64) {
    let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    for _ in 0..n {
        let mut request = Request::get("/hello").body(Body::empty()).unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(request).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let _ = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    (per(thread_cpu() - cpu0), per(wall0.elapsed()))
}

fn median(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let mid = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (mid, values[0], values[n - 1])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let requests: u32 = args.next().map_or(100_000, |a| a.parse().unwrap());
    let redis_url = std::env::var("TIDEWAY_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rule = RateRule::new("everyone", "/", &[], LimitKey::Ip, 1_000_000_000, 2_000_000_000);
        let local = RateLimitConfig {
            rules: vec![rule.clone()],
            ..RateLimitConfig::default()
        };
        let global = RateLimitConfig {
            store: LimitStore::Global,
            redis_url,
            key_prefix: format!("tideway-bench:{}", std::process::id()),
            redis_timeout_ms: 1_000,
            fail_open: false,
            rules: vec![rule],
            ..RateLimitConfig::default()
        };
        let variants = [
            ("off", gateway(RateLimitConfig::default()), requests),
            ("local", gateway(local), requests),
            // Each request waits for a Redis round trip: fewer of them.
            ("global", gateway(global), requests / 5),
        ];
        // Warm up every variant (connections, allocator, caches).
        for (_, router, n) in &variants {
            run(router, (*n / 10).max(100)).await;
        }
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        let mut wall: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 1..=rounds {
            for (i, (name, router, n)) in variants.iter().enumerate() {
                let (c, w) = run(router, *n).await;
                println!("round {round} {name:6} {n:7} requests: {c:7.2} µs CPU, {w:7.2} µs wall per request");
                cpu[i].push(c);
                wall[i].push(w);
            }
        }
        println!("\nmedians of {rounds} rounds (min–max), per request:");
        let (off_cpu, _, _) = median(&mut cpu[0].clone());
        for (i, (name, _, _)) in variants.iter().enumerate() {
            let (c, c_min, c_max) = median(&mut cpu[i]);
            let (w, w_min, w_max) = median(&mut wall[i]);
            println!(
                "{name:6} CPU {c:6.2} µs ({c_min:.2}–{c_max:.2}), +{:5.2} µs vs off; wall {w:6.2} µs ({w_min:.2}–{w_max:.2})",
                c - off_cpu
            );
        }
    });
}
