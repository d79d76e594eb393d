//! The typed `CatalogClient` of the contract crate against the real router, in-process and
//! over HTTP.

use std::time::Duration;

use tideway_catalog_api::CatalogClient;
use tideway_runtime::client::Transport;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_typed_client_reads_the_same_over_both_transports() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let timeout = Duration::from_secs(5);
        let in_process = CatalogClient::new(Transport::in_process(
            "catalog",
            app.catalog.router(),
            timeout,
        ));
        let http =
            CatalogClient::new(Transport::http("catalog", app.server.base_url(), timeout).unwrap());

        let page = in_process
            .items("category=audio&sort=price_desc")
            .await
            .unwrap();
        assert_eq!(
            http.items("category=audio&sort=price_desc").await.unwrap(),
            page
        );
        assert!(page.items.iter().all(|i| i.category == "audio"));
        let id = &page.items[0].id;

        let via_process = in_process.item(id).await.unwrap().expect("the item exists");
        let via_http = http.item(id).await.unwrap().expect("the item exists");
        assert_eq!(via_process, via_http);
        assert_eq!(via_process, page.items[0]);
        assert_eq!(
            in_process.categories().await.unwrap(),
            http.categories().await.unwrap()
        );

        for client in [&in_process, &http] {
            assert_eq!(
                client
                    .item("00000000-0000-4000-8000-000000000000")
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(client.item("not-a-uuid").await.unwrap(), None);
            assert_eq!(client.item("bad id!").await.unwrap(), None);
            let err = client.items("page=0").await.unwrap_err();
            assert_eq!(err.status(), Some(reqwest::StatusCode::BAD_REQUEST));
        }

        let changed = http
            .change_price(id, via_http.price_minor + 100, &app.admin_token())
            .await
            .unwrap();
        assert_eq!(changed.price_minor, via_http.price_minor + 100);
        assert_eq!(changed.version, via_http.version + 1);
        assert_eq!(in_process.item(id).await.unwrap(), Some(changed.clone()));
        let again = in_process
            .change_price(id, via_http.price_minor, &app.admin_token())
            .await
            .unwrap();
        assert_eq!(again.version, changed.version + 1);
        assert_eq!(http.item(id).await.unwrap(), Some(again));

        let err = http
            .change_price(id, 5, &app.token(&["customer"]))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(reqwest::StatusCode::FORBIDDEN));
        let err = in_process
            .change_price(id, 0, &app.admin_token())
            .await
            .unwrap_err();
        assert_eq!(
            err.status(),
            Some(reqwest::StatusCode::UNPROCESSABLE_ENTITY)
        );
    }
}
