//! The public API as the pages use it: the services' typed clients pointed at the gateway.

use http::{HeaderMap, HeaderValue, Method, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use tideway_basket_api::BasketClient;
use tideway_catalog_api::CatalogClient;
use tideway_identity_api::IdentityClient;
use tideway_ordering_api::{
    CHECKOUT_PATH, CheckoutAccepted, CheckoutRequest, OrderPage, OrderView, PREFIX as ORDERING,
};
use tideway_runtime::client::{ClientError, JsonClient, Transport};

/// Clients of every API the pages use, all through one transport.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) catalog: CatalogClient,
    pub(crate) basket: BasketClient,
    pub(crate) identity: IdentityClient,
    json: JsonClient,
}

impl Api {
    pub(crate) fn new(transport: Transport) -> Self {
        Self {
            catalog: CatalogClient::new(transport.clone()),
            basket: BasketClient::new(transport.clone()),
            identity: IdentityClient::new(transport.clone()),
            json: JsonClient::new(transport),
        }
    }

    /// The brands in the catalog.
    pub(crate) async fn brands(&self) -> Result<Vec<String>, ClientError> {
        self.json
            .get(
                &format!("{}/brands", tideway_catalog_api::PREFIX),
                &HeaderMap::new(),
            )
            .await
    }

    /// Checks the user's basket out, paying with `card`.
    pub(crate) async fn checkout(
        &self,
        token: &str,
        card: String,
        idempotency_key: &str,
    ) -> Result<CheckoutAccepted, ClientError> {
        let mut headers = bearer(token)?;
        if let Ok(key) = HeaderValue::from_str(idempotency_key) {
            headers.insert("idempotency-key", key);
        }
        let body = CheckoutRequest {
            card: Some(secrecy::SecretString::from(card)),
        };
        self.json
            .call(Method::POST, CHECKOUT_PATH, Some(&body), &headers)
            .await
    }

    /// A page of the user's orders, newest first.
    pub(crate) async fn orders(&self, token: &str, page: u32) -> Result<OrderPage, ClientError> {
        self.get(
            token,
            &format!("{ORDERING}/orders?page={page}&page_size=20"),
        )
        .await
    }

    /// One order with its timeline.
    pub(crate) async fn order(&self, token: &str, id: &str) -> Result<OrderView, ClientError> {
        self.get(token, &format!("{ORDERING}/orders/{}", segment(id)))
            .await
    }

    /// A GET with the user's token.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        self.json.get(path, &bearer(token)?).await
    }
}

fn bearer(token: &str) -> Result<HeaderMap, ClientError> {
    let value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| ClientError::InvalidRequest("the token is not a header value".into()))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Ok(headers)
}

/// Everything but the unreserved characters of RFC 3986 is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `id` as one percent-encoded path segment.
pub(crate) fn segment(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(super::segment("0193-ab_c.d~"), "0193-ab_c.d~");
        assert_eq!(super::segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
