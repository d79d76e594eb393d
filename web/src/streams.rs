//! Caps on the live streams (server-sent events): each holds a connection and polls the API
//! until it ends, so a user may keep only so many open, and the front only so many in all.
//! Past either cap a new stream is refused with 429 and `Retry-After`; the page itself still
//! shows the order, it only stops updating live.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

/// How many streams may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCaps {
    /// Per user.
    pub per_user: usize,
    /// In all, across users.
    pub total: usize,
}

impl Default for StreamCaps {
    fn default() -> Self {
        Self {
            per_user: 4,
            total: 1000,
        }
    }
}

/// The open streams, counted per user and in all.
#[derive(Debug)]
pub(crate) struct Streams {
    caps: StreamCaps,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The user has `per_user` open.
    User,
    /// The front has `total` open.
    All,
}

/// One open stream; dropping it (the stream ended or its client left) frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    streams: Arc<Streams>,
    user: String,
}

impl Streams {
    pub(crate) fn new(caps: StreamCaps) -> Self {
        Self {
            caps,
            open: Mutex::new(Open::default()),
        }
    }

    /// A place for one more stream of `user`, or which cap is reached.
    pub(crate) fn open(self: &Arc<Self>, user: &str) -> Result<Permit, Full> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.caps.total {
            return Err(Full::All);
        }
        let mine = open.per_user.entry(user.to_owned()).or_default();
        if *mine >= self.caps.per_user {
            return Err(Full::User);
        }
        *mine += 1;
        open.total += 1;
        Ok(Permit {
            streams: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .streams
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.per_user.get_mut(&self.user) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_user_and_in_all_and_freed_when_dropped() {
        let streams = Arc::new(Streams::new(StreamCaps {
            per_user: 2,
            total: 3,
        }));
        let a1 = streams.open("a").unwrap();
        let _a2 = streams.open("a").unwrap();
        assert_eq!(streams.open("a").unwrap_err(), Full::User);
        let _b1 = streams.open("b").unwrap();
        assert_eq!(streams.open("c").unwrap_err(), Full::All);
        drop(a1);
        let _c1 = streams.open("c").unwrap();
        assert_eq!(streams.open("a").unwrap_err(), Full::All);
        drop(_c1);
        drop(_b1);
        drop(_a2);
        let open = streams.open.lock().unwrap();
        assert_eq!(open.total, 0);
        assert!(open.per_user.is_empty(), "no user is remembered once idle");
    }
}
