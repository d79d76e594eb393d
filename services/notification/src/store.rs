//! The `recipients` and `notifications` tables.

use tideway_notification_api::{DeliveryStatus, NotificationKind, NotificationView};
use tideway_store::{Any, AnyRow, Db, Row, Transaction};

use crate::mail::Rendered;

/// Who an order belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The customer.
    pub user_id: String,
    /// Their address, when the order's event carried it.
    pub email: Option<String>,
    /// The order's total in minor units.
    pub total_minor: i64,
}

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// What the API shows.
    pub view: NotificationView,
    /// The HTML part.
    pub html: String,
}

/// Records who `order_id` belongs to (the first event wins).
pub async fn remember(
    tx: &mut Transaction<'_, Any>,
    order_id: &str,
    recipient: &Recipient,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recipients (order_id, user_id, email, total_minor, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(&recipient.user_id)
    .bind(recipient.email.as_deref())
    .bind(recipient.total_minor)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Who `order_id` belongs to, if its placement was seen.
pub async fn recipient(
    tx: &mut Transaction<'_, Any>,
    order_id: &str,
) -> Result<Option<Recipient>, sqlx::Error> {
    let row = sqlx::query("SELECT user_id, email, total_minor FROM recipients WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|row| {
        Ok(Recipient {
            user_id: row.try_get("user_id")?,
            email: row.try_get("email")?,
            total_minor: row.try_get("total_minor")?,
        })
    })
    .transpose()
}

/// A new notification to insert.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    /// Its id: the event's.
    pub id: &'a str,
    /// The customer.
    pub user_id: &'a str,
    /// The order.
    pub order_id: &'a str,
    /// The address ('' when none is known).
    pub to: &'a str,
    /// What it tells.
    pub kind: NotificationKind,
    /// The content.
    pub rendered: &'a Rendered,
    /// `pending`, or `failed` when it cannot be sent at all.
    pub status: DeliveryStatus,
    /// Why it is failed.
    pub error: Option<&'a str>,
}

/// Inserts `new` unless a notification with its id exists.
pub async fn insert(
    tx: &mut Transaction<'_, Any>,
    new: &NewNotification<'_>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifications (id, user_id, order_id, recipient, kind, subject, text_body, \
         html_body, status, attempts, last_error, claimed_until_ms, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, 0, $11) ON CONFLICT (id) DO NOTHING",
    )
    .bind(new.id)
    .bind(new.user_id)
    .bind(new.order_id)
    .bind(new.to)
    .bind(new.kind.as_str())
    .bind(&new.rendered.subject)
    .bind(&new.rendered.text)
    .bind(&new.rendered.html)
    .bind(new.status.as_str())
    .bind(new.error)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, user_id, order_id, recipient, kind, subject, text_body, html_body, \
                       status, attempts, last_error, created_at_ms, sent_at_ms";

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn stored(row: &AnyRow) -> Result<Stored, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let attempts: i64 = row.try_get("attempts")?;
    let sent_at: Option<i64> = row.try_get("sent_at_ms")?;
    let decode = |what: &str, value: &str| {
        sqlx::Error::Decode(format!("unknown notification {what} {value:?}").into())
    };
    Ok(Stored {
        view: NotificationView {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            order_id: row.try_get("order_id")?,
            to: row.try_get("recipient")?,
            kind: NotificationKind::parse(&kind).ok_or_else(|| decode("kind", &kind))?,
            subject: row.try_get("subject")?,
            text: row.try_get("text_body")?,
            status: DeliveryStatus::parse(&status).ok_or_else(|| decode("status", &status))?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            last_error: row.try_get("last_error")?,
            created_at: rfc3339(row.try_get("created_at_ms")?),
            sent_at: sent_at.map(rfc3339),
        },
        html: row.try_get("html_body")?,
    })
}

/// The notification `id`.
pub async fn find(db: &Db, id: &str) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?
    .as_ref()
    .map(stored)
    .transpose()
}

/// Up to `limit` notifications, newest first: of `user_id`, or everyone's.
pub async fn latest(
    db: &Db,
    user_id: Option<&str>,
    limit: i64,
) -> Result<Vec<NotificationView>, sqlx::Error> {
    let rows =
        match user_id {
            Some(user) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 \
                 ORDER BY created_at_ms DESC, id DESC LIMIT $2"
                ))
                .bind(user)
                .bind(limit)
                .fetch_all(db.pool())
                .await?
            }
            None => sqlx::query(&format!(
                "SELECT {COLUMNS} FROM notifications ORDER BY created_at_ms DESC, id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(db.pool())
            .await?,
        };
    rows.iter().map(|row| stored(row).map(|s| s.view)).collect()
}

/// Claims `id` for one send attempt until `until_ms`: `true` when it is not sent and no
/// other delivery holds an unexpired claim. Counts the attempt.
pub async fn claim(db: &Db, id: &str, now_ms: i64, until_ms: i64) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE notifications SET claimed_until_ms = $3, attempts = attempts + 1 \
         WHERE id = $1 AND status <> 'sent' AND claimed_until_ms < $2",
    )
    .bind(id)
    .bind(now_ms)
    .bind(until_ms)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Marks `id` sent and releases its claim.
pub async fn sent(db: &Db, id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = 'sent', sent_at_ms = $2, last_error = NULL, \
         claimed_until_ms = 0 WHERE id = $1",
    )
    .bind(id)
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Records a refused attempt of `id` and releases its claim; `status` is `pending` while
/// attempts remain, `failed` after the last.
pub async fn refused(
    db: &Db,
    id: &str,
    error: &str,
    status: DeliveryStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = $2, last_error = $3, claimed_until_ms = 0 \
         WHERE id = $1 AND status <> 'sent'",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(error)
    .execute(db.pool())
    .await?;
    Ok(())
}
