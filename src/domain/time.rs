//! Store-clock time: milliseconds since the Unix epoch, formatted as RFC 3339 UTC
//! with milliseconds (`2026-05-13T12:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, as read from the store's clock.
pub type Millis = u64;

/// Formats store-clock milliseconds the way the contract writes every time.
pub fn format_millis(ms: Millis) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(
            super::format_millis(1_778_673_600_000),
            "2026-05-13T12:00:00.000Z"
        );
    }
}
