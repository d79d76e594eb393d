//! `GET /notifications`: the emails the shop sent the signed-in customer, newest first,
//! read through the gateway from the notification service.

use axum::extract::State;
use maud::{Markup, html};
use tideway_notification_api::{MINE_PATH, NotificationPage};

use super::basket::signed_in as require_user;
use crate::{
    AppState,
    error::PageError,
    layout::{Section, badge, page, when},
    session::Visitor,
};

/// `GET /notifications`.
pub(crate) async fn list(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    let user = require_user(&visitor, "/notifications")?;
    let notes: NotificationPage = state
        .api
        .get(&user.token, &format!("{MINE_PATH}?limit=50"))
        .await
        .map_err(|err| PageError::from_client(err, "/notifications"))?;
    let body = html! {
        h1 { "Your notifications" }
        @if notes.items.is_empty() {
            p.empty { "No notifications yet: you get one when an order is confirmed or cancelled, or a payment refunded." }
        } @else {
            ol.notifications {
                @for note in &notes.items {
                    li.notification data-kind=(note.kind.as_str()) {
                        h2 { (note.subject) }
                        p.meta {
                            (when(&note.created_at)) " · to " (note.to) " · " (badge(note.status.as_str()))
                        }
                        pre.mail { (note.text) }
                    }
                }
            }
        }
    };
    Ok(page("Your notifications", &visitor, Section::Orders, body))
}
