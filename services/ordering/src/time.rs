//! Timestamps as RFC 3339 UTC text with milliseconds (`2025-01-31T09:30:00.123Z`), which
//! sorts correctly as text on both engines.

use time::{OffsetDateTime, UtcOffset};

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_text() -> String {
    format(OffsetDateTime::now_utc())
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the epoch when out of range).
pub fn from_ms(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format(at)
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(from_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(now_text().len(), "2023-11-14T22:13:20.123Z".len());
    }
}
