//! Which entries an operation applies to: filters that every index evaluates itself (an SQL
//! `WHERE`), never by scanning entries in Rust.
//!
//! [`EntryFilter::matches`] is the reference semantics: the in-memory index uses it, and the
//! conformance suite checks every other index against it.

use std::fmt;

use crate::clock::Timestamp;
use crate::entry::{DataType, EntryMeta};
use crate::error::{Error, Result};

/// A typed value of a user-metadata or parameter field, as written at put time and compared
/// by a [`FieldCondition`].
///
/// Integers and floats are both numbers: they compare with each other numerically (`1 == 1.0`).
/// Text compares with text in byte (code point) order. Booleans only compare for (in)equality.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A finite floating-point number (NaN and infinities are refused: JSON has no such values).
    Float(f64),
    /// A string.
    Text(String),
}

impl FieldValue {
    /// The JSON form stored in the index.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Bool(b) => serde_json::Value::Bool(*b),
            FieldValue::Int(i) => serde_json::Value::from(*i),
            FieldValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            FieldValue::Text(s) => serde_json::Value::String(s.clone()),
        }
    }

    /// Reads a JSON scalar back as a field value (`None` for null, arrays and objects).
    pub fn from_json(value: &serde_json::Value) -> Option<FieldValue> {
        match value {
            serde_json::Value::Bool(b) => Some(FieldValue::Bool(*b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Some(FieldValue::Int(i)),
                None => n.as_f64().map(FieldValue::Float),
            },
            serde_json::Value::String(s) => Some(FieldValue::Text(s.clone())),
            _ => None,
        }
    }

    /// Refuses values JSON cannot hold (NaN, infinities).
    pub fn validate(&self) -> Result<()> {
        match self {
            FieldValue::Float(f) if !f.is_finite() => Err(Error::config(
                "metadata value",
                format!("{f} cannot be stored or compared: JSON numbers are finite"),
            )),
            _ => Ok(()),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            FieldValue::Int(i) => Some(*i as f64),
            FieldValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Compares two values of the same kind (numbers with numbers, text with text, booleans with
    /// booleans); `None` across kinds.
    fn compare(&self, other: &FieldValue) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (FieldValue::Int(a), FieldValue::Int(b)) => Some(a.cmp(b)),
            (FieldValue::Text(a), FieldValue::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (FieldValue::Bool(a), FieldValue::Bool(b)) => Some(a.cmp(b)),
            (a, b) => a.number()?.partial_cmp(&b.number()?),
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Float(x) => write!(f, "{x:?}"),
            FieldValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Int(v)
    }
}
impl From<i32> for FieldValue {
    fn from(v: i32) -> Self {
        FieldValue::Int(v.into())
    }
}
impl From<u32> for FieldValue {
    fn from(v: u32) -> Self {
        FieldValue::Int(v.into())
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}
impl From<f32> for FieldValue {
    fn from(v: f32) -> Self {
        FieldValue::Float(v.into())
    }
}
impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Text(v.to_owned())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Text(v)
    }
}

/// How a field is compared with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `=`
    Eq,
    /// `!=` (the field must exist with a value of the same kind)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Comparison {
    /// The operator as written in queries: `=`, `!=`, `<`, `<=`, `>`, `>=`.
    pub fn symbol(&self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Ne => "!=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }

    fn holds(&self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Comparison::Eq => ordering == Equal,
            Comparison::Ne => ordering != Equal,
            Comparison::Lt => ordering == Less,
            Comparison::Le => ordering != Greater,
            Comparison::Gt => ordering == Greater,
            Comparison::Ge => ordering != Less,
        }
    }
}

/// A condition on one top-level field of an entry's parameters or user metadata (a JSON
/// object).
///
/// A field that is absent, null, an array or an object, or holds a value of another kind
/// (text where a number is asked) matches no comparison, not even `!=`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldCondition {
    /// `field <op> value`.
    Compare {
        /// The top-level field name.
        field: String,
        /// The comparison.
        op: Comparison,
        /// The value compared with.
        value: FieldValue,
    },
    /// The field equals one of the values.
    In {
        /// The top-level field name.
        field: String,
        /// The accepted values (an empty list matches nothing).
        values: Vec<FieldValue>,
    },
    /// The field is present (with any value, null included).
    Exists {
        /// The top-level field name.
        field: String,
    },
}

impl FieldCondition {
    /// `field = value`.
    pub fn eq(field: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        Self::compare(field, Comparison::Eq, value)
    }

    /// `field <op> value`.
    pub fn compare(field: impl Into<String>, op: Comparison, value: impl Into<FieldValue>) -> Self {
        FieldCondition::Compare {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    /// `field in (values...)`.
    pub fn is_in<V: Into<FieldValue>>(
        field: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        FieldCondition::In {
            field: field.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    /// The field is present.
    pub fn exists(field: impl Into<String>) -> Self {
        FieldCondition::Exists {
            field: field.into(),
        }
    }

    /// The field this condition reads.
    pub fn field(&self) -> &str {
        match self {
            FieldCondition::Compare { field, .. }
            | FieldCondition::In { field, .. }
            | FieldCondition::Exists { field } => field,
        }
    }

    /// Parses `field<op>value` as a user types it: `accuracy>=0.9`, `model=xgboost`,
    /// `model="xgboost"`, `done=true`, `model in (a, b)`, `model?` (exists).
    ///
    /// Unquoted values are a boolean, an integer or a float when they parse as one, else text;
    /// quote a value (`"1"`) to force text.
    ///
    /// # Errors
    /// `Error::Config` naming the condition when it has no operator, no field name or a value
    /// that cannot be compared (NaN).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |detail: &str| Error::config("filter condition", format!("`{text}`: {detail}"));
        let trimmed = text.trim();
        if let Some(field) = trimmed.strip_suffix('?') {
            return Ok(FieldCondition::exists(
                check_field(field.trim()).map_err(bad)?,
            ));
        }
        if let Some((field, list)) = split_in(trimmed) {
            let field = check_field(field).map_err(bad)?;
            let inner = list
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| bad("`in` takes a parenthesised list: `field in (a, b)`"))?;
            let values = inner
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(parse_value)
                .collect::<Vec<_>>();
            let condition = FieldCondition::is_in(field, values);
            condition.validate()?;
            return Ok(condition);
        }
        const OPERATORS: [(&str, Comparison); 7] = [
            (">=", Comparison::Ge),
            ("<=", Comparison::Le),
            ("!=", Comparison::Ne),
            ("==", Comparison::Eq),
            ("=", Comparison::Eq),
            (">", Comparison::Gt),
            ("<", Comparison::Lt),
        ];
        let (at, symbol, op) = OPERATORS
            .iter()
            .filter_map(|(symbol, op)| trimmed.find(symbol).map(|at| (at, *symbol, *op)))
            .min_by_key(|(at, symbol, _)| (*at, std::cmp::Reverse(symbol.len())))
            .ok_or_else(|| {
                bad("no operator; write field=value, field>=value, field in (a, b) or field?")
            })?;
        let field = check_field(trimmed[..at].trim()).map_err(bad)?;
        let value = parse_value(trimmed[at + symbol.len()..].trim());
        let condition = FieldCondition::compare(field, op, value);
        condition.validate()?;
        Ok(condition)
    }

    /// Refuses conditions no index can evaluate consistently: an empty field name, NaN or
    /// infinite values, ordering comparisons (`<`, `>=`...) on booleans.
    pub fn validate(&self) -> Result<()> {
        if self.field().is_empty() {
            return Err(Error::config("filter condition", "the field name is empty"));
        }
        match self {
            FieldCondition::Compare { op, value, field } => {
                value.validate()?;
                if matches!(value, FieldValue::Bool(_))
                    && !matches!(op, Comparison::Eq | Comparison::Ne)
                {
                    return Err(Error::config(
                        "filter condition",
                        format!(
                            "`{field} {} {value}`: booleans compare only with = and !=",
                            op.symbol()
                        ),
                    ));
                }
                Ok(())
            }
            FieldCondition::In { values, .. } => values.iter().try_for_each(FieldValue::validate),
            FieldCondition::Exists { .. } => Ok(()),
        }
    }

    /// Whether a JSON object (parameters or user metadata) satisfies the condition.
    pub fn matches(&self, object: Option<&serde_json::Value>) -> bool {
        let Some(found) = object.and_then(|o| o.get(self.field())) else {
            return false;
        };
        match self {
            FieldCondition::Exists { .. } => true,
            FieldCondition::Compare { op, value, .. } => FieldValue::from_json(found)
                .and_then(|found| found.compare(value))
                .is_some_and(|ordering| op.holds(ordering)),
            FieldCondition::In { values, .. } => {
                let Some(found) = FieldValue::from_json(found) else {
                    return false;
                };
                values
                    .iter()
                    .any(|v| found.compare(v) == Some(std::cmp::Ordering::Equal))
            }
        }
    }
}

impl fmt::Display for FieldCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldCondition::Compare { field, op, value } => {
                write!(f, "{field} {} {value}", op.symbol())
            }
            FieldCondition::In { field, values } => {
                write!(f, "{field} in (")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
            FieldCondition::Exists { field } => write!(f, "{field}?"),
        }
    }
}

fn check_field(field: &str) -> std::result::Result<&str, &'static str> {
    if field.is_empty() {
        Err("the field name is empty")
    } else {
        Ok(field)
    }
}

/// `field in (...)`, split at the first ` in ` (case-insensitive).
fn split_in(text: &str) -> Option<(&str, &str)> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find(" in ")?;
    let list = text[at + 4..].trim();
    list.starts_with('(').then(|| (text[..at].trim(), list))
}

fn parse_value(text: &str) -> FieldValue {
    if let Some(quoted) = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))
    {
        return FieldValue::Text(quoted.to_owned());
    }
    match text {
        "true" => return FieldValue::Bool(true),
        "false" => return FieldValue::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return FieldValue::Int(i);
    }
    match text.parse::<f64>() {
        // "nan" and "inf" parse as floats; as values they are more likely text.
        Ok(f) if f.is_finite() => FieldValue::Float(f),
        _ => FieldValue::Text(text.to_owned()),
    }
}

/// Which entries an operation applies to: every condition set must hold (a conjunction).
/// The default matches every entry.
///
/// ```
/// use cachet_core::{EntryFilter, FieldCondition};
///
/// let stale_models = EntryFilter::default()
///     .namespace("models")
///     .tag("experiment-7")
///     .param(FieldCondition::eq("project", "x"))
///     .metadata(FieldCondition::parse("accuracy < 0.9")?);
/// assert_eq!(stale_models.metadata.len(), 1);
/// # Ok::<(), cachet_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct EntryFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only ids starting with this prefix (byte-wise, case-sensitive, no wildcards).
    pub id_prefix: Option<String>,
    /// Only entries carrying every one of these tags.
    pub tags: Vec<String>,
    /// Conditions on the parameters the key was derived from (entries without parameters
    /// match none).
    pub params: Vec<FieldCondition>,
    /// Conditions on the user metadata.
    pub metadata: Vec<FieldCondition>,
    /// Only entries of this data type.
    pub data_type: Option<DataType>,
    /// Only entries created strictly before this time (older than an age).
    pub created_before: Option<Timestamp>,
    /// Only entries created at or after this time.
    pub created_at_or_after: Option<Timestamp>,
    /// Only entries last read strictly before this time (idle).
    pub accessed_before: Option<Timestamp>,
    /// Only entries that expire at or before this time (entries without expiry never match).
    pub expires_at_or_before: Option<Timestamp>,
    /// Only entries whose stored size is at least this many bytes.
    pub min_stored_size: Option<u64>,
    /// Only entries whose stored size is at most this many bytes.
    pub max_stored_size: Option<u64>,
}

impl EntryFilter {
    /// A filter matching every entry.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only this namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Only ids starting with `prefix`.
    pub fn id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.id_prefix = Some(prefix.into());
        self
    }

    /// Only entries carrying `tag` (repeat for entries carrying all of several tags).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a condition on the parameters.
    pub fn param(mut self, condition: FieldCondition) -> Self {
        self.params.push(condition);
        self
    }

    /// Adds a condition on the user metadata.
    pub fn metadata(mut self, condition: FieldCondition) -> Self {
        self.metadata.push(condition);
        self
    }

    /// Only entries of this data type.
    pub fn data_type(mut self, data_type: DataType) -> Self {
        self.data_type = Some(data_type);
        self
    }

    /// Only entries created strictly before `at`.
    pub fn created_before(mut self, at: Timestamp) -> Self {
        self.created_before = Some(at);
        self
    }

    /// Only entries created at or after `at`.
    pub fn created_at_or_after(mut self, at: Timestamp) -> Self {
        self.created_at_or_after = Some(at);
        self
    }

    /// Only entries last read strictly before `at`.
    pub fn accessed_before(mut self, at: Timestamp) -> Self {
        self.accessed_before = Some(at);
        self
    }

    /// Only entries that expire at or before `at`.
    pub fn expires_at_or_before(mut self, at: Timestamp) -> Self {
        self.expires_at_or_before = Some(at);
        self
    }

    /// Only entries whose stored size is at least `bytes`.
    pub fn min_stored_size(mut self, bytes: u64) -> Self {
        self.min_stored_size = Some(bytes);
        self
    }

    /// Only entries whose stored size is at most `bytes`.
    pub fn max_stored_size(mut self, bytes: u64) -> Self {
        self.max_stored_size = Some(bytes);
        self
    }

    /// Whether the filter has no condition at all (matches every entry).
    pub fn is_everything(&self) -> bool {
        self == &EntryFilter::default()
    }

    /// Refuses conditions that cannot be evaluated (see [`FieldCondition::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.params
            .iter()
            .chain(&self.metadata)
            .try_for_each(FieldCondition::validate)
    }

    /// Whether an entry matches: the reference semantics every index implements in its own
    /// query language.
    pub fn matches(&self, meta: &EntryMeta) -> bool {
        let key = &meta.key;
        self.namespace
            .as_deref()
            .is_none_or(|ns| key.namespace() == ns)
            && self
                .id_prefix
                .as_deref()
                .is_none_or(|p| key.id().starts_with(p))
            && self.tags.iter().all(|t| meta.tags.contains(t))
            && self.params.iter().all(|c| c.matches(meta.params.as_ref()))
            && self
                .metadata
                .iter()
                .all(|c| c.matches(meta.user_metadata.as_ref()))
            && self.data_type.as_ref().is_none_or(|t| &meta.data_type == t)
            && self.created_before.is_none_or(|t| meta.created_at < t)
            && self
                .created_at_or_after
                .is_none_or(|t| meta.created_at >= t)
            && self.accessed_before.is_none_or(|t| meta.accessed_at < t)
            && self
                .expires_at_or_before
                .is_none_or(|t| meta.expires_at.is_some_and(|e| e <= t))
            && self.min_stored_size.is_none_or(|n| meta.stored_size >= n)
            && self.max_stored_size.is_none_or(|n| meta.stored_size <= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_across_integer_and_float() {
        let meta = json!({"accuracy": 0.95, "epochs": 10});
        assert!(
            FieldCondition::parse("accuracy>=0.9")
                .unwrap()
                .matches(Some(&meta))
        );
        assert!(
            !FieldCondition::parse("accuracy<0.9")
                .unwrap()
                .matches(Some(&meta))
        );
        assert!(
            FieldCondition::parse("epochs=10.0")
                .unwrap()
                .matches(Some(&meta))
        );
        assert!(
            FieldCondition::parse("epochs in (5, 10)")
                .unwrap()
                .matches(Some(&meta))
        );
    }

    #[test]
    fn a_field_of_another_kind_or_absent_matches_nothing_not_even_not_equal() {
        let meta = json!({"model": "xgboost", "n": null});
        assert!(
            !FieldCondition::parse("model>=1")
                .unwrap()
                .matches(Some(&meta))
        );
        assert!(
            !FieldCondition::parse("model!=1")
                .unwrap()
                .matches(Some(&meta))
        );
        assert!(
            !FieldCondition::parse("missing!=1")
                .unwrap()
                .matches(Some(&meta))
        );
        assert!(!FieldCondition::parse("n=1").unwrap().matches(Some(&meta)));
        assert!(FieldCondition::parse("n?").unwrap().matches(Some(&meta)));
        assert!(!FieldCondition::parse("model=1").unwrap().matches(None));
    }

    #[test]
    fn parse_reads_what_a_user_types() {
        assert_eq!(
            FieldCondition::parse("model = xgboost").unwrap(),
            FieldCondition::eq("model", "xgboost")
        );
        assert_eq!(
            FieldCondition::parse("v=\"1\"").unwrap(),
            FieldCondition::eq("v", "1")
        );
        assert_eq!(
            FieldCondition::parse("done==true").unwrap(),
            FieldCondition::eq("done", true)
        );
        assert_eq!(
            FieldCondition::parse("a<=-3").unwrap(),
            FieldCondition::compare("a", Comparison::Le, -3)
        );
        assert_eq!(
            FieldCondition::parse("m in ('a', b)").unwrap(),
            FieldCondition::is_in("m", ["a", "b"])
        );
    }

    #[test]
    fn parse_refuses_what_cannot_be_evaluated() {
        for text in ["accuracy", "=3", "done>true", "m in a, b"] {
            let err = FieldCondition::parse(text).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{text}: {err}");
        }
        assert!(
            FieldCondition::compare("x", Comparison::Eq, f64::NAN)
                .validate()
                .is_err()
        );
    }
}
