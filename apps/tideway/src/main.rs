//! `tideway`: the whole shop in one process (`up`), one service (`serve`), or the gateway
//! alone (`gateway`); the load generator (`load`). See the README for the modes and the
//! configuration.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};
use tideway::{App, Config, ServiceName};
use tideway_runtime::{serve::shutdown_on_signals, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "tideway",
    version,
    about = "A scalable online shop as Rust microservices"
)]
struct Cli {
    /// A configuration file (default: ./tideway.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway and every service in this process (embedded mode, SQLite).
    Up,
    /// Run one service on its own port.
    Serve {
        /// The service.
        #[arg(value_enum)]
        service: ServiceName,
    },
    /// Run the gateway alone, in front of the services at `urls.*`.
    Gateway,
    /// Send an open-loop load at a fixed rate; print a table, write a report and a plot.
    Load(Box<tideway::load::LoadArgs>),
    /// A bare hello server for the benchmarks.
    #[command(hide = true)]
    BenchUpstream(tideway::load::upstream::UpstreamArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // These tools need no service configuration.
    let command = match cli.command {
        Command::Load(args) => return tideway::load::main(*args),
        Command::BenchUpstream(args) => return tideway::load::upstream::main(args),
        command => command,
    };
    // Bad configuration stops start-up before anything binds a port.
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log.format, &config.log.filter);
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
    match runtime.block_on(run(command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "tideway stopped on an error");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let shutdown = shutdown_on_signals();
    let (app, role) = match &command {
        Command::Up => (
            App::embedded(&config).await?,
            "every service, embedded".to_owned(),
        ),
        Command::Serve { service } => (
            App::service(&config, *service).await?,
            format!("the {} service", service.as_str()),
        ),
        Command::Gateway => (App::gateway(&config).await?, "the gateway".to_owned()),
        Command::Load(_) | Command::BenchUpstream(_) => anyhow::bail!("handled before"),
    };
    let addr = app.local_addr()?;
    // For whoever started this process on port 0 (`127.0.0.1:0`): where it is, once bound.
    println!("listening on {addr}");
    let ready_ms = started.elapsed().as_millis();
    tracing::info!(%addr, role, ready_ms, "tideway is listening");
    println!("\nTideway: {role} on http://{addr} (ready in {ready_ms} ms)");
    if !matches!(command, Command::Serve { .. }) {
        println!("  shop        http://{addr}/");
        println!("  console     http://{addr}/ops  (admins)");
        println!("  catalog     http://{addr}/api/catalog/items");
        println!("  health      http://{addr}/health/ready");
        println!("  metrics     http://{addr}/metrics");
    }
    if matches!(command, Command::Up) {
        println!("  data        {}", config.data_dir.display());
        // Configured passwords are secrets: only the public demo ones are printed.
        for user in &config.identity.service.seed_users {
            println!(
                "  account     {}  ({}; the configured password)",
                user.email,
                user.roles.join(", ")
            );
        }
        for demo in config.demo_logins(true) {
            let roles = tideway::config::demo_users()
                .into_iter()
                .find(|user| user.email == demo.email)
                .map(|user| user.roles.join(", "))
                .unwrap_or_default();
            println!(
                "  login       {} / {}  ({roles})",
                demo.email, demo.password
            );
        }
    }
    println!("Press Ctrl-C to stop.\n");
    app.run_until_stopped(shutdown).await?;
    tracing::info!("tideway stopped cleanly");
    Ok(())
}
