//! The ordering service: checkout turns a basket into an order, and an orchestrated saga
//! takes it to Confirmed or Cancelled.
//!
//! `POST /api/v1/basket/checkout` (routed here by the gateway) reads the caller's basket through
//! the basket's client, snapshots its lines and prices into a Pending order, commits the
//! order with its `OrderPlaced` event (outbox), and starts the `checkout` saga
//! ([`tideway_saga`]): reserve stock → authorize payment → confirm the order → capture
//! payment. Every step's command is an event published through the outbox; inventory's and
//! payment's replies come back over the bus and are delivered to the saga. A reply that
//! fails a step, or a step that times out, compensates the steps done (release stock, void
//! payment) and the order is Cancelled with the reason (see [`finish`]). Sagas interrupted
//! by a crash are resumed at start-up.
//!
//! A checkout is refused up front (503 naming inventory) while inventory cannot take a
//! reservation, as its [`Availability`](tideway_runtime::client::Availability) says without
//! a call: see [`checkout`].
//!
//! Ordering knows inventory and payment only through their contracts
//! (`tideway-inventory-api`, `tideway-payment-api`).

mod checkout;
mod config;
mod error;
mod finish;
mod orders;
mod replies;
mod saga;
mod time;

use std::{fmt, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tideway_basket_api::BasketClient;
use tideway_bus::{
    Bus, Publisher, Replica, SubscriptionHandle, inbox,
    outbox::{self, Lease, Relay, RelayOptions, RelayWaker},
};
use tideway_ordering_api::{OrderView, SERVICE};
use tideway_payment_api::PaymentClient;
use tideway_runtime::{
    auth::JwtVerifier,
    client::Availability,
    config::Validate,
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_saga::{DbSagaStore, EngineOptions, SagaEngine};
use tideway_store::{Db, Migrator};
use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use checkout::{IDEMPOTENCY_KEY, MAX_KEY_CHARS};
pub use config::Config;
pub use error::ApiError;
pub use finish::ORPHAN_REASON;
pub use saga::{AUTHORIZE_PAYMENT, CAPTURE_PAYMENT, CONFIRM_ORDER, RESERVE_STOCK, SAGA};

/// The ordering service's OpenAPI document: every endpoint it serves.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        checkout::checkout,
        orders::list,
        orders::show,
        orders::sagas::list,
    ),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "ordering", description = "Checkout and orders with their saga timelines"))
)]
pub struct ApiDoc;

/// The ordering service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a shutdown waits for a relay pass under way before abandoning it.
const RELAY_GRACE: Duration = Duration::from_secs(1);

/// Runs the outbox relay (lease `ordering`, held as this replica) on `tracker` until
/// `token` is cancelled.
///
/// `Relay::run` only looks at its token between passes, and on the embedded bus a pass
/// waits until every consumer group has acknowledged — forever, when a consumer's handler
/// itself waits on a group whose members stopped. So a shutdown gives the pass under way
/// [`RELAY_GRACE`], then drops it (its rows stay pending and are published again by the
/// next relay) and releases the lease so a successor need not wait for it to expire.
fn spawn_relay(
    db: &Db,
    publisher: Arc<dyn Publisher>,
    options: RelayOptions,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> RelayWaker {
    let lease = Lease::new(
        db.clone(),
        options.lease_name.clone(),
        options.holder.clone(),
        options.lease_ttl,
    );
    let relay = Relay::new(db.clone(), publisher, options);
    let waker = relay.waker();
    tracker.spawn(async move {
        let run = relay.run(token.clone());
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => return,
            () = token.cancelled() => {}
        }
        if tokio::time::timeout(RELAY_GRACE, &mut run).await.is_err() {
            tracing::warn!(
                "the outbox relay was still publishing at shutdown; its rows stay pending"
            );
            if let Err(err) = lease.release().await {
                tracing::warn!(error = %err, "releasing the relay lease failed");
            }
        }
    });
    waker
}

/// Every order with its status and lines (no timelines), oldest first: what an invariant
/// checker reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The orders, by creation time.
    pub orders: Vec<OrderView>,
}

impl Snapshot {
    /// Reads the orders of an ordering database: a running service's, or one a stopped or
    /// crashed process left behind. A database that cannot be read is an error, never an
    /// empty list.
    pub async fn read(db: &Db) -> Result<Self, ApiError> {
        Ok(Self {
            orders: orders::store::all(db).await?,
        })
    }
}

/// A running ordering service: its database, saga engine, bus subscriptions, outbox relay
/// and HTTP router. Cheap to clone.
#[derive(Clone)]
pub struct Ordering {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    router: Router,
    engine: SagaEngine,
    subscriptions: Vec<SubscriptionHandle>,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl fmt::Debug for Ordering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ordering")
            .field("db", &self.inner.db)
            .field("engine", &self.inner.engine)
            .finish_non_exhaustive()
    }
}

/// What ordering's pruner deletes once older than `ordering.retention_days`: inbox entries
/// and finished sagas with their step logs.
pub fn prune_rules() -> Vec<tideway_store::prune::PruneRule> {
    let mut rules = vec![tideway_store::prune::PruneRule::older_than(
        "inbox",
        "DELETE FROM inbox WHERE received_at_ms < $1",
    )];
    rules.extend(tideway_saga::PRUNE_RULES);
    rules
}

impl Ordering {
    /// Connects to the database and migrates it (orders, outbox, inbox, saga tables), starts
    /// the outbox relay, subscribes to inventory's and payment's replies, resumes every
    /// unfinished saga, starts the timeout sweeper and the task that cancels the orders of
    /// compensated sagas, and builds the router. Baskets are read through `basket`, cards
    /// are vaulted through `payment`; checkout is refused while `inventory` says it cannot
    /// take work (a probe is polled on this service's tasks); tokens are checked with
    /// `verifier`; `replica` names this process's relay lease holder and times its relay and
    /// subscriptions.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn Bus>,
        replica: &Replica,
        verifier: Arc<JwtVerifier>,
        basket: BasketClient,
        payment: PaymentClient,
        inventory: Availability,
    ) -> anyhow::Result<Self> {
        config
            .validate()
            .context("invalid ordering configuration")?;
        let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
        outbox::install(&db)
            .await
            .context("cannot install the ordering outbox")?;
        inbox::install(&db)
            .await
            .context("cannot install the ordering inbox")?;
        tideway_saga::install(&db)
            .await
            .context("cannot install the ordering saga tables")?;

        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        tideway_store::prune::spawn(
            db.clone(),
            prune_rules(),
            Duration::from_secs(config.retention_days.saturating_mul(86_400)),
            tideway_store::prune::DEFAULT_INTERVAL,
            &tracker,
            token.child_token(),
        );
        if let Some(poller) = inventory.poller(token.child_token().cancelled_owned()) {
            tracker.spawn(poller);
        }
        let publisher: Arc<dyn Publisher> = bus.clone();
        let waker = spawn_relay(
            &db,
            publisher,
            replica.relay(SERVICE),
            &tracker,
            token.child_token(),
        );

        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let sagas = DbSagaStore::new(db.clone());
        let engine = SagaEngine::new(
            finish::NotifyingStore::new(sagas.clone(), finished_tx),
            EngineOptions {
                sweep_interval: config.sweep_interval(),
                ..EngineOptions::default()
            },
        );
        let deps = saga::Deps {
            db: db.clone(),
            waker: waker.clone(),
            sagas,
            captured: Arc::new(watch::channel(0).0),
            capture_retry: config.capture_timeout(),
        };
        let definition = saga::definition(&deps, config);
        engine
            .register(definition.clone())
            .context("cannot register the checkout saga")?;

        let subscriptions = replies::subscribe(
            replies::Replies {
                engine: engine.clone(),
                deps: deps.clone(),
            },
            &bus,
            replica,
        )
        .await
        .context("cannot subscribe ordering to the checkout replies")?;
        let resumed = engine
            .resume_all()
            .await
            .context("cannot resume the unfinished checkout sagas")?;
        engine.spawn_sweeper();
        tracker.spawn(
            finish::Finisher {
                deps,
                finished: finished_rx,
            }
            .run(token.child_token()),
        );
        tracing::info!(resumed, "ordering started");

        let checkout = checkout::State {
            db: db.clone(),
            engine: engine.clone(),
            saga: Arc::new(definition),
            basket,
            payment,
            waker,
            inventory,
        };
        let orders = orders::State {
            db: db.clone(),
            engine: engine.clone(),
        };
        let api = orders::routes(orders)
            .merge(checkout::routes(checkout))
            .layer(Extension(verifier))
            .merge(tideway_runtime::openapi::route(&openapi()));
        let readiness = Readiness::default().with("database", db.readiness());
        let router = service_router(SERVICE, api, readiness, HttpOptions::default());
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                router,
                engine,
                subscriptions,
                tracker,
                token,
            }),
        })
    }

    /// The HTTP router, wrapped with the standard stack (health, metrics, problems).
    pub fn router(&self) -> Router {
        self.inner.router.clone()
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The saga engine (to watch an order's saga, e.g. `wait_finished(order_id, ..)`).
    pub fn saga_engine(&self) -> &SagaEngine {
        &self.inner.engine
    }

    /// Every order with its lines, oldest first, without timelines: for invariant checks
    /// ([`Snapshot::read`] on this service's database).
    pub async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        Snapshot::read(&self.inner.db).await
    }

    /// Stops the subscriptions, the saga engine (steps under way are resumed at the next
    /// start), the outbox relay and the finisher, and waits for their tasks.
    pub async fn shutdown(&self) {
        for subscription in &self.inner.subscriptions {
            subscription.stop();
        }
        self.inner.engine.shutdown().await;
        self.inner.token.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}
