//! The SQL of items, categories and brands.

use sqlx::{AnyConnection, Row, any::AnyRow};
use tideway_catalog_api::{Category, Item, ItemChanged, ItemCreated, ItemDeleted, PriceChanged};
use tideway_store::{Db, is_unique_violation};

use super::{
    list::{ListQuery, Param, order_clause, where_clause},
    validate::{ValidNewItem, ValidUpdate},
};
use crate::{error::ApiError, events::enqueue, time};

const COLUMNS: &str = "id, sku, name, description, brand, category, price_minor, currency, \
                       stock, version, created_at, updated_at";

fn item_from_row(row: &AnyRow) -> Result<Item, sqlx::Error> {
    let stock: i64 = row.try_get("stock")?;
    Ok(Item {
        id: row.try_get("id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        brand: row.try_get("brand")?,
        category: row.try_get("category")?,
        price_minor: row.try_get("price_minor")?,
        currency: row.try_get("currency")?,
        stock,
        sold_out: stock <= 0,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: &'q [Param],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text.as_str()),
            Param::Int(int) => query.bind(*int),
        };
    }
    query
}

/// One page of the items matching `query`, and how many match over all pages.
#[tracing::instrument(skip_all, fields(page = query.page, page_size = query.page_size), err(level = "debug"))]
pub async fn list(db: &Db, query: &ListQuery) -> Result<(Vec<Item>, u64), ApiError> {
    let (filter, mut params) = where_clause(query);
    let count_sql = format!("SELECT COUNT(*) AS n FROM items{filter}");
    let total: i64 = bind_all(sqlx::query(&count_sql), &params)
        .fetch_one(db.pool())
        .await?
        .try_get("n")?;
    let limit = i64::from(query.page_size);
    let offset = i64::from(query.page - 1) * limit;
    params.push(Param::Int(limit));
    params.push(Param::Int(offset));
    let sql = format!(
        "SELECT {COLUMNS} FROM items{filter}{order} LIMIT ${} OFFSET ${}",
        params.len() - 1,
        params.len(),
        order = order_clause(query.sort, db.backend()),
    );
    let rows = bind_all(sqlx::query(&sql), &params)
        .fetch_all(db.pool())
        .await?;
    let items = rows
        .iter()
        .map(item_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or_default()))
}

/// The item `id`.
#[tracing::instrument(skip_all, fields(id = %id), err(level = "debug"))]
pub async fn get(db: &Db, id: &str) -> Result<Option<Item>, ApiError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM items WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.as_ref().map(item_from_row).transpose()?)
}

async fn category_exists(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT id FROM categories WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

fn unknown_category() -> ApiError {
    ApiError::field("category", "is not a known category")
}

/// Inserts `new` as the item `id` and enqueues [`ItemCreated`]: 409 for a SKU already
/// taken, 422 for an unknown category.
///
/// One statement that inserts only when the category exists, so no read comes before the
/// write (on SQLite a read-then-write transaction can fail when another writer commits).
#[tracing::instrument(skip_all, fields(sku = %new.sku), err(level = "debug"))]
pub async fn insert(db: &Db, id: &str, new: &ValidNewItem) -> Result<Item, ApiError> {
    let now = time::format(time::now());
    let mut tx = db.begin().await?;
    let row = sqlx::query(&format!(
        "INSERT INTO items ({COLUMNS}) \
         SELECT $1, $2, $3, $4, $5, id, $6, $7, $8, 1, $9, $9 FROM categories WHERE id = $10 \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&new.sku)
    .bind(&new.name)
    .bind(&new.description)
    .bind(&new.brand)
    .bind(new.price_minor)
    .bind(&new.currency)
    .bind(new.stock)
    .bind(&now)
    .bind(&new.category)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|err| {
        if is_unique_violation(&err) {
            ApiError::Conflict(format!("an item with SKU {} already exists", new.sku))
        } else {
            err.into()
        }
    })?;
    let Some(row) = row else {
        return Err(unknown_category());
    };
    let item = item_from_row(&row)?;
    enqueue(&mut tx, &item.id, &ItemCreated { item: item.clone() }).await?;
    tx.commit().await?;
    Ok(item)
}

/// Locks the item `id` for the rest of the transaction and returns its `updated_at`, or
/// `None` when there is no such item. The first statement writes: on SQLite the transaction
/// then holds the write lock (a transaction that reads first fails with `SQLITE_BUSY` when
/// another writer commits in between); on PostgreSQL the row is locked.
async fn lock_item(conn: &mut AnyConnection, id: &str) -> Result<Option<String>, sqlx::Error> {
    let locked = sqlx::query("UPDATE items SET version = version WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT updated_at FROM items WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| row.try_get("updated_at")).transpose()
}

/// Applies `update` to the item `id`, bumping its version; `None` when there is no such item.
#[tracing::instrument(skip_all, fields(id = %id), err(level = "debug"))]
pub async fn update(db: &Db, id: &str, update: &ValidUpdate) -> Result<Option<Item>, ApiError> {
    let mut tx = db.begin().await?;
    let Some(previous) = lock_item(&mut tx, id).await? else {
        return Ok(None);
    };
    if let Some(category) = &update.category
        && !category_exists(&mut tx, category).await?
    {
        return Err(unknown_category());
    }
    let mut sets = Vec::new();
    let mut params = Vec::new();
    let text_fields = [
        ("name", &update.name),
        ("description", &update.description),
        ("brand", &update.brand),
        ("category", &update.category),
    ];
    for (column, value) in text_fields {
        if let Some(value) = value {
            params.push(Param::Text(value.clone()));
            sets.push(format!("{column} = ${}", params.len()));
        }
    }
    if let Some(stock) = update.stock {
        params.push(Param::Int(stock));
        sets.push(format!("stock = ${}", params.len()));
    }
    params.push(Param::Text(time::after(&previous)));
    sets.push(format!("updated_at = ${}", params.len()));
    params.push(Param::Text(id.to_owned()));
    let sql = format!(
        "UPDATE items SET {}, version = version + 1 WHERE id = ${} RETURNING {COLUMNS}",
        sets.join(", "),
        params.len()
    );
    let row = bind_all(sqlx::query(&sql), &params)
        .fetch_optional(&mut *tx)
        .await?;
    let item = row.as_ref().map(item_from_row).transpose()?;
    if let Some(item) = &item {
        let changed = ItemChanged {
            item_id: item.id.clone(),
            version: item.version,
            stock: item.stock,
        };
        enqueue(&mut tx, &item.id, &changed).await?;
    }
    tx.commit().await?;
    Ok(item)
}

/// Sets the price of the item `id`, bumping its version; `None` when there is no such item.
#[tracing::instrument(skip_all, fields(id = %id, price_minor = price_minor), err(level = "debug"))]
pub async fn set_price(db: &Db, id: &str, price_minor: i64) -> Result<Option<Item>, ApiError> {
    let mut tx = db.begin().await?;
    let Some(previous) = lock_item(&mut tx, id).await? else {
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "UPDATE items SET price_minor = $1, updated_at = $2, version = version + 1 \
         WHERE id = $3 RETURNING {COLUMNS}"
    ))
    .bind(price_minor)
    .bind(time::after(&previous))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let item = row.as_ref().map(item_from_row).transpose()?;
    if let Some(item) = &item {
        let changed = PriceChanged {
            item_id: item.id.clone(),
            price_minor: item.price_minor,
            version: item.version,
        };
        enqueue(&mut tx, &item.id, &changed).await?;
    }
    tx.commit().await?;
    Ok(item)
}

/// Deletes the item `id` and enqueues [`ItemDeleted`]; `false` when there was no such item.
#[tracing::instrument(skip_all, fields(id = %id), err(level = "debug"))]
pub async fn delete(db: &Db, id: &str) -> Result<bool, ApiError> {
    let mut tx = db.begin().await?;
    let result = sqlx::query("DELETE FROM items WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let deleted = result.rows_affected() > 0;
    if deleted {
        let event = ItemDeleted {
            item_id: id.to_owned(),
        };
        enqueue(&mut tx, id, &event).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// Every category with its number of items, in display order.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn categories(db: &Db) -> Result<Vec<Category>, ApiError> {
    let rows = sqlx::query(
        "SELECT c.id AS id, c.name AS name, COUNT(i.id) AS item_count \
         FROM categories c LEFT JOIN items i ON i.category = c.id \
         GROUP BY c.id, c.name, c.position ORDER BY c.position, c.id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let count: i64 = row.try_get("item_count")?;
            Ok(Category {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                item_count: u64::try_from(count).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(ApiError::from)
}

/// Every brand with at least one item, alphabetically.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn brands(db: &Db) -> Result<Vec<String>, ApiError> {
    let rows = sqlx::query("SELECT DISTINCT brand FROM items")
        .fetch_all(db.pool())
        .await?;
    let mut brands = rows
        .iter()
        .map(|row| row.try_get::<String, _>("brand"))
        .collect::<Result<Vec<_>, _>>()?;
    // Sorted here so the order is the same on both engines whatever their collation.
    brands.sort_by_key(|b| (b.to_lowercase(), b.clone()));
    Ok(brands)
}
