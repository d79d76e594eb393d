//! Integration tests of the registries on real servers: the NATS KV registry against the
//! server of `TIDEWAY_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), each test in a bucket
//! of its own.

mod helpers;
mod nats;
