//! `tideway bench-upstream` (hidden): a bare axum server answering `hello` to every
//! request, with no middleware at all. The benchmarks put it behind the gateway, nginx and
//! haproxy as the same trivial upstream, and use it alone as this machine's ceiling for an
//! axum handler.

use std::process::ExitCode;

use anyhow::Context;
use axum::Router;

/// `tideway bench-upstream`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
}

/// The bare router: `hello` for any method and path.
pub fn router() -> Router {
    Router::new().fallback(|| async { "hello" })
}

/// The command: serves until Ctrl-C or SIGTERM.
pub fn main(args: UpstreamArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: UpstreamArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("bench upstream on http://{}", listener.local_addr()?);
    let shutdown = tideway_runtime::serve::shutdown_on_signals();
    axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving")
}
