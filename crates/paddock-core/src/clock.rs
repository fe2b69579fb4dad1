//! Time as the core sees it: UTC instants stored as Unix milliseconds.

use time::OffsetDateTime;

/// A UTC instant with millisecond precision, the unit the store keeps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: u64) -> Self {
        let ms = i64::try_from(seconds).unwrap_or(i64::MAX / 1000) * 1000;
        Self(self.0.saturating_add(ms))
    }

    /// RFC 3339 with a `Z` offset, the form every surface renders.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
    }

    /// An RFC 3339 instant (`2026-12-31T23:59:59Z`, any offset), to the
    /// millisecond; `None` when it is not one.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339() {
        assert_eq!(
            Timestamp::from_unix_millis(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn parses_what_it_renders_and_refuses_the_rest() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2023-11-14T23:13:20.123+01:00"),
            Some(t)
        );
        for bad in ["", "tomorrow", "2023-11-14", "2023-13-01T00:00:00Z"] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn plus_seconds_saturates() {
        let t = Timestamp::from_unix_millis(i64::MAX - 10);
        assert_eq!(t.plus_seconds(u64::MAX).unix_millis(), i64::MAX);
    }
}
