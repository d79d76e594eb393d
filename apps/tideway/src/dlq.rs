//! `tideway dlq list | show ID | redrive [--consumer C] [ID…]`: the dead letters of the
//! bus named by `bus.kind`.
//!
//! * `embedded`: the table at `bus.dead_letters_url` (`{data_dir}/bus.db`). A redrive is
//!   asked of the running `tideway up`, which serves it within a second; the tool waits
//!   until each dead letter has left the table (handled), or says which are still there.
//! * `nats`: the dead-letter subjects of the stream; a redrive publishes each event again
//!   and deletes its dead letter.
//! * `rabbitmq`: the dead-letter queue `<bus.root>.dead-letters`; a redrive sends each
//!   event back to the queue of the consumer group that failed it and removes its dead
//!   letter.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tideway_bus::{DeadLetters, StoredLetter, embedded};
use tideway_store::{Db, DbOptions};

use crate::{Config, config::BusKind};

/// What `tideway dlq` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// Every dead letter, oldest first: id, consumer, event type, deliveries, last error.
    List,
    /// One dead letter in full (JSON), the event included.
    Show {
        /// Its id, as `list` prints it.
        id: String,
    },
    /// Delivers dead letters again (all of them, those of `--consumer`, or the ids given);
    /// each leaves the store once handled.
    Redrive {
        /// Only this consumer's dead letters.
        #[arg(long)]
        consumer: Option<String>,
        /// The dead letters to redrive; none: every one (of `--consumer`).
        ids: Vec<String>,
    },
}

/// How long `redrive` waits for the running shop to handle what it asked for.
const REDRIVE_WAIT: Duration = Duration::from_secs(60);

/// The embedded bus's dead-letter table (created when missing).
pub async fn open_table(config: &Config) -> anyhow::Result<Db> {
    let db = Db::open(&config.bus.dead_letters_url, DbOptions::default())
        .await
        .context("opening the dead-letter table (bus.dead_letters_url)")?;
    embedded::install_dead_letters(&db)
        .await
        .context("creating the dead-letter table")?;
    Ok(db)
}

/// Runs `command` against `config`'s bus; prints to standard output.
pub async fn run(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    match config.bus.kind {
        BusKind::Embedded => {
            let db = open_table(config).await?;
            let result = embedded_run(&db, command).await;
            db.close().await;
            result
        }
        BusKind::Nats | BusKind::Rabbitmq => {
            let store: Arc<dyn DeadLetters> = if config.bus.kind == BusKind::Rabbitmq {
                Arc::new(crate::rabbit_bus_of(config, false).await?)
            } else {
                Arc::new(
                    tideway_bus::NatsBus::connect(tideway_bus::NatsOptions {
                        url: config.bus.nats_url.clone(),
                        stream: config.bus.stream.clone(),
                        root: config.bus.root.clone(),
                        ..tideway_bus::NatsOptions::default()
                    })
                    .await
                    .with_context(|| {
                        format!("cannot connect to NATS at {}", config.bus.nats_url)
                    })?,
                )
            };
            let letters = store.list().await?;
            match command {
                DlqCommand::List => print_list(&letters),
                DlqCommand::Show { id } => show(&letters, &id)?,
                DlqCommand::Redrive { consumer, ids } => {
                    for letter in select(&letters, consumer.as_deref(), &ids)? {
                        let done = store.redrive(&letter.id).await?;
                        println!("{} {}", letter.id, if done { "redriven" } else { "gone" });
                    }
                }
            }
            Ok(())
        }
    }
}

async fn embedded_run(db: &Db, command: DlqCommand) -> anyhow::Result<()> {
    let letters = embedded::stored_letters(db).await?;
    match command {
        DlqCommand::List => print_list(&letters),
        DlqCommand::Show { id } => show(&letters, &id)?,
        DlqCommand::Redrive { consumer, ids } => {
            let chosen = select(&letters, consumer.as_deref(), &ids)?;
            for letter in &chosen {
                embedded::request_redrive(db, &letter.id).await?;
            }
            println!(
                "asked the running shop to redrive {} dead letter(s); waiting",
                chosen.len()
            );
            let until = tokio::time::Instant::now() + REDRIVE_WAIT;
            loop {
                let left = embedded::stored_letters(db).await?;
                let pending: Vec<&&StoredLetter> = chosen
                    .iter()
                    .filter(|c| {
                        left.iter()
                            .any(|l| l.id == c.id && l.letter.deliveries == c.letter.deliveries)
                    })
                    .collect();
                if pending.is_empty() {
                    for letter in &chosen {
                        let again = left.iter().any(|l| l.id == letter.id);
                        println!(
                            "{} {}",
                            letter.id,
                            if again {
                                "failed again (dead-lettered anew)"
                            } else {
                                "redriven"
                            }
                        );
                    }
                    return Ok(());
                }
                if tokio::time::Instant::now() >= until {
                    anyhow::bail!(
                        "{} dead letter(s) not redriven within {REDRIVE_WAIT:?}: is `tideway up` running on this data_dir?",
                        pending.len()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}

fn select<'a>(
    letters: &'a [StoredLetter],
    consumer: Option<&str>,
    ids: &[String],
) -> anyhow::Result<Vec<&'a StoredLetter>> {
    for id in ids {
        if !letters.iter().any(|l| &l.id == id) {
            anyhow::bail!("no dead letter {id:?} (see `tideway dlq list`)");
        }
    }
    Ok(letters
        .iter()
        .filter(|l| consumer.is_none_or(|c| l.letter.consumer == c))
        .filter(|l| ids.is_empty() || ids.contains(&l.id))
        .collect())
}

fn print_list(letters: &[StoredLetter]) {
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:<50} {:<14} {:<40} {:>10}  error",
        "id", "consumer", "type", "deliveries"
    );
    for l in letters {
        println!(
            "{:<50} {:<14} {:<40} {:>10}  {}",
            l.id, l.letter.consumer, l.letter.event.event_type, l.letter.deliveries, l.letter.error
        );
    }
}

fn show(letters: &[StoredLetter], id: &str) -> anyhow::Result<()> {
    let letter = letters
        .iter()
        .find(|l| l.id == id)
        .with_context(|| format!("no dead letter {id:?} (see `tideway dlq list`)"))?;
    println!("{}", serde_json::to_string_pretty(letter)?);
    Ok(())
}
