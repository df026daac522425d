//! The value types of the configuration: [`Duration`] (`500ms`, `2s`, at most 30 days) and
//! [`ByteSize`] (`2GiB`). Their `Deserialize` impls carry the parsing rules and the messages
//! (with hints) a bad value is reported with.

use std::fmt;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::de::HINT;

pub(crate) const DURATION_HINT: &str = "write a duration like `500ms`, `2s`, `1m30s` or `1h`";
pub(crate) const SIZE_HINT: &str = "write a size like `512MiB`, `2GiB` or `1GB`";

/// A duration written as `500ms`, `2s`, `1m30s`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// The longest duration deployctl accepts anywhere: [`crate::util::MAX_DURATION`].
    pub const MAX: StdDuration = crate::util::MAX_DURATION;
    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }
    pub fn get(self) -> StdDuration {
        self.0
    }
    /// `from + d` with `d` capped at [`Duration::MAX`]: never the overflow panic of `Instant + Duration`.
    pub fn deadline(from: std::time::Instant, d: StdDuration) -> std::time::Instant {
        let d = d.min(Self::MAX);
        from.checked_add(d).unwrap_or(from)
    }
    /// Why a duration over [`Duration::MAX`] is refused.
    pub fn too_long() -> String {
        format!(
            "durations are at most {}",
            humantime::format_duration(Self::MAX)
        )
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed == "0" {
            return Ok(Duration(StdDuration::ZERO));
        }
        let d = humantime::parse_duration(trimmed).map_err(|e| {
            format!("`{s}` is not a duration ({e}); write it like `500ms`, `2s` or `1m30s`")
        })?;
        if d > Self::MAX {
            return Err(format!("`{s}` is too long: {}", Self::too_long()));
        }
        Ok(Duration(d))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a duration string such as \"2s\"{HINT}{DURATION_HINT}, in quotes"
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                s.parse().map_err(|_| {
                    let reason = match humantime::parse_duration(s.trim()) {
                        Err(e) => e.to_string(),
                        Ok(_) => Duration::too_long(),
                    };
                    E::custom(format_args!(
                        "invalid duration `{s}`: {reason}{HINT}{DURATION_HINT}"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as `500ms`, `2s`, `1m30s`.",
            "pattern": "^\\s*(0|([0-9]+\\s*(ns|us|ms|s|m|h|d)\\s*)+)\\s*$"
        })
    }
}

/// A size written as `512MiB`, `2GiB`, `1GB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let hint = || format!("`{s}` is not a size; write it like `512MiB`, `2GiB` or `1GB`");
        let n: u64 = num.parse().map_err(|_| hint())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            "tb" => 1_000_000_000_000,
            "tib" | "t" => 1 << 40,
            _ => return Err(hint()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(hint)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a size string such as \"2GiB\"{HINT}{SIZE_HINT}, in quotes"
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse()
                    .map_err(|_| E::custom(format_args!("invalid size `{s}`{HINT}{SIZE_HINT}")))
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A size such as `512MiB`, `2GiB`, `1GB`.",
            "pattern": "^\\s*[0-9]+\\s*([KMGT]i?B?|B)?\\s*$"
        })
    }
}
