//! Feature flags: a set of named flags, each on for everyone, for listed users or roles,
//! or for a share of signed-in users, read through [`Flags::enabled`] with a
//! [`FlagContext`] (the user id and roles when signed in).
//!
//! A [`Flags`] holds the running set in an `ArcSwap` with a version number: a change is
//! validated in full first and swapped in whole, so a reader sees either the old set or
//! the new one and a bad definition changes nothing. [`admin_routes`] serves
//! `GET`/`PUT /api/v1/admin/flags` (role admin); [`SharedFlags`] shares changes between
//! processes through a NATS KV key every process watches.
//!
//! A percentage flag is stable per user: the user falls in a bucket of 10,000 fixed by
//! the FNV-1a hash of the flag's name and the user id (mixed by a 64-bit finaliser), the
//! same in every build and process, so a user keeps their answer across requests and
//! replicas, and raising the percentage only adds users.
#![warn(missing_docs)]

mod admin;
mod share;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};
use tideway_runtime::openapi::BearerAuth;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tideway_runtime::auth::Claims;

pub use admin::{FLAGS_PATH, FlagsBody, FlagsVersion, RequestFlags, admin_routes};
pub use share::{ShareError, SharedFlags};

/// The OpenAPI document of the flags admin endpoints.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(admin::read, admin::write),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "flags", description = "Feature flags, read and replaced at run time (role admin)"))
)]
pub struct ApiDoc;

/// The OpenAPI document of the flags admin endpoints.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

/// Buckets a user may fall in for a percentage flag: a percent is 100 of them.
const BUCKETS: u64 = 10_000;

/// The longest flag name.
const MAX_NAME: usize = 64;

/// The most users or roles one flag may list.
const MAX_TARGETS: usize = 1_000;

/// One flag. Off unless one of its rules says on: `enabled` (everyone), `users` (these
/// user ids), `roles` (users with one of these roles), `percent` (that share of signed-in
/// users, stable per user).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// On for everyone.
    #[serde(default)]
    pub enabled: bool,
    /// On for this share (0–100) of signed-in users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// On for these user ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// On for users with one of these roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// What the flag switches, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Every flag by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct FlagSet(pub BTreeMap<String, Flag>);

/// Who a flag is asked about: the signed-in user's id and roles, or nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagContext {
    /// The user id, when signed in.
    pub user: Option<String>,
    /// The user's roles.
    pub roles: Vec<String>,
}

/// Why a flag set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// A field holds a value it may not.
    #[error("{field}: expected {expected}")]
    Invalid {
        /// The field, as a path (`flags.you-may-also-like.percent`).
        field: String,
        /// What it should hold.
        expected: String,
    },
}

/// Whether a change was made here or applied from another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Made in this process (admin API, file).
    Local,
    /// Made in another process and shared with this one.
    Shared,
}

/// A change of the running flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagChange {
    /// The version it made.
    pub version: u64,
    /// Who made it (a user id, `file`).
    pub by: String,
    /// Where it was made.
    pub kind: ChangeKind,
    /// The flags before.
    pub before: FlagSet,
    /// The flags after.
    pub after: FlagSet,
}

struct Versioned {
    version: u64,
    set: Arc<FlagSet>,
}

struct Inner {
    current: ArcSwap<Versioned>,
    /// Held while a change is swapped in, so versions and changes come in one order.
    applying: Mutex<()>,
    changes: tokio::sync::watch::Sender<Option<FlagChange>>,
    /// Told of every change, in order, while it is made.
    observers: Mutex<Vec<Observer>>,
}

/// Told of every change while it is made (under the lock that orders changes).
type Observer = Arc<dyn Fn(&FlagChange) + Send + Sync>;

/// The running flags of a process: cheap to clone, read without locks.
#[derive(Clone)]
pub struct Flags {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags")
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl Default for Flags {
    fn default() -> Self {
        Self::with_valid(FlagSet::default())
    }
}

impl Flag {
    /// A flag on for everyone.
    pub fn on() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }

    /// Whether the flag named `name` (its name keys the percentage's hash) is on for
    /// `ctx`.
    pub fn evaluate(&self, name: &str, ctx: &FlagContext) -> bool {
        if self.enabled {
            return true;
        }
        if ctx.roles.iter().any(|role| self.roles.contains(role)) {
            return true;
        }
        let Some(user) = ctx.user.as_deref() else {
            return false;
        };
        if self.users.iter().any(|u| u == user) {
            return true;
        }
        match self.percent {
            Some(percent) => bucket(name, user) < u64::from(percent.min(100)) * (BUCKETS / 100),
            None => false,
        }
    }
}

impl FlagSet {
    /// Checks every flag; the error names the first wrong field under `root`
    /// (`flags.<name>.percent`).
    pub fn validate(&self, root: &str) -> Result<(), FlagError> {
        let invalid = |field: String, expected: &str| FlagError::Invalid {
            field,
            expected: expected.to_owned(),
        };
        for (name, flag) in &self.0 {
            let at = format!("{root}{name}");
            let valid_name = !name.is_empty()
                && name.len() <= MAX_NAME
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid_name {
                return Err(invalid(
                    at,
                    "a flag name of 1 to 64 lower-case letters, digits, `-`, `_` or `.`, \
                     starting with a letter",
                ));
            }
            if flag.percent.is_some_and(|p| p > 100) {
                return Err(invalid(
                    format!("{at}.percent"),
                    "a percentage from 0 to 100",
                ));
            }
            for (field, targets) in [("users", &flag.users), ("roles", &flag.roles)] {
                if targets.len() > MAX_TARGETS {
                    return Err(invalid(format!("{at}.{field}"), "at most 1000 entries"));
                }
                if let Some(i) = targets
                    .iter()
                    .position(|t| t.trim().is_empty() || t.len() > 200)
                {
                    return Err(invalid(
                        format!("{at}.{field}[{i}]"),
                        "a non-empty value of at most 200 characters",
                    ));
                }
            }
            if flag.description.len() > 500 {
                return Err(invalid(
                    format!("{at}.description"),
                    "at most 500 characters",
                ));
            }
        }
        Ok(())
    }

    /// Whether `name` is on for `ctx`; a flag not in the set is off.
    pub fn enabled(&self, name: &str, ctx: &FlagContext) -> bool {
        self.0
            .get(name)
            .is_some_and(|flag| flag.evaluate(name, ctx))
    }
}

impl FlagContext {
    /// Nobody signed in.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A signed-in user with `roles`.
    pub fn user(id: impl Into<String>, roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            user: Some(id.into()),
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }

    /// The user a verified token names.
    pub fn of_claims(claims: &Claims) -> Self {
        Self::user(claims.sub.clone(), claims.roles.iter().cloned())
    }
}

impl Flags {
    /// The running flags, starting with `set` (validated, as version 1).
    pub fn new(set: FlagSet) -> Result<Self, FlagError> {
        set.validate("flags.")?;
        Ok(Self::with_valid(set))
    }

    fn with_valid(set: FlagSet) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(Versioned {
                    version: 1,
                    set: Arc::new(set),
                }),
                applying: Mutex::new(()),
                changes: tokio::sync::watch::Sender::new(None),
                observers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether `name` is on for `ctx` in the running set; an unknown flag is off.
    pub fn enabled(&self, name: &str, ctx: &FlagContext) -> bool {
        self.inner.current.load().set.enabled(name, ctx)
    }

    /// The running set's version: 1 at start, one more per change.
    pub fn version(&self) -> u64 {
        self.inner.current.load().version
    }

    /// The running set and its version.
    pub fn current(&self) -> (u64, Arc<FlagSet>) {
        let current = self.inner.current.load();
        (current.version, Arc::clone(&current.set))
    }

    /// Validates `set` and, if it holds, swaps it in whole as the next version
    /// (answered); otherwise the running set stays and the error names the field.
    pub fn replace(&self, set: FlagSet, by: &str) -> Result<u64, FlagError> {
        self.apply(set, by, ChangeKind::Local)
    }

    /// Applies a set another process applied (a [`ChangeKind::Shared`] change, which is
    /// not shared back), with who made it there.
    pub fn apply_shared(&self, set: FlagSet, by: &str) -> Result<u64, FlagError> {
        self.apply(set, by, ChangeKind::Shared)
    }

    fn apply(&self, set: FlagSet, by: &str, kind: ChangeKind) -> Result<u64, FlagError> {
        set.validate("flags.")?;
        let _applying = self
            .inner
            .applying
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = self.inner.current.load_full();
        let version = before.version + 1;
        let set = Arc::new(set);
        self.inner.current.store(Arc::new(Versioned {
            version,
            set: Arc::clone(&set),
        }));
        tracing::info!(version, by, ?kind, "feature flags applied");
        let change = FlagChange {
            version,
            by: by.to_owned(),
            kind,
            before: FlagSet::clone(&before.set),
            after: FlagSet::clone(&set),
        };
        let observers = self
            .inner
            .observers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for observer in observers {
            observer(&change);
        }
        self.inner.changes.send_replace(Some(change));
        Ok(version)
    }

    /// Tells `observer` of every change from now on, in order, as it is made (unlike
    /// [`changes`](Self::changes), which keeps only the latest): what records them. It
    /// runs under the lock that orders changes, so it must not block.
    pub fn observe(&self, observer: impl Fn(&FlagChange) + Send + Sync + 'static) {
        self.inner
            .observers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(observer));
    }

    /// Follows the changes (the latest one): what shares them with other processes and
    /// what records them.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Option<FlagChange>> {
        self.inner.changes.subscribe()
    }
}

/// The bucket (0–9,999) `user` falls in for the flag `name`: FNV-1a over the name, a
/// separator and the user id, then the 64-bit finaliser of MurmurHash3 so that ids
/// differing in their last characters spread over every bucket.
pub fn bucket(name: &str, user: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in name.bytes().chain([0xff]).chain(user.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash % BUCKETS
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(flags: &[(&str, Flag)]) -> FlagSet {
        FlagSet(
            flags
                .iter()
                .map(|(name, flag)| ((*name).to_owned(), flag.clone()))
                .collect(),
        )
    }

    #[test]
    fn each_rule_turns_a_flag_on_for_whom_it_names() {
        let anonymous = FlagContext::anonymous();
        let ann = FlagContext::user("ann", ["customer"]);
        let bob = FlagContext::user("bob", ["customer", "admin"]);
        let flags = set(&[
            ("off", Flag::default()),
            ("everyone", Flag::on()),
            (
                "for-ann",
                Flag {
                    users: vec!["ann".into()],
                    ..Flag::default()
                },
            ),
            (
                "for-admins",
                Flag {
                    roles: vec!["admin".into()],
                    ..Flag::default()
                },
            ),
            (
                "all-signed-in",
                Flag {
                    percent: Some(100),
                    ..Flag::default()
                },
            ),
            (
                "nobody",
                Flag {
                    percent: Some(0),
                    ..Flag::default()
                },
            ),
        ]);
        let on = |name: &str, ctx: &FlagContext| flags.enabled(name, ctx);
        assert!(!on("off", &ann) && !on("off", &anonymous));
        assert!(on("everyone", &anonymous) && on("everyone", &bob));
        assert!(on("for-ann", &ann) && !on("for-ann", &bob) && !on("for-ann", &anonymous));
        assert!(on("for-admins", &bob) && !on("for-admins", &ann));
        assert!(on("all-signed-in", &ann) && on("all-signed-in", &bob));
        assert!(
            !on("all-signed-in", &anonymous),
            "a share of users needs a user"
        );
        assert!(!on("nobody", &ann) && !on("nobody", &bob));
        assert!(!on("unknown", &bob), "an unknown flag is off");
    }

    #[test]
    fn a_percentage_holds_within_a_tolerance_over_ten_thousand_users() {
        for percent in [1_u32, 10, 25, 50, 90] {
            let flag = Flag {
                percent: Some(percent),
                ..Flag::default()
            };
            let on = (0..10_000)
                .filter(|i| {
                    flag.evaluate(
                        "you-may-also-like",
                        &FlagContext::user(format!("user-{i}"), ["customer"]),
                    )
                })
                .count();
            let expected = percent as usize * 100;
            // Binomial standard deviation is at most 50 here; 4 of them.
            assert!(
                on.abs_diff(expected) <= 200,
                "{percent}%: {on} users of 10,000"
            );
        }
    }

    #[test]
    fn the_bucket_is_the_same_in_every_build() {
        // Fixed values: a change of the hash would move users between answers.
        assert_eq!(
            bucket("you-may-also-like", "user-1"),
            bucket("you-may-also-like", "user-1")
        );
        let known = [
            bucket("you-may-also-like", "user-1"),
            bucket("you-may-also-like", "user-2"),
            bucket("checkout-v2", "user-1"),
        ];
        assert_eq!(known, KNOWN_BUCKETS);
    }

    /// Computed apart from this code (the same FNV-1a and finaliser in a few lines of Python).
    const KNOWN_BUCKETS: [u64; 3] = [3386, 5559, 1063];

    proptest! {
        #[test]
        fn a_user_keeps_their_answer_and_a_larger_share_only_adds_users(
            name in "[a-z][a-z0-9-]{0,20}",
            user in "[a-zA-Z0-9-]{1,36}",
            low in 0_u32..=100,
            high in 0_u32..=100,
        ) {
            let (low, high) = (low.min(high), low.max(high));
            let ctx = FlagContext::user(user, Vec::<String>::new());
            let flag = |percent| Flag { percent: Some(percent), ..Flag::default() };
            let first = flag(low).evaluate(&name, &ctx);
            prop_assert_eq!(first, flag(low).evaluate(&name, &ctx));
            if first {
                prop_assert!(flag(high).evaluate(&name, &ctx));
            }
        }
    }

    #[test]
    fn a_bad_definition_is_refused_naming_the_field_and_the_running_set_stays() {
        let flags = Flags::new(set(&[("panel", Flag::on())])).expect("valid");
        let bad = [
            (
                set(&[(
                    "panel",
                    Flag {
                        percent: Some(101),
                        ..Flag::default()
                    },
                )]),
                "flags.panel.percent",
            ),
            (set(&[("Panel", Flag::on())]), "flags.Panel"),
            (set(&[("", Flag::on())]), "flags."),
            (
                set(&[(
                    "panel",
                    Flag {
                        roles: vec!["admin".into(), " ".into()],
                        ..Flag::default()
                    },
                )]),
                "flags.panel.roles[1]",
            ),
        ];
        for (set, field) in bad {
            match flags.replace(set, "ops") {
                Err(FlagError::Invalid { field: named, .. }) => assert_eq!(named, field),
                Ok(version) => panic!("accepted as version {version}"),
            }
        }
        assert_eq!(flags.version(), 1);
        assert!(flags.enabled("panel", &FlagContext::anonymous()));
    }

    #[test]
    fn a_change_is_swapped_in_whole_and_announced_with_before_and_after() {
        let flags = Flags::new(set(&[("a", Flag::on())])).expect("valid");
        let mut changes = flags.changes();
        let next = set(&[("b", Flag::on())]);
        assert_eq!(flags.replace(next.clone(), "ops").expect("valid"), 2);
        let anonymous = FlagContext::anonymous();
        assert!(!flags.enabled("a", &anonymous) && flags.enabled("b", &anonymous));
        assert!(changes.has_changed().expect("open"));
        let change = changes.borrow_and_update().clone().expect("a change");
        assert_eq!(change.version, 2);
        assert_eq!(change.kind, ChangeKind::Local);
        assert_eq!(change.before, set(&[("a", Flag::on())]));
        assert_eq!(change.after, next);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        flags.observe(move |change| kept.lock().expect("lock").push(change.version));
        flags
            .apply_shared(FlagSet::default(), "ops")
            .expect("valid");
        flags.replace(FlagSet::default(), "ops").expect("valid");
        assert_eq!(
            *seen.lock().expect("lock"),
            [3, 4],
            "every change, in order"
        );
        let change = changes.borrow_and_update().clone().expect("a change");
        assert_eq!((change.version, change.kind), (4, ChangeKind::Local));
    }

    #[test]
    fn a_file_section_reads_as_flags() {
        let set: FlagSet = serde_json::from_value(serde_json::json!({
            "you-may-also-like": { "percent": 20, "roles": ["admin"] }
        }))
        .expect("flags");
        assert_eq!(set.0["you-may-also-like"].percent, Some(20));
        let unknown = serde_json::from_value::<FlagSet>(serde_json::json!({
            "x": { "percnt": 20 }
        }));
        assert!(unknown.is_err(), "a mistyped field is refused");
    }
}
