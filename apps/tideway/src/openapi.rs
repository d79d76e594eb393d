//! The shop's OpenAPI 3.1 document: every service's own document (derived from its
//! handlers and its contract crate's types) merged into one, which the gateway serves at
//! `GET /api/openapi.json` beside its reference page `/api/docs`. Its paths are the
//! canonical `/api/v1/…` ones; their unversioned aliases are not operations of their own,
//! only a paragraph of the description.
//!
//! The binary holds every service's crate, so the gateway builds the merged document from
//! them in every shape, embedded or distributed, without asking a service at start-up
//! (ADR 0016). Each service process also serves its own at `/openapi.json`.

use utoipa::openapi::{InfoBuilder, OpenApi};

/// What the document says of the whole API.
const DESCRIPTION: &str = "The Tideway shop's public API, behind its gateway.\n\n\
    Protected operations take an access token from `POST /api/v1/identity/login` as \
    `Authorization: Bearer <token>` (the `bearer` scheme); admin operations need a token \
    with the `admin` role. Every refusal and failure is an RFC 9457 problem document \
    (`application/problem+json`) whose `invalid-params` name the wrong fields. Money is an \
    integer number of minor units.\n\n\
    Every operation's path is under `/api/v1`. The same path without `/v1` \
    (`/api/catalog/items`) is a deprecated alias, served as its v1 path: its answers carry \
    `Deprecation: @1796083200` (RFC 9745: deprecated since 2026-12-01) and \
    `Link: </api/v1/…>; rel=\"successor-version\"`. A path under another version \
    (`/api/v2/…`) is a 404 problem. This document and its reference page stay at \
    `/api/openapi.json` and `/api/docs`.";

/// Every service's document, merged.
pub fn document() -> OpenApi {
    let mut merged = tideway_runtime::openapi::merge(
        "Tideway",
        env!("CARGO_PKG_VERSION"),
        [
            tideway_identity::openapi(),
            tideway_catalog::openapi(),
            tideway_basket::openapi(),
            tideway_ordering::openapi(),
            tideway_inventory::openapi(),
            tideway_payment::openapi(),
            tideway_notification::openapi(),
            tideway_reporting::openapi(),
            tideway_gateway::openapi([tideway_flags::openapi(), tideway_audit::openapi()]),
        ],
    );
    merged.info = InfoBuilder::new()
        .title("Tideway")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .build();
    merged
}

/// The merged document as JSON, as the gateway serves it.
pub fn json() -> bytes::Bytes {
    // A document of strings and maps always serialises.
    bytes::Bytes::from(serde_json::to_vec(&document()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_endpoint_is_in_the_merged_document() {
        let document: serde_json::Value = serde_json::from_slice(&json()).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/v1/identity/register", "post"),
            ("/api/v1/identity/login", "post"),
            ("/api/v1/identity/refresh", "post"),
            ("/api/v1/identity/logout", "post"),
            ("/api/v1/identity/logout-all", "post"),
            ("/api/v1/identity/me", "get"),
            ("/api/v1/identity/users/{id}", "get"),
            ("/api/v1/identity/.well-known/jwks.json", "get"),
            ("/api/v1/catalog/items", "get"),
            ("/api/v1/catalog/items", "post"),
            ("/api/v1/catalog/items/{id}", "get"),
            ("/api/v1/catalog/items/{id}", "put"),
            ("/api/v1/catalog/items/{id}", "delete"),
            ("/api/v1/catalog/items/{id}/price", "put"),
            ("/api/v1/catalog/categories", "get"),
            ("/api/v1/catalog/brands", "get"),
            ("/api/v1/basket", "get"),
            ("/api/v1/basket", "delete"),
            ("/api/v1/basket/items", "post"),
            ("/api/v1/basket/items/{item_id}", "put"),
            ("/api/v1/basket/items/{item_id}", "delete"),
            ("/api/v1/basket/checkout", "post"),
            ("/api/v1/ordering/orders", "get"),
            ("/api/v1/ordering/orders/{id}", "get"),
            ("/api/v1/ordering/sagas", "get"),
            ("/api/v1/inventory/stock", "get"),
            ("/api/v1/inventory/stock/{item_id}", "get"),
            ("/api/v1/inventory/stock/{item_id}", "put"),
            ("/api/v1/payment/payments", "get"),
            ("/api/v1/payment/payments/{order_id}", "get"),
            ("/api/v1/payment/cards", "post"),
            ("/api/v1/notification/notifications", "get"),
            ("/api/v1/notification/recent", "get"),
            ("/api/v1/reporting/sales", "get"),
            ("/api/v1/reporting/revenue", "get"),
            ("/api/v1/reporting/funnel", "get"),
            ("/api/v1/reporting/top-items", "get"),
            ("/api/v1/admin/instances", "get"),
            ("/api/v1/admin/config", "get"),
            ("/api/v1/admin/config", "put"),
            ("/api/v1/admin/traffic", "get"),
            ("/api/v1/admin/traffic/switch", "post"),
            ("/api/v1/admin/flags", "get"),
            ("/api/v1/admin/flags", "put"),
            ("/api/v1/admin/audit", "get"),
        ] {
            let operation = &paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is missing"))[method];
            assert!(operation.is_object(), "{method} {path} is missing");
            assert!(
                operation["responses"].is_object(),
                "{method} {path} has no responses"
            );
        }
        // Every operation once, at its canonical v1 path; the aliases are a paragraph.
        assert!(
            paths.keys().all(|path| path.starts_with("/api/v1/")),
            "{:?}",
            paths.keys()
        );
        let description = document["info"]["description"].as_str().unwrap();
        assert!(
            description.contains("deprecated alias") && description.contains("@1796083200"),
            "{description}"
        );
        let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            operations, 45,
            "an operation is documented twice or unlisted here"
        );
        // Protected operations name the bearer scheme, which the document defines; their
        // problems refer to the one problem response.
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let me = &paths["/api/v1/identity/me"]["get"];
        assert_eq!(me["security"][0]["bearer"], serde_json::json!([]));
        assert_eq!(
            me["responses"]["401"]["$ref"],
            "#/components/responses/Problem"
        );
        assert!(
            document["components"]["responses"]["Problem"]["content"]["application/problem+json"]
                .is_object()
        );
    }
}
