//! Where baskets live: the service's SQL database or Redis, behind one set of operations so
//! the endpoints and the order consumer do not know which (`basket.store`).
//!
//! Both keep the same rules: a line holds the item id, the quantity, and the name and price
//! last seen; lines come back oldest first; an add never takes a line past its limit, even
//! when adds race; a confirmed order's units leave the basket once per event, atomically
//! with the record of that event; and a basket untouched (no add, no change of quantity)
//! for its lifetime is gone.

pub mod redis;
pub mod sql;

use std::time::Duration;

use tideway_catalog_api::Item;
use tideway_ordering_api::OrderLine;
use tideway_store::{Db, DbError};

use self::redis::{RedisError, RedisStore};
use crate::SERVICE;

/// A line as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub item_id: String,
    pub quantity: i64,
    /// The name last seen in the catalog.
    pub name: String,
    /// The unit price last seen in the catalog.
    pub unit_price_minor: i64,
}

/// What an add did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The line now holds this many units.
    To(i64),
    /// The line would have passed the limit; it holds `current` units, unchanged.
    Refused { current: i64 },
}

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQL database failed.
    #[error(transparent)]
    Sql(#[from] DbError),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The inbox failed.
    #[error(transparent)]
    Inbox(#[from] tideway_bus::BusError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        Self::Sql(DbError::new(SERVICE, err))
    }
}

/// The baskets, in whichever store is configured.
#[derive(Debug, Clone)]
pub enum Store {
    /// The service's database.
    Sql(Sql),
    /// Redis.
    Redis(RedisStore),
}

/// The SQL store: the database and how long an untouched basket lives.
#[derive(Debug, Clone)]
pub struct Sql {
    pub db: Db,
    pub ttl: Duration,
}

impl Store {
    /// The lines of `user`, oldest first; none once the basket has expired.
    pub async fn lines(&self, user: &str) -> Result<Vec<StoredLine>, StoreError> {
        match self {
            Self::Sql(sql) => Ok(sql::lines(&sql.db, sql.ttl, user).await?),
            Self::Redis(redis) => Ok(redis.lines(user).await?),
        }
    }

    /// Adds `quantity` units of `item` to the line of `user` as long as the line stays at
    /// most `limit` (the caller checks `quantity <= limit`), atomically.
    pub async fn add(
        &self,
        user: &str,
        item: &Item,
        quantity: i64,
        limit: i64,
    ) -> Result<Added, StoreError> {
        match self {
            Self::Sql(sql) => Ok(sql::add(&sql.db, user, item, quantity, limit).await?),
            Self::Redis(redis) => Ok(redis.add(user, item, quantity, limit).await?),
        }
    }

    /// Sets the quantity of the line of `item`; `false` when there is no such line.
    pub async fn set(&self, user: &str, item: &Item, quantity: i64) -> Result<bool, StoreError> {
        match self {
            Self::Sql(sql) => Ok(sql::set(&sql.db, user, item, quantity).await?),
            Self::Redis(redis) => Ok(redis.set(user, item, quantity).await?),
        }
    }

    /// Removes the line of `item_id`; `false` when there was none.
    pub async fn remove(&self, user: &str, item_id: &str) -> Result<bool, StoreError> {
        match self {
            Self::Sql(sql) => Ok(sql::remove(&sql.db, user, item_id).await?),
            Self::Redis(redis) => Ok(redis.remove(user, item_id).await?),
        }
    }

    /// Removes every line of `user`.
    pub async fn clear(&self, user: &str) -> Result<(), StoreError> {
        match self {
            Self::Sql(sql) => sql::clear(&sql.db, user).await.map(|_| ())?,
            Self::Redis(redis) => redis.clear(user).await?,
        }
        Ok(())
    }

    /// Takes the units of a confirmed order out of `user`'s basket, unless `consumer` has
    /// already applied `event_id`: the check, its record and the change are one atomic step.
    /// `false` when the event had been applied before.
    pub async fn apply_order(
        &self,
        consumer: &str,
        event_id: &str,
        user: &str,
        lines: &[OrderLine],
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sql(sql) => sql::apply_order(&sql.db, consumer, event_id, user, lines).await,
            Self::Redis(redis) => Ok(redis.apply_order(consumer, event_id, user, lines).await?),
        }
    }
}
