//! `tideway`: the whole shop in one process (`up`) or as supervised processes (`up
//! --distributed`), one service (`serve`), or the gateway alone (`gateway`); the load
//! generator (`load`). See the README for the modes and the configuration.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tideway::{App, Config, ServiceName};
use tideway_runtime::{serve::shutdown_on_signals, telemetry};

/// mimalloc instead of the C library's allocator: every request allocates its headers,
/// futures and buffers, and glibc's malloc and free were a tenth of the gateway's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Stop (gracefully) once the process that started this one is gone: set by the
    /// supervisor of `up --distributed` for its children.
    #[arg(long, global = true, hide = true)]
    exit_with_parent: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway and every service in this process (embedded mode, SQLite), or with
    /// `--distributed` each as its own processes on PostgreSQL and NATS, supervised.
    Up {
        /// Every service and the gateway as processes of this binary, restarted when they
        /// exit, on PostgreSQL (a database per service) and NATS JetStream (the events on
        /// RabbitMQ with `bus.kind = "rabbitmq"`).
        #[arg(long)]
        distributed: bool,
        /// Processes per role: `N` for every one, or `catalog=3,gateway=2,…` (repeatable).
        #[arg(long, requires = "distributed", value_name = "N|ROLE=N,…")]
        replicas: Vec<String>,
        /// Versions a service runs as, side by side: `catalog=v1,v2` (repeatable). Each
        /// version's replicas register their label; gateway routes split by it
        /// (`catalog@v2`), and `distributed.version_env."catalog@v2"` gives it settings.
        #[arg(long, requires = "distributed", value_name = "SERVICE=V1,V2")]
        versions: Vec<String>,
    },
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
    /// Inject faults (kills, latency, errors, a paused NATS or Redis) into a running
    /// `up --distributed` under checkout traffic; then check the invariants and report.
    Chaos(Box<tideway::chaos::ChaosArgs>),
    /// The bus's dead letters: list them, show one, redrive them.
    Dlq {
        #[command(subcommand)]
        command: tideway::dlq::DlqCommand,
    },
    /// The audit trail of admin actions: verify that no record was changed or removed.
    Audit {
        #[command(subcommand)]
        command: tideway::audit::AuditCommand,
    },
    /// Rebuild read models from the start of the event stream into empty tables.
    Replay {
        /// Whose models.
        #[arg(value_enum)]
        target: tideway::replay::ReplayTarget,
    },
    /// A bare hello server for the benchmarks.
    #[command(hide = true)]
    BenchUpstream(tideway::load::upstream::UpstreamArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config_file, exit_with_parent) = (cli.config.clone(), cli.exit_with_parent);
    let replicas = match &cli.command {
        Command::Up { replicas, .. } => match tideway::supervisor::Replicas::parse(replicas) {
            Ok(replicas) => replicas,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        },
        _ => tideway::supervisor::Replicas::default(),
    };
    let versions = match &cli.command {
        Command::Up { versions, .. } => match tideway::supervisor::Versions::parse(versions) {
            Ok(versions) => versions,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        },
        _ => tideway::supervisor::Versions::default(),
    };
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
    // Spans name the process's role; the exporter's calls run on the runtime.
    let mut spans = config.telemetry.clone();
    spans.service_name = match &command {
        Command::Serve { service } => service.as_str().to_owned(),
        Command::Gateway => "gateway".to_owned(),
        _ => spans.service_name,
    };
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init_with(config.log.format, &config.log.filter, &spans)
    };
    let command = match command {
        Command::Chaos(args) => return tideway::chaos::main(&config, *args),
        command => command,
    };
    let supervised = Supervised {
        config_file,
        exit_with_parent,
        replicas,
        versions,
    };
    let code = match runtime.block_on(run(command, config, supervised)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "tideway stopped on an error");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    // The queued spans go out while the runtime still runs.
    telemetry.shutdown();
    code
}

/// What the supervisor of `up --distributed` passes on, and what its children need.
struct Supervised {
    config_file: Option<PathBuf>,
    exit_with_parent: bool,
    replicas: tideway::supervisor::Replicas,
    versions: tideway::supervisor::Versions,
}

async fn run(command: Command, config: Config, supervised: Supervised) -> anyhow::Result<()> {
    let started = Instant::now();
    let shutdown = shutdown_on_signals();
    if supervised.exit_with_parent {
        tideway::supervisor::exit_with_parent(shutdown.clone());
    }
    if let Command::Dlq { command } = command {
        return tideway::dlq::run(&config, command).await;
    }
    if let Command::Audit { command } = command {
        let line = tideway::audit::run(&config, command).await?;
        println!("{line}");
        return Ok(());
    }
    if let Command::Replay { target } = command {
        return tideway::replay::run(&config, target).await;
    }
    if let Command::Up {
        distributed: true, ..
    } = &command
    {
        let options = tideway::supervisor::Options {
            replicas: supervised.replicas,
            versions: supervised.versions,
            config_file: supervised.config_file,
            binary: std::env::current_exe().context("finding this binary")?,
        };
        return tideway::supervisor::run(&config, options, shutdown).await;
    }
    let (app, role) = match &command {
        Command::Up { .. } => (
            App::embedded(&config).await?,
            "every service, embedded".to_owned(),
        ),
        Command::Serve { service } => (
            App::service(&config, *service).await?,
            format!("the {} service", service.as_str()),
        ),
        Command::Gateway => (App::gateway(&config).await?, "the gateway".to_owned()),
        Command::Load(_)
        | Command::BenchUpstream(_)
        | Command::Chaos(_)
        | Command::Dlq { .. }
        | Command::Audit { .. }
        | Command::Replay { .. } => {
            anyhow::bail!("handled before")
        }
    };
    let mut app = app;
    // The gateway follows its configuration file: routes, weights, rules and limits
    // change without a restart.
    let file = supervised
        .config_file
        .clone()
        .or_else(|| Some(std::path::PathBuf::from("tideway.toml")))
        .filter(|file| file.exists());
    if let Some(file) = file {
        app.watch_config(&file)?;
    }
    let addr = app.local_addr()?;
    // For whoever started this process on port 0 (`127.0.0.1:0`): where it is, once bound.
    println!("listening on {addr}");
    let ready_ms = started.elapsed().as_millis();
    tracing::info!(%addr, role, ready_ms, "tideway is listening");
    println!("\nTideway: {role} on http://{addr} (ready in {ready_ms} ms)");
    if !matches!(command, Command::Serve { .. }) {
        println!("  shop        http://{addr}/");
        println!("  console     http://{addr}/ops  (admins)");
        println!("  catalog     http://{addr}/api/v1/catalog/items");
        println!("  api docs    http://{addr}/api/docs");
        println!("  health      http://{addr}/health/ready");
        println!("  metrics     http://{addr}/metrics");
    }
    if matches!(command, Command::Up { .. }) {
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
