//! Browsing: the home page, the catalog grid with search, filters, sorting and pages, and
//! an item's page.

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use tideway_catalog_api::{Category, Item, ItemPage};

use super::is_htmx;
use crate::{
    AppState,
    error::PageError,
    images::item_image_url,
    layout::{FormErrors, Section, csrf_field, form_error, money, page},
    session::Visitor,
};

const PAGE_SIZE: u32 = 12;

/// `GET /`: categories and a few items.
pub(crate) async fn home(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    let (categories, featured) = tokio::join!(
        state.api.catalog.categories(),
        state.api.catalog.items("page=1&page_size=8&sort=newest"),
    );
    let categories = categories.map_err(|err| PageError::from_client(err, "/"))?;
    let featured = featured.map_err(|err| PageError::from_client(err, "/"))?;
    let body = html! {
        section.hero {
            h1 { "Good things, shipped by small services" }
            p { "Coffee, tea, kitchenware and more — every order travels through a saga of
                 independent services you can watch live." }
            form.search role="search" action="/catalog" method="get" {
                label.visually-hidden for="home-q" { "Search the shop" }
                input #home-q type="search" name="q" placeholder="Search the shop…";
                button type="submit" { "Search" }
            }
        }
        section aria-labelledby="categories-heading" {
            h2 #categories-heading { "Categories" }
            ul.categories {
                @for category in &categories {
                    li {
                        a href=(format!("/catalog?category={}", crate::api::segment(&category.id))) {
                            span.name { (category.name) }
                            span.count { (category.item_count) " items" }
                        }
                    }
                }
            }
        }
        section aria-labelledby="new-heading" {
            h2 #new-heading { "New in" }
            (grid(&featured.items))
        }
    };
    Ok(page("Home", &visitor, Section::Home, body))
}

/// The catalog's query: what the visitor searched for.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub(crate) struct Browse {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    category: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    brand: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sort: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<u32>,
}

impl Browse {
    fn page(&self) -> u32 {
        self.page.unwrap_or(1).max(1)
    }

    /// This query with another page, as a link.
    fn link(&self, page: u32) -> String {
        let mut query = self.clone();
        query.page = (page > 1).then_some(page);
        let encoded = serde_urlencoded::to_string(&query).unwrap_or_default();
        if encoded.is_empty() {
            "/catalog".to_owned()
        } else {
            format!("/catalog?{encoded}")
        }
    }

    /// The catalog API's query string.
    fn api_query(&self) -> String {
        let mut pairs = vec![
            ("page", self.page().to_string()),
            ("page_size", PAGE_SIZE.to_string()),
        ];
        for (key, value) in [
            ("q", &self.q),
            ("category", &self.category),
            ("brand", &self.brand),
            ("sort", &self.sort),
        ] {
            if !value.trim().is_empty() {
                pairs.push((key, value.trim().to_owned()));
            }
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

const SORTS: &[(&str, &str)] = &[
    ("name", "Name"),
    ("price_asc", "Price: low to high"),
    ("price_desc", "Price: high to low"),
    ("newest", "Newest"),
];

/// `GET /catalog`: the grid; htmx asks for the results alone as one types.
pub(crate) async fn list(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    query: Result<Query<Browse>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    // A hand-edited query (a page that is not a number) shows the first page.
    let browse = query.map(|Query(q)| q).unwrap_or_default();
    let api_query = browse.api_query();
    let (items, categories, brands) = tokio::join!(
        state.api.catalog.items(&api_query),
        state.api.catalog.categories(),
        state.api.brands(),
    );
    let categories = categories.map_err(|err| PageError::from_client(err, "/catalog"))?;
    let brands = brands.map_err(|err| PageError::from_client(err, "/catalog"))?;
    let results = match items {
        Ok(page) => results(&browse, &page),
        Err(err) => match crate::layout::FormErrors::from_client_error(&err) {
            Some(errors) => html! {
                div #results aria-live="polite" {
                    (crate::layout::form_error(&errors))
                }
            },
            None => return Err(PageError::from_client(err, "/catalog")),
        },
    };
    if is_htmx(&headers) {
        return Ok(results.into_response());
    }
    let title = match categories.iter().find(|c| c.id == browse.category) {
        Some(category) => category.name.clone(),
        None => "Shop".to_owned(),
    };
    let body = html! {
        h1 { (title) }
        (filters(&browse, &categories, &brands))
        (results)
    };
    Ok(page(&title, &visitor, Section::Shop, body).into_response())
}

fn filters(browse: &Browse, categories: &[Category], brands: &[String]) -> Markup {
    html! {
        form.filters role="search" action="/catalog" method="get"
            hx-get="/catalog" hx-target="#results" hx-swap="outerHTML" hx-push-url="true"
            hx-trigger="input changed delay:300ms from:#q, change, submit" {
            div.field {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(browse.q) placeholder="Name or description";
            }
            div.field {
                label for="category" { "Category" }
                select #category name="category" {
                    option value="" { "All categories" }
                    @for category in categories {
                        option value=(category.id) selected[category.id == browse.category] { (category.name) }
                    }
                }
            }
            div.field {
                label for="brand" { "Brand" }
                select #brand name="brand" {
                    option value="" { "All brands" }
                    @for brand in brands {
                        option value=(brand) selected[*brand == browse.brand] { (brand) }
                    }
                }
            }
            div.field {
                label for="sort" { "Sort by" }
                select #sort name="sort" {
                    @for (value, label) in SORTS {
                        option value=(value) selected[*value == browse.sort] { (label) }
                    }
                }
            }
            button type="submit" { "Search" }
        }
    }
}

fn results(browse: &Browse, page: &ItemPage) -> Markup {
    let pages = u32::try_from(page.total.div_ceil(u64::from(PAGE_SIZE))).unwrap_or(u32::MAX);
    let current = browse.page();
    html! {
        div #results aria-live="polite" {
            p.summary {
                @if page.total == 0 {
                    "No items match. Try another search or fewer filters."
                } @else {
                    (page.total) @if page.total == 1 { " item" } @else { " items" }
                    @if pages > 1 { " · page " (current) " of " (pages) }
                }
            }
            (grid(&page.items))
            @if pages > 1 {
                nav.pagination aria-label="Pagination" {
                    @if current > 1 {
                        a href=(browse.link(current - 1)) rel="prev" { "← Previous page" }
                    }
                    span { "Page " (current) " of " (pages) }
                    @if current < pages {
                        a href=(browse.link(current + 1)) rel="next" { "Next page →" }
                    }
                }
            }
        }
    }
}

/// Items as cards.
pub(crate) fn grid(items: &[Item]) -> Markup {
    html! {
        ul.grid {
            @for item in items {
                li.card {
                    a href=(format!("/items/{}", crate::api::segment(&item.id))) {
                        img src=(item_image_url(item)) alt="" width="400" height="300" loading="lazy";
                        span.name { (item.name) }
                    }
                    span.brand { (item.brand) }
                    span.price { (money(item.price_minor, &item.currency)) }
                    @if item.sold_out { span.badge data-status="cancelled" { "Sold out" } }
                }
            }
        }
    }
}

/// `GET /items/{id}`.
pub(crate) async fn item(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let item = load_item(&state, &id).await?;
    let also = if state
        .flags
        .enabled(crate::YOU_MAY_ALSO_LIKE, &visitor.flag_context())
    {
        also_like(&state, &item).await
    } else {
        Vec::new()
    };
    Ok(item_page(
        &visitor,
        &item,
        &FormErrors::default(),
        "1",
        &also,
    ))
}

/// How many items the "You may also like" panel shows.
const ALSO_LIKE: usize = 4;

/// Other items of `item`'s category, for the "You may also like" panel: the catalog's
/// list, newest first, without `item`. A failed call shows no panel rather than no page.
async fn also_like(state: &AppState, item: &Item) -> Vec<Item> {
    let query = serde_urlencoded::to_string([
        ("category", item.category.as_str()),
        ("page", "1"),
        ("page_size", "5"),
        ("sort", "newest"),
    ])
    .unwrap_or_default();
    match state.api.catalog.items(&query).await {
        Ok(page) => page
            .items
            .into_iter()
            .filter(|other| other.id != item.id)
            .take(ALSO_LIKE)
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, item = %item.id, "no \"you may also like\" panel: the catalog's list failed");
            Vec::new()
        }
    }
}

/// The item `id`, or the page's error.
pub(crate) async fn load_item(state: &AppState, id: &str) -> Result<Item, PageError> {
    let next = format!("/items/{}", crate::api::segment(id));
    state
        .api
        .catalog
        .item(id)
        .await
        .map_err(|err| PageError::from_client(err, &next))?
        .ok_or_else(|| PageError::NotFound("this item".to_owned()))
}

/// An item's page; `errors` are the basket's answer to an add that was refused; `also`
/// fills the "You may also like" panel (none when empty).
pub(crate) fn item_page(
    visitor: &Visitor,
    item: &Item,
    errors: &FormErrors,
    quantity: &str,
    also: &[Item],
) -> Markup {
    let error = errors.field("quantity");
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/catalog" { "Shop" } " / "
            a href=(format!("/catalog?category={}", crate::api::segment(&item.category))) { (item.category) }
        }
        article.item {
            img src=(item_image_url(item)) alt=(format!("Picture of {}", item.name)) width="400" height="300";
            div.details {
                h1 { (item.name) }
                p.brand { "by " (item.brand) }
                p.price { (money(item.price_minor, &item.currency)) }
                p { (item.description) }
                @if item.sold_out || item.stock <= 0 {
                    p.stock.out #stock { "Sold out" }
                } @else {
                    p.stock.ok #stock { "In stock" }
                }
                (form_error(errors))
                @if let Some(refusal) = errors.field("item_id") {
                    p.alert role="alert" { (refusal) }
                }
                form.add method="post" action="/basket/items" {
                    (csrf_field(visitor))
                    input type="hidden" name="item_id" value=(item.id);
                    div.field.inline.invalid[error.is_some()] {
                        label for="quantity" { "Quantity" }
                        input #quantity type="number" name="quantity" value=(quantity) min="1" max="99" required
                            aria-invalid=[error.map(|_| "true")]
                            aria-describedby=[error.map(|_| "quantity-error")];
                        @if let Some(error) = error {
                            small.error #quantity-error { (error) }
                        }
                    }
                    button type="submit" disabled[item.sold_out || item.stock <= 0] { "Add to basket" }
                }
                @if visitor.user.is_none() {
                    p.hint { "You will be asked to sign in first." }
                }
            }
        }
        @if !also.is_empty() {
            section.also-like #also-like aria-labelledby="also-like-heading" {
                h2 #also-like-heading { "You may also like" }
                (grid(also))
            }
        }
    };
    page(&item.name, visitor, Section::Shop, body)
}
