//! Password hashing: Argon2id (v19, the crate's default cost) with a random salt, on a few
//! dedicated threads ([`Hasher`]) so a hash never stalls the async workers and a flood of
//! them cannot take more memory or threads than those few.

use std::{sync::Arc, time::Duration};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use rand::RngCore;

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

/// Password hashing for requests, bounded: `running` dedicated threads hash (each hash
/// takes about 19 MiB and a core for a few tens of milliseconds), at most `queued` more
/// requests wait, each for at most `queue_timeout`; the rest are refused at once. So a
/// flood of sign-ins or registrations costs bounded memory and threads — not one blocking
/// thread, one malloc arena and one Argon2 buffer per request. The threads end when the
/// last clone of the hasher is dropped.
#[derive(Debug, Clone)]
pub struct Hasher {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// Sends `value` to the waiting request, once.
fn reply<T>(
    slot: &std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Option<T>>>>,
    value: Option<T>,
) {
    let sender = match slot.lock() {
        Ok(mut slot) => slot.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(sender) = sender {
        // The request may have given up (its client went away); nothing to do then.
        let _ = sender.send(value);
    }
}

/// What a hashing thread runs, lending it the thread's Argon2 memory.
type Work = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// A hash to compute, the time it was queued, and where its answer goes.
struct Job {
    queued_at: std::time::Instant,
    work: Work,
    /// Told when the job waited too long and was dropped unrun.
    expired: Box<dyn FnOnce() + Send>,
}

impl Hasher {
    /// A hasher with `running` threads and `queued` more requests allowed to wait.
    pub fn new(running: usize, queued: usize, queue_timeout: Duration) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(queued);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..running.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    // This thread's Argon2 memory, allocated once and reused by every hash:
                    // a fresh 19 MiB per hash would leave each thread's malloc arena holding
                    // several of them.
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        let Ok(job) = next else { return };
                        if job.queued_at.elapsed() > queue_timeout {
                            (job.expired)();
                        } else {
                            (job.work)(&mut memory);
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password hashing thread");
            }
        }
        Self { jobs }
    }

    /// Runs `work` on a hashing thread, or refuses when the queue is full or the wait
    /// passes the queue timeout.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (answer, answered) = tokio::sync::oneshot::channel::<Option<T>>();
        let slot = Arc::new(std::sync::Mutex::new(Some(answer)));
        let on_expiry = slot.clone();
        let job = Job {
            queued_at: std::time::Instant::now(),
            work: Box::new(move |memory| reply(&slot, Some(work(memory)))),
            expired: Box::new(move || reply(&on_expiry, None)),
        };
        self.jobs.try_send(job).map_err(|_| HashError::Busy)?;
        match answered.await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(HashError::Busy),
            Err(_) => Err(HashError::Failed(anyhow::anyhow!(
                "the hashing thread ended without an answer"
            ))),
        }
    }

    /// [`hash`], bounded.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        Ok(self
            .run(move |memory| hash_with(memory, &password))
            .await??)
    }

    /// [`verify`], bounded.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HashError> {
        self.run(move |memory| verify_with(memory, &password, &hash))
            .await
    }
}

/// The most Argon2 memory a stored hash may ask for (64 MiB); ours ask for 19 MiB.
const MAX_BLOCKS: usize = 64 * 1024;

/// Hashes `password` into a PHC string (`$argon2id$v=19$…`, the crate's default cost)
/// with a random salt, using `memory` as Argon2's working memory.
pub(crate) fn hash_with(memory: &mut Vec<Block>, password: &str) -> anyhow::Result<String> {
    let mut salt = [0_u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let encoded_salt =
        SaltString::encode_b64(&salt).map_err(|err| anyhow::anyhow!("salt: {err}"))?;
    let params = Params::default();
    let mut out = [0_u8; Params::DEFAULT_OUTPUT_LEN];
    run_argon2(
        memory,
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password,
        &salt,
        &mut out,
    )?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|err| anyhow::anyhow!("params: {err}"))?,
        salt: Some(encoded_salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|err| anyhow::anyhow!("output: {err}"))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash`, using `memory` as Argon2's working
/// memory. A malformed hash never matches.
fn verify_with(memory: &mut Vec<Block>, password: &str, hash: &str) -> bool {
    let mut matches = || -> anyhow::Result<bool> {
        let parsed = PasswordHash::new(hash).map_err(|err| anyhow::anyhow!("{err}"))?;
        let algorithm =
            Algorithm::try_from(parsed.algorithm).map_err(|err| anyhow::anyhow!("{err}"))?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|err| anyhow::anyhow!("{err}"))?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(|err| anyhow::anyhow!("{err}"))?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            anyhow::bail!("no salt or no hash");
        };
        let mut salt_bytes = [0_u8; 64];
        let salt = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let mut out = vec![0_u8; expected.len()];
        run_argon2(memory, algorithm, version, params, password, salt, &mut out)?;
        Ok(Output::new(&out).map_err(|err| anyhow::anyhow!("{err}"))? == expected)
    };
    match matches() {
        Ok(matches) => matches,
        Err(err) => {
            tracing::error!(error = %err, "a stored password hash is malformed");
            false
        }
    }
}

fn run_argon2(
    memory: &mut Vec<Block>,
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
) -> anyhow::Result<()> {
    let blocks = params.block_count();
    anyhow::ensure!(
        blocks <= MAX_BLOCKS,
        "the hash asks for {blocks} KiB of memory"
    );
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
        .map_err(|err| anyhow::anyhow!("argon2: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hasher whose one thread is held until the returned sender is dropped or sent.
    async fn stalled(queued: usize, timeout: Duration) -> (Hasher, std::sync::mpsc::Sender<()>) {
        let hasher = Hasher::new(1, queued, timeout);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let holder = hasher.clone();
        tokio::spawn(async move {
            holder
                .run(move |_memory| {
                    let _ = started.send(());
                    let _ = wait.recv();
                })
                .await
        });
        running.await.unwrap();
        (hasher, release)
    }

    #[tokio::test]
    async fn past_the_queue_requests_are_refused_at_once() {
        let hash = Hasher::new(1, 1, Duration::from_secs(5))
            .hash("correct horse 1".into())
            .await
            .unwrap();
        let (hasher, release) = stalled(2, Duration::from_secs(30)).await;
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let hasher = hasher.clone();
                let hash = hash.clone();
                tokio::spawn(async move { hasher.verify("correct horse 1".into(), hash).await })
            })
            .collect();
        // On the test's one-thread runtime, a yield lets both spawned requests run up to
        // their wait: the queue is full, and the next request is refused at once.
        tokio::task::yield_now().await;
        let refused = hasher.verify("correct horse 1".into(), hash.clone()).await;
        assert!(matches!(refused, Err(HashError::Busy)), "{refused:?}");
        drop(release);
        for request in queued {
            let answer = request.await.unwrap();
            assert!(answer.unwrap(), "queued requests run once the thread frees");
        }
        assert!(hasher.verify("correct horse 1".into(), hash).await.unwrap());
    }

    #[tokio::test]
    async fn a_request_waits_at_most_the_queue_timeout() {
        let (hasher, release) = stalled(4, Duration::from_millis(50)).await;
        let waiting = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash("correct horse 1".into()).await })
        };
        // Let it sit in the queue past its timeout, then free the thread.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(release);
        let refused = waiting.await.unwrap();
        assert!(matches!(refused, Err(HashError::Busy)), "{refused:?}");
    }

    #[tokio::test]
    async fn hashes_with_argon2id_and_a_fresh_salt() {
        let hasher = Hasher::new(2, 2, Duration::from_secs(5));
        let hash = |password: &str| hasher.hash(password.to_owned());
        let verify = |password: &str, hash: String| hasher.verify(password.to_owned(), hash);
        let a = hash("correct horse 1").await.unwrap();
        let b = hash("correct horse 1").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "every hash has its own salt");
        assert!(verify("correct horse 1", a.clone()).await.unwrap());
        assert!(!verify("correct horse 2", a.clone()).await.unwrap());
        assert!(!verify("x", "garbage".into()).await.unwrap());

        // Hashes stored before (the crate's own hasher) still verify, and ours verify there.
        use argon2::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"correct horse 1", &salt)
            .unwrap()
            .to_string();
        assert!(verify("correct horse 1", theirs.clone()).await.unwrap());
        assert!(!verify("correct horse 9", theirs).await.unwrap());
        let ours = PasswordHash::new(&a).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse 1", &ours)
                .is_ok()
        );
    }
}
