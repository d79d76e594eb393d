//! Dead letters you can act on: list them, look at one, redrive them.
//!
//! Every backend keeps every dead letter durably until it is redriven:
//!
//! * [`EmbeddedBus`](crate::EmbeddedBus): the `bus_dead_letters` table of
//!   [`EmbeddedOptions::dead_letters`](crate::EmbeddedOptions::dead_letters). A dead letter's
//!   id is `<consumer>:<event id>`. A redrive delivers the event again to that consumer's
//!   groups only; another process (the `tideway dlq` tool) asks for one by writing a row to
//!   `bus_dead_letter_redrives`, which the running bus serves within a second.
//! * [`NatsBus`](crate::NatsBus): the dead-letter subjects `tideway.dlq.<consumer>` of the
//!   stream, kept by JetStream for the stream's age. A dead letter's id is its stream
//!   sequence. A redrive publishes the event again on its own subject (so every consumer
//!   of that subject sees it, and those that had handled it skip it through their inbox),
//!   then deletes the dead letter from the stream.
//! * [`RabbitBus`](crate::RabbitBus): the classic queue `<prefix>.dead-letters`, fed by the
//!   dead-letter exchange. A dead letter's id is `<consumer>:<event id>`. Listing takes the
//!   queue's messages and gives them back unacknowledged (in order); a redrive sends the
//!   event to the queue of the consumer group that failed it, then removes the dead letter.
//!
//! On every backend the redriven event is handled once (the consumer's inbox), and it leaves the
//! dead-letter store once it has been delivered; failing again, it is dead-lettered again.
//! Metrics: `tideway_dead_letters_total{consumer}` (events dead-lettered) and
//! `tideway_dead_letters_redriven_total{consumer}`.

use serde::Serialize;

use crate::{BoxFuture, BusError, DeadLetter};

/// A dead letter as a store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredLetter {
    /// The id the tools name it by (`<consumer>:<event id>` embedded and on RabbitMQ, a
    /// stream sequence on NATS).
    pub id: String,
    /// When it was dead-lettered (unix milliseconds).
    pub dead_at_ms: i64,
    /// The consumer, the deliveries, the last error and the event.
    #[serde(flatten)]
    pub letter: DeadLetter,
}

/// A durable store of dead letters.
pub trait DeadLetters: Send + Sync {
    /// Every dead letter, oldest first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredLetter>, BusError>>;

    /// Delivers dead letter `id` again and removes it from the store once delivered;
    /// `false` when there is no such dead letter.
    fn redrive<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, BusError>>;
}

pub(crate) fn counted(consumer: &str) {
    metrics::counter!("tideway_dead_letters_total", "consumer" => consumer.to_owned()).increment(1);
}

pub(crate) fn redriven(consumer: &str) {
    metrics::counter!("tideway_dead_letters_redriven_total", "consumer" => consumer.to_owned())
        .increment(1);
}
