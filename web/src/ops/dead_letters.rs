//! `/ops/dead-letters`: the bus's dead letters (consumer, event, deliveries, last error),
//! each with a button that redrives it; the same store `tideway dlq` reads.

use std::sync::{Arc, PoisonError};

use axum::{
    Form,
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use tideway_bus::DeadLetters;

use super::admin;
use crate::{
    AppState,
    error::PageError,
    layout::{Section, csrf_field, page},
    session::Visitor,
};

impl super::Console {
    /// The dead-letter store the page shows.
    pub(crate) fn dead_letters(&self) -> Option<Arc<dyn DeadLetters>> {
        self.dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_dead_letters(&self, store: Arc<dyn DeadLetters>) {
        *self
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(store);
    }
}

/// `GET /ops/dead-letters`.
pub(crate) async fn list(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    admin(&visitor, "/ops/dead-letters")?;
    let letters = match state.ops.dead_letters() {
        Some(store) => Some(store.list().await),
        None => None,
    };
    let body = html! {
        h1 { "Dead letters" }
        p.hint { "Events a consumer failed to handle on every delivery. A redrive delivers one again; it leaves this list once handled." }
        @match letters {
            None => p.empty { "This process does not follow the bus." }
            Some(Err(err)) => p.alert role="alert" { "The dead-letter store did not answer: " (err) }
            Some(Ok(letters)) if letters.is_empty() => p.empty { "No dead letters." }
            Some(Ok(letters)) => {
                table.dead-letters {
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Consumer" } th scope="col" { "Event" }
                        th scope="col" { "Subject" } th scope="col" class="num" { "Deliveries" }
                        th scope="col" { "Last error" } th scope="col" { "" }
                    } }
                    tbody {
                        @for l in &letters {
                            tr data-dead-letter=(l.id) {
                                td { code { (l.id) } }
                                td { (l.letter.consumer) }
                                td { code { (l.letter.event.event_type) } }
                                td { (l.letter.event.subject.clone().unwrap_or_default()) }
                                td.num { (l.letter.deliveries) }
                                td { small { (l.letter.error) } }
                                td {
                                    form method="post" action="/ops/dead-letters/redrive" {
                                        (csrf_field(&visitor))
                                        input type="hidden" name="id" value=(l.id);
                                        button type="submit" { "Redrive" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Dead letters", &visitor, Section::Ops, body))
}

/// The redrive form.
#[derive(Debug, Deserialize)]
pub(crate) struct RedriveForm {
    id: String,
}

/// `POST /ops/dead-letters/redrive`: redrives one and comes back to the list.
pub(crate) async fn redrive(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<RedriveForm>,
) -> Result<Response, PageError> {
    admin(&visitor, "/ops/dead-letters")?;
    if let Some(store) = state.ops.dead_letters() {
        match store.redrive(&form.id).await {
            Ok(done) => {
                tracing::info!(id = %form.id, done, "Dead letter redriven from the console.")
            }
            Err(err) => {
                tracing::warn!(id = %form.id, error = %err, "Redriving a dead letter failed.")
            }
        }
    }
    Ok(Redirect::to("/ops/dead-letters").into_response())
}
