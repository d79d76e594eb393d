//! Integration tests of the notification service against a real SMTP server (aiosmtpd,
//! started by each test), on the embedded bus and NATS JetStream.
#![allow(
    clippy::unwrap_used,
    reason = "a failed step fails the test loudly, with its location"
)]

mod helpers;
mod sending;
