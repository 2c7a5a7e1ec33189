//! Well-known protobuf types that need wire behaviour of their own.
//!
//! `google.protobuf.Timestamp` is defined here instead of taken from `pbjson-types` because the
//! wire format wants RFC 3339 in UTC with a `Z` suffix and 0, 3, 6 or 9 fractional digits
//! (`2025-01-02T03:04:05.500Z`), which is what both original peers write.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A point in time: seconds and nanoseconds since the Unix epoch (`google.protobuf.Timestamp`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fractions of a second at nanosecond resolution, below 1e9.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl ::prost::Name for Timestamp {
    const NAME: &'static str = "Timestamp";
    const PACKAGE: &'static str = "google.protobuf";
    fn full_name() -> String {
        "google.protobuf.Timestamp".into()
    }
    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.Timestamp".into()
    }
}

impl Timestamp {
    /// The timestamp of a Unix time in nanoseconds.
    pub fn from_unix_nanos(nanos: i128) -> Self {
        let seconds = nanos.div_euclid(1_000_000_000);
        let sub = nanos.rem_euclid(1_000_000_000);
        Self {
            seconds: i64::try_from(seconds).unwrap_or(if seconds < 0 {
                i64::MIN
            } else {
                i64::MAX
            }),
            nanos: i32::try_from(sub).unwrap_or(0),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }

    fn to_datetime(self) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(self.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        DateTime::from_timestamp(self.seconds, nanos)
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Self::from_unix_nanos(d.as_nanos() as i128),
            Err(e) => Self::from_unix_nanos(-(e.duration().as_nanos() as i128)),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self
            .to_datetime()
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        serializer.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let t = DateTime::parse_from_rfc3339(&s).map_err(de::Error::custom)?;
        let t = t.with_timezone(&Utc);
        Ok(Self {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).map_err(de::Error::custom)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_z_and_si_fractions() {
        let t = Timestamp {
            seconds: 1_735_787_045,
            nanos: 500_000_000,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2025-01-02T03:04:05.500Z\""
        );
        let t = Timestamp {
            seconds: 1_735_787_045,
            nanos: 0,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2025-01-02T03:04:05Z\""
        );
        let back: Timestamp = serde_json::from_str("\"2025-01-02T04:04:05.5+01:00\"").unwrap();
        assert_eq!(
            back,
            Timestamp {
                seconds: 1_735_787_045,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let t = Timestamp {
            seconds: i64::MAX,
            nanos: -1,
        };
        assert!(serde_json::to_string(&t).is_err());
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
