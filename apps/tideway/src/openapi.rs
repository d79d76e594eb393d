//! The shop's OpenAPI 3.1 document: every service's own document (derived from its
//! handlers and its contract crate's types) merged into one, which the gateway serves at
//! `GET /api/openapi.json` beside its reference page `/api/docs`.
//!
//! The binary holds every service's crate, so the gateway builds the merged document from
//! them in every shape, embedded or distributed, without asking a service at start-up
//! (ADR 0016). Each service process also serves its own at `/openapi.json`.

use utoipa::openapi::{InfoBuilder, OpenApi};

/// What the document says of the whole API.
const DESCRIPTION: &str = "The Tideway shop's public API, behind its gateway.\n\n\
    Protected operations take an access token from `POST /api/identity/login` as \
    `Authorization: Bearer <token>` (the `bearer` scheme); admin operations need a token \
    with the `admin` role. Every refusal and failure is an RFC 9457 problem document \
    (`application/problem+json`) whose `invalid-params` name the wrong fields. Money is an \
    integer number of minor units.";

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
            ("/api/identity/register", "post"),
            ("/api/identity/login", "post"),
            ("/api/identity/refresh", "post"),
            ("/api/identity/logout", "post"),
            ("/api/identity/logout-all", "post"),
            ("/api/identity/me", "get"),
            ("/api/identity/users/{id}", "get"),
            ("/api/identity/.well-known/jwks.json", "get"),
            ("/api/catalog/items", "get"),
            ("/api/catalog/items", "post"),
            ("/api/catalog/items/{id}", "get"),
            ("/api/catalog/items/{id}", "put"),
            ("/api/catalog/items/{id}", "delete"),
            ("/api/catalog/items/{id}/price", "put"),
            ("/api/catalog/categories", "get"),
            ("/api/catalog/brands", "get"),
            ("/api/basket", "get"),
            ("/api/basket", "delete"),
            ("/api/basket/items", "post"),
            ("/api/basket/items/{item_id}", "put"),
            ("/api/basket/items/{item_id}", "delete"),
            ("/api/basket/checkout", "post"),
            ("/api/ordering/orders", "get"),
            ("/api/ordering/orders/{id}", "get"),
            ("/api/ordering/sagas", "get"),
            ("/api/inventory/stock", "get"),
            ("/api/inventory/stock/{item_id}", "get"),
            ("/api/inventory/stock/{item_id}", "put"),
            ("/api/payment/payments", "get"),
            ("/api/payment/payments/{order_id}", "get"),
            ("/api/payment/cards", "post"),
            ("/api/notification/notifications", "get"),
            ("/api/notification/recent", "get"),
            ("/api/reporting/sales", "get"),
            ("/api/reporting/revenue", "get"),
            ("/api/reporting/funnel", "get"),
            ("/api/reporting/top-items", "get"),
            ("/api/admin/instances", "get"),
            ("/api/admin/config", "get"),
            ("/api/admin/config", "put"),
            ("/api/admin/traffic", "get"),
            ("/api/admin/traffic/switch", "post"),
            ("/api/admin/flags", "get"),
            ("/api/admin/flags", "put"),
            ("/api/admin/audit", "get"),
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
        let me = &paths["/api/identity/me"]["get"];
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
