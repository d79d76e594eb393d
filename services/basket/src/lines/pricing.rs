//! Pricing a basket with the catalog's current prices and stock.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use tideway_basket_api::{BasketLine, BasketView};
use tideway_cache::Cache;
use tideway_catalog_api::{CatalogClient, Item, default_currency};

use crate::error::ApiError;
use crate::store::StoredLine;

/// What the catalog said about each item asked for: `None` when it has no such item.
pub type Items = HashMap<String, Option<Item>>;

/// Asks the catalog for every item in `ids`, concurrently, through the price cache.
#[tracing::instrument(skip_all, fields(items = ids.len()), err)]
pub async fn fetch(
    catalog: &CatalogClient,
    prices: &Cache<Item>,
    ids: &[&str],
) -> Result<Items, ApiError> {
    let answers = try_join_all(ids.iter().map(|id| async move {
        prices
            .get_or_load(id, || catalog.item(id))
            .await
            .map(|item| ((*id).to_owned(), item))
    }))
    .await
    .map_err(ApiError::CatalogUnavailable)?;
    Ok(answers.into_iter().collect())
}

/// Asks the catalog for the items of `lines` that `known` lacks, adding the answers to it.
/// Used after a write, whose effect stands: an item the catalog cannot describe now (a line
/// added concurrently while it went down) is priced from the stored line instead.
pub async fn complete(
    catalog: &CatalogClient,
    prices: &Cache<Item>,
    lines: &[StoredLine],
    known: &mut Items,
) {
    let missing: Vec<&str> = lines
        .iter()
        .map(|line| line.item_id.as_str())
        .filter(|id| !known.contains_key(*id))
        .collect();
    if missing.is_empty() {
        return;
    }
    match fetch(catalog, prices, &missing).await {
        Ok(items) => known.extend(items),
        Err(err) => {
            tracing::warn!(error = %err, "pricing new lines from the stored prices");
        }
    }
}

/// The basket of `lines` at the prices in `items`. A line whose item the catalog does not
/// (or cannot) describe keeps its stored name and price and is unavailable.
pub fn view(lines: &[StoredLine], items: &Items) -> Result<BasketView, ApiError> {
    let mut total: i64 = 0;
    let mut count: i64 = 0;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let (name, price, available, price_current, sold_out, deleted) =
            match items.get(&line.item_id) {
                Some(Some(item)) => {
                    let sold_out = item.sold_out || item.stock <= 0;
                    (
                        item.name.clone(),
                        item.price_minor,
                        !sold_out && item.stock >= line.quantity,
                        true,
                        sold_out,
                        false,
                    )
                }
                // The catalog has no such item any more: it cannot be had, and it is not
                // priced (never from a missing item); the stored name says what it was.
                Some(None) => (line.name.clone(), 0, false, true, false, true),
                // The catalog did not answer: the last price seen, not current.
                None => (
                    line.name.clone(),
                    line.unit_price_minor,
                    false,
                    false,
                    false,
                    false,
                ),
            };
        let line_total = price
            .checked_mul(line.quantity)
            .ok_or_else(|| overflow(&line.item_id))?;
        total = total
            .checked_add(line_total)
            .ok_or_else(|| overflow(&line.item_id))?;
        count = count
            .checked_add(line.quantity)
            .ok_or_else(|| overflow(&line.item_id))?;
        out.push(BasketLine {
            item_id: line.item_id.clone(),
            name,
            unit_price_minor: price,
            quantity: line.quantity,
            line_total_minor: line_total,
            available,
            price_current,
            sold_out,
            deleted,
        });
    }
    Ok(BasketView {
        items: out,
        total_minor: total,
        currency: default_currency(),
        item_count: count,
    })
}

fn overflow(item_id: &str) -> ApiError {
    ApiError::Internal(format!("the basket total overflows at item {item_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, price: i64, stock: i64) -> Item {
        Item {
            id: id.into(),
            sku: format!("SKU-{id}"),
            name: format!("Item {id}"),
            description: String::new(),
            brand: "b".into(),
            category: "c".into(),
            price_minor: price,
            currency: "EUR".into(),
            stock,
            sold_out: stock <= 0,
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn line(id: &str, quantity: i64) -> StoredLine {
        StoredLine {
            item_id: id.into(),
            quantity,
            name: "stored".into(),
            unit_price_minor: 1,
        }
    }

    #[test]
    fn totals_use_current_prices_and_flag_short_stock_sold_out_and_deleted_items() {
        let items: Items = [
            ("a".to_owned(), Some(item("a", 250, 10))),
            ("b".to_owned(), Some(item("b", 1000, 1))),
            ("c".to_owned(), None),
            ("d".to_owned(), Some(item("d", 500, 0))),
        ]
        .into();
        let lines = [line("a", 3), line("b", 2), line("c", 4), line("d", 1)];
        let view = view(&lines, &items).unwrap();
        // The deleted item adds nothing: it is not priced from what the catalog lacks.
        assert_eq!(view.total_minor, 750 + 2000 + 500);
        assert_eq!(view.item_count, 10);
        assert!(view.items[0].available);
        assert!(!view.items[1].available && !view.items[1].sold_out);
        assert_eq!(view.items[2].name, "stored");
        assert!(!view.items[2].available && view.items[2].deleted);
        assert_eq!(view.items[2].line_total_minor, 0);
        assert!(!view.items[3].available && view.items[3].sold_out);
        assert!(view.items.iter().all(|line| line.price_current));
    }

    #[test]
    fn without_the_catalog_lines_keep_their_last_price_marked_not_current() {
        let view = view(&[line("a", 3), line("b", 2)], &Items::new()).unwrap();
        assert_eq!(view.total_minor, 5);
        for line in &view.items {
            assert_eq!(line.unit_price_minor, 1);
            assert_eq!(line.name, "stored");
            assert!(!line.price_current);
            assert!(!line.available);
        }
    }

    #[test]
    fn an_overflowing_total_is_an_error_not_a_wrap() {
        let items: Items = [
            ("a".to_owned(), Some(item("a", i64::MAX / 2, 99))),
            ("b".to_owned(), Some(item("b", i64::MAX / 2, 99))),
        ]
        .into();
        assert!(matches!(
            view(&[line("a", 1), line("b", 2)], &items),
            Err(ApiError::Internal(_))
        ));
    }
}
