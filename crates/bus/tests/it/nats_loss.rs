//! A NATS server that comes back without its state: the test runs a nats-server of its own
//! (own port, own store directory), kills it mid-traffic while events sit unconsumed in its
//! stream, starts a new one on an empty store, and finds every event delivered — the
//! stream and consumer recreated, the lost events published again from the outbox.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tideway_bus::{
    Event, NatsBus, NatsOptions, Publisher, SubscribeOptions, Subscriber,
    outbox::{self, Relay, RelayOptions},
};
use tideway_testkit::eventually_async;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::helpers::{OrderPlaced, placed};

const DEADLINE: Duration = Duration::from_secs(90);
/// Events handled before the server is lost; the next ones wait in its stream.
const HANDLED_BEFORE: u32 = 20;
const BEFORE: u32 = 40;
const AFTER: u32 = 20;

/// A nats-server with JetStream on `port`, storing under `dir`; killed on drop.
struct Server(Child);

impl Server {
    fn start(port: u16, dir: &Path) -> Option<Self> {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(Self(child)),
            Err(err) => {
                assert!(
                    !tideway_testkit::is_ci(),
                    "nats-server cannot start and CI=true: {err}"
                );
                eprintln!("note: skipping: nats-server cannot start ({err}); run scripts/deps.sh");
                None
            }
        }
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(options: &NatsOptions) -> NatsBus {
    let bus: Mutex<Option<NatsBus>> = Mutex::default();
    eventually_async(DEADLINE, "the test nats-server to answer", || async {
        let connected = NatsBus::connect(options.clone()).await.ok();
        let ok = connected.is_some();
        *bus.lock().unwrap() = connected;
        ok
    })
    .await;
    bus.into_inner().unwrap().unwrap()
}

#[tokio::test]
async fn a_server_back_on_an_empty_store_gets_its_stream_and_consumers_again_and_every_event() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let first_store = tempfile::tempdir().unwrap();
    let Some(first) = Server::start(port, first_store.path()) else {
        return;
    };
    let options = NatsOptions {
        url: format!("nats://127.0.0.1:{port}"),
        stream: "LOSS".to_owned(),
        root: "loss".to_owned(),
        duplicate_window: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
        ..NatsOptions::default()
    };
    let bus = connect(&options).await;

    // The consumer records every event; past the first ones it waits at a gate, so the
    // rest stay unconsumed in the stream that will be lost.
    let received: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let (gate, gate_rx) = watch::channel(false);
    let handler = {
        let received = received.clone();
        move |event: Event| {
            let received = received.clone();
            let mut gate = gate_rx.clone();
            async move {
                let n = event.decode::<OrderPlaced>()?.n;
                if n > HANDLED_BEFORE {
                    let _ = gate.wait_for(|open| *open).await;
                }
                received.lock().unwrap().insert(n);
                Ok::<_, anyhow::Error>(())
            }
        }
    };
    bus.subscribe(
        SubscribeOptions::new("inventory", "tideway.ordering.*"),
        Arc::new(handler),
    )
    .await
    .unwrap();

    let db = tideway_testkit::sqlite().await;
    outbox::install(&db).await.unwrap();
    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    let waker = Relay::new(
        db.clone(),
        Arc::new(bus.clone()),
        RelayOptions {
            retry_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(1),
            ..RelayOptions::default()
        },
    )
    .spawn(&tracker, token.clone());
    let enqueue = |range: std::ops::RangeInclusive<u32>| {
        let db = &db;
        let waker = &waker;
        async move {
            for n in range {
                let mut tx = db.begin().await.unwrap();
                outbox::enqueue(&mut tx, &placed(n)).await.unwrap();
                tx.commit().await.unwrap();
                waker.wake();
            }
        }
    };
    enqueue(1..=BEFORE).await;
    eventually_async(DEADLINE, "the first events handled, all stored", || async {
        received.lock().unwrap().len() >= HANDLED_BEFORE as usize
            && outbox::pending(&db).await.unwrap() == 0
    })
    .await;

    // The server dies; a new one starts on the same port with an empty store.
    first.kill();
    let second_store = tempfile::tempdir().unwrap();
    let _second = Server::start(port, second_store.path()).unwrap();
    gate.send_replace(true);
    enqueue(BEFORE + 1..=BEFORE + AFTER).await;

    eventually_async(DEADLINE, "every event delivered", || async {
        received.lock().unwrap().len() == (BEFORE + AFTER) as usize
    })
    .await;
    assert_eq!(
        *received.lock().unwrap(),
        (1..=BEFORE + AFTER).collect::<BTreeSet<_>>()
    );
    assert!(bus.losses() >= 1, "the loss was noticed");
    // The new server has the stream and the consumer again.
    let mut stream = bus.jetstream().get_stream("LOSS").await.unwrap();
    assert!(stream.info().await.unwrap().state.messages >= u64::from(AFTER));
    token.cancel();
    tracker.close();
    tracker.wait().await;
    bus.shutdown().await;
}
