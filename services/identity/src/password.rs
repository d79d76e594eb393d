//! Password hashing: Argon2id (v19, the crate's default cost) with a random salt, always on
//! the blocking pool so a hash never stalls the async workers.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use rand::RngCore;
use tokio::sync::Semaphore;

/// Why a request's hash was not computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot is busy and the queue is full, or a slot did not free up in
    /// time: the request is refused (503) instead of waiting without bound.
    #[error("password hashing is saturated")]
    Busy,
    /// The hash failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Password hashing for requests, bounded: at most `running` hashes at once (each takes
/// about 19 MiB and a core for a few tens of milliseconds), at most `queued` more waiting,
/// each for at most `queue_timeout`. The rest are refused at once, so a flood of logins or
/// registrations costs bounded memory and threads instead of one blocking thread and one
/// Argon2 buffer per request.
#[derive(Debug, Clone)]
pub struct Hasher {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Hasher {
    /// A hasher running `running` hashes at once with `queued` more allowed to wait.
    pub fn new(running: usize, queued: usize, queue_timeout: Duration) -> Self {
        let running = running.max(1);
        Self {
            running: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(Semaphore::new(running + queued)),
            queue_timeout,
        }
    }

    /// Runs `work` on the blocking pool once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            return Err(HashError::Busy);
        };
        let permit = tokio::time::timeout(self.queue_timeout, self.running.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .context("the hashing task failed")?;
        Ok(result)
    }

    /// [`hash`], bounded.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        Ok(self.run(move || hash_blocking(&password)).await??)
    }

    /// [`verify`], bounded.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HashError> {
        self.run(move || verify_blocking(&password, &hash)).await
    }
}

/// Hashes `password` into a PHC string (`$argon2id$v=19$…`).
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .context("the hashing task failed")?
}

/// Whether `password` matches the PHC string `hash`. A malformed hash never matches.
pub async fn verify(password: String, hash: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
        .await
        .context("the verification task failed")
}

pub(crate) fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let mut salt = [0_u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|err| anyhow::anyhow!("salt: {err}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| anyhow::anyhow!("cannot hash a password: {err}"))
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        tracing::error!("a stored password hash is malformed");
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_slots_and_the_queue_requests_are_refused_at_once() {
        // One running slot and one queue place: two requests are admitted, a third is not.
        let hasher = Hasher::new(1, 1, Duration::from_secs(30));
        let hash = hash("correct horse 1".into()).await.unwrap();
        // Stall the running slot so both admitted requests wait.
        let stalled = hasher.running.clone().acquire_owned().await.unwrap();
        let admitted: Vec<_> = (0..2)
            .map(|_| {
                let hasher = hasher.clone();
                let hash = hash.clone();
                tokio::spawn(async move { hasher.verify("correct horse 1".into(), hash).await })
            })
            .collect();
        tideway_testkit::eventually(Duration::from_secs(5), "both requests are admitted", || {
            hasher.admitted.available_permits() == 0
        })
        .await;
        let refused = hasher.verify("correct horse 1".into(), hash.clone()).await;
        assert!(matches!(refused, Err(HashError::Busy)), "{refused:?}");
        drop(stalled);
        for request in admitted {
            assert!(
                request.await.unwrap().unwrap(),
                "admitted requests run once slots free"
            );
        }
        assert!(hasher.verify("correct horse 1".into(), hash).await.unwrap());
    }

    #[tokio::test]
    async fn a_request_waits_at_most_the_queue_timeout() {
        let hasher = Hasher::new(1, 4, Duration::from_millis(50));
        let _running = hasher.running.clone().acquire_owned().await.unwrap();
        let refused = hasher.hash("correct horse 1".into()).await;
        assert!(matches!(refused, Err(HashError::Busy)), "{refused:?}");
    }

    #[tokio::test]
    async fn hashes_with_argon2id_and_a_fresh_salt() {
        let a = hash("correct horse 1".into()).await.unwrap();
        let b = hash("correct horse 1".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "every hash has its own salt");
        assert!(verify("correct horse 1".into(), a.clone()).await.unwrap());
        assert!(!verify("correct horse 2".into(), a).await.unwrap());
        assert!(!verify("x".into(), "garbage".into()).await.unwrap());
    }
}
