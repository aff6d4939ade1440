//! Millisecond timestamps as RFC 3339 text.

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// Always UTC, always three fractional digits: `2025-01-31T12:00:00.250Z`.
const RFC3339_MS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `ts_ms` (milliseconds since the Unix epoch) as RFC 3339 UTC text; `None` outside the years
/// 0000 to 9999.
pub fn rfc3339_ms(ts_ms: i64) -> Option<String> {
    let nanos = i128::from(ts_ms).checked_mul(1_000_000)?;
    let dt = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    if !(0..=9999).contains(&dt.year()) {
        return None;
    }
    dt.format(RFC3339_MS).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_738_324_800_250).unwrap(), "2025-01-31T12:00:00.250Z");
        assert_eq!(rfc3339_ms(-1).unwrap(), "1969-12-31T23:59:59.999Z");
        assert!(rfc3339_ms(i64::MAX).is_none());
        assert!(rfc3339_ms(i64::MIN).is_none());
    }
}
