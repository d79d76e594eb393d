//! Flags shared between processes over a NATS KV key.
//!
//! Every process of the distributed shape (gateways, services) watches the key `flags` of
//! one bucket. A change made in a process ([`ChangeKind::Local`]: admin API, file) is put
//! there with its author; every process applies what arrives (validated, as a
//! [`ChangeKind::Shared`] change, never put back, so nothing echoes). The watch starts
//! with the key's last value, so a process started after a change runs the shared set
//! rather than its file's.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{ChangeKind, FlagSet, Flags};

/// The key of the shared set in its bucket.
const KEY: &str = "flags";

/// How long connecting to NATS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why sharing could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// NATS did not answer.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bucket cannot be opened, created or watched.
    #[error("cannot use the flags bucket {bucket}")]
    Bucket {
        /// Which.
        bucket: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a process puts in the bucket: the set and who made it.
#[derive(Serialize, Deserialize)]
struct Shared {
    by: String,
    flags: FlagSet,
}

/// Shares a process's flag changes with every other process through a NATS KV key, and
/// applies theirs. Stops when dropped.
pub struct SharedFlags {
    cancel: CancellationToken,
}

impl std::fmt::Debug for SharedFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFlags").finish_non_exhaustive()
    }
}

impl Drop for SharedFlags {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl SharedFlags {
    /// Connects to `url`, opens (or creates) `bucket`, applies the set last put there (if
    /// any) and starts sharing `flags`' changes. Answers once the watch is in place.
    pub async fn start(url: &str, bucket: &str, flags: Flags) -> Result<Self, ShareError> {
        let connect_error =
            |source: Box<dyn std::error::Error + Send + Sync>| ShareError::Connect {
                url: url.to_owned(),
                source,
            };
        let client = tokio::time::timeout(CONNECT_TIMEOUT, async_nats::connect(url))
            .await
            .map_err(|elapsed| connect_error(Box::new(elapsed)))?
            .map_err(|err| connect_error(Box::new(err)))?;
        let bucket_error = |source: Box<dyn std::error::Error + Send + Sync>| ShareError::Bucket {
            bucket: bucket.to_owned(),
            source,
        };
        let js = jetstream::new(client);
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => {
                // Created as a stream, as the gateway's and discovery's buckets are
                // (async-nats' `create_key_value` cannot parse NATS 2.9's account answer).
                js.get_or_create_stream(jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some("Tideway feature flags shared by every process".into()),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    storage: jetstream::stream::StorageType::Memory,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    ..jetstream::stream::Config::default()
                })
                .await
                .map_err(|err| bucket_error(Box::new(err)))?;
                js.get_key_value(bucket)
                    .await
                    .map_err(|err| bucket_error(Box::new(err)))?
            }
        };
        // The last value first: a process started after a change follows it at once.
        if let Ok(Some(bytes)) = store.get(KEY).await {
            apply(&flags, &bytes, None);
        }
        let updates = store
            .watch(KEY)
            .await
            .map_err(|err| bucket_error(Box::new(err)))?;
        let cancel = CancellationToken::new();
        tokio::spawn(publish(store, flags.clone(), cancel.clone()));
        tokio::spawn(follow(updates, flags, cancel.clone()));
        Ok(Self { cancel })
    }
}

/// Puts every change made in this process in the bucket.
async fn publish(store: kv::Store, flags: Flags, stop: CancellationToken) {
    let mut changes = flags.changes();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let change = changes.borrow_and_update().clone();
        let Some(change) = change.filter(|change| change.kind == ChangeKind::Local) else {
            continue;
        };
        let shared = Shared {
            by: change.by,
            flags: change.after,
        };
        match serde_json::to_vec(&shared) {
            Ok(bytes) => {
                if let Err(err) = store.put(KEY, bytes.into()).await {
                    tracing::warn!(error = %err, "The flag change was not shared with the other processes.");
                }
            }
            Err(err) => tracing::warn!(error = %err, "The flags cannot be encoded."),
        }
    }
}

/// Applies what other processes put in the bucket.
async fn follow(mut updates: kv::Watch, flags: Flags, stop: CancellationToken) {
    loop {
        let entry = tokio::select! {
            () = stop.cancelled() => return,
            entry = updates.next() => entry,
        };
        let Some(entry) = entry else {
            tracing::warn!("The shared flags' watch ended.");
            return;
        };
        match entry {
            Ok(entry) if entry.operation == kv::Operation::Put => {
                apply(&flags, &entry.value, Some(entry.revision));
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "Reading the shared flags failed."),
        }
    }
}

/// Applies one shared value unless it is the running set already (this process's own
/// change coming back).
fn apply(flags: &Flags, bytes: &[u8], revision: Option<u64>) {
    let shared: Shared = match serde_json::from_slice(bytes) {
        Ok(shared) => shared,
        Err(err) => {
            tracing::warn!(error = %err, "The shared flags cannot be read; the running set stays.");
            return;
        }
    };
    if *flags.current().1 == shared.flags {
        return;
    }
    match flags.apply_shared(shared.flags, &shared.by) {
        Ok(version) => tracing::info!(
            version,
            by = shared.by,
            revision,
            "Applied the flags another process applied."
        ),
        Err(err) => {
            tracing::warn!(error = %err, "The shared flags were refused; the running set stays.")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{Flag, FlagContext};

    const NATS: &str = "nats://127.0.0.1:4222";

    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn panel_on() -> FlagSet {
        FlagSet([("panel".to_owned(), Flag::on())].into_iter().collect())
    }

    #[tokio::test]
    async fn a_change_in_one_process_reaches_every_other_through_nats() {
        let bucket = format!("test_flags_{}", uuid::Uuid::new_v4().simple());
        let (a, b, c) = (Flags::default(), Flags::default(), Flags::default());
        let _a = SharedFlags::start(NATS, &bucket, a.clone())
            .await
            .expect("a");
        let _b = SharedFlags::start(NATS, &bucket, b.clone())
            .await
            .expect("b");
        let _c = SharedFlags::start(NATS, &bucket, c.clone())
            .await
            .expect("c");
        let anonymous = FlagContext::anonymous();

        let started = Instant::now();
        a.replace(panel_on(), "ops").expect("valid");
        until("b and c follow a", || {
            b.enabled("panel", &anonymous) && c.enabled("panel", &anonymous)
        })
        .await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");

        // And back from another process; nobody echoes.
        b.replace(FlagSet::default(), "ops2").expect("valid");
        until("a and c follow b", || {
            !a.enabled("panel", &anonymous) && !c.enabled("panel", &anonymous)
        })
        .await;
        let versions = (a.version(), b.version(), c.version());
        assert_eq!(versions, (3, 3, 3));
        // A process started now runs the last shared set at once.
        let late = Flags::new(panel_on()).expect("valid");
        let _late = SharedFlags::start(NATS, &bucket, late.clone())
            .await
            .expect("late");
        assert!(!late.enabled("panel", &anonymous), "the shared set wins");
        // Nothing more arrives: a short quiet period changes no version.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!((a.version(), b.version(), c.version()), versions, "no echo");
    }
}
