//! `tideway load`: an open-loop load generator with an SLO report and a plot.
//!
//! Request `i` is intended for `start + i / rate`, whatever happened to earlier requests:
//! a scheduler sleeps until that instant and spawns the request as its own task over one
//! shared, pooled HTTP client. Latency is measured from the intended instant, not from when
//! the request actually left, so a stalled target shows up in the percentiles instead of
//! silently slowing the generator down (no coordinated omission).
//!
//! Virtual users register and log in once, before the clock starts; then each request
//! picks an endpoint class by the mix's weights and a user, from a seeded hash of its
//! number, so two runs with the same seed send the same sequence. Each class has its own
//! HdrHistogram. At the end: a table on stdout, `report.json` and `plot.png` in `--out`.
//!
//! A checkout puts an item in the user's basket and then posts `/api/v1/basket/checkout`
//! (latency to the end of both). A target without checkout (a 404 from that endpoint,
//! probed once) gets the shop mix's checkout share as basket views instead, reported on
//! their own row and in the notes; the checkout mix stops with an error.

mod cpu;
mod mix;
mod plot;
mod record;
mod report;
mod shop;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Instant;
use tokio_util::task::TaskTracker;

pub use mix::{Endpoint, Mix};
pub use record::{Errors, Recorder};
pub use report::{EndpointReport, Percentiles, Report};
use shop::{Catalog, Shop};

/// The scheduler: sends request `i` at `start + i / rate`.
struct Schedule {
    rate: f64,
    total: u64,
    seed: u64,
    weights: mix::Weights,
    shop: Arc<Shop>,
    client: reqwest::Client,
    live: Arc<Live>,
    tracker: TaskTracker,
    progress: ProgressBar,
    runtime: tokio::runtime::Handle,
}

impl Schedule {
    /// Dispatches every request on time (or as soon as it can when late: a late request
    /// is never skipped, and its latency still counts from its intended time). Returns when
    /// the last one was sent, after the start.
    fn run(self) -> Duration {
        let start = Instant::now();
        let mut last_sent = Duration::ZERO;
        for index in 0..self.total {
            let intended = intended_offset(index, self.rate);
            if let Some(wait) = intended.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            last_sent = start.elapsed();
            let lag = last_sent.saturating_sub(intended);
            let draws = mix::Draws::new(self.seed, index);
            let endpoint = self.weights.pick(mix::unit(draws.bits(0)));
            let steps = self.shop.requests(&self.client, endpoint, draws);
            self.live.in_flight.fetch_add(1, Ordering::Relaxed);
            let live = self.live.clone();
            self.tracker.spawn_on(
                async move {
                    let mut outcome = record::Outcome::Ok;
                    for request in steps {
                        outcome = send(request).await;
                        if outcome != record::Outcome::Ok {
                            break;
                        }
                    }
                    live.ended(endpoint, intended, start.elapsed(), outcome);
                },
                &self.runtime,
            );
            if let Ok(mut recorder) = self.live.recorder.lock() {
                recorder.dispatched(lag);
            }
            if index % 16 == 0 {
                self.progress.set_position(index + 1);
                self.progress.set_message(format!(
                    "{} in flight · {} failed",
                    self.live.in_flight.load(Ordering::Relaxed),
                    self.live.failed.load(Ordering::Relaxed)
                ));
            }
        }
        last_sent
    }
}

/// Sends one request and reads its whole body.
async fn send(request: reqwest::RequestBuilder) -> record::Outcome {
    match request.send().await {
        Ok(response) => {
            let outcome = record::Outcome::of_status(response.status().as_u16());
            match response.bytes().await {
                Ok(_) => outcome,
                Err(err) => record::Outcome::of_error(&err),
            }
        }
        Err(err) => record::Outcome::of_error(&err),
    }
}

/// What the request tasks share with the scheduler.
#[derive(Default)]
struct Live {
    recorder: Mutex<Recorder>,
    in_flight: AtomicU64,
    failed: AtomicU64,
    /// The latest end of a request, in nanoseconds since the start.
    last_end: AtomicU64,
}

impl Live {
    fn ended(
        &self,
        endpoint: Endpoint,
        intended: Duration,
        ended: Duration,
        outcome: record::Outcome,
    ) {
        self.last_end.fetch_max(
            u64::try_from(ended.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if outcome != record::Outcome::Ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut recorder) = self.recorder.lock() {
            recorder.record(endpoint, intended, ended, outcome);
        }
    }
}

/// `tideway load`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The base URL of the shop (the gateway), e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Requests per second, sent at a constant rate whatever the answers take.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to send: `30s`, `2m`, `500ms` or a number of seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The traffic mix.
    #[arg(long, value_enum, default_value_t = Mix::Shop)]
    pub mix: Mix,
    /// GET this one path (e.g. `/health/live`) instead of a mix; no users, no discovery.
    #[arg(long, conflicts_with = "mix")]
    pub path: Option<String>,
    /// Virtual users, registered and logged in before the clock starts (mixes that need
    /// them only).
    #[arg(long, default_value_t = 16)]
    pub users: usize,
    /// The shop mix's checkout share in percent; 0 leaves it out. Against a target without
    /// checkout this share is sent as basket views (`checkout_as_basket_view`).
    #[arg(long, default_value_t = 5.0)]
    pub checkout_share: f64,
    /// Where the report and the plot go (default: target/load/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A request with no answer after this long counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The seed of the request sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Report the CPU time this process (all its threads) used during the measured phase;
    /// repeat for several (Linux only).
    #[arg(long = "watch-pid")]
    pub watch_pids: Vec<u32>,
}

impl LoadArgs {
    /// Options for `target` with every default, for tests and scripts.
    pub fn new(target: impl Into<String>, rate: f64, duration: Duration) -> Self {
        Self {
            target: target.into(),
            rate,
            duration,
            mix: Mix::Shop,
            path: None,
            users: 16,
            checkout_share: 5.0,
            out: None,
            timeout: Duration::from_secs(10),
            seed: 1,
            quiet: true,
            watch_pids: Vec::new(),
        }
    }
}

/// Parses `30s`, `2m`, `500ms`, `1.5s` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration such as 30s, 2m or 500ms, found {text:?}"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("expected a positive duration, found {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// The intended send time of request `index` at `rate` per second, after the start.
pub fn intended_offset(index: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate)
}

/// The number of requests a run sends.
pub fn request_count(rate: f64, duration: Duration) -> u64 {
    (rate * duration.as_secs_f64()).round() as u64
}

/// The command: its own runtime and logging, no service configuration.
pub fn main(args: LoadArgs) -> ExitCode {
    tideway_runtime::telemetry::init(Default::default(), "warn");
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
    match runtime.block_on(run_and_write(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs, prints the table, writes `report.json` and `plot.png`.
pub async fn run_and_write(args: LoadArgs) -> anyhow::Result<()> {
    let out = match &args.out {
        Some(out) => out.clone(),
        None => PathBuf::from("target/load").join(timestamp(true)),
    };
    let report = run(args).await?;
    print!("{}", report.table());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("report.json");
    let body = serde_json::to_vec_pretty(&report).context("encoding the report")?;
    std::fs::write(&json, body).with_context(|| format!("writing {}", json.display()))?;
    let png = out.join("plot.png");
    plot::draw(&report, &png)?;
    println!("\nreport  {}\nplot    {}", json.display(), png.display());
    Ok(())
}

/// Sets up the users, runs the schedule, and returns the report.
pub async fn run(args: LoadArgs) -> anyhow::Result<Report> {
    run_recorded(args).await.map(|(report, _)| report)
}

/// [`run`], also returning the raw histograms.
pub async fn run_recorded(args: LoadArgs) -> anyhow::Result<(Report, Recorder)> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of requests per second");
    }
    if !(0.0..=100.0).contains(&args.checkout_share) {
        bail!("--checkout-share must be a percentage from 0 to 100");
    }
    let base = args.target.trim_end_matches('/').to_owned();
    if !base.starts_with("http://") && !base.starts_with("https://") {
        bail!("--target must be a URL such as http://127.0.0.1:8080, found {base:?}");
    }
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .connect_timeout(args.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .context("building the HTTP client")?;

    // Setup, before the clock starts.
    let mut notes = Vec::new();
    let mut shop = Shop {
        base: base.clone(),
        catalog: Catalog::default(),
        users: Vec::new(),
        path: args.path.clone(),
    };
    let weights = if let Some(path) = &args.path {
        if !path.starts_with('/') {
            bail!("--path must start with `/`, found {path:?}");
        }
        mix::Weights::single(Endpoint::Path)
    } else {
        shop.catalog = Catalog::discover(&client, &base)
            .await
            .context("reading the catalog before the run")?;
        let needs_users = mix::Weights::of(args.mix, args.checkout_share, true).needs_users();
        if needs_users {
            if args.users == 0 {
                bail!("the {:?} mix needs --users ≥ 1", args.mix);
            }
            shop.users = Shop::sign_in(&client, &base, args.users)
                .await
                .context("signing in the virtual users")?;
        }
        let wants_checkout =
            args.mix == Mix::Checkout || (args.mix == Mix::Shop && args.checkout_share > 0.0);
        let checkout = if wants_checkout {
            shop.has_checkout(&client).await?
        } else {
            true
        };
        if !checkout {
            if args.mix == Mix::Checkout {
                bail!(
                    "{base} has no checkout endpoint (POST {} answered 404); \
                     the checkout mix needs ordering, which this shop does not have yet",
                    shop::CHECKOUT_PATH
                );
            }
            notes.push(format!(
                "{base} has no checkout endpoint yet (POST {} answered 404): the {}% checkout \
                 share was sent as basket views, reported as checkout_as_basket_view",
                shop::CHECKOUT_PATH,
                args.checkout_share
            ));
        }
        mix::Weights::of(args.mix, args.checkout_share, checkout)
    };
    let users = shop.users.len();

    let total = request_count(args.rate, args.duration);
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} sent · {msg}",
            )
            .context("the progress bar's template")?,
        );
        bar
    };

    let shop = Arc::new(shop);
    let live = Arc::new(Live::default());
    let tracker = TaskTracker::new();
    let started_at = timestamp(false);
    // The watched processes, then this one (the generator's own cost, for the report).
    let mut pids = args.watch_pids.clone();
    pids.push(std::process::id());
    let cpu_before = cpu::Snapshot::take(&pids);
    // The schedule runs on its own thread: `std::thread::sleep` wakes within tens of
    // microseconds, where the async timer rounds up to its 1 ms tick and would add up to a
    // millisecond to every request's measured latency.
    let schedule = Schedule {
        rate: args.rate,
        total,
        seed: args.seed,
        weights,
        shop,
        client,
        live: live.clone(),
        tracker: tracker.clone(),
        progress: progress.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let last_sent = tokio::task::spawn_blocking(move || schedule.run())
        .await
        .context("the scheduler thread failed")?;
    progress.set_position(total);
    progress.set_message("waiting for the last answers");
    tracker.close();
    tracker.wait().await;
    let mut watched = cpu_before.since(&cpu::Snapshot::take(&pids));
    let generator = watched
        .pop_if(|c| c.pid == std::process::id())
        .map(|c| c.cpu_secs);
    progress.finish_and_clear();

    let elapsed = Duration::from_nanos(live.last_end.load(Ordering::Relaxed));
    // The sending window: up to the last dispatch, plus one interval.
    let window = last_sent + Duration::from_secs_f64(1.0 / args.rate);
    let info = report::RunInfo {
        target: base,
        mix: args.mix,
        path: args.path,
        started_at,
        rate: args.rate,
        duration: args.duration,
        users,
        timeout: args.timeout,
        seed: args.seed,
        notes,
    };
    let recorder = live
        .recorder
        .lock()
        .map_err(|_| anyhow::anyhow!("a request task panicked while recording"))?
        .clone();
    let mut report = Report::build(info, &recorder, total, window, elapsed);
    report.cpu = watched;
    report.generator_cpu_secs = generator;
    Ok((report, recorder))
}

/// Now in UTC: `20261123-091500` for a folder name, RFC 3339 otherwise.
fn timestamp(for_path: bool) -> String {
    let now = time::OffsetDateTime::now_utc();
    if for_path {
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        )
    } else {
        now.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| now.unix_timestamp().to_string())
    }
}
