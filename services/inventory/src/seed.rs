//! Seeding stock from the catalog: one row per catalog item with the catalog's `stock` as
//! `available`, where the inventory has no row yet.
//!
//! It runs in the background, because in the distributed shape the catalog may start after
//! the inventory: a failed page is retried with a growing, jittered delay until the catalog
//! answers.
//! Rows are inserted with `ON CONFLICT DO NOTHING`, so a restart, a second replica or an
//! admin's earlier change is never overwritten.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tideway_bus::{BusError, outbox::RelayWaker};
use tideway_catalog_api::{CatalogClient, Item};
use tideway_store::Db;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{stock::announce, time::now_ms};

/// Items asked for per catalog page.
pub const PAGE_SIZE: u32 = 100;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Delays between attempts at a page: from [`FIRST_RETRY`], doubling up to [`MAX_RETRY`],
/// each jittered by up to as much again (replicas started together spread their calls).
///
/// Without a bound on attempts: the catalog may come up minutes after the inventory (its
/// own process, its own pod), and nothing but this task seeds a fresh inventory, so giving
/// up would leave every item out of stock until a restart. Shutdown cancels it.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(MAX_RETRY)
        .with_jitter()
        .without_max_times()
}

/// Seeds every catalog page, retrying until done or `token` is cancelled; sends `true` on
/// `done` once every page is in.
pub async fn run(
    db: Db,
    waker: RelayWaker,
    catalog: CatalogClient,
    token: CancellationToken,
    done: watch::Sender<bool>,
) {
    let mut page: u32 = 1;
    let mut inserted: u64 = 0;
    loop {
        let mut attempt: u32 = 0;
        let seeding = (|| seed_page(&db, &waker, &catalog, page))
            .retry(backoff())
            .notify(|err: &String, delay: Duration| {
                attempt += 1;
                tracing::warn!(page, attempt, error = %err, retry_in = ?delay, "seeding stock from the catalog failed; retrying");
            });
        let outcome = tokio::select! {
            () = token.cancelled() => return,
            outcome = seeding => outcome,
        };
        match outcome {
            Ok((count, last)) => {
                inserted += count;
                if last {
                    break;
                }
                page += 1;
            }
            Err(err) => {
                tracing::error!(page, error = %err, "seeding stock from the catalog gave up");
                return;
            }
        }
    }
    tracing::info!(pages = page, inserted, "stock seeded from the catalog");
    done.send_replace(true);
}

/// Reads catalog page `page` and inserts its missing rows: how many, and whether it was
/// the last page.
async fn seed_page(
    db: &Db,
    waker: &RelayWaker,
    catalog: &CatalogClient,
    page: u32,
) -> Result<(u64, bool), String> {
    let items = catalog
        .items(&format!("page={page}&page_size={PAGE_SIZE}"))
        .await
        .map_err(|err| err.to_string())?;
    let count = insert_page(db, &items.items)
        .await
        .map_err(|err| err.to_string())?;
    if count > 0 {
        waker.wake();
    }
    let last = items.items.len() < PAGE_SIZE as usize
        || u64::from(page) * u64::from(PAGE_SIZE) >= items.total;
    Ok((count, last))
}

/// Inserts a row for each item without one, in one transaction, announcing each new level;
/// answers how many.
#[tracing::instrument(skip_all, fields(items = items.len()), err)]
async fn insert_page(db: &Db, items: &[Item]) -> Result<u64, BusError> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let mut inserted = 0;
    for item in items {
        let added = sqlx::query(
            "INSERT INTO stock (item_id, available, reserved, committed, version, updated_at_ms) \
             VALUES ($1, $2, 0, 0, 1, $3) ON CONFLICT (item_id) DO NOTHING",
        )
        .bind(&item.id)
        .bind(item.stock.max(0))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added > 0 {
            announce(&mut tx, &[item.id.as_str()]).await?;
        }
        inserted += added;
    }
    tx.commit().await?;
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn seeding_keeps_trying_at_most_twice_the_longest_delay_apart() {
        let delays: Vec<Duration> = backoff().build().take(1000).collect();
        assert_eq!(delays.len(), 1000);
        assert!(delays[0] >= FIRST_RETRY && delays[0] <= FIRST_RETRY * 2);
        assert!(delays.iter().all(|d| *d <= MAX_RETRY * 2), "{delays:?}");
    }
}
