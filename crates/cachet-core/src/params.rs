//! Named input parameters and their canonical encoding.
//!
//! The canonical encoding is what [`CacheKey`](crate::CacheKey) hashes. It is injective
//! (two different parameter sets never encode to the same bytes), independent of insertion order,
//! and fixed forever for key format version 1 (see `docs/FORMAT.md` §1):
//!
//! | value | encoding |
//! |---|---|
//! | null | `0x00` |
//! | bool | `0x01`, then `0x00` or `0x01` |
//! | integer (any Rust integer type) | `0x02`, then the value as a 16-byte little-endian two's-complement `i128` |
//! | float (`f32` widened to `f64`) | `0x03`, then the IEEE-754 bits as 8 bytes little-endian; every NaN is `0x7ff8000000000000` |
//! | string | `0x04`, `u64` LE byte length, UTF-8 bytes |
//! | bytes | `0x05`, `u64` LE length, bytes |
//! | list | `0x06`, `u64` LE item count, each item |
//! | map | `0x07`, `u64` LE entry count, then per entry in byte order of names: `u64` LE name length, name, value |
//! | file content | `0x08`, 16-byte xxh3-128 of the file's bytes (big-endian), `u64` LE file length |
//!
//! Every variable-length item is length-prefixed, so no separator can be forged, and every value
//! carries a type tag, so `1`, `1.0`, `"1"` and `true` are four different parameters.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The canonical bit pattern every NaN is encoded as.
const CANONICAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0000;

/// One parameter value: a small, typed, self-describing tree.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ParamValue {
    /// No value (`None`, `()`).
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer; signed and unsigned integers of equal value are the same parameter.
    Int(i128),
    /// A floating-point number, compared by bit pattern (so `0.0` and `-0.0` differ; all NaNs are equal).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes (distinct from a list of integers).
    Bytes(Vec<u8>),
    /// An ordered list.
    List(Vec<ParamValue>),
    /// A map with string keys; the order of insertion does not matter.
    Map(BTreeMap<String, ParamValue>),
    /// The content of a file, identified by its xxh3-128 digest and length rather than its path,
    /// so that a changed file yields a new key. Build it with [`ParamValue::file_content`].
    FileContent {
        /// xxh3-128 of the file's bytes.
        xxh3_128: u128,
        /// The file's length in bytes.
        len: u64,
    },
}

impl ParamValue {
    /// Raw bytes as a parameter.
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        ParamValue::Bytes(data.into())
    }

    /// Hashes a file's content (streaming, bounded memory) into a parameter. The path itself is
    /// not part of the key: the same content under another name gives the same key.
    pub fn file_content(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut len = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Error::io(path.display(), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(ParamValue::FileContent {
            xxh3_128: hasher.digest128(),
            len,
        })
    }

    /// Converts any `serde::Serialize` value (via its JSON data model) into a parameter.
    /// Integers stay integers, floats stay floats, sequences become lists and maps become maps.
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self> {
        let json = serde_json::to_value(value).map_err(|e| {
            Error::config(
                "params",
                format!("value cannot be used as a key parameter: {e}"),
            )
        })?;
        Ok(Self::from_json(json))
    }

    fn from_json(value: serde_json::Value) -> Self {
        use serde_json::Value;
        match value {
            Value::Null => ParamValue::Null,
            Value::Bool(b) => ParamValue::Bool(b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    ParamValue::Int(i128::from(i))
                } else if let Some(u) = n.as_u64() {
                    ParamValue::Int(i128::from(u))
                } else {
                    ParamValue::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => ParamValue::Str(s),
            Value::Array(items) => {
                ParamValue::List(items.into_iter().map(Self::from_json).collect())
            }
            Value::Object(map) => ParamValue::Map(
                map.into_iter()
                    .map(|(k, v)| (k, Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Appends the canonical encoding of this value to `out`.
    pub fn encode_canonical(&self, out: &mut Vec<u8>) {
        match self {
            ParamValue::Null => out.push(0x00),
            ParamValue::Bool(b) => {
                out.push(0x01);
                out.push(u8::from(*b));
            }
            ParamValue::Int(i) => {
                out.push(0x02);
                out.extend_from_slice(&i.to_le_bytes());
            }
            ParamValue::Float(f) => {
                out.push(0x03);
                let bits = if f.is_nan() {
                    CANONICAL_NAN_BITS
                } else {
                    f.to_bits()
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            ParamValue::Str(s) => encode_len_prefixed(out, 0x04, s.as_bytes()),
            ParamValue::Bytes(b) => encode_len_prefixed(out, 0x05, b),
            ParamValue::List(items) => {
                out.push(0x06);
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    item.encode_canonical(out);
                }
            }
            ParamValue::Map(map) => encode_map(out, map),
            ParamValue::FileContent { xxh3_128, len } => {
                out.push(0x08);
                out.extend_from_slice(&xxh3_128.to_be_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
    }

    /// A JSON rendering for the index (so entries can be found by any parameter). Bytes become
    /// `{"$bytes": "<hex>"}`, file content `{"$file_xxh3_128": "<hex>", "len": n}`, non-finite
    /// floats the strings `"NaN"`, `"inf"`, `"-inf"`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        match self {
            ParamValue::Null => Value::Null,
            ParamValue::Bool(b) => Value::Bool(*b),
            ParamValue::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    json!(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    json!(v)
                } else {
                    Value::String(i.to_string())
                }
            }
            ParamValue::Float(f) => {
                if f.is_nan() {
                    json!("NaN")
                } else if f.is_infinite() {
                    json!(if *f > 0.0 { "inf" } else { "-inf" })
                } else {
                    json!(f)
                }
            }
            ParamValue::Str(s) => Value::String(s.clone()),
            ParamValue::Bytes(b) => json!({ "$bytes": hex::encode(b) }),
            ParamValue::List(items) => Value::Array(items.iter().map(Self::to_json).collect()),
            ParamValue::Map(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            ParamValue::FileContent { xxh3_128, len } => {
                json!({ "$file_xxh3_128": format!("{xxh3_128:032x}"), "len": len })
            }
        }
    }
}

fn encode_len_prefixed(out: &mut Vec<u8>, tag: u8, data: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
}

fn encode_map(out: &mut Vec<u8>, map: &BTreeMap<String, ParamValue>) {
    out.push(0x07);
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    // BTreeMap<String, _> iterates in byte order of the names: exactly the canonical order.
    for (name, value) in map {
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        value.encode_canonical(out);
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for ParamValue {
            fn from(v: $t) -> Self { ParamValue::Int(v as i128) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, usize);

impl From<u128> for ParamValue {
    /// Values above `i128::MAX` cannot be represented as an integer parameter and become strings.
    fn from(v: u128) -> Self {
        i128::try_from(v)
            .map(ParamValue::Int)
            .unwrap_or_else(|_| ParamValue::Str(v.to_string()))
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Float(v)
    }
}
impl From<f32> for ParamValue {
    fn from(v: f32) -> Self {
        ParamValue::Float(f64::from(v))
    }
}
impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue::Bool(v)
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_owned())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Str(v)
    }
}
impl From<&String> for ParamValue {
    fn from(v: &String) -> Self {
        ParamValue::Str(v.clone())
    }
}
impl From<()> for ParamValue {
    fn from(_: ()) -> Self {
        ParamValue::Null
    }
}
impl<T: Into<ParamValue>> From<Option<T>> for ParamValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(ParamValue::Null, Into::into)
    }
}
impl<T: Into<ParamValue>> From<Vec<T>> for ParamValue {
    fn from(v: Vec<T>) -> Self {
        ParamValue::List(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<ParamValue>> From<BTreeMap<String, T>> for ParamValue {
    fn from(v: BTreeMap<String, T>) -> Self {
        ParamValue::Map(v.into_iter().map(|(k, v)| (k, v.into())).collect())
    }
}
impl From<Params> for ParamValue {
    fn from(p: Params) -> Self {
        ParamValue::Map(p.values)
    }
}

/// A set of named parameters: the inputs a cached value was computed from.
///
/// ```
/// use cachet_core::{Params, params};
/// let a = params! { "dataset" => "sales-2026", "window" => 30 };
/// let b = Params::new().with("window", 30).with("dataset", "sales-2026");
/// assert_eq!(a, b); // order does not matter
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, ParamValue>,
}

impl Params {
    /// An empty parameter set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one parameter, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<ParamValue>) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds (or replaces) one parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<ParamValue>) {
        self.values.insert(name.into(), value.into());
    }

    /// The value of one parameter.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// `true` when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Parameters in canonical (byte) order of their names.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Builds parameters from any serde struct or map: each top-level field becomes a parameter.
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self> {
        match ParamValue::from_serialize(value)? {
            ParamValue::Map(values) => Ok(Params { values }),
            other => Ok(Params::new().with("value", other)),
        }
    }

    /// The canonical encoding of the whole set (a map value; see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.values.len() * 32);
        encode_map(&mut out, &self.values);
        out
    }

    /// The JSON object stored in the index next to the entry.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<ParamValue>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Params {
            values: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// Builds a [`Params`] from `name => value` pairs.
///
/// ```
/// let p = cachet_core::params! { "model" => "xgb", "depth" => 6, "lr" => 0.1 };
/// assert_eq!(p.len(), 3);
/// ```
#[macro_export]
macro_rules! params {
    () => { $crate::Params::new() };
    ($($name:expr => $value:expr),+ $(,)?) => {{
        let mut p = $crate::Params::new();
        $( p.insert($name, $value); )+
        p
    }};
}
