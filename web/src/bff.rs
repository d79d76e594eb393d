//! The mobile BFF: `POST /bff/mobile/graphql`, one GraphQL schema over the public API for
//! a mobile client — catalog browsing and search, the basket, checkout and orders.
//!
//! Like the pages, it is a client of the gateway's own routes ([`Api`]): a query runs with
//! the caller's bearer token, so every service checks it as it checks any client. A token
//! that is sent must verify here first (401 problem otherwise); without one only the
//! catalog is open, and the basket, orders and checkout answer a GraphQL error with the
//! extension `code: "UNAUTHENTICATED"`.
//!
//! Limits: query depth [`MAX_DEPTH`], complexity [`MAX_COMPLEXITY`] (every field costs 1,
//! lists multiply by their page size), body size by the gateway. The item of a basket or
//! order line is loaded through a [`DataLoader`]: the lines of one answer cost a single
//! catalog call (`GET /api/v1/catalog/items?ids=…`), not one per line.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, ID, Object, Schema, SimpleObject,
    dataloader::{DataLoader, Loader},
};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use tideway_runtime::{
    Problem,
    auth::{AuthError, JwtVerifier},
    client::ClientError,
};

use crate::{AppState, api::Api};

/// The deepest query accepted.
pub const MAX_DEPTH: usize = 8;
/// The most complex query accepted.
pub const MAX_COMPLEXITY: usize = 1_500;
/// The largest page a list field returns.
const MAX_PAGE_SIZE: i32 = 100;

/// The BFF's schema.
pub type MobileSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema with its limits; per request data (the API, the token, the loader) comes
/// with each request.
pub fn schema() -> MobileSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// `POST /bff/mobile/graphql`.
pub(crate) fn routes() -> Router<AppState> {
    let schema = Arc::new(schema());
    Router::new().route(
        "/bff/mobile/graphql",
        post(
            move |State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes| {
                let schema = schema.clone();
                async move { graphql(&schema, &state, &headers, &body).await }
            },
        ),
    )
}

async fn graphql(
    schema: &MobileSchema,
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let token = match caller(&state.verifier, headers).await {
        Ok(token) => token,
        Err(err) => return err.into_response(),
    };
    let request: async_graphql::Request = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => {
            return Problem::invalid_field("body", format!("a GraphQL request: {err}"))
                .into_response();
        }
    };
    let loader = DataLoader::new(
        ItemLoader {
            api: state.api.clone(),
        },
        tokio::spawn,
    )
    .max_batch_size(MAX_PAGE_SIZE as usize);
    let request = request
        .data(state.api.clone())
        .data(Caller(token))
        .data(loader);
    let response = schema.execute(request).await;
    ([(header::CACHE_CONTROL, "no-store")], Json(response)).into_response()
}

/// The bearer token, verified, or `None` when none was sent.
async fn caller(verifier: &JwtVerifier, headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let token = tideway_runtime::auth::bearer(headers)?;
    verifier.verify(token).await?;
    Ok(Some(token.to_owned()))
}

/// The caller's access token, if any.
struct Caller(Option<String>);

fn token<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a str> {
    ctx.data_unchecked::<Caller>().0.as_deref().ok_or_else(|| {
        async_graphql::Error::new("sign in first: send `Authorization: Bearer <access token>`")
            .extend_with(|_, e| e.set("code", "UNAUTHENTICATED"))
    })
}

fn api<'a>(ctx: &'a Context<'_>) -> &'a Api {
    ctx.data_unchecked::<Api>()
}

/// A service's refusal as a GraphQL error: its problem's detail and invalid fields, and the
/// status as an extension.
fn failed(err: ClientError) -> async_graphql::Error {
    let status = err.status();
    let message = err
        .problem()
        .map(|problem| {
            problem
                .detail
                .clone()
                .unwrap_or_else(|| problem.title.clone())
        })
        .unwrap_or_else(|| err.to_string());
    let fields: Vec<String> = err
        .problem()
        .map(|problem| {
            problem
                .invalid_params
                .iter()
                .map(|param| format!("{}: {}", param.name, param.reason))
                .collect()
        })
        .unwrap_or_default();
    async_graphql::Error::new(message).extend_with(|_, e| {
        let code = match status {
            Some(StatusCode::UNAUTHORIZED) => "UNAUTHENTICATED",
            Some(StatusCode::FORBIDDEN) => "FORBIDDEN",
            Some(StatusCode::NOT_FOUND) => "NOT_FOUND",
            Some(s) if s.is_client_error() => "BAD_REQUEST",
            _ => "UNAVAILABLE",
        };
        e.set("code", code);
        if let Some(status) = status {
            e.set("status", status.as_u16());
        }
        if !fields.is_empty() {
            e.set("invalid_params", fields.clone());
        }
    })
}

fn bad_argument(name: &str, reason: &str) -> async_graphql::Error {
    async_graphql::Error::new(format!("{name}: {reason}"))
        .extend_with(|_, e| e.set("code", "BAD_REQUEST"))
}

/// Loads catalog items by id, many per call.
struct ItemLoader {
    api: Api,
}

impl Loader<String> for ItemLoader {
    type Value = Item;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Item>, Self::Error> {
        let mut found = HashMap::with_capacity(keys.len());
        // An id the catalog could not hold is simply not found: sent along, it would fail
        // the whole batch, and with it every other field that asked for an item.
        let keys: Vec<&String> = keys
            .iter()
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 64
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            .collect();
        for chunk in keys.chunks(MAX_PAGE_SIZE as usize) {
            let ids = chunk
                .iter()
                .map(|id| crate::api::segment(id))
                .collect::<Vec<_>>()
                .join(",");
            let page = self
                .api
                .catalog
                .items(&format!("ids={ids}&page_size={MAX_PAGE_SIZE}"))
                .await
                .map_err(|err| Arc::new(failed(err)))?;
            found.extend(
                page.items
                    .into_iter()
                    .map(|item| (item.id.clone(), Item(item))),
            );
        }
        Ok(found)
    }
}

async fn load_item(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Option<Item>> {
    ctx.data_unchecked::<DataLoader<ItemLoader>>()
        .load_one(id.to_owned())
        .await
        .map_err(|err| (*err).clone())
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ItemSort {
    /// By name.
    Name,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Newest first.
    Newest,
}

impl ItemSort {
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::PriceAsc => "price_asc",
            Self::PriceDesc => "price_desc",
            Self::Newest => "newest",
        }
    }
}

/// The root of every read.
pub struct Query;

#[Object]
impl Query {
    /// A page of the catalog: searched by `search` (name and description), filtered by
    /// category and brand.
    #[graphql(complexity = "page_size.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    #[allow(clippy::too_many_arguments)]
    async fn items(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        category: Option<String>,
        brand: Option<String>,
        sort: Option<ItemSort>,
        #[graphql(default = 1)] page: i32,
        page_size: Option<i32>,
    ) -> async_graphql::Result<ItemPage> {
        let page_size = page_size.unwrap_or(20);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(bad_argument("pageSize", "between 1 and 100"));
        }
        if page < 1 {
            return Err(bad_argument("page", "at least 1"));
        }
        let mut query = form_urlencoded(&[
            ("page", Some(page.to_string())),
            ("page_size", Some(page_size.to_string())),
            ("q", search),
            ("category", category),
            ("brand", brand),
            ("sort", sort.map(|s| s.as_str().to_owned())),
        ]);
        if query.is_empty() {
            query.push_str("page=1");
        }
        let page = api(ctx).catalog.items(&query).await.map_err(failed)?;
        Ok(ItemPage {
            items: page.items.into_iter().map(Item).collect(),
            page: page.page,
            page_size: page.page_size,
            total: page.total,
        })
    }

    /// One item, or null when there is none.
    async fn item(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Item>> {
        load_item(ctx, &id).await
    }

    /// Every category.
    async fn categories(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Category>> {
        let categories = api(ctx).catalog.categories().await.map_err(failed)?;
        Ok(categories
            .into_iter()
            .map(|c| Category {
                id: c.id,
                name: c.name,
                item_count: c.item_count,
            })
            .collect())
    }

    /// The signed-in user's basket.
    async fn basket(&self, ctx: &Context<'_>) -> async_graphql::Result<Basket> {
        let basket = api(ctx).basket.get(token(ctx)?).await.map_err(failed)?;
        Ok(Basket(basket))
    }

    /// A page of the signed-in user's orders, newest first (20 a page).
    #[graphql(complexity = "20 * child_complexity")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1)] page: i32,
    ) -> async_graphql::Result<OrderPage> {
        let page = u32::try_from(page)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| bad_argument("page", "at least 1"))?;
        let orders = api(ctx).orders(token(ctx)?, page).await.map_err(failed)?;
        Ok(OrderPage {
            orders: orders.items.into_iter().map(Order).collect(),
            page: orders.page,
            total: orders.total,
        })
    }

    /// One of the signed-in user's orders, or null.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        match api(ctx).order(token(ctx)?, &id).await {
            Ok(order) => Ok(Some(Order(order))),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(err) => Err(failed(err)),
        }
    }
}

/// `key=value&…` of the present values, percent-encoded.
fn form_urlencoded(pairs: &[(&str, Option<String>)]) -> String {
    let present: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    serde_urlencoded::to_string(present).unwrap_or_default()
}

/// The root of every change.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Adds `quantity` units of an item to the basket.
    async fn add_to_basket(
        &self,
        ctx: &Context<'_>,
        item_id: ID,
        #[graphql(default = 1)] quantity: i32,
    ) -> async_graphql::Result<Basket> {
        let basket = api(ctx)
            .basket
            .add(token(ctx)?, &item_id, i64::from(quantity))
            .await
            .map_err(failed)?;
        Ok(Basket(basket))
    }

    /// Sets the quantity of a basket line.
    async fn set_quantity(
        &self,
        ctx: &Context<'_>,
        item_id: ID,
        quantity: i32,
    ) -> async_graphql::Result<Basket> {
        let basket = api(ctx)
            .basket
            .set_quantity(token(ctx)?, &item_id, i64::from(quantity))
            .await
            .map_err(failed)?;
        Ok(Basket(basket))
    }

    /// Removes a basket line.
    async fn remove_from_basket(
        &self,
        ctx: &Context<'_>,
        item_id: ID,
    ) -> async_graphql::Result<Basket> {
        let basket = api(ctx)
            .basket
            .remove(token(ctx)?, &item_id)
            .await
            .map_err(failed)?;
        Ok(Basket(basket))
    }

    /// Checks the basket out, paying with `card`. The same `idempotencyKey` again returns
    /// the same order (a retry after a lost answer places nothing twice).
    async fn checkout(
        &self,
        ctx: &Context<'_>,
        card: String,
        idempotency_key: String,
    ) -> async_graphql::Result<CheckoutResult> {
        if idempotency_key.is_empty() || idempotency_key.len() > 200 {
            return Err(bad_argument("idempotencyKey", "1 to 200 characters"));
        }
        let accepted = api(ctx)
            .checkout(token(ctx)?, card, &idempotency_key)
            .await
            .map_err(failed)?;
        Ok(CheckoutResult {
            order_id: accepted.order_id.into(),
            status: accepted.status.into(),
        })
    }
}

/// A catalog item.
#[derive(Clone)]
pub struct Item(tideway_catalog_api::Item);

#[Object]
impl Item {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn brand(&self) -> &str {
        &self.0.brand
    }
    /// The category's id.
    async fn category(&self) -> &str {
        &self.0.category
    }
    /// The unit price in minor units (cents).
    async fn price_minor(&self) -> i64 {
        self.0.price_minor
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    /// Units in stock.
    async fn stock(&self) -> i64 {
        self.0.stock
    }
    /// Whether any unit is in stock.
    async fn in_stock(&self) -> bool {
        self.0.stock > 0
    }
    /// The picture, relative to the shop's origin.
    async fn image_path(&self) -> String {
        format!("/images/items/{}.svg", self.0.id)
    }
}

/// A page of items.
#[derive(SimpleObject)]
pub struct ItemPage {
    items: Vec<Item>,
    page: u32,
    page_size: u32,
    total: u64,
}

/// A category.
#[derive(SimpleObject)]
pub struct Category {
    id: String,
    name: String,
    item_count: u64,
}

/// The signed-in user's basket.
pub struct Basket(tideway_basket_api::BasketView);

#[Object]
impl Basket {
    async fn lines(&self) -> Vec<BasketLine> {
        self.0.items.iter().cloned().map(BasketLine).collect()
    }
    async fn total_minor(&self) -> i64 {
        self.0.total_minor
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn item_count(&self) -> i64 {
        self.0.item_count
    }
}

/// A line of the basket.
pub struct BasketLine(tideway_basket_api::BasketLine);

#[Object]
impl BasketLine {
    async fn item_id(&self) -> ID {
        ID(self.0.item_id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn unit_price_minor(&self) -> i64 {
        self.0.unit_price_minor
    }
    async fn quantity(&self) -> i64 {
        self.0.quantity
    }
    async fn line_total_minor(&self) -> i64 {
        self.0.line_total_minor
    }
    /// Whether the item can still be bought.
    async fn available(&self) -> bool {
        self.0.available
    }
    /// Whether the price is the catalog's current one (false: the last one seen while the
    /// catalog was out of reach).
    async fn price_current(&self) -> bool {
        self.0.price_current
    }
    /// The catalog item (batched with the other lines' items), or null when it is gone.
    async fn item(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Item>> {
        load_item(ctx, &self.0.item_id).await
    }
}

/// The state of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum OrderStatus {
    /// Its checkout is running.
    Pending,
    /// Paid, stock committed.
    Confirmed,
    /// Stopped, with its reason.
    Cancelled,
}

impl From<tideway_ordering_api::OrderStatus> for OrderStatus {
    fn from(status: tideway_ordering_api::OrderStatus) -> Self {
        match status {
            tideway_ordering_api::OrderStatus::Pending => Self::Pending,
            tideway_ordering_api::OrderStatus::Confirmed => Self::Confirmed,
            tideway_ordering_api::OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// A page of orders.
#[derive(SimpleObject)]
pub struct OrderPage {
    orders: Vec<Order>,
    page: u32,
    total: u64,
}

/// An order.
pub struct Order(tideway_ordering_api::OrderView);

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }
    /// Why it was cancelled.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn total_minor(&self) -> i64 {
        self.0.total_minor
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
    async fn lines(&self) -> Vec<OrderLine> {
        self.0.lines.iter().cloned().map(OrderLine).collect()
    }
    /// The checkout's steps.
    async fn timeline(&self) -> Vec<TimelineEntry> {
        self.0
            .timeline
            .iter()
            .map(|entry| TimelineEntry {
                step: entry.step.clone(),
                kind: entry.kind.clone(),
                status: entry.status.clone(),
                started_at: entry.started_at.clone(),
                finished_at: entry.finished_at.clone(),
                detail: entry.detail.clone(),
            })
            .collect()
    }
}

/// A line of an order.
pub struct OrderLine(tideway_ordering_api::OrderLine);

#[Object]
impl OrderLine {
    async fn item_id(&self) -> ID {
        ID(self.0.item_id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn unit_price_minor(&self) -> i64 {
        self.0.unit_price_minor
    }
    async fn quantity(&self) -> i64 {
        self.0.quantity
    }
    /// The catalog item (batched with the other lines' items), or null when it is gone.
    async fn item(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Item>> {
        load_item(ctx, &self.0.item_id).await
    }
}

/// A step of an order's checkout.
#[derive(SimpleObject)]
pub struct TimelineEntry {
    step: String,
    kind: String,
    status: String,
    started_at: String,
    finished_at: Option<String>,
    detail: Option<String>,
}

/// An accepted checkout.
#[derive(SimpleObject)]
pub struct CheckoutResult {
    order_id: ID,
    status: OrderStatus,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_is_as_published() {
        insta::assert_snapshot!("mobile_schema", super::schema().sdl());
    }

    #[tokio::test]
    async fn too_deep_and_too_complex_queries_are_refused_before_any_call() {
        let schema = super::schema();
        // No API in the request's data: a query that ran would panic, so a refusal is a
        // refusal before execution.
        let deep = "{ basket { lines { item { name } } } __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
        let answer = schema.execute(deep).await;
        assert!(
            answer
                .errors
                .iter()
                .any(|e| e.message.contains("nested too deep")),
            "{:?}",
            answer.errors
        );
        let wide = "{ items(pageSize: 100) { items { id name brand sku description priceMinor stock inStock currency category imagePath } } a: items(pageSize: 100) { items { id name brand sku description } } b: items(pageSize: 100) { items { id name brand sku description } } }";
        let answer = schema.execute(wide).await;
        assert!(
            answer
                .errors
                .iter()
                .any(|e| e.message.contains("too complex")),
            "{:?}",
            answer.errors
        );
    }
}
