//! A registry in a NATS JetStream KV bucket, for `tideway up --distributed`.
//!
//! Each replica puts `<service>.<instance id>` → its [`Instance`] as JSON once it is ready,
//! and re-puts it every TTL/3 from a heartbeat task owned by its [`Registration`]. The bucket
//! keeps one value per key (`history = 1`, memory storage) for at most the TTL (`max_age`),
//! so a replica that stops heartbeating disappears from the bucket. Deregistering deletes
//! the key, which watchers see at once as a delete marker.
//!
//! Watchers follow the bucket through a KV watch on `<service>.>` (replaying the last value
//! of each key, then every change). NATS 2.9 removes expired values without telling
//! watchers, so each watcher also keeps the time of every instance's last heartbeat — from
//! the server's timestamp of the value — and drops instances whose last heartbeat is older
//! than the TTL, checked every TTL/10.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use async_nats::jetstream::{
    self,
    kv::{self, Operation},
};
use futures_util::StreamExt;
use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, info_span, instrument, warn};

use crate::{
    BoxFuture, DiscoveryError, Instance, Registration, Registry, check_token, config::MIN_TTL_MS,
};

/// How long a watcher waits before re-creating a KV watch that ended.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// How to reach the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// The server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The KV bucket, created (memory storage, `max_age` = TTL) when missing.
    pub bucket: String,
    /// How long a record lives without a heartbeat; heartbeats run every TTL/3.
    pub ttl: Duration,
    /// How long to wait for the server when connecting.
    pub connect_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            bucket: "tideway_registry".to_owned(),
            ttl: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A registry in a NATS KV bucket with TTL heartbeats; see the [module docs](self).
#[derive(Debug)]
pub struct NatsRegistry {
    store: kv::Store,
    ttl: Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// What a watcher knows of one key.
#[derive(Debug)]
struct Seen {
    instance: Instance,
    /// When the instance last heartbeat, on this process's clock.
    at: Instant,
}

/// A watcher's view of one service.
#[derive(Debug)]
struct View {
    prefix: String,
    ttl: Duration,
    live: BTreeMap<String, Seen>,
    /// The newest revision applied per key (deletes too), so a replayed value never
    /// overrides a newer one.
    revisions: HashMap<String, u64>,
}

impl NatsRegistry {
    /// Connects to the server and opens (or creates) the bucket.
    #[instrument(skip_all, fields(url = %options.url, bucket = %options.bucket), err)]
    pub async fn connect(options: NatsOptions) -> Result<Self, DiscoveryError> {
        check_token("bucket", &options.bucket)?;
        if options.ttl < Duration::from_millis(MIN_TTL_MS) {
            return Err(DiscoveryError::invalid(
                "ttl",
                format!("{:?} is shorter than {MIN_TTL_MS} ms", options.ttl),
            ));
        }
        let connecting = async_nats::ConnectOptions::new()
            .connection_timeout(options.connect_timeout)
            .connect(options.url.as_str());
        let client = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|elapsed| DiscoveryError::backend("connect to NATS", elapsed))?
            .map_err(|err| DiscoveryError::backend("connect to NATS", err))?;
        let jetstream = jetstream::new(client);
        let store = match jetstream.get_key_value(options.bucket.as_str()).await {
            Ok(store) => store,
            Err(_) => {
                // The stream a KV bucket is, created directly: async-nats' `create_key_value`
                // first queries the account, whose answer from NATS 2.9 it cannot parse.
                let bucket = &options.bucket;
                let created = jetstream
                    .get_or_create_stream(jetstream::stream::Config {
                        name: format!("KV_{bucket}"),
                        description: Some(
                            "Tideway service registry: <service>.<instance id>".into(),
                        ),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 1,
                        max_age: options.ttl,
                        duplicate_window: options.ttl.min(Duration::from_secs(120)),
                        storage: jetstream::stream::StorageType::Memory,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: jetstream::stream::DiscardPolicy::New,
                        ..jetstream::stream::Config::default()
                    })
                    .await
                    .map_err(|err| DiscoveryError::backend("create the registry bucket", err))?;
                drop(created);
                jetstream
                    .get_key_value(bucket.as_str())
                    .await
                    .map_err(|err| DiscoveryError::backend("open the registry bucket", err))?
            }
        };
        // Replicas must agree on the TTL: a watcher prunes by its own, the bucket expires by
        // the one it was created with.
        match store.status().await {
            Ok(status) if status.max_age() != options.ttl => warn!(
                bucket_ttl = ?status.max_age(),
                ttl = ?options.ttl,
                "The registry bucket was created with another TTL; set the same `discovery.nats.ttl_ms` everywhere."
            ),
            Ok(_) => {}
            Err(err) => warn!(error = %err, "Reading the registry bucket's settings failed."),
        }
        Ok(Self {
            store,
            ttl: options.ttl,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// How long a record lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often a registration re-puts its record.
    pub fn heartbeat_interval(&self) -> Duration {
        self.ttl / 3
    }

    async fn list(&self, service: &str) -> Result<Vec<(u64, Instance, Duration)>, DiscoveryError> {
        let prefix = format!("{service}.");
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|err| DiscoveryError::backend("list the registry", err))?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|err| DiscoveryError::backend("list the registry", err))?;
            if !key.starts_with(&prefix) {
                continue;
            }
            let entry = self
                .store
                .entry(key.as_str())
                .await
                .map_err(|err| DiscoveryError::backend("read a registry entry", err))?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                continue;
            };
            match serde_json::from_slice::<Instance>(&entry.value) {
                Ok(instance) => {
                    found.push((entry.revision, instance, age(entry.created, self.ttl)))
                }
                Err(err) => {
                    warn!(key, error = %err, "Skipping a registry entry that is not an instance.")
                }
            }
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(found)
    }

    async fn start_watch(
        &self,
        service: &str,
    ) -> Result<watch::Receiver<Vec<Instance>>, DiscoveryError> {
        check_token("service", service)?;
        // Watch first, then list: whatever changes after the listing reaches the watch.
        let entries = self
            .store
            .watch_with_history(format!("{service}.>"))
            .await
            .map_err(|err| DiscoveryError::backend("watch the registry", err))?;
        let mut view = View {
            prefix: format!("{service}."),
            ttl: self.ttl,
            live: BTreeMap::new(),
            revisions: HashMap::new(),
        };
        let now = Instant::now();
        for (revision, instance, age) in self.list(service).await? {
            let key = format!("{}{}", view.prefix, instance.id);
            view.revisions.insert(key.clone(), revision);
            let at = now.checked_sub(age).unwrap_or(now);
            view.live.insert(key, Seen { instance, at });
        }
        let (sender, receiver) = watch::channel(view.instances());
        let task = watcher(
            self.store.clone(),
            service.to_owned(),
            view,
            entries,
            sender,
            self.cancel.clone(),
        );
        self.tasks
            .spawn(task.instrument(info_span!("registry_watch", service)));
        Ok(receiver)
    }
}

impl Registry for NatsRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, DiscoveryError>> {
        Box::pin(async move {
            instance.check()?;
            let key = format!("{}.{}", instance.service, instance.id);
            let value = bytes::Bytes::from(serde_json::to_vec(&instance)?);
            self.store
                .put(key.as_str(), value.clone())
                .await
                .map_err(|err| DiscoveryError::backend("register an instance", err))?;
            info!(key, address = %instance.address, "Registered an instance.");
            let cancel = CancellationToken::new();
            let tasks = TaskTracker::new();
            let beat = heartbeat(
                self.store.clone(),
                key.clone(),
                value,
                self.heartbeat_interval(),
                cancel.clone(),
            );
            tasks.spawn(beat.instrument(info_span!("registry_heartbeat", key)));
            let store = self.store.clone();
            let remove = Box::new(move || -> BoxFuture<'static, Result<(), DiscoveryError>> {
                Box::pin(async move {
                    store
                        .delete(key.as_str())
                        .await
                        .map_err(|err| DiscoveryError::backend("deregister an instance", err))?;
                    info!(key, "Deregistered an instance.");
                    Ok(())
                })
            });
            Ok(Registration::new(instance, cancel, tasks, remove))
        })
    }

    fn instances<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, DiscoveryError>> {
        Box::pin(async move {
            check_token("service", service)?;
            let ttl = self.ttl;
            Ok(self
                .list(service)
                .await?
                .into_iter()
                .filter(|(_, _, age)| *age < ttl)
                .map(|(_, instance, _)| instance)
                .collect())
        })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<watch::Receiver<Vec<Instance>>, DiscoveryError>> {
        Box::pin(self.start_watch(service))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.cancel.cancel();
            self.tasks.close();
            self.tasks.wait().await;
        })
    }
}

impl View {
    fn instances(&self) -> Vec<Instance> {
        let mut list: Vec<Instance> = self.live.values().map(|s| s.instance.clone()).collect();
        list.sort();
        list
    }

    /// Applies one change from the watch.
    fn apply(&mut self, entry: kv::Entry) {
        if !entry.key.starts_with(&self.prefix) {
            return;
        }
        if self
            .revisions
            .get(&entry.key)
            .is_some_and(|&known| known >= entry.revision)
        {
            return;
        }
        self.revisions.insert(entry.key.clone(), entry.revision);
        match entry.operation {
            Operation::Put => match serde_json::from_slice::<Instance>(&entry.value) {
                Ok(instance) => {
                    let now = Instant::now();
                    let at = now.checked_sub(age(entry.created, self.ttl)).unwrap_or(now);
                    self.live.insert(entry.key, Seen { instance, at });
                }
                Err(err) => {
                    warn!(key = entry.key, error = %err, "Skipping a registry entry that is not an instance.");
                }
            },
            Operation::Delete | Operation::Purge => {
                self.live.remove(&entry.key);
            }
        }
    }

    /// Drops instances whose last heartbeat is older than the TTL.
    fn prune(&mut self) {
        let ttl = self.ttl;
        self.live.retain(|key, seen| {
            let fresh = seen.at.elapsed() < ttl;
            if !fresh {
                info!(key, "An instance stopped heartbeating; dropping it.");
            }
            fresh
        });
    }
}

/// How old a value written at `created` (server time) is, within `[0, ttl]` so clock skew
/// between hosts can neither keep an instance forever nor drop a fresh one early.
fn age(created: time::OffsetDateTime, ttl: Duration) -> Duration {
    let elapsed = time::OffsetDateTime::now_utc() - created;
    Duration::try_from(elapsed)
        .unwrap_or(Duration::ZERO)
        .min(ttl)
}

/// Re-puts `value` at `key` every `interval` until `cancel`.
async fn heartbeat(
    store: kv::Store,
    key: String,
    value: bytes::Bytes,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        // Not raced against the cancel: a put in flight completes before deregistering
        // deletes the key, so it cannot re-create it afterwards.
        match store.put(key.as_str(), value.clone()).await {
            Ok(revision) => debug!(revision, "Heartbeat."),
            Err(err) => warn!(error = %err, "A heartbeat failed; retrying at the next one."),
        }
    }
}

/// Follows `entries` into `sender` until `cancel` or until no receiver is left.
async fn watcher(
    store: kv::Store,
    service: String,
    mut view: View,
    mut entries: kv::Watch,
    sender: watch::Sender<Vec<Instance>>,
    cancel: CancellationToken,
) {
    let mut prune = tokio::time::interval(view.ttl / 10);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = sender.closed() => break,
            _ = prune.tick() => view.prune(),
            entry = entries.next() => match entry {
                Some(Ok(entry)) => view.apply(entry),
                Some(Err(err)) => warn!(error = %err, "The registry watch failed on an entry."),
                None => {
                    warn!("The registry watch ended; watching again.");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(REWATCH_DELAY) => {}
                    }
                    match store.watch_with_history(format!("{service}.>")).await {
                        Ok(again) => entries = again,
                        Err(err) => warn!(error = %err, "Watching the registry again failed."),
                    }
                }
            },
        }
        let next = view.instances();
        sender.send_if_modified(|current| {
            if *current == next {
                false
            } else {
                *current = next;
                true
            }
        });
    }
    debug!("The registry watch stopped.");
}
