//! The store on real engines: the same SQL and the same transactions on SQLite and, when
//! reachable (always under CI), PostgreSQL.
//!
//! These live outside `src/` because the test databases come from `tideway-testkit`, which
//! depends on this crate: inside `src/` its `Db` would be another copy's type.

mod engines;
