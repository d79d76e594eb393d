//! `tideway audit verify [--distributed]`: walks the audit trail of admin actions and
//! checks every record's number, link and hash. Intact: exit 0 and the count. Otherwise:
//! a non-zero exit naming the first record that does not hold.

use anyhow::Context as _;
use tideway_audit::{AuditStore, Verdict};

use crate::Config;

/// What `tideway audit` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Checks that no record was changed or removed.
    Verify {
        /// The trail of `up --distributed` (the PostgreSQL database
        /// `<distributed.database_prefix>audit`) instead of `audit.database_url`.
        #[arg(long)]
        distributed: bool,
    },
}

/// Runs `command`; answers the line to print, or an error naming the first bad record.
pub async fn run(config: &Config, command: AuditCommand) -> anyhow::Result<String> {
    match command {
        AuditCommand::Verify { distributed } => {
            let url = if distributed {
                config
                    .distributed
                    .named_database_url(&config.distributed.audit_database_name())?
            } else {
                config.audit.database_url.clone()
            };
            let store = AuditStore::open(&url)
                .await
                .with_context(|| format!("opening the audit trail at {url}"))?;
            let verdict = store.verify().await.context("reading the audit trail");
            store.db().close().await;
            match verdict? {
                Verdict::Intact { count } => Ok(format!(
                    "the audit trail is intact: {count} record{}",
                    if count == 1 { "" } else { "s" }
                )),
                Verdict::Broken { seq, reason } => {
                    anyhow::bail!("the audit trail is broken at record {seq}: {reason}")
                }
            }
        }
    }
}
