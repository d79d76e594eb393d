use std::{
    convert::Infallible,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::Barrier,
};

use super::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn counted(loads: &AtomicUsize, value: Option<u32>) -> Result<Option<u32>, Infallible> {
    loads.fetch_add(1, Ordering::SeqCst);
    Ok(value)
}

#[tokio::test]
async fn a_hit_skips_the_load_and_none_is_cached_too() {
    let cache: Cache<u32> = Cache::memory("test_hits", Duration::from_secs(60), 100);
    let loads = AtomicUsize::new(0);
    for _ in 0..3 {
        let value = cache
            .get_or_load("a", || async { counted(&loads, Some(7)) })
            .await
            .unwrap();
        assert_eq!(value, Some(7));
        let missing = cache
            .get_or_load("missing", || async { counted(&loads, None) })
            .await
            .unwrap();
        assert_eq!(missing, None);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2, "one load per key");

    cache.invalidate("a").await;
    let value = cache
        .get_or_load("a", || async { counted(&loads, Some(8)) })
        .await
        .unwrap();
    assert_eq!(value, Some(8), "invalidated: loaded again");
    cache.invalidate_all().await;
    let missing = cache
        .get_or_load("missing", || async { counted(&loads, Some(1)) })
        .await
        .unwrap();
    assert_eq!(
        missing,
        Some(1),
        "a created item is found after invalidate_all"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn errors_are_not_cached_and_a_disabled_cache_always_loads() {
    let cache: Cache<u32> = Cache::memory("test_errors", Duration::from_secs(60), 100);
    let failed: Result<Option<u32>, &str> = cache.get_or_load("a", || async { Err("down") }).await;
    assert_eq!(failed, Err("down"));
    let loaded: Result<Option<u32>, &str> = cache.get_or_load("a", || async { Ok(Some(3)) }).await;
    assert_eq!(loaded, Ok(Some(3)));

    let off: Cache<u32> = Cache::disabled("test_off");
    let loads = AtomicUsize::new(0);
    for _ in 0..3 {
        off.get_or_load("a", || async { counted(&loads, Some(1)) })
            .await
            .unwrap();
    }
    assert_eq!(loads.load(Ordering::SeqCst), 3);
    assert!(!off.is_enabled());
}

#[tokio::test]
async fn entries_expire_after_their_time_to_live() {
    let cache: Cache<u32> = Cache::memory("test_ttl", Duration::from_millis(50), 100);
    let loads = AtomicUsize::new(0);
    cache
        .get_or_load("a", || async { counted(&loads, Some(1)) })
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let value = cache
            .get_or_load("a", || async { counted(&loads, Some(2)) })
            .await
            .unwrap();
        if value == Some(2) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the entry never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_value_loaded_across_an_invalidation_is_answered_but_not_stored() {
    let cache: Cache<u32> = Cache::memory("test_race", Duration::from_secs(60), 100);
    let value = cache
        .get_or_load("a", || async {
            // The event arrives while the (old) value is being read.
            cache.invalidate("a").await;
            Ok::<_, Infallible>(Some(1))
        })
        .await
        .unwrap();
    assert_eq!(value, Some(1));
    let value = cache
        .get_or_load("a", || async { Ok::<_, Infallible>(Some(2)) })
        .await
        .unwrap();
    assert_eq!(value, Some(2), "the stale value was not stored");
}

/// 100 concurrent misses on one key: one load, and everyone gets its value.
async fn one_load_for_concurrent_misses(cache: Cache<u32>) {
    let loads = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (cache, loads, barrier) = (cache.clone(), loads.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            cache
                .get_or_load("hot", || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // Long enough that every caller arrives while it runs.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, Infallible>(Some(42))
                })
                .await
                .unwrap()
        });
    }
    while let Some(value) = tasks.join_next().await {
        assert_eq!(value.unwrap(), Some(42));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "{cache:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_load_once_in_memory() {
    one_load_for_concurrent_misses(Cache::memory("test_flight", Duration::from_secs(60), 100))
        .await;
}

#[tokio::test]
async fn a_cancelled_load_lets_a_waiter_load() {
    let cache: Cache<u32> = Cache::memory("test_cancel", Duration::from_secs(60), 100);
    let first = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("a", || async {
                    std::future::pending::<()>().await;
                    Ok::<_, Infallible>(Some(1))
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    first.abort();
    let value = tokio::time::timeout(
        DEADLINE,
        cache.get_or_load("a", || async { Ok::<_, Infallible>(Some(2)) }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(value, Some(2));
}

#[test]
fn settings_are_checked_naming_the_field() {
    assert!(UseConfig::default().problem().is_none());
    assert!(Shared::default().problem().is_none());
    let bad = UseConfig {
        ttl_ms: 0,
        ..UseConfig::default()
    };
    assert_eq!(bad.problem().unwrap().0, "ttl_ms");
    let bad = UseConfig {
        capacity: 0,
        ..UseConfig::default()
    };
    assert_eq!(bad.problem().unwrap().0, "capacity");
    let bad = Shared {
        redis_url: "http://x".into(),
        ..Shared::default()
    };
    assert_eq!(bad.problem().unwrap().0, "redis_url");
    let bad = Shared {
        key_prefix: "a b".into(),
        ..Shared::default()
    };
    assert_eq!(bad.problem().unwrap().0, "key_prefix");
    let err = Cache::<u32>::new("x", &bad_use(), &Shared::default()).unwrap_err();
    assert!(err.to_string().contains("ttl_ms"), "{err}");
    let kind: UseConfig = serde_json::from_str(r#"{"kind": "redis"}"#).unwrap();
    assert_eq!(kind.kind, Kind::Redis);
    assert!(serde_json::from_str::<UseConfig>(r#"{"kind": "disk"}"#).is_err());
}

fn bad_use() -> UseConfig {
    UseConfig {
        ttl_ms: MAX_TTL_MS + 1,
        ..UseConfig::default()
    }
}

fn redis_url() -> String {
    std::env::var("TIDEWAY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Redis settings with a key prefix of this test's own, or `None` (outside CI) without Redis.
async fn redis_shared(url: &str) -> Option<Shared> {
    let reachable = match redis::Client::open(redis_url().as_str()) {
        Ok(client) => client.get_multiplexed_async_connection().await.is_ok(),
        Err(_) => false,
    };
    if !reachable {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is unreachable and CI=true"
        );
        eprintln!("note: skipping: Redis is unreachable");
        return None;
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    Some(Shared {
        redis_url: url.to_owned(),
        redis_timeout_ms: 500,
        key_prefix: format!("tideway:test:cache:{unique}"),
        ..Shared::default()
    })
}

fn redis_use() -> UseConfig {
    UseConfig {
        kind: Kind::Redis,
        ..UseConfig::default()
    }
}

#[tokio::test]
async fn on_redis_replicas_share_entries_and_invalidations() {
    let Some(shared) = redis_shared(&redis_url()).await else {
        return;
    };
    let a: Cache<String> = Cache::new("test_shared", &redis_use(), &shared).unwrap();
    let b: Cache<String> = Cache::new("test_shared", &redis_use(), &shared).unwrap();
    let loads = AtomicUsize::new(0);
    let load = |value: &'static str| {
        let loads = &loads;
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Some(value.to_owned()))
        }
    };
    assert_eq!(
        a.get_or_load("k", load("one")).await.unwrap().unwrap(),
        "one"
    );
    assert_eq!(
        b.get_or_load("k", load("two")).await.unwrap().unwrap(),
        "one"
    );
    let none = b
        .get_or_load("none", || async { Ok::<_, Infallible>(None) })
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(
        a.get_or_load("none", load("x")).await.unwrap(),
        None,
        "negative entries are shared"
    );
    a.invalidate("k").await;
    assert_eq!(
        b.get_or_load("k", load("three")).await.unwrap().unwrap(),
        "three"
    );
    b.invalidate_all().await;
    assert_eq!(
        a.get_or_load("none", load("four")).await.unwrap().unwrap(),
        "four"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 3);
    a.invalidate_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_load_once_on_redis() {
    let Some(shared) = redis_shared(&redis_url()).await else {
        return;
    };
    let cache: Cache<u32> = Cache::new("test_flight_redis", &redis_use(), &shared).unwrap();
    one_load_for_concurrent_misses(cache.clone()).await;
    cache.invalidate_all().await;
}

/// A TCP relay to Redis whose connections can be cut.
async fn relay(target: String) -> (String, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(tokio::sync::Notify::new());
    let cutter = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            let cutter = cutter.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = cutter.notified() => {}
                }
            });
        }
    });
    (format!("redis://{addr}"), cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_redis_connection_mid_traffic_is_never_an_error() {
    let url = redis_url();
    let Some(shared) = redis_shared(&url).await else {
        return;
    };
    let target = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let (relayed, cut) = relay(target).await;
    let shared = Shared {
        redis_url: relayed,
        ..shared
    };
    let cache: Cache<u32> = Cache::new("test_dropped", &redis_use(), &shared).unwrap();
    let mut served = 0;
    for round in 0..300_u32 {
        if round % 50 == 25 {
            // Every connection through the relay is cut, as a Redis restart would.
            cut.notify_waiters();
        }
        let key = format!("k{}", round % 10);
        let value: Result<Option<u32>, &str> = cache
            .get_or_load(&key, || async { Ok(Some(round % 10)) })
            .await;
        assert_eq!(value, Ok(Some(round % 10)), "round {round}");
        served += 1;
    }
    assert_eq!(served, 300);
    cache.invalidate_all().await;
}

#[tokio::test]
async fn without_redis_reads_go_to_the_loader() {
    // Nothing listens on this port: every Redis command fails at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let shared = Shared {
        redis_url: format!("redis://127.0.0.1:{port}"),
        redis_timeout_ms: 200,
        ..Shared::default()
    };
    let cache: Cache<u32> = Cache::new("test_down", &redis_use(), &shared).unwrap();
    let loads = AtomicUsize::new(0);
    for _ in 0..5 {
        let value = cache
            .get_or_load("a", || async { counted(&loads, Some(9)) })
            .await
            .unwrap();
        assert_eq!(value, Some(9));
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        5,
        "every read loaded directly"
    );
    cache.invalidate("a").await;
    cache.invalidate_all().await;
}
