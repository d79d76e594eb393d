//! The authorize/void race: a void committed while the authorization is at the provider
//! leaves no hold, whether the provider had approved before the void or not. A hook holds the
//! authorization at the provider until the void's reply is out. (Over the embedded bus one
//! publisher's events arrive one at a time, so the race needs NATS or two publishers; the
//! test publishes the two commands side by side.)

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tideway_bus::BoxFuture;
use tideway_payment::{
    Provider, SimulatedProvider,
    provider::{Authorization, AuthorizeRequest, ProviderError},
};
use tideway_payment_api::{APPROVED_CARD, PaymentStatus, PaymentVoided};
use tideway_testkit::{DEADLINE, backends, within};
use tokio::sync::{Semaphore, watch};

use crate::helpers::{Reply, order, spawn_hooked, void};

/// Where the hook holds the first authorization: before the provider sees it, or after the
/// provider approved it (its answer not yet back).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hold {
    BeforeTheProvider,
    AfterTheApproval,
}

/// The simulated provider with its first authorization held until released.
#[derive(Debug)]
struct Hooked {
    inner: SimulatedProvider,
    hold: Hold,
    first: AtomicBool,
    entered: watch::Sender<bool>,
    release: Arc<Semaphore>,
}

impl Hooked {
    async fn pause(&self) {
        self.entered.send_replace(true);
        let _permit = self
            .release
            .acquire()
            .await
            .expect("the semaphore stays open");
    }
}

impl Provider for Hooked {
    fn authorize<'a>(
        &'a self,
        request: AuthorizeRequest<'a>,
    ) -> BoxFuture<'a, Result<Authorization, ProviderError>> {
        Box::pin(async move {
            let first = self.first.swap(false, Ordering::SeqCst);
            if first && self.hold == Hold::BeforeTheProvider {
                self.pause().await;
            }
            let answer = self.inner.authorize(request).await;
            if first && self.hold == Hold::AfterTheApproval {
                assert!(matches!(answer, Ok(Authorization::Approved { .. })));
                self.pause().await;
            }
            answer
        })
    }

    fn capture<'a>(
        &'a self,
        key: &'a str,
        charge: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.capture(key, charge)
    }

    fn void<'a>(
        &'a self,
        key: &'a str,
        charge: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.void(key, charge)
    }

    fn refund<'a>(
        &'a self,
        key: &'a str,
        charge: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.refund(key, charge)
    }

    fn cancel<'a>(
        &'a self,
        order_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.cancel(order_id, key)
    }
}

#[tokio::test]
async fn a_void_committed_while_the_authorization_is_at_the_provider_leaves_no_hold() {
    for db in backends().await {
        for hold in [Hold::BeforeTheProvider, Hold::AfterTheApproval] {
            let (entered, mut entered_rx) = watch::channel(false);
            let release = Arc::new(Semaphore::new(0));
            let app = spawn_hooked(db.url(), {
                let release = release.clone();
                move |simulated| {
                    Arc::new(Hooked {
                        inner: simulated.clone(),
                        hold,
                        first: AtomicBool::new(true),
                        entered,
                        release,
                    })
                }
            })
            .await;
            let order_id = order();
            // The embedded bus's publish returns once the command is handled: publish it
            // beside the test.
            let command =
                tideway_bus::Event::new(&app.authorize(&order_id, APPROVED_CARD, 1200).await)
                    .unwrap();
            let bus = app.bus.clone();
            let sent = tokio::spawn(async move { bus.publish(&command).await });
            within(
                DEADLINE,
                "the authorization to reach the hook",
                entered_rx.wait_for(|e| *e),
            )
            .await
            .unwrap();

            // The saga gives up on the payment and voids it; the void commits (its reply is
            // out) while the authorization is still held.
            app.send(&void(&order_id)).await;
            assert_eq!(
                app.reply(&order_id, 1).await,
                Reply::Voided(PaymentVoided {
                    order_id: order_id.clone(),
                    status: None,
                }),
                "{hold:?}"
            );
            release.add_permits(1);
            sent.await.unwrap().unwrap();

            // The authorization comes back and is declined; the provider holds nothing.
            assert_eq!(
                app.reply(&order_id, 2).await.declined_reason(),
                "the payment was voided before authorization",
                "{hold:?}"
            );
            app.settled().await;
            assert_eq!(
                app.payment.provider().held(&order_id).await.unwrap(),
                0,
                "{hold:?}"
            );
            if hold == Hold::AfterTheApproval {
                assert_eq!(
                    app.ledger(&order_id, "void").await,
                    1,
                    "the hold was voided"
                );
            }
            assert!(
                app.stored(&order_id)
                    .await
                    .is_none_or(|p| p.status != PaymentStatus::Authorized)
            );
            for table in ["card_vault", "authorizations_in_flight"] {
                let sql = format!("SELECT COUNT(*) FROM {table} WHERE order_id = $1");
                assert_eq!(app.count(&sql, &order_id).await, 0, "{table} {hold:?}");
            }
            app.stop().await;
        }
    }
}
