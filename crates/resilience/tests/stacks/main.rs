//! The layers composed as the shop composes them: server layers around an axum router
//! (which must stay infallible and always ready) and a client stack for one upstream.

mod client;
mod router;
