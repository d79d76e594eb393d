//! The Redis store: one hash per basket, and Lua scripts for every change that reads before
//! it writes, so each runs atomically on the server.
//!
//! Keys (`P` is `basket.redis_key_prefix`; the braces are the Redis Cluster hash tag, so
//! a user's basket and inbox entries live on one node and one script may touch both):
//!
//! * `P:{user}:lines` — a hash, field = item id, value = `quantity|added_at_ms|price|name`.
//!   Adds and changes of quantity set its expiry to the basket's lifetime, so Redis itself
//!   deletes an abandoned basket.
//! * `P:{user}:inbox:<consumer>:<event id>` — the record that an event was applied,
//!   written by the script that applies it and kept [`INBOX_RETENTION`].
//!
//! Every command runs under `basket.redis_timeout_ms`, connecting included: when Redis is
//! down or stalls, a request gets a 503 at once instead of hanging, and the connection
//! manager reconnects by itself once Redis answers again.

use std::{sync::Arc, time::Duration};

use redis::{
    AsyncCommands, ErrorKind, RedisError as Cause, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tideway_catalog_api::Item;
use tideway_ordering_api::OrderLine;
use tokio::sync::OnceCell;

use super::{Added, StoredLine, sql::now_ms};
use crate::config::Config;

/// How long the record of an applied event is kept: longer than the bus keeps events
/// (JetStream's stream keeps them 7 days), so no redelivery can outlive it.
pub const INBOX_RETENTION: Duration = Duration::from_secs(8 * 24 * 3600);

/// Adds units to a line unless it would pass the limit. KEYS[1]: the basket; ARGV: item,
/// quantity, limit, now (ms), price, name, lifetime (ms). Returns {added, quantity}.
const ADD: &str = r"
local line = redis.call('HGET', KEYS[1], ARGV[1])
local held, added = 0, ARGV[4]
if line then
  local q, a = string.match(line, '^(%d+)|(%d+)|')
  if not q then return redis.error_reply('corrupt basket line') end
  held, added = tonumber(q), a
end
local wanted = held + tonumber(ARGV[2])
if wanted > tonumber(ARGV[3]) then return {0, held} end
redis.call('HSET', KEYS[1], ARGV[1], wanted .. '|' .. added .. '|' .. ARGV[5] .. '|' .. ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return {1, wanted}
";

/// Sets the quantity of an existing line. KEYS[1]: the basket; ARGV: item, quantity,
/// price, name, lifetime (ms). Returns 1, or 0 when there is no such line.
const SET: &str = r"
local line = redis.call('HGET', KEYS[1], ARGV[1])
if not line then return 0 end
local added = string.match(line, '^%d+|(%d+)|')
if not added then return redis.error_reply('corrupt basket line') end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. added .. '|' .. ARGV[3] .. '|' .. ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// Applies a confirmed order once. KEYS[1]: the basket, KEYS[2]: the inbox entry; ARGV:
/// retention (ms), then item and quantity pairs. Every line is read and checked before
/// anything is written, so a failure leaves no half-applied order. Returns 1, or 0 when
/// the event was applied before. The basket's expiry is left as it was.
const APPLY_ORDER: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local lines, order = {}, {}
for i = 2, #ARGV, 2 do
  local item = ARGV[i]
  if lines[item] == nil then
    local line = redis.call('HGET', KEYS[1], item)
    if line then
      local q, rest = string.match(line, '^(%d+)(|.*)$')
      if not q then return redis.error_reply('corrupt basket line') end
      lines[item] = {tonumber(q), rest}
      table.insert(order, item)
    else
      lines[item] = false
    end
  end
  if lines[item] then lines[item][1] = lines[item][1] - tonumber(ARGV[i + 1]) end
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
for _, item in ipairs(order) do
  local line = lines[item]
  if line[1] <= 0 then
    redis.call('HDEL', KEYS[1], item)
  else
    redis.call('HSET', KEYS[1], item, line[1] .. line[2])
  end
end
return 1
";

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// No answer within the timeout, connecting included.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis cannot serve now (connection refused or dropped, loading, read-only …).
    #[error("redis is unavailable")]
    Unavailable(#[source] Cause),
    /// A command or script failed, or an answer is not what the store writes.
    #[error("redis operation failed: {0}")]
    Failed(String),
}

impl RedisError {
    /// Whether the request is worth repeating shortly (a 503) rather than a failure (500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unavailable(_))
    }
}

impl From<Cause> for RedisError {
    fn from(cause: Cause) -> Self {
        let unavailable = cause.is_io_error()
            || cause.is_connection_refusal()
            || cause.is_connection_dropped()
            || cause.is_timeout()
            || matches!(
                cause.kind(),
                ErrorKind::BusyLoadingError
                    | ErrorKind::TryAgain
                    | ErrorKind::ClusterDown
                    | ErrorKind::MasterDown
                    | ErrorKind::ReadOnly
            );
        if unavailable {
            Self::Unavailable(cause)
        } else {
            Self::Failed(cause.to_string())
        }
    }
}

/// Baskets on Redis. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// Made on first use, so the service starts (not ready) while Redis is down.
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    ttl_ms: u64,
    add: Script,
    set: Script,
    apply_order: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("ttl_ms", &self.inner.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the server of `config.redis_url` whose baskets live `ttl`. Does not
    /// connect yet.
    pub fn new(config: &Config, ttl: Duration) -> Result<Self, RedisError> {
        let client = redis::Client::open(config.redis_url.expose())
            .map_err(|err| RedisError::Failed(err.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                connection: OnceCell::new(),
                prefix: config.redis_key_prefix.clone(),
                timeout: config.redis_timeout(),
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
                add: Script::new(ADD),
                set: Script::new(SET),
                apply_order: Script::new(APPLY_ORDER),
            }),
        })
    }

    fn lines_key(&self, user: &str) -> String {
        format!("{}:{{{user}}}:lines", self.inner.prefix)
    }

    fn inbox_key(&self, user: &str, consumer: &str, event_id: &str) -> String {
        format!(
            "{}:{{{user}}}:inbox:{consumer}:{event_id}",
            self.inner.prefix
        )
    }

    /// Runs `op` on the connection under the timeout, connecting first if needed.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, Cause>>,
    {
        let timeout = self.inner.timeout;
        let attempt = async {
            let connection = self
                .inner
                .connection
                .get_or_try_init(|| {
                    let config = ConnectionManagerConfig::new()
                        .set_number_of_retries(1)
                        .set_connection_timeout(timeout)
                        .set_response_timeout(timeout);
                    ConnectionManager::new_with_config(self.inner.client.clone(), config)
                })
                .await?
                .clone();
            op(connection).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result.map_err(RedisError::from),
            Err(_) => Err(RedisError::Timeout(timeout)),
        }
    }

    /// Answers when Redis answers a `PING`.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    /// The lines of `user`, oldest first.
    #[tracing::instrument(skip_all, fields(user = %user), err)]
    pub async fn lines(&self, user: &str) -> Result<Vec<StoredLine>, RedisError> {
        let key = self.lines_key(user);
        let fields: Vec<(String, String)> = self
            .run(|mut c| async move { c.hgetall(key).await })
            .await?;
        let mut lines = fields
            .into_iter()
            .map(|(item_id, value)| parse_line(item_id, &value))
            .collect::<Result<Vec<_>, _>>()?;
        lines.sort_by(|(a, x), (b, y)| (a, &x.item_id).cmp(&(b, &y.item_id)));
        Ok(lines.into_iter().map(|(_, line)| line).collect())
    }

    /// Adds `quantity` units of `item` unless the line would pass `limit`.
    #[tracing::instrument(skip_all, fields(user = %user, item = %item.id, quantity = quantity), err)]
    pub async fn add(
        &self,
        user: &str,
        item: &Item,
        quantity: i64,
        limit: i64,
    ) -> Result<Added, RedisError> {
        let mut invocation = self.inner.add.key(self.lines_key(user));
        invocation
            .arg(&item.id)
            .arg(quantity)
            .arg(limit)
            .arg(now_ms())
            .arg(item.price_minor)
            .arg(&item.name)
            .arg(self.inner.ttl_ms);
        let (added, current): (i64, i64) = self
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(if added == 1 {
            Added::To(current)
        } else {
            Added::Refused { current }
        })
    }

    /// Sets the quantity of the line of `item`; `false` when there is none.
    #[tracing::instrument(skip_all, fields(user = %user, item = %item.id, quantity = quantity), err)]
    pub async fn set(&self, user: &str, item: &Item, quantity: i64) -> Result<bool, RedisError> {
        let mut invocation = self.inner.set.key(self.lines_key(user));
        invocation
            .arg(&item.id)
            .arg(quantity)
            .arg(item.price_minor)
            .arg(&item.name)
            .arg(self.inner.ttl_ms);
        let done: i64 = self
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(done == 1)
    }

    /// Removes the line of `item_id`; `false` when there was none.
    #[tracing::instrument(skip_all, fields(user = %user, item_id = %item_id), err)]
    pub async fn remove(&self, user: &str, item_id: &str) -> Result<bool, RedisError> {
        let key = self.lines_key(user);
        let item_id = item_id.to_owned();
        let removed: i64 = self
            .run(|mut c| async move { c.hdel(key, item_id).await })
            .await?;
        Ok(removed > 0)
    }

    /// Removes every line of `user`.
    #[tracing::instrument(skip_all, fields(user = %user), err)]
    pub async fn clear(&self, user: &str) -> Result<(), RedisError> {
        let key = self.lines_key(user);
        self.run(|mut c| async move { c.del::<_, ()>(key).await })
            .await
    }

    /// Takes a confirmed order's units out of `user`'s basket unless `consumer` applied
    /// `event_id` before; one script, so the check, the record and the change are atomic.
    #[tracing::instrument(skip_all, fields(event_id = %event_id), err)]
    pub async fn apply_order(
        &self,
        consumer: &str,
        event_id: &str,
        user: &str,
        lines: &[OrderLine],
    ) -> Result<bool, RedisError> {
        let mut invocation = self.inner.apply_order.key(self.lines_key(user));
        invocation
            .key(self.inbox_key(user, consumer, event_id))
            .arg(u64::try_from(INBOX_RETENTION.as_millis()).unwrap_or(u64::MAX));
        for line in lines {
            invocation.arg(&line.item_id).arg(line.quantity);
        }
        let applied: i64 = self
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(applied == 1)
    }
}

/// A stored line and when it was first added, from its hash field and value.
fn parse_line(item_id: String, value: &str) -> Result<(i64, StoredLine), RedisError> {
    let corrupt = || RedisError::Failed(format!("corrupt basket line for item {item_id}"));
    let mut parts = value.splitn(4, '|');
    let mut number = || -> Option<i64> { parts.next()?.parse().ok() };
    let (Some(quantity), Some(added_at_ms), Some(unit_price_minor)) =
        (number(), number(), number())
    else {
        return Err(corrupt());
    };
    let Some(name) = parts.next() else {
        return Err(corrupt());
    };
    Ok((
        added_at_ms,
        StoredLine {
            name: name.to_owned(),
            item_id,
            quantity,
            unit_price_minor,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_value_parses_with_bars_in_the_name_and_refuses_garbage() {
        let (added, line) = parse_line("a".into(), "3|1700|1250|Beans | ground").unwrap();
        assert_eq!(added, 1700);
        assert_eq!(
            line,
            StoredLine {
                item_id: "a".into(),
                quantity: 3,
                name: "Beans | ground".into(),
                unit_price_minor: 1250,
            }
        );
        for bad in ["", "3", "3|x|1|n", "3|1|1", "-|1|1|n"] {
            assert!(parse_line("a".into(), bad).is_err(), "{bad:?}");
        }
    }
}
