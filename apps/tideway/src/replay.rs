//! `tideway replay reporting`: rebuilds the reporting service's read models from the start
//! of the event stream into empty tables (`tideway_reporting::replay`).
//!
//! * `bus.kind = "embedded"`: from the embedded bus's event log at `bus.dead_letters_url`
//!   (`{data_dir}/bus.db`), which keeps `bus.event_log_days` of events.
//! * `nats`: from JetStream, the stream's first sequence on (an ephemeral consumer).
//! * `rabbitmq`: refused; RabbitMQ keeps no log of delivered events.
//!
//! The database is `reporting.database_url` (in the distributed shape set it to the
//! service's, `<distributed.database_prefix>reporting`). It may run beside the service:
//! the rebuild is one transaction, and live deliveries count once either way.

use anyhow::Context as _;

use crate::{Config, config::BusKind};

/// The read models `tideway replay` rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayTarget {
    /// The reporting service's sales, revenue and funnel.
    Reporting,
}

/// Rebuilds `target`'s models from `config`'s bus; prints what it did.
pub async fn run(config: &Config, target: ReplayTarget) -> anyhow::Result<()> {
    let ReplayTarget::Reporting = target;
    let db = tideway_reporting::Reporting::open_db(&config.reporting.service).await?;
    let result = match config.bus.kind {
        BusKind::Embedded => {
            let log = crate::dlq::open_table(config).await?;
            tideway_bus::embedded::install_event_log(&log)
                .await
                .context("creating the event log")?;
            let result = tideway_reporting::replay::from_event_log(&db, &log).await;
            log.close().await;
            result
        }
        BusKind::Nats => {
            let bus = crate::nats_bus_of(config).await?;
            tideway_reporting::replay::from_stream(&db, &bus).await
        }
        BusKind::Rabbitmq => Err(anyhow::anyhow!(
            "RabbitMQ keeps no log of delivered events: replay needs bus.kind = \"embedded\" (its event log) or \"nats\" (the stream)"
        )),
    };
    db.close().await;
    let replayed = result.context("rebuilding the reporting read models")?;
    println!(
        "reporting: rebuilt from {} events ({} applied)",
        replayed.read, replayed.applied
    );
    Ok(())
}
