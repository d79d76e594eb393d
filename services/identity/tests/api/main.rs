//! Integration tests of the identity service: real HTTP on a random port, on SQLite and
//! PostgreSQL.

mod bad_input;
mod flow;
mod helpers;
mod keys_and_seeds;
mod retention;
mod sessions;
mod tokens;
