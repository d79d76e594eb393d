//! The target shop as the generator sees it: what the catalog holds (discovered once),
//! the virtual users (registered and logged in once), and the request each endpoint class
//! sends.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use super::mix::{Draws, Endpoint};

/// The page size of browse requests.
const PAGE_SIZE: u64 = 20;
/// The password of every virtual user.
const PASSWORD: &str = "tideway-load-user-1";
/// Registrations (Argon2 on the target) run this many at a time.
const SETUP_CONCURRENCY: usize = 4;

/// The path checkout will have.
pub const CHECKOUT_PATH: &str = "/api/v1/basket/checkout";

/// What the catalog holds.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every item id.
    pub items: Vec<String>,
    /// Ids of items with stock, for basket adds.
    pub in_stock: Vec<String>,
    /// Category ids.
    pub categories: Vec<String>,
    /// Words from item names, for searches.
    pub terms: Vec<String>,
    /// The number of items.
    pub total: u64,
}

/// A signed-in virtual user.
#[derive(Debug)]
pub struct User {
    /// `Bearer …`.
    pub authorization: String,
    /// Basket adds so far: the k-th add puts item `(user + k) mod n` in the basket, and every
    /// n-th clears it instead, so no line ever exceeds one unit or the item's stock.
    pub adds: AtomicU64,
}

/// The target: its base URL and what the generator learned about it.
#[derive(Debug)]
pub struct Shop {
    /// The base URL, without a trailing slash.
    pub base: String,
    /// The catalog.
    pub catalog: Catalog,
    /// The virtual users.
    pub users: Vec<User>,
    /// `--path`, for the single-path mode.
    pub path: Option<String>,
}

impl Catalog {
    /// Reads the catalog's items and categories.
    pub async fn discover(client: &Client, base: &str) -> anyhow::Result<Self> {
        let mut catalog = Self::default();
        let mut page = 1;
        loop {
            let body = get_json(
                client,
                &format!("{base}/api/v1/catalog/items?page={page}&page_size=100&sort=name"),
            )
            .await?;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            catalog.total = body["total"].as_u64().unwrap_or(0);
            for item in &items {
                let Some(id) = item["id"].as_str() else {
                    continue;
                };
                catalog.items.push(id.to_owned());
                if item["stock"].as_i64().unwrap_or(0) >= 1 {
                    catalog.in_stock.push(id.to_owned());
                }
                if let Some(word) = item["name"]
                    .as_str()
                    .and_then(|name| name.split_whitespace().next())
                    && word.len() >= 3
                    && !catalog.terms.iter().any(|t| t.eq_ignore_ascii_case(word))
                {
                    catalog.terms.push(word.to_lowercase());
                }
            }
            if items.is_empty() || catalog.items.len() as u64 >= catalog.total || page >= 50 {
                break;
            }
            page += 1;
        }
        if catalog.items.is_empty() {
            bail!("the catalog at {base} has no items to browse");
        }
        let categories = get_json(client, &format!("{base}/api/v1/catalog/categories")).await?;
        catalog.categories = categories
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(catalog)
    }
}

impl Shop {
    /// Registers and logs in `count` users with unique emails, a few at a time.
    pub async fn sign_in(client: &Client, base: &str, count: usize) -> anyhow::Result<Vec<User>> {
        let run = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let mut users = Vec::with_capacity(count);
        let mut next = 0;
        while next < count {
            let batch = (next..count.min(next + SETUP_CONCURRENCY)).map(|n| {
                let email = format!("load-{run:x}-{n}@example.com");
                async move { sign_in_one(client, base, &email, n).await }
            });
            for user in futures_util::future::join_all(batch).await {
                users.push(user?);
            }
            next += SETUP_CONCURRENCY;
        }
        Ok(users)
    }

    /// Whether the target has a checkout endpoint: a 404 from `POST /api/v1/basket/checkout`
    /// means it has none. Checked once, with the first user.
    pub async fn has_checkout(&self, client: &Client) -> anyhow::Result<bool> {
        let Some(user) = self.users.first() else {
            bail!("checking for checkout needs a signed-in user (--users ≥ 1)");
        };
        let response = client
            .post(format!("{}{CHECKOUT_PATH}", self.base))
            .header("authorization", &user.authorization)
            .json(&json!({}))
            .send()
            .await
            .with_context(|| format!("probing {}{CHECKOUT_PATH}", self.base))?;
        Ok(response.status() != StatusCode::NOT_FOUND)
    }

    /// The requests of class `endpoint` for request draws `draws`, sent one after the other;
    /// the class's latency runs from the intended time to the end of the last. A checkout
    /// first puts an item in the user's basket (a checkout of an empty basket is refused),
    /// so it measures the add-and-check-out step of a shopper's journey.
    pub fn requests(
        &self,
        client: &Client,
        endpoint: Endpoint,
        draws: Draws,
    ) -> Vec<RequestBuilder> {
        let mut steps = Vec::with_capacity(2);
        if endpoint == Endpoint::Checkout
            && let Some(user) = self.user(draws)
            && !self.catalog.in_stock.is_empty()
        {
            let item = &self.catalog.in_stock[draws.below(4, self.catalog.in_stock.len())];
            steps.push(
                client
                    .post(format!("{}/api/v1/basket/items", self.base))
                    .header("authorization", &user.authorization)
                    .json(&json!({ "item_id": item, "quantity": 1 })),
            );
        }
        steps.push(self.request(client, endpoint, draws));
        steps
    }

    /// The user of request draws `draws`, if the mix has users.
    fn user(&self, draws: Draws) -> Option<&User> {
        if self.users.is_empty() {
            None
        } else {
            self.users.get(draws.below(10, self.users.len()))
        }
    }

    /// The (last) request of class `endpoint` for request draws `draws`.
    fn request(&self, client: &Client, endpoint: Endpoint, draws: Draws) -> RequestBuilder {
        let base = &self.base;
        let catalog = &self.catalog;
        let user = if self.users.is_empty() {
            None
        } else {
            Some(draws.below(10, self.users.len()))
        };
        let signed = |builder: RequestBuilder| match user.and_then(|u| self.users.get(u)) {
            Some(user) => builder.header("authorization", &user.authorization),
            None => builder,
        };
        match endpoint {
            Endpoint::Path => {
                let path = self.path.as_deref().unwrap_or("/");
                client.get(format!("{base}{path}"))
            }
            Endpoint::Browse => {
                if draws.bits(1).is_multiple_of(2) || catalog.categories.is_empty() {
                    let pages = catalog.total.div_ceil(PAGE_SIZE).max(1);
                    let page = draws.bits(2) % pages + 1;
                    client.get(format!(
                        "{base}/api/v1/catalog/items?page={page}&page_size={PAGE_SIZE}"
                    ))
                } else {
                    let category = &catalog.categories[draws.below(2, catalog.categories.len())];
                    client.get(format!(
                        "{base}/api/v1/catalog/items?category={category}&sort=price_asc&page_size={PAGE_SIZE}"
                    ))
                }
            }
            Endpoint::Search => {
                let term = catalog
                    .terms
                    .get(draws.below(2, catalog.terms.len()))
                    .map_or("a", String::as_str);
                client.get(format!("{base}/api/v1/catalog/items?q={term}"))
            }
            Endpoint::Item => {
                let id = &catalog.items[draws.below(2, catalog.items.len())];
                client.get(format!("{base}/api/v1/catalog/items/{id}"))
            }
            Endpoint::Basket => {
                let (Some(u), false) = (user, catalog.in_stock.is_empty()) else {
                    return signed(client.get(format!("{base}/api/v1/basket")));
                };
                if draws.bits(1).is_multiple_of(2) {
                    return signed(client.get(format!("{base}/api/v1/basket")));
                }
                let n = catalog.in_stock.len() as u64;
                let k = self.users[u].adds.fetch_add(1, Ordering::Relaxed);
                if k > 0 && k.is_multiple_of(n) {
                    signed(client.request(Method::DELETE, format!("{base}/api/v1/basket")))
                } else {
                    let item = &catalog.in_stock[((u as u64 + k) % n) as usize];
                    signed(
                        client
                            .post(format!("{base}/api/v1/basket/items"))
                            .json(&json!({ "item_id": item, "quantity": 1 })),
                    )
                }
            }
            Endpoint::CheckoutAsBasketView => signed(client.get(format!("{base}/api/v1/basket"))),
            Endpoint::Checkout => signed(
                client
                    .post(format!("{base}{CHECKOUT_PATH}"))
                    .header("idempotency-key", format!("{:016x}", draws.bits(3)))
                    .json(&json!({})),
            ),
        }
    }
}

async fn sign_in_one(client: &Client, base: &str, email: &str, n: usize) -> anyhow::Result<User> {
    let response = client
        .post(format!("{base}/api/v1/identity/register"))
        .json(&json!({ "email": email, "password": PASSWORD, "name": format!("Load user {n}") }))
        .send()
        .await
        .with_context(|| format!("registering {email} at {base}"))?;
    if !response.status().is_success() && response.status() != StatusCode::CONFLICT {
        bail!(
            "registering {email} at {base} answered {}",
            response.status()
        );
    }
    let response = client
        .post(format!("{base}/api/v1/identity/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .with_context(|| format!("logging in {email} at {base}"))?;
    if !response.status().is_success() {
        bail!(
            "logging in {email} at {base} answered {}",
            response.status()
        );
    }
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("reading the login answer for {email}"))?;
    let token = body["access_token"]
        .as_str()
        .with_context(|| format!("the login answer for {email} has no access_token"))?;
    Ok(User {
        authorization: format!("Bearer {token}"),
        adds: AtomicU64::new(0),
    })
}

async fn get_json(client: &Client, url: &str) -> anyhow::Result<Value> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !response.status().is_success() {
        bail!("GET {url} answered {}", response.status());
    }
    response
        .json()
        .await
        .with_context(|| format!("reading the JSON answer of GET {url}"))
}
