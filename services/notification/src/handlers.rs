//! The event handlers (consumer `notification`): who each order belongs to, then one email
//! per order confirmed, order cancelled and payment refunded.
//!
//! # Effectively once
//!
//! 1. In one transaction the inbox records the event id and the rendered notification is
//!    inserted (`pending`, its id the event's). A redelivery finds the id and renders
//!    nothing.
//! 2. Then the notification is sent unless it is `sent`: a conditional update claims it for
//!    one attempt (so two deliveries of one event never send at once), the mailer sends it,
//!    and it is marked `sent`. A refusal returns an error, and the bus redelivers the event
//!    after its backoff; step 1 is then a no-op and step 2 tries again.
//! 3. After the last delivery the bus dead-letters the event; its dead letter, delivered
//!    back here on `tideway.dlq.notification`, marks the notification `failed`. A redrive
//!    delivers the event again and step 2 sends it.
//!
//! The one window left: a process killed after the server accepted a message and before
//! it is marked sent sends it again on redelivery. The message keeps its `Message-ID`, so
//! the copy is recognisable; a mailbox file is simply written again under its own name.

use std::sync::Arc;

use tideway_bus::{DeadLetter, Event, EventType, HandlerError, inbox};
use tideway_notification_api::{DeliveryStatus, NotificationKind, SERVICE};
use tideway_ordering_api::{OrderCancelled, OrderConfirmed, OrderPlaced};
use tideway_payment_api::{PaymentStatus, PaymentVoided};
use tideway_store::Db;

use crate::{
    mail::{Mailer, OrderFacts, Outgoing, render},
    now_ms,
    store::{self, NewNotification, Recipient},
};

/// The subjects the service consumes (besides its own dead letters).
pub const SUBJECTS: [&str; 4] = [
    OrderPlaced::SUBJECT,
    OrderConfirmed::SUBJECT,
    OrderCancelled::SUBJECT,
    PaymentVoided::SUBJECT,
];

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Handlers {
    db: Db,
    mailer: Arc<Mailer>,
    /// How long one send attempt holds its claim, in milliseconds.
    claim_ms: i64,
}

impl Handlers {
    /// Handlers over `db`, sending through `mailer`, an attempt holding its claim for
    /// `claim_ms`.
    pub fn new(db: Db, mailer: Arc<Mailer>, claim_ms: i64) -> Self {
        Self {
            db,
            mailer,
            claim_ms,
        }
    }

    /// Handles one delivery of `event`.
    #[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.event_type))]
    pub async fn handle(&self, event: Event) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            OrderPlaced::SUBJECT => {
                let placed: OrderPlaced = event.decode()?;
                let mut tx = self.db.begin().await?;
                if inbox::record(&mut tx, SERVICE, &event.id).await? {
                    let recipient = Recipient {
                        user_id: placed.user_id,
                        email: placed.email,
                        total_minor: placed.total_minor,
                    };
                    store::remember(&mut tx, &placed.order_id, &recipient, now_ms()).await?;
                }
                tx.commit().await?;
                Ok(())
            }
            OrderConfirmed::SUBJECT => {
                let confirmed: OrderConfirmed = event.decode()?;
                let lines = confirmed
                    .lines
                    .iter()
                    .map(|line| (line.name.clone(), line.quantity))
                    .collect();
                let facts = OrderFacts {
                    kind: NotificationKind::OrderConfirmed,
                    order_id: &confirmed.order_id,
                    total_minor: confirmed.total_minor,
                    reason: None,
                    lines,
                };
                self.tell(&event, facts).await
            }
            OrderCancelled::SUBJECT => {
                let cancelled: OrderCancelled = event.decode()?;
                let facts = OrderFacts {
                    kind: NotificationKind::OrderCancelled,
                    order_id: &cancelled.order_id,
                    total_minor: 0,
                    reason: Some(&cancelled.reason),
                    lines: Vec::new(),
                };
                self.tell(&event, facts).await
            }
            PaymentVoided::SUBJECT => {
                let voided: PaymentVoided = event.decode()?;
                // A voided hold took nothing; only a refund of captured funds is news.
                if voided.status != Some(PaymentStatus::Refunded) {
                    return Ok(());
                }
                let facts = OrderFacts {
                    kind: NotificationKind::PaymentRefunded,
                    order_id: &voided.order_id,
                    total_minor: 0,
                    reason: None,
                    lines: Vec::new(),
                };
                self.tell(&event, facts).await
            }
            _ if event.event_type == tideway_bus::subject::dead_letter(SERVICE) => {
                let letter = DeadLetter::from_event(&event)?;
                store::refused(
                    &self.db,
                    &letter.event.id,
                    &letter.error,
                    DeliveryStatus::Failed,
                )
                .await?;
                metrics::counter!("tideway_notifications_dead_lettered_total").increment(1);
                tracing::error!(
                    notification = %letter.event.id, deliveries = letter.deliveries,
                    error = %letter.error, "Notification dead-lettered; a redrive sends it."
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Renders and records the notification of `event` once, then sends it unless sent.
    async fn tell(&self, event: &Event, mut facts: OrderFacts<'_>) -> Result<(), HandlerError> {
        let mut tx = self.db.begin().await?;
        if inbox::record(&mut tx, SERVICE, &event.id).await? {
            let Some(recipient) = store::recipient(&mut tx, facts.order_id).await? else {
                // Its placement has not arrived yet (another subject, another consumer on
                // NATS): roll back and let the bus deliver this again later.
                return Err(format!("order {} is not known yet", facts.order_id).into());
            };
            if facts.total_minor == 0 {
                facts.total_minor = recipient.total_minor;
            }
            let rendered = render(&facts);
            let (to, status, error) = match &recipient.email {
                Some(email) => (email.as_str(), DeliveryStatus::Pending, None),
                None => (
                    "",
                    DeliveryStatus::Failed,
                    Some("no email address is known for this order"),
                ),
            };
            let new = NewNotification {
                id: &event.id,
                user_id: &recipient.user_id,
                order_id: facts.order_id,
                to,
                kind: facts.kind,
                rendered: &rendered,
                status,
                error,
            };
            store::insert(&mut tx, &new, now_ms()).await?;
        }
        tx.commit().await?;
        self.send(&event.id).await
    }

    /// Sends notification `id` unless it is sent (or has no address).
    async fn send(&self, id: &str) -> Result<(), HandlerError> {
        let Some(stored) = store::find(&self.db, id).await? else {
            return Ok(());
        };
        let view = &stored.view;
        if view.status == DeliveryStatus::Sent || view.to.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        if !store::claim(&self.db, id, now, now + self.claim_ms).await? {
            return Err(format!("notification {id} is being sent by another delivery").into());
        }
        let rendered = crate::mail::Rendered {
            subject: view.subject.clone(),
            text: view.text.clone(),
            html: stored.html.clone(),
        };
        let outgoing = Outgoing {
            id,
            to: &view.to,
            rendered: &rendered,
        };
        let kind = view.kind.as_str();
        match self.mailer.send(&outgoing).await {
            Ok(()) => {
                store::sent(&self.db, id, now_ms()).await?;
                metrics::counter!("tideway_notifications_sent_total", "kind" => kind).increment(1);
                tracing::info!(notification = %id, kind, attempt = view.attempts + 1, "Notification sent.");
                Ok(())
            }
            Err(err) => {
                let error = error_chain(&err);
                store::refused(&self.db, id, &error, DeliveryStatus::Pending).await?;
                metrics::counter!("tideway_notification_send_failures_total", "kind" => kind)
                    .increment(1);
                Err(error.into())
            }
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
