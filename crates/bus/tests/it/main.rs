//! Integration tests of the bus: every backend (embedded, NATS JetStream on 127.0.0.1:4222,
//! RabbitMQ on 127.0.0.1:5672)
//! and, where a database is involved, both engines (SQLite, PostgreSQL).
#![allow(
    clippy::unwrap_used,
    reason = "a failed step fails the test loudly, with its location"
)]

mod bus;
mod dead_letters;
mod event_log;
mod helpers;
mod inbox;
mod nats;
mod nats_loss;
mod outbox;
mod rabbitmq;
