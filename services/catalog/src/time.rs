//! Timestamps as RFC 3339 UTC text with milliseconds (`2025-01-31T09:30:00.123Z`), which
//! sorts correctly as text on both engines.

use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

/// The current time, truncated to milliseconds.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond()).unwrap_or(now)
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

/// A timestamp for a change of a row last changed at `previous`: now, or a millisecond
/// after `previous` when the clock has not moved past it, so `updated_at` always advances.
pub fn after(previous: &str) -> String {
    let now = now();
    match OffsetDateTime::parse(previous, &Rfc3339) {
        Ok(previous) if previous >= now => format(previous + time::Duration::milliseconds(1)),
        _ => format(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_and_advances() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(format(at), "2023-11-14T22:13:20.123Z");
        let future = "2999-01-01T00:00:00.000Z";
        assert_eq!(after(future), "2999-01-01T00:00:00.001Z");
        assert!(after("2000-01-01T00:00:00.000Z").as_str() > "2000-01-01T00:00:00.000Z");
    }
}
