//! Rendering an email per event, and sending it: over SMTP (`notification.smtp_url`) or,
//! in the embedded default, into a mailbox directory of `.eml` files.
//!
//! Every message carries `Message-ID: <notification id@tideway.local>`, the id of the event
//! it tells about: the same notification always has the same id, so a mail client or relay
//! that sees it twice can tell it is one message.

use std::{path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use maud::html;
use tideway_notification_api::NotificationKind;

/// The domain of every `Message-ID`.
pub const MESSAGE_ID_DOMAIN: &str = "tideway.local";

/// An email, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// The text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// What an email tells about an order.
#[derive(Debug, Clone)]
pub struct OrderFacts<'a> {
    /// What happened.
    pub kind: NotificationKind,
    /// The order.
    pub order_id: &'a str,
    /// The order's total in minor units.
    pub total_minor: i64,
    /// Why it was cancelled.
    pub reason: Option<&'a str>,
    /// Its lines: name and quantity (confirmations only).
    pub lines: Vec<(String, i64)>,
}

/// Euros and cents from minor units: `1299` → `12.99`.
pub fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The email for `facts`.
pub fn render(facts: &OrderFacts<'_>) -> Rendered {
    let short: String = facts
        .order_id
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let total = format!("EUR {}", money(facts.total_minor));
    let (subject, lead) = match facts.kind {
        NotificationKind::OrderConfirmed => (
            format!("Your Tideway order {short} is confirmed"),
            format!("Thank you: your order {short} is confirmed and paid ({total})."),
        ),
        NotificationKind::OrderCancelled => (
            format!("Your Tideway order {short} is cancelled"),
            format!(
                "Your order {short} is cancelled: {}. Nothing was charged.",
                facts.reason.unwrap_or("no reason given")
            ),
        ),
        NotificationKind::PaymentRefunded => (
            format!("Your payment for order {short} is refunded"),
            format!("We have refunded the payment for your order {short} ({total})."),
        ),
    };
    let mut text = format!("Hello,\n\n{lead}\n");
    if !facts.lines.is_empty() {
        text.push('\n');
        for (name, quantity) in &facts.lines {
            text.push_str(&format!("  {quantity} x {name}\n"));
        }
    }
    text.push_str(&format!("\nOrder: {}\n\nTideway\n", facts.order_id));
    let html = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (subject) } }
            body {
                p { "Hello," }
                p { (lead) }
                @if !facts.lines.is_empty() {
                    ul { @for (name, quantity) in &facts.lines { li { (quantity) " × " (name) } } }
                }
                p { "Order: " code { (facts.order_id) } }
                p { "Tideway" }
            }
        }
    }
    .into_string();
    Rendered {
        subject,
        text,
        html,
    }
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The address or the message could not be built.
    #[error("cannot build the message: {0}")]
    Message(String),
    /// The mail server refused or could not be reached.
    #[error("the mail server did not take the message: {0}")]
    Smtp(#[source] lettre::transport::smtp::Error),
    /// Writing to the mailbox failed.
    #[error("cannot write to the mailbox {path}")]
    Mailbox {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One email to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The notification id (the `Message-ID`'s local part, the mailbox file's name).
    pub id: &'a str,
    /// The recipient's address.
    pub to: &'a str,
    /// The content.
    pub rendered: &'a Rendered,
}

/// Where messages go.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp {
        /// The transport (a connection per message).
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The sender.
        from: Mailbox,
    },
    /// A directory: `<id>.eml` per message, written whole (to a temporary name, then
    /// renamed), so writing one twice leaves one message.
    Mailbox {
        /// The directory.
        dir: PathBuf,
        /// The sender.
        from: Mailbox,
    },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp { from, .. } => write!(f, "Mailer::Smtp(from {from})"),
            Self::Mailbox { dir, .. } => write!(f, "Mailer::Mailbox({})", dir.display()),
        }
    }
}

impl Mailer {
    /// A mailer over the SMTP server of `url` (`smtp://host:port`, `smtps://…`, or
    /// `smtp://…?tls=required` for STARTTLS), each exchange bounded by `timeout`.
    pub fn smtp(url: &str, from: Mailbox, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|err| err.to_string())?
            .timeout(Some(timeout))
            .build();
        Ok(Self::Smtp { transport, from })
    }

    /// A mailer writing into `dir` (created when missing).
    pub fn mailbox(dir: PathBuf, from: Mailbox) -> Self {
        Self::Mailbox { dir, from }
    }

    fn from(&self) -> &Mailbox {
        match self {
            Self::Smtp { from, .. } | Self::Mailbox { from, .. } => from,
        }
    }

    /// The message for `outgoing`: text and HTML alternatives, its stable `Message-ID`.
    pub fn message(&self, outgoing: &Outgoing<'_>) -> Result<Message, SendError> {
        let to: Mailbox = outgoing
            .to
            .parse()
            .map_err(|err| SendError::Message(format!("recipient {:?}: {err}", outgoing.to)))?;
        Message::builder()
            .from(self.from().clone())
            .to(to)
            .subject(outgoing.rendered.subject.clone())
            .message_id(Some(format!("<{}@{MESSAGE_ID_DOMAIN}>", outgoing.id)))
            .multipart(MultiPart::alternative_plain_html(
                outgoing.rendered.text.clone(),
                outgoing.rendered.html.clone(),
            ))
            .map_err(|err| SendError::Message(err.to_string()))
    }

    /// Sends `outgoing`; `Ok` once the server (or the mailbox) has it.
    #[tracing::instrument(skip_all, fields(id = %outgoing.id), err)]
    pub async fn send(&self, outgoing: &Outgoing<'_>) -> Result<(), SendError> {
        let message = self.message(outgoing)?;
        match self {
            Self::Smtp { transport, .. } => {
                transport.send(message).await.map_err(SendError::Smtp)?;
                Ok(())
            }
            Self::Mailbox { dir, .. } => {
                let io = |path: &PathBuf| {
                    let path = path.clone();
                    move |source| SendError::Mailbox { path, source }
                };
                tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
                let path = dir.join(format!("{}.eml", outgoing.id));
                let partial = dir.join(format!(".{}.eml.partial", outgoing.id));
                tokio::fs::write(&partial, message.formatted())
                    .await
                    .map_err(io(&partial))?;
                tokio::fs::rename(&partial, &path)
                    .await
                    .map_err(io(&path))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money(1299), "12.99");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-100), "-1.00");
    }

    #[test]
    fn every_kind_renders_text_and_escaped_html() {
        let facts = OrderFacts {
            kind: NotificationKind::OrderCancelled,
            order_id: "0193-abcdef12",
            total_minor: 2598,
            reason: Some("payment declined: <card> declined"),
            lines: vec![],
        };
        let mail = render(&facts);
        assert_eq!(mail.subject, "Your Tideway order abcdef12 is cancelled");
        assert!(
            mail.text.contains("payment declined: <card> declined"),
            "{}",
            mail.text
        );
        assert!(mail.html.contains("&lt;card&gt;"), "{}", mail.html);
        let confirmed = render(&OrderFacts {
            kind: NotificationKind::OrderConfirmed,
            lines: vec![("Kettle".into(), 2)],
            ..facts.clone()
        });
        assert!(confirmed.text.contains("2 x Kettle"), "{}", confirmed.text);
        assert!(confirmed.text.contains("EUR 25.98"), "{}", confirmed.text);
        let refunded = render(&OrderFacts {
            kind: NotificationKind::PaymentRefunded,
            ..facts
        });
        assert!(refunded.subject.contains("refunded"));
    }
}
