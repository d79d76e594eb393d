//! `GET /items`: the query parameters, their rules, and the SQL they become.

use serde::Deserialize;
use tideway_store::Backend;

use crate::error::ApiError;

/// The default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page size.
pub const MAX_PAGE_SIZE: u32 = 100;
/// The largest page number (keeps offsets small).
pub const MAX_PAGE: u32 = 1_000_000;
/// The longest search text.
pub const MAX_Q_CHARS: usize = 100;

/// The query string of `GET /items` as sent (types checked by the extractor).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The page, 1 to 1,000,000 (default 1).
    #[param(minimum = 1, maximum = 1_000_000)]
    page: Option<i64>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
    /// Only this category (its id).
    category: Option<String>,
    /// Only this brand.
    brand: Option<String>,
    /// The lowest price, in minor units.
    #[param(minimum = 0)]
    min_price: Option<i64>,
    /// The highest price, in minor units.
    #[param(minimum = 0)]
    max_price: Option<i64>,
    /// Search text (at most 100 characters) in names, descriptions and brands.
    #[param(max_length = 100)]
    q: Option<String>,
    /// `name` (default), `price_asc`, `price_desc` or `newest`.
    sort: Option<String>,
    /// Only these items: comma-separated ids, at most 100.
    ids: Option<String>,
}

/// The order of a listing; every order ends with the id so pages never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By name, case-insensitively (the default).
    Name,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Most recently created first.
    Newest,
}

impl Sort {
    fn parse(value: &str) -> Result<Self, ApiError> {
        match value {
            "name" => Ok(Self::Name),
            "price_asc" => Ok(Self::PriceAsc),
            "price_desc" => Ok(Self::PriceDesc),
            "newest" => Ok(Self::Newest),
            _ => Err(ApiError::query(
                "sort",
                "must be one of name, price_asc, price_desc, newest",
            )),
        }
    }
}

/// A checked listing request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub page: u32,
    pub page_size: u32,
    pub category: Option<String>,
    pub brand: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub q: Option<String>,
    pub sort: Sort,
    /// Only these items (`ids=a,b,c`, at most [`MAX_PAGE_SIZE`], duplicates dropped): one
    /// call for the items of a basket or an order instead of one per line.
    pub ids: Option<Vec<String>>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl TryFrom<ListParams> for ListQuery {
    type Error = ApiError;

    fn try_from(params: ListParams) -> Result<Self, ApiError> {
        let page = match params.page {
            None => 1,
            Some(page) => u32::try_from(page)
                .ok()
                .filter(|p| (1..=MAX_PAGE).contains(p))
                .ok_or_else(|| {
                    ApiError::query("page", format!("must be between 1 and {MAX_PAGE}"))
                })?,
        };
        let page_size = match params.page_size {
            None => DEFAULT_PAGE_SIZE,
            Some(size) => u32::try_from(size)
                .ok()
                .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
                .ok_or_else(|| {
                    ApiError::query(
                        "page_size",
                        format!("must be between 1 and {MAX_PAGE_SIZE}"),
                    )
                })?,
        };
        for (name, value) in [
            ("min_price", params.min_price),
            ("max_price", params.max_price),
        ] {
            if value.is_some_and(|v| v < 0) {
                return Err(ApiError::query(name, "must be at least 0"));
            }
        }
        if let (Some(min), Some(max)) = (params.min_price, params.max_price)
            && min > max
        {
            return Err(ApiError::query(
                "min_price",
                "must not be greater than max_price",
            ));
        }
        let q = non_empty(params.q);
        if q.as_ref().is_some_and(|q| q.chars().count() > MAX_Q_CHARS) {
            return Err(ApiError::query(
                "q",
                format!("must be at most {MAX_Q_CHARS} characters long"),
            ));
        }
        let sort = match non_empty(params.sort) {
            None => Sort::Name,
            Some(sort) => Sort::parse(&sort)?,
        };
        let ids = match non_empty(params.ids) {
            None => None,
            Some(ids) => Some(parse_ids(&ids)?),
        };
        Ok(Self {
            ids,
            page,
            page_size,
            category: non_empty(params.category),
            brand: non_empty(params.brand),
            min_price: params.min_price,
            max_price: params.max_price,
            q,
            sort,
        })
    }
}

/// `a,b,c` as distinct item ids, in the order given.
fn parse_ids(text: &str) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = Vec::new();
    for id in text.split(',').map(str::trim) {
        if ids.len() == MAX_PAGE_SIZE as usize {
            return Err(ApiError::query(
                "ids",
                format!("at most {MAX_PAGE_SIZE} ids"),
            ));
        }
        if id.is_empty()
            || id.len() > 64
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ApiError::query("ids", "a comma-separated list of item ids"));
        }
        ids.push(id.to_owned());
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// The `WHERE` clause (possibly empty) and its parameters, numbered from `$1`.
pub fn where_clause(query: &ListQuery) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(category) = &query.category {
        let p = next(Param::Text(category.clone()), &mut params);
        conditions.push(format!("category = {p}"));
    }
    if let Some(brand) = &query.brand {
        let p = next(Param::Text(brand.to_lowercase()), &mut params);
        conditions.push(format!("LOWER(brand) = {p}"));
    }
    if let Some(min) = query.min_price {
        let p = next(Param::Int(min), &mut params);
        conditions.push(format!("price_minor >= {p}"));
    }
    if let Some(max) = query.max_price {
        let p = next(Param::Int(max), &mut params);
        conditions.push(format!("price_minor <= {p}"));
    }
    if let Some(ids) = &query.ids {
        let placeholders: Vec<String> = ids
            .iter()
            .map(|id| next(Param::Text(id.clone()), &mut params))
            .collect();
        conditions.push(format!("id IN ({})", placeholders.join(", ")));
    }
    if let Some(q) = &query.q {
        let pattern = format!("%{}%", escape_like(&q.to_lowercase()));
        let p = next(Param::Text(pattern), &mut params);
        conditions.push(format!(
            "(LOWER(name) LIKE {p} ESCAPE '\\' OR LOWER(description) LIKE {p} ESCAPE '\\')"
        ));
    }
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), params)
    }
}

/// The `ORDER BY` clause. Text keys compare by code point on both engines (PostgreSQL's
/// database collation could otherwise order differently from SQLite's).
pub fn order_clause(sort: Sort, backend: Backend) -> String {
    let collate = match backend {
        Backend::Postgres => " COLLATE \"C\"",
        Backend::Sqlite => "",
    };
    match sort {
        Sort::Name => format!(" ORDER BY LOWER(name){collate} ASC, id{collate} ASC"),
        Sort::PriceAsc => format!(" ORDER BY price_minor ASC, id{collate} ASC"),
        Sort::PriceDesc => format!(" ORDER BY price_minor DESC, id{collate} ASC"),
        Sort::Newest => format!(" ORDER BY created_at{collate} DESC, id{collate} ASC"),
    }
}

/// Adds `param` and returns its placeholder.
fn next(param: Param, params: &mut Vec<Param>) -> String {
    params.push(param);
    format!("${}", params.len())
}

/// `value` with the `LIKE` wildcards and the escape character escaped.
fn escape_like(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(params: ListParams) -> Result<ListQuery, String> {
        ListQuery::try_from(params).map_err(|e| e.problem().invalid_params[0].name.clone())
    }

    #[test]
    fn defaults_and_limits() {
        let query = parse(ListParams::default()).unwrap();
        assert_eq!(
            (query.page, query.page_size, query.sort),
            (1, 20, Sort::Name)
        );
        let bad = |params| parse(params).unwrap_err();
        assert_eq!(
            bad(ListParams {
                page: Some(0),
                ..Default::default()
            }),
            "page"
        );
        assert_eq!(
            bad(ListParams {
                page: Some(-1),
                ..Default::default()
            }),
            "page"
        );
        assert_eq!(
            bad(ListParams {
                page_size: Some(101),
                ..Default::default()
            }),
            "page_size"
        );
        assert_eq!(
            bad(ListParams {
                min_price: Some(-1),
                ..Default::default()
            }),
            "min_price"
        );
        assert_eq!(
            bad(ListParams {
                max_price: Some(-1),
                ..Default::default()
            }),
            "max_price"
        );
        assert_eq!(
            bad(ListParams {
                min_price: Some(5),
                max_price: Some(4),
                ..Default::default()
            }),
            "min_price"
        );
        assert_eq!(
            bad(ListParams {
                sort: Some("cheap".into()),
                ..Default::default()
            }),
            "sort"
        );
        assert_eq!(
            bad(ListParams {
                q: Some("x".repeat(101)),
                ..Default::default()
            }),
            "q"
        );
    }

    #[test]
    fn ids_are_checked_deduplicated_and_bound_one_by_one() {
        let query = parse(ListParams {
            ids: Some("a-1, b-2,a-1".into()),
            category: Some("tea".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(query.ids, Some(vec!["a-1".to_owned(), "b-2".to_owned()]));
        let (sql, params) = where_clause(&query);
        assert!(sql.contains("id IN ($2, $3)"), "{sql}");
        assert_eq!(
            params[1..],
            [Param::Text("a-1".into()), Param::Text("b-2".into())]
        );
        for bad in ["a,,b", "x'; DROP", &vec!["a"; 101].join(",")] {
            let err = parse(ListParams {
                ids: Some(bad.to_owned()),
                ..Default::default()
            });
            assert_eq!(err.unwrap_err(), "ids", "{bad}");
        }
    }

    #[test]
    fn builds_numbered_placeholders_and_escapes_wildcards() {
        let query = parse(ListParams {
            category: Some("tea".into()),
            min_price: Some(1),
            q: Some("100%_".into()),
            ..Default::default()
        })
        .unwrap();
        let (sql, params) = where_clause(&query);
        assert!(sql.contains("category = $1"), "{sql}");
        assert!(sql.contains("price_minor >= $2"), "{sql}");
        assert!(sql.contains("LIKE $3"), "{sql}");
        assert_eq!(params[2], Param::Text("%100\\%\\_%".into()));
    }
}
