//! The saga commands: `AuthorizePayment`, `CapturePayment`, `VoidPayment`, consumed as
//! `payment` and answered with a reply through the outbox.
//!
//! # Once, whatever is delivered
//!
//! * The same event delivered again: the inbox drops it (no effect, no second reply).
//! * Another command with a known idempotency key: it gets the stored reply again (a new
//!   event with the same payload), with no effect.
//! * Another command for an order that already has a payment (a new key): the answer is
//!   derived from the payment as it is (a second authorize of an authorized order is
//!   `PaymentAuthorized` again, never a second charge).
//! * A crash between the provider call and the commit: the re-run calls the provider with the
//!   same idempotency key, and the provider answers what it did the first time.
//!
//! A handler decides on the payment's state as read before the provider call, then commits
//! in one transaction that first takes the order's row in `payment_locks`, re-reads the state
//! and applies the change, the inbox entry, the idempotency record and the reply. If the
//! state moved meanwhile it starts over, so concurrent commands for one order never both act.

use std::sync::Arc;

use tideway_bus::{BusError, Event, EventType, inbox, outbox, outbox::RelayWaker};
use tideway_payment_api::{
    AuthorizePayment, CapturePayment, PaymentAuthorized, PaymentCaptured, PaymentDeclined,
    PaymentStatus, PaymentView, PaymentVoided, SERVICE, VoidPayment,
};
use tideway_runtime::trace;
use tideway_store::{Any, Db, Row, Transaction};
use tracing::Instrument as _;

use crate::{
    payments::{self, PaymentRecord},
    provider::{Authorization, AuthorizeRequest, Provider, ProviderError},
    time::now_ms,
    vault,
};

/// How often a handler starts over when the payment changed under it before it gives up
/// (the bus then redelivers the command).
const ATTEMPTS: usize = 5;
/// The longest idempotency key or order id accepted.
const MAX_ID_CHARS: usize = 200;

/// Why a command could not be handled; the bus redelivers it, then dead-letters it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The database failed.
    #[error("payment database error")]
    Db(#[from] sqlx::Error),
    /// The outbox or inbox failed.
    #[error("bus error")]
    Bus(#[from] BusError),
    /// The provider failed (not a decline).
    #[error("provider error")]
    Provider(#[from] ProviderError),
    /// The command can never be handled (wrong payload, key reused for something else).
    #[error("unusable command: {0}")]
    Unusable(String),
    /// The payment kept changing while the command was handled.
    #[error("the payment of order {0} kept changing; retrying later")]
    Contended(String),
}

/// A reply as stored for its idempotency key: its type and payload.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    event_type: String,
    data: serde_json::Value,
}

impl Reply {
    fn of<T: EventType>(payload: &T) -> Result<Self, CommandError> {
        Ok(Self {
            event_type: T::SUBJECT.to_owned(),
            data: serde_json::to_value(payload).map_err(BusError::from)?,
        })
    }

    /// A new event carrying this reply, about `order_id`, in the current trace.
    fn event(&self, order_id: &str) -> Result<Event, CommandError> {
        let mut event = Event::from_json(&self.event_type, self.data.clone())?;
        event.subject = Some(order_id.to_owned());
        event.traceparent = trace::current_traceparent();
        Ok(event)
    }
}

/// What a command does to the payment of its order.
#[derive(Debug)]
enum Change {
    /// Nothing.
    None,
    /// Creates the payment.
    Insert {
        view: PaymentView,
        charge_id: Option<String>,
    },
    /// Moves the payment to another state.
    Transition {
        from: PaymentStatus,
        to: PaymentStatus,
    },
    /// Remembers that the order was voided before any authorization.
    Tombstone { reason: String },
}

/// A command's outcome, decided on the state read before it.
#[derive(Debug)]
struct Decision {
    /// The payment's state it was decided on (`None`: no payment).
    seen: Option<PaymentStatus>,
    /// Whether the order was voided before authorization, when it was decided.
    seen_tombstone: bool,
    change: Change,
    /// The reply; `None`: acknowledged without a reply (and without an idempotency record).
    reply: Option<Reply>,
}

/// What [`Handlers::apply`] did.
enum Applied {
    Done,
    Stale,
}

/// A key's stored reply.
struct Stored {
    command: String,
    order_id: String,
    reply: Reply,
}

/// The command handlers: the service's database, the provider, the relay's waker.
#[derive(Debug, Clone)]
pub struct Handlers {
    db: Db,
    provider: Arc<dyn Provider>,
    waker: RelayWaker,
}

impl Handlers {
    /// Handlers over `db` calling `provider`, waking the relay with `waker` after commits.
    pub fn new(db: Db, provider: Arc<dyn Provider>, waker: RelayWaker) -> Self {
        Self {
            db,
            provider,
            waker,
        }
    }

    /// Handles one delivery of a command event, continuing the event's trace.
    pub async fn handle(&self, event: Event) -> Result<(), CommandError> {
        trace::continue_from(event.traceparent.as_deref(), async {
            let trace_id = trace::current()
                .map(|ctx| ctx.trace_id())
                .unwrap_or_default();
            let span = tracing::info_span!(
                "payment_command",
                trace_id = %trace_id,
                event_id = %event.id,
                command = %event.event_type,
                order_id = tracing::field::Empty,
            );
            let result = self.dispatch(&event).instrument(span.clone()).await;
            if let Err(err) = &result {
                span.in_scope(|| tracing::warn!(error = ?err, "a payment command failed"));
            }
            result
        })
        .await
    }

    async fn dispatch(&self, event: &Event) -> Result<(), CommandError> {
        match event.event_type.as_str() {
            AuthorizePayment::SUBJECT => {
                let command: AuthorizePayment = decode(event)?;
                self.run(
                    event,
                    "authorize",
                    &command.order_id,
                    &command.idempotency_key,
                    || self.decide_authorize(&command),
                )
                .await
            }
            CapturePayment::SUBJECT => {
                let command: CapturePayment = decode(event)?;
                self.run(
                    event,
                    "capture",
                    &command.order_id,
                    &command.idempotency_key,
                    || self.decide_capture(&command),
                )
                .await
            }
            VoidPayment::SUBJECT => {
                let command: VoidPayment = decode(event)?;
                self.run(
                    event,
                    "void",
                    &command.order_id,
                    &command.idempotency_key,
                    || self.decide_void(&command),
                )
                .await
            }
            other => {
                // Only the three command subjects are subscribed; anything else is a
                // routing mistake that no redelivery fixes.
                tracing::warn!(event_type = %other, "not a payment command; acknowledged");
                Ok(())
            }
        }
    }

    /// The common course of every command: replay a known key, else decide and apply,
    /// starting over when the payment changed in between.
    async fn run<F, Fut>(
        &self,
        event: &Event,
        command: &'static str,
        order_id: &str,
        key: &str,
        decide: F,
    ) -> Result<(), CommandError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Decision, CommandError>>,
    {
        check_id("order_id", order_id)?;
        check_id("idempotency_key", key)?;
        tracing::Span::current().record("order_id", order_id);
        for _ in 0..ATTEMPTS {
            if self.replay(event, command, order_id, key).await? {
                return Ok(());
            }
            let decision = decide().await?;
            match self.apply(event, command, order_id, key, decision).await? {
                Applied::Done => return Ok(()),
                Applied::Stale => {
                    tracing::debug!("the payment changed while the command ran; starting over");
                }
            }
        }
        Err(CommandError::Contended(order_id.to_owned()))
    }

    /// Answers a known idempotency key with its stored reply; `false` when the key is new.
    async fn replay(
        &self,
        event: &Event,
        command: &str,
        order_id: &str,
        key: &str,
    ) -> Result<bool, CommandError> {
        let Some(stored) = stored_reply(&self.db, key).await? else {
            return Ok(false);
        };
        if stored.command != command || stored.order_id != order_id {
            return Err(CommandError::Unusable(format!(
                "idempotency key {key:?} was used for {} of order {}",
                stored.command, stored.order_id
            )));
        }
        let mut tx = self.db.begin().await?;
        if inbox::record(&mut tx, SERVICE, &event.id).await? {
            outbox::enqueue(&mut tx, &stored.reply.event(order_id)?).await?;
            tx.commit().await?;
            self.waker.wake();
            tracing::info!(reply = %stored.reply.event_type, "a repeated command got its stored reply again");
        } else {
            tx.commit().await?;
            tracing::debug!("a redelivered command was acknowledged without effect");
        }
        Ok(true)
    }

    /// Commits `decision` if the payment is still as it was seen: the order's lock, the
    /// inbox entry, the change, the idempotency record and the reply, in one transaction.
    async fn apply(
        &self,
        event: &Event,
        command: &str,
        order_id: &str,
        key: &str,
        decision: Decision,
    ) -> Result<Applied, CommandError> {
        let mut tx = self.db.begin().await?;
        lock_order(&mut tx, order_id).await?;
        if !inbox::record(&mut tx, SERVICE, &event.id).await? {
            tx.commit().await?;
            tracing::debug!("a redelivered command was acknowledged without effect");
            return Ok(Applied::Done);
        }
        let status = payments::find_in(&mut tx, order_id)
            .await?
            .map(|p| p.view.status);
        let tombstone = tombstoned_in(&mut tx, order_id).await?;
        if status != decision.seen || tombstone != decision.seen_tombstone {
            tx.rollback().await?;
            return Ok(Applied::Stale);
        }
        let now = now_ms();
        let changed = match &decision.change {
            Change::None => true,
            Change::Insert { view, charge_id } => {
                payments::insert(&mut tx, view, charge_id.as_deref(), now).await?
            }
            Change::Transition { from, to } => {
                payments::transition(&mut tx, order_id, *from, *to, now).await?
            }
            Change::Tombstone { reason } => {
                sqlx::query(
                    "INSERT INTO voided_orders (order_id, reason, created_at_ms) \
                     VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(order_id)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                true
            }
        };
        if !changed {
            tx.rollback().await?;
            return Ok(Applied::Stale);
        }
        match command {
            "authorize" if decision.reply.is_some() => {
                vault::forget(&mut tx, order_id).await?;
                sqlx::query(
                    "DELETE FROM authorizations_in_flight \
                     WHERE order_id = $1 AND idempotency_key = $2",
                )
                .bind(order_id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
            "void" => vault::forget(&mut tx, order_id).await?,
            _ => {}
        }
        if let Some(reply) = &decision.reply {
            if !store_reply(&mut tx, key, command, order_id, reply, now).await? {
                // The same key committed meanwhile: replay its reply instead.
                tx.rollback().await?;
                return Ok(Applied::Stale);
            }
            outbox::enqueue(&mut tx, &reply.event(order_id)?).await?;
        }
        tx.commit().await?;
        if decision.reply.is_some() {
            self.waker.wake();
        }
        match (&decision.change, &decision.reply) {
            (Change::None, None) => {}
            (_, Some(reply)) => {
                tracing::info!(reply = %reply.event_type, "payment command handled")
            }
            (_, None) => tracing::info!("payment command handled without a reply"),
        }
        Ok(Applied::Done)
    }

    /// `AuthorizePayment`: the order's existing payment answers for itself; otherwise the
    /// command is checked, the card validated, the provider asked.
    async fn decide_authorize(&self, command: &AuthorizePayment) -> Result<Decision, CommandError> {
        let order_id = command.order_id.as_str();
        let key = command.idempotency_key.as_str();
        let existing = payments::find(&self.db, order_id).await?;
        let seen_tombstone = tombstoned(&self.db, order_id).await?;
        // This key's authorization went to the provider and was not recorded: if the order
        // is settled otherwise (voided, or paid under another key), that hold must go.
        if (existing.is_some() || seen_tombstone)
            && in_flight(&self.db, order_id)
                .await?
                .iter()
                .any(|k| k == key)
        {
            self.provider.cancel(order_id, key).await?;
            tracing::info!("an authorization overtaken by a void was cancelled at the provider");
        }
        let declined = |reason: &str| {
            Reply::of(&PaymentDeclined {
                order_id: order_id.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if let Some(PaymentRecord { view, .. }) = existing {
            let reply = match view.status {
                PaymentStatus::Authorized | PaymentStatus::Captured => {
                    Reply::of(&PaymentAuthorized {
                        order_id: order_id.to_owned(),
                        payment_id: view.payment_id.clone(),
                    })?
                }
                PaymentStatus::Declined => {
                    declined(view.decline_reason.as_deref().unwrap_or("card declined"))?
                }
                PaymentStatus::Voided | PaymentStatus::Refunded => {
                    declined("the payment was voided")?
                }
            };
            return Ok(Decision {
                seen: Some(view.status),
                seen_tombstone,
                change: Change::None,
                reply: Some(reply),
            });
        }
        let nothing = |reason: &str| -> Result<Decision, CommandError> {
            Ok(Decision {
                seen: None,
                seen_tombstone,
                change: Change::None,
                reply: Some(declined(reason)?),
            })
        };
        if seen_tombstone {
            return nothing("the payment was voided before authorization");
        }
        if command.amount_minor <= 0 {
            return nothing("invalid amount");
        }
        if !is_currency(&command.currency) {
            return nothing("invalid currency");
        }
        let payment = |status, last4: &str, reason: Option<&str>| PaymentView {
            payment_id: uuid::Uuid::now_v7().to_string(),
            order_id: order_id.to_owned(),
            amount_minor: command.amount_minor,
            currency: command.currency.clone(),
            status,
            card_last4: last4.to_owned(),
            decline_reason: reason.map(str::to_owned),
        };
        let Some(card) = vault::take(&self.db, &command.card_token, order_id).await? else {
            let reason = "the card token is unknown or has expired";
            return Ok(Decision {
                seen: None,
                seen_tombstone,
                change: Change::Insert {
                    view: payment(PaymentStatus::Declined, "", Some(reason)),
                    charge_id: None,
                },
                reply: Some(declined(reason)?),
            });
        };
        if !self.begin_in_flight(order_id, key).await? {
            // Paid or voided meanwhile: `apply` sees it and the command starts over.
            return Ok(Decision {
                seen: None,
                seen_tombstone,
                change: Change::None,
                reply: None,
            });
        }
        let authorization = self
            .provider
            .authorize(AuthorizeRequest {
                idempotency_key: &command.idempotency_key,
                order_id,
                amount_minor: command.amount_minor,
                currency: &command.currency,
                card: &card,
            })
            .await?;
        let (change, reply) = match authorization {
            Authorization::Approved { charge_id } => {
                let view = payment(PaymentStatus::Authorized, card.last4(), None);
                let reply = Reply::of(&PaymentAuthorized {
                    order_id: order_id.to_owned(),
                    payment_id: view.payment_id.clone(),
                })?;
                (
                    Change::Insert {
                        view,
                        charge_id: Some(charge_id),
                    },
                    reply,
                )
            }
            Authorization::Declined { reason } => (
                Change::Insert {
                    view: payment(PaymentStatus::Declined, card.last4(), Some(&reason)),
                    charge_id: None,
                },
                declined(&reason)?,
            ),
        };
        Ok(Decision {
            seen: None,
            seen_tombstone,
            change,
            reply: Some(reply),
        })
    }

    /// Records that the authorization of `order_id` under `key` goes to the provider, if
    /// the order has neither a payment nor a tombstone; `false` if it has one.
    async fn begin_in_flight(&self, order_id: &str, key: &str) -> Result<bool, CommandError> {
        let mut tx = self.db.begin().await?;
        lock_order(&mut tx, order_id).await?;
        if payments::find_in(&mut tx, order_id).await?.is_some()
            || tombstoned_in(&mut tx, order_id).await?
        {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO authorizations_in_flight (order_id, idempotency_key, started_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (order_id, idempotency_key) DO NOTHING",
        )
        .bind(order_id)
        .bind(key)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `CapturePayment`: only an authorized payment is captured; a captured one answers
    /// again; anything else is logged and acknowledged without a reply.
    async fn decide_capture(&self, command: &CapturePayment) -> Result<Decision, CommandError> {
        let order_id = command.order_id.as_str();
        let seen_tombstone = tombstoned(&self.db, order_id).await?;
        let Some(record) = payments::find(&self.db, order_id).await? else {
            tracing::warn!("capture of an order without a payment; acknowledged");
            return Ok(Decision {
                seen: None,
                seen_tombstone,
                change: Change::None,
                reply: None,
            });
        };
        let captured = || {
            Reply::of(&PaymentCaptured {
                order_id: order_id.to_owned(),
                payment_id: record.view.payment_id.clone(),
            })
        };
        let status = record.view.status;
        let (change, reply) = match status {
            PaymentStatus::Authorized => {
                let charge_id = charge_of(&record)?;
                self.provider
                    .capture(&command.idempotency_key, charge_id)
                    .await?;
                (
                    Change::Transition {
                        from: PaymentStatus::Authorized,
                        to: PaymentStatus::Captured,
                    },
                    Some(captured()?),
                )
            }
            PaymentStatus::Captured => (Change::None, Some(captured()?)),
            PaymentStatus::Declined | PaymentStatus::Voided | PaymentStatus::Refunded => {
                tracing::warn!(
                    status = payments::status_name(status),
                    "capture of a payment that cannot be captured; acknowledged"
                );
                (Change::None, None)
            }
        };
        Ok(Decision {
            seen: Some(status),
            seen_tombstone,
            change,
            reply,
        })
    }

    /// `VoidPayment`: an authorized payment is voided, a captured one refunded; with no
    /// payment the order is remembered as voided, so a late authorization is declined.
    async fn decide_void(&self, command: &VoidPayment) -> Result<Decision, CommandError> {
        let order_id = command.order_id.as_str();
        let seen_tombstone = tombstoned(&self.db, order_id).await?;
        let voided = |status| {
            Reply::of(&PaymentVoided {
                order_id: order_id.to_owned(),
                status,
            })
        };
        let Some(record) = payments::find(&self.db, order_id).await? else {
            // An authorization may be at the provider right now (or have got there and its
            // handler died): cancel it by its key, so no hold outlives the void whichever
            // commits first. The authorization, finding the tombstone, cancels it too.
            for key in in_flight(&self.db, order_id).await? {
                self.provider.cancel(order_id, &key).await?;
                tracing::info!("an authorization in flight was cancelled at the provider");
            }
            return Ok(Decision {
                seen: None,
                seen_tombstone,
                change: Change::Tombstone {
                    reason: command.reason.clone(),
                },
                reply: Some(voided(None)?),
            });
        };
        let status = record.view.status;
        let change = match status {
            PaymentStatus::Authorized => {
                self.provider
                    .void(&command.idempotency_key, charge_of(&record)?)
                    .await?;
                Change::Transition {
                    from: status,
                    to: PaymentStatus::Voided,
                }
            }
            PaymentStatus::Captured => {
                self.provider
                    .refund(&command.idempotency_key, charge_of(&record)?)
                    .await?;
                Change::Transition {
                    from: status,
                    to: PaymentStatus::Refunded,
                }
            }
            PaymentStatus::Declined | PaymentStatus::Voided | PaymentStatus::Refunded => {
                Change::None
            }
        };
        let after = match &change {
            Change::Transition { to, .. } => *to,
            _ => status,
        };
        tracing::info!(reason = %command.reason, "voiding the payment");
        Ok(Decision {
            seen: Some(status),
            seen_tombstone,
            change,
            reply: Some(voided(Some(after))?),
        })
    }
}

fn decode<T: EventType>(event: &Event) -> Result<T, CommandError> {
    // serde's message may quote a value, and a value may be a card number: say only what
    // could not be decoded.
    event
        .decode::<T>()
        .map_err(|_| CommandError::Unusable(format!("the data is not a valid {}", T::SUBJECT)))
}

fn check_id(name: &str, value: &str) -> Result<(), CommandError> {
    if value.trim().is_empty() || value.chars().count() > MAX_ID_CHARS {
        return Err(CommandError::Unusable(format!(
            "{name} must be 1 to {MAX_ID_CHARS} characters"
        )));
    }
    Ok(())
}

fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

fn charge_of(record: &PaymentRecord) -> Result<&str, CommandError> {
    record.charge_id.as_deref().ok_or_else(|| {
        CommandError::Unusable(format!(
            "payment {} has no provider charge",
            record.view.payment_id
        ))
    })
}

/// Takes the order's lock row for the rest of the transaction.
async fn lock_order(tx: &mut Transaction<'_, Any>, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_locks (order_id, version) VALUES ($1, 1) \
         ON CONFLICT (order_id) DO UPDATE SET version = payment_locks.version + 1",
    )
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The idempotency keys of the authorizations of `order_id` sent to the provider and not
/// recorded yet.
async fn in_flight(db: &Db, order_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT idempotency_key FROM authorizations_in_flight WHERE order_id = $1 \
         ORDER BY idempotency_key",
    )
    .bind(order_id)
    .fetch_all(db.pool())
    .await
}

async fn tombstoned(db: &Db, order_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voided_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(db.pool())
        .await?;
    Ok(n > 0)
}

async fn tombstoned_in(tx: &mut Transaction<'_, Any>, order_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voided_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(n > 0)
}

async fn stored_reply(db: &Db, key: &str) -> Result<Option<Stored>, CommandError> {
    let Some(row) = sqlx::query(
        "SELECT command, order_id, reply_type, reply FROM idempotency WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(db.pool())
    .await?
    else {
        return Ok(None);
    };
    let reply: String = row.try_get("reply")?;
    Ok(Some(Stored {
        command: row.try_get("command")?,
        order_id: row.try_get("order_id")?,
        reply: Reply {
            event_type: row.try_get("reply_type")?,
            data: serde_json::from_str(&reply).map_err(BusError::from)?,
        },
    }))
}

/// Records `reply` for `key`; `false` when the key already has one.
async fn store_reply(
    tx: &mut Transaction<'_, Any>,
    key: &str,
    command: &str,
    order_id: &str,
    reply: &Reply,
    now: i64,
) -> Result<bool, CommandError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency (idempotency_key, command, order_id, reply_type, reply, \
         created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(command)
    .bind(order_id)
    .bind(&reply.event_type)
    .bind(serde_json::to_string(&reply.data).map_err(BusError::from)?)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
