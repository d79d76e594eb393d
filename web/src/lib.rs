//! Tideway's web front: the storefront and the operations console.
//!
//! Pages are rendered on the server (maud) and enhanced with htmx: the catalog's search
//! updates its results as one types, the basket's quantities change in place, the order
//! page follows its checkout saga over server-sent events, and the console refreshes its
//! figures. Every page also works without JavaScript. The front is a client of the public
//! API: it calls the gateway's routes through a [`Transport`] with the signed-in user's
//! token (kept in HttpOnly cookies), so it sees exactly what any other client sees.
//! Static assets (htmx, its SSE extension, the stylesheet) are vendored and embedded.
#![warn(missing_docs)]

mod api;
mod assets;
pub mod bff;
mod docs;
mod error;
mod images;
mod layout;
pub mod ops;
mod security;
mod session;
pub(crate) mod shop;
mod streams;

use std::sync::Arc;

use axum::{Router, middleware};
use tideway_bus::{Bus, BusError, SubscriptionHandle};
use tideway_runtime::{auth::JwtVerifier, client::Transport};

pub use ops::{OpsSources, RouteInfo};
pub use security::PublicOrigin;
pub use streams::StreamCaps;

/// The flag that shows the item page's "You may also like" panel (other items of the
/// same category, from the catalog's list).
pub const YOU_MAY_ALSO_LIKE: &str = "you-may-also-like";

/// What the web front needs.
pub struct WebOptions {
    /// The public API (the gateway's routes), in this process or at a URL.
    pub api: Transport,
    /// Verifies the access tokens kept in the session cookie.
    pub verifier: Arc<JwtVerifier>,
    /// What the operations console shows.
    pub ops: OpsSources,
    /// Where the pages are served from: it names the site a form may come from, and under
    /// `https` makes the cookies `Secure` and `__Host-`.
    pub origin: PublicOrigin,
    /// Demo accounts that exist in this shop, shown on the sign-in page (none in production).
    pub demo_logins: Vec<DemoLogin>,
    /// How many live streams (an order page's updates) may be open.
    pub streams: StreamCaps,
    /// The API's OpenAPI document (JSON), served at `/api/openapi.json` with its reference
    /// page at `/api/docs`; `None` serves neither.
    pub openapi: Option<bytes::Bytes>,
    /// The running feature flags, asked about the signed-in user of each page.
    pub flags: tideway_flags::Flags,
}

/// A demo account's email and (well-known, public) password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoLogin {
    /// The email.
    pub email: String,
    /// The password.
    pub password: String,
}

/// The web front, ready to be turned into a router.
#[derive(Clone)]
pub struct Web {
    state: AppState,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) api: api::Api,
    pub(crate) verifier: Arc<JwtVerifier>,
    pub(crate) ops: Arc<ops::Console>,
    pub(crate) origin: Arc<PublicOrigin>,
    pub(crate) cookies: session::Cookies,
    pub(crate) refreshes: Arc<session::Refreshes>,
    pub(crate) demo_logins: Arc<Vec<DemoLogin>>,
    pub(crate) streams: Arc<streams::Streams>,
    pub(crate) openapi: Option<bytes::Bytes>,
    pub(crate) flags: tideway_flags::Flags,
}

impl Web {
    /// A web front over `options.api`.
    pub fn new(options: WebOptions) -> Self {
        Self {
            state: AppState {
                api: api::Api::new(options.api),
                verifier: options.verifier,
                ops: Arc::new(ops::Console::new(options.ops)),
                cookies: session::Cookies::new(options.origin.is_secure()),
                origin: Arc::new(options.origin),
                refreshes: Arc::new(session::Refreshes::default()),
                demo_logins: Arc::new(options.demo_logins),
                streams: Arc::new(streams::Streams::new(options.streams)),
                openapi: options.openapi,
                flags: options.flags,
            },
        }
    }

    /// Shows `store`'s dead letters on `/ops/dead-letters`, with a redrive button each.
    pub fn show_dead_letters(&self, store: Arc<dyn tideway_bus::DeadLetters>) {
        self.state.ops.set_dead_letters(store);
    }

    /// Starts the console's background sampler, which reads every service's `/metrics`
    /// every [`OpsSources::sample_every`] and keeps 15 minutes of readings for the charts.
    /// Later calls do nothing; [`shutdown`](Self::shutdown) stops it (dropping the last
    /// copy of the front does too). Call inside a Tokio runtime.
    pub fn start_sampling(&self) {
        self.state.ops.start_sampling();
    }

    /// Stops the front's background work (the console's sampler) and waits for it.
    pub async fn shutdown(&self) {
        self.state.ops.shutdown().await;
    }

    /// Subscribes the console's event tap to `bus` (before an embedded bus is opened).
    pub async fn tap_events(&self, bus: &Arc<dyn Bus>) -> Result<SubscriptionHandle, BusError> {
        self.state.ops.events().subscribe(bus).await
    }

    /// The pages, the images and the assets. Mount beside the API routes (no prefix).
    ///
    /// Only the pages look at the session: assets and pictures need no user, and a browser
    /// fetches them in parallel, which with an expired access token would race several
    /// refreshes of one (rotating, single-use) refresh token. Every page's form post is
    /// checked for its CSRF token and origin before the session is looked at, and every
    /// answer carries the security headers.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(shop::routes())
            .merge(ops::routes())
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                session::middleware,
            ))
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                security::csrf,
            ))
            .merge(images::routes())
            .merge(bff::routes())
            .merge(assets::routes())
            .merge(docs::routes(self.state.openapi.clone()))
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                security::headers,
            ))
            .with_state(self.state.clone())
    }
}
