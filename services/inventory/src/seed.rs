//! Seeding stock from the catalog: one row per catalog item with the catalog's `stock` as
//! `available`, where the inventory has no row yet.
//!
//! It runs in the background, because in the distributed shape the catalog may start after
//! the inventory: a failed page is retried with a growing delay until the catalog answers.
//! Rows are inserted with `ON CONFLICT DO NOTHING`, so a restart, a second replica or an
//! admin's earlier change is never overwritten.

use std::time::Duration;

use tideway_catalog_api::{CatalogClient, Item};
use tideway_store::Db;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::time::now_ms;

/// Items asked for per catalog page.
pub const PAGE_SIZE: u32 = 100;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Seeds every catalog page, retrying until done or `token` is cancelled; sends `true` on
/// `done` once every page is in.
pub async fn run(
    db: Db,
    catalog: CatalogClient,
    token: CancellationToken,
    done: watch::Sender<bool>,
) {
    let mut page: u32 = 1;
    let mut inserted: u64 = 0;
    let mut delay = FIRST_RETRY;
    let mut attempt: u32 = 0;
    loop {
        if token.is_cancelled() {
            return;
        }
        let outcome = async {
            let items = catalog
                .items(&format!("page={page}&page_size={PAGE_SIZE}"))
                .await
                .map_err(|err| err.to_string())?;
            let count = insert_page(&db, &items.items)
                .await
                .map_err(|err| err.to_string())?;
            let last = items.items.len() < PAGE_SIZE as usize
                || u64::from(page) * u64::from(PAGE_SIZE) >= items.total;
            Ok::<_, String>((count, last))
        }
        .await;
        match outcome {
            Ok((count, last)) => {
                inserted += count;
                delay = FIRST_RETRY;
                attempt = 0;
                if last {
                    break;
                }
                page += 1;
            }
            Err(err) => {
                attempt += 1;
                tracing::warn!(page, attempt, error = %err, retry_in = ?delay, "seeding stock from the catalog failed; retrying");
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = delay.saturating_mul(2).min(MAX_RETRY);
            }
        }
    }
    tracing::info!(pages = page, inserted, "stock seeded from the catalog");
    done.send_replace(true);
}

/// Inserts a row for each item without one, in one transaction; answers how many.
#[tracing::instrument(skip_all, fields(items = items.len()), err)]
async fn insert_page(db: &Db, items: &[Item]) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let mut inserted = 0;
    for item in items {
        inserted += sqlx::query(
            "INSERT INTO stock (item_id, available, reserved, committed, version, updated_at_ms) \
             VALUES ($1, $2, 0, 0, 1, $3) ON CONFLICT (item_id) DO NOTHING",
        )
        .bind(&item.id)
        .bind(item.stock.max(0))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}
