//! Adding, setting, removing and clearing lines; totals; one basket per user; concurrency.

use std::sync::Arc;

use crate::helpers::{COFFEE, FakeCatalog, MUG, TEA, spawn_app};

#[tokio::test]
async fn a_basket_grows_changes_and_empties() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let token = app.token("alice");

        let empty = app.view(&token).await;
        assert!(empty.items.is_empty());
        assert_eq!((empty.total_minor, empty.item_count), (0, 0));
        assert_eq!(empty.currency, "EUR");

        let view = app.add(&token, COFFEE, 2).await.view();
        assert_eq!(view.items.len(), 1);
        let line = &view.items[0];
        assert_eq!(line.item_id, COFFEE);
        assert_eq!(line.name, "Coffee beans");
        assert_eq!(line.unit_price_minor, 1250);
        assert_eq!(line.quantity, 2);
        assert_eq!(line.line_total_minor, 2500);
        assert!(line.available);

        // Adding again accumulates on the same line.
        let view = app.add(&token, COFFEE, 3).await.view();
        assert_eq!(view.items.len(), 1);
        assert_eq!(view.items[0].quantity, 5);

        let view = app.add(&token, TEA, 4).await.view();
        assert_eq!(
            view.items
                .iter()
                .map(|l| l.item_id.as_str())
                .collect::<Vec<_>>(),
            [COFFEE, TEA],
            "lines keep the order they were added in"
        );
        assert_eq!(view.total_minor, 5 * 1250 + 4 * 399);
        assert_eq!(view.item_count, 9);
        assert_eq!(
            app.view(&token).await,
            view,
            "GET shows what the add answered"
        );

        let view = app.set(&token, COFFEE, 1).await.view();
        assert_eq!(view.items[0].quantity, 1);
        assert_eq!(view.total_minor, 1250 + 4 * 399);

        let view = app.remove(&token, TEA).await.view();
        assert_eq!(view.items.len(), 1);
        assert_eq!(view.total_minor, 1250);
        assert_eq!(view.item_count, 1);

        let cleared = app.clear(&token).await;
        assert_eq!(cleared.status, 204, "{cleared:?}");
        assert!(app.view(&token).await.items.is_empty());
        assert!(app.stored("alice").await.is_empty());
        // Clearing an empty basket is fine too.
        assert_eq!(app.clear(&token).await.status, 204);
    }
}

#[tokio::test]
async fn each_user_has_their_own_basket() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let (alice, bob) = (app.token("alice"), app.token("bob"));
        app.add(&alice, COFFEE, 2).await.view();
        app.add(&bob, TEA, 1).await.view();
        app.add(&bob, COFFEE, 7).await.view();

        let a = app.view(&alice).await;
        assert_eq!(a.items.len(), 1);
        assert_eq!(
            (a.items[0].item_id.as_str(), a.items[0].quantity),
            (COFFEE, 2)
        );

        // Bob cannot change or remove what only Alice holds, and clearing his basket
        // leaves hers alone.
        app.remove(&bob, TEA).await.view();
        assert_eq!(app.set(&bob, TEA, 2).await.status, 404);
        assert_eq!(app.clear(&bob).await.status, 204);
        assert_eq!(app.view(&alice).await, a);
        assert!(app.view(&bob).await.items.is_empty());
    }
}

#[tokio::test]
async fn prices_and_availability_are_the_catalogs_current_ones() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let token = app.token("alice");
        app.add(&token, COFFEE, 2).await.view();
        app.add(&token, MUG, 3).await.view();

        fake.set_price(COFFEE, 1500);
        fake.set_stock(MUG, 2);
        let view = app.view(&token).await;
        assert_eq!(view.items[0].unit_price_minor, 1500);
        assert_eq!(view.items[0].line_total_minor, 3000);
        assert!(!view.items[1].available, "3 mugs held, 2 in stock");
        assert_eq!(view.total_minor, 3000 + 3 * 800);

        // A sold-out item's line is marked, and no unit of it can be added.
        fake.set_stock(MUG, 0);
        let view = app.view(&token).await;
        assert!(view.items[1].sold_out && !view.items[1].available);
        assert!(!view.items[0].sold_out);
        let refused = app.add(&token, MUG, 1).await;
        assert_eq!(refused.status, 409, "{refused:?}");
        assert_eq!(refused.body["type"], "/problems/sold-out");
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap()
                .contains("sold out"),
            "{refused:?}"
        );
        assert_eq!(refused.body["invalid-params"][0]["name"], "item_id");
        assert_eq!(app.set(&token, MUG, 1).await.status, 409);
        assert_eq!(
            app.view(&token).await.items[1].quantity,
            3,
            "nothing changed"
        );

        // An item that left the catalog stays visible under its last name, marked deleted
        // and not priced: it adds nothing to the total and cannot be had.
        fake.remove(MUG);
        let view = app.view(&token).await;
        assert_eq!(view.items[1].name, "Mug");
        assert!(view.items[1].deleted && !view.items[1].available);
        assert_eq!(view.items[1].line_total_minor, 0);
        assert_eq!(view.total_minor, 3000);
        // It can still be removed.
        let view = app.remove(&token, MUG).await.view();
        assert_eq!(view.items.len(), 1);
    }
}

#[tokio::test]
async fn concurrent_adds_of_one_item_all_count() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = Arc::new(spawn_app(&store, fake.in_process()).await);
        let token = app.token("alice");
        let mut adds = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (app, token) = (app.clone(), token.clone());
            adds.spawn(async move { app.add(&token, COFFEE, 3).await.status });
        }
        while let Some(status) = adds.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        assert_eq!(app.stored("alice").await, [(COFFEE.to_owned(), 30)]);
        assert_eq!(app.view(&token).await.items[0].quantity, 30);
    }
}

#[tokio::test]
async fn concurrent_adds_never_pass_the_limits() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = Arc::new(spawn_app(&store, fake.in_process()).await);
        let token = app.token("alice");
        // 3 mugs in stock: of 6 concurrent adds of one, exactly 3 succeed.
        let mut adds = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (app, token) = (app.clone(), token.clone());
            adds.spawn(async move { app.add(&token, MUG, 1).await });
        }
        let mut statuses = Vec::new();
        while let Some(answer) = adds.join_next().await {
            let answer = answer.unwrap();
            if answer.status == 409 {
                assert_eq!(answer.field(), "quantity");
            }
            statuses.push(answer.status);
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 200, 200, 409, 409, 409]);
        assert_eq!(app.stored("alice").await, [(MUG.to_owned(), 3)]);

        // 99 per line: of 5 concurrent adds of 30 coffees, exactly 3 fit.
        let mut adds = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let (app, token) = (app.clone(), token.clone());
            adds.spawn(async move { app.add(&token, COFFEE, 30).await });
        }
        let mut ok = 0;
        while let Some(answer) = adds.join_next().await {
            let answer = answer.unwrap();
            if answer.status == 200 {
                ok += 1;
            } else {
                assert_eq!(
                    (answer.status, answer.field()),
                    (422, "quantity"),
                    "{answer:?}"
                );
            }
        }
        assert_eq!(ok, 3);
        let stored = app.stored("alice").await;
        assert!(stored.contains(&(COFFEE.to_owned(), 90)), "{stored:?}");
    }
}
