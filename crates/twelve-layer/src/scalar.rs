//! YAML scalars read as text, whatever their YAML type (`PORT: 5000` is the string "5000"),
//! as Go's yaml decoder does for `map[string]string`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `serde(deserialize_with)` helper: a map whose values are scalars read as text.
pub(crate) fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<indexmap::IndexMap<String, String>, D::Error> {
    let raw: Option<indexmap::IndexMap<String, Option<Scalar>>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.map(|s| s.0).unwrap_or_default()))
        .collect())
}

/// `serde(deserialize_with)` helper: an optional scalar read as text.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw: Option<Scalar> = Option::deserialize(d)?;
    Ok(raw.map(|s| s.0))
}
