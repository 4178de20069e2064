//! Filter push-down: an [`EntryFilter`] written as SQL conditions on the `entries` table, so
//! that `list` and `delete_matching` are answered by PostgreSQL, never by reading rows into
//! Rust.
//!
//! The SQL gives exactly the answers of [`EntryFilter::matches`]:
//!
//! - `namespace` and `id_prefix` are ranges on the primary key (`id >= prefix AND id < next`,
//!   `C` collation: byte order), not `LIKE`: case-sensitive, no wildcards.
//! - `tags` is `tags @> $tags AND cardinality(tags) > 0`: the GIN index on `tags` is partial
//!   (rows with tags only), and the second term lets the planner use it.
//! - Field conditions read the JSONB copies (`params_jsonb`, `user_metadata_jsonb`). Field
//!   names are always bind parameters (`col -> $n::text`), never SQL text, so any name works.
//!   Kinds never mix: `jsonb_typeof` guards every comparison, and casts sit inside `CASE`
//!   (PostgreSQL does not promise the evaluation order of `AND`).
//!   - Equality with text, a boolean, or a number PostgreSQL compares exactly like the
//!     reference (an integer up to 2^53 in magnitude, a float below it) is JSONB containment,
//!     `col @> '{"field": value}'`, which the partial `jsonb_path_ops` GIN indexes answer:
//!     containment compares strings exactly, booleans only with booleans, numbers numerically
//!     (`1` contains `1.0`), and never matches inside a nested array. `!=` on a boolean is
//!     containment of the other boolean.
//!   - Text orders in byte (code point) order: `(col ->> $f) COLLATE "C"`.
//!   - Numbers: the reference compares integer with integer exactly and anything with a float
//!     as `f64`. A float condition compares `col -> $f` cast to `float8` (the JSONB number is
//!     the shortest text of the stored `f64`, or an exact integer, and PostgreSQL rounds it
//!     correctly, as Rust's `as f64` does). An integer condition up to 2^53 in magnitude
//!     compares as `numeric`, which gives the reference's answer for stored integers and
//!     floats alike. Beyond 2^53 the two differ only when the stored number and the condition
//!     round to the same `f64` without being equal; then the stored JSON text tells whether the
//!     number was written as an integer (exact: not equal) or a float (equal).
//!   - `exists` is `col -> $f IS NOT NULL` (a JSON `null` member is present); `in` is the
//!     disjunction of equalities.
//! - A NULL JSONB copy matches no field condition: the entry has no params / user metadata, or
//!   (the one difference from the reference) its JSON text holds `\u0000`, which JSONB cannot
//!   store. Likewise text PostgreSQL cannot hold (NUL) in a namespace, id prefix, tag, data type
//!   or field name matches nothing (no stored row holds it); a text value with NUL compares by
//!   its prefix before the NUL, which is exact for stored strings (they hold no NUL).

use cachet_core::entry::prefix_upper_bound;
use cachet_core::{Comparison, DataType, EntryFilter, FieldCondition, FieldValue, Result};

/// Every integer up to this magnitude (2^53) is an exact `f64`.
const EXACT_F64_INTEGER: u64 = 1 << 53;

/// One bind value of a statement built at run time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
    Texts(Vec<String>),
}

/// A statement built at run time: SQL text with `$n` placeholders and their values.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Adds a bind value and returns its placeholder (`$n`).
    pub(crate) fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Appends `before`, a new placeholder for `arg`, and `after`.
    pub(crate) fn push_arg(&mut self, before: &str, arg: Arg, after: &str) {
        let placeholder = self.arg(arg);
        self.text.push_str(before);
        self.text.push_str(&placeholder);
        self.text.push_str(after);
    }

    /// The statement as a sqlx query with every value bound.
    pub(crate) fn query(
        &self,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.text.as_str()));
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.as_str()),
                Arg::Int(i) => query.bind(*i),
                Arg::Float(f) => query.bind(*f),
                Arg::Texts(v) => query.bind(v.as_slice()),
            };
        }
        query
    }
}

/// A JSON object column: the JSONB copy queries read and the exact text `get` returns.
#[derive(Clone, Copy)]
struct JsonColumn {
    jsonb: &'static str,
    text: &'static str,
}

const PARAMS: JsonColumn = JsonColumn {
    jsonb: "params_jsonb",
    text: "params",
};
const USER_METADATA: JsonColumn = JsonColumn {
    jsonb: "user_metadata_jsonb",
    text: "user_metadata",
};

/// Writes `filter` as the conditions of a `WHERE` clause on the unqualified columns of
/// `entries`, each term starting with ` AND ` (so the caller starts with `WHERE TRUE`),
/// adding the bind values to `sql`.
///
/// # Errors
/// `Error::Config` when the filter cannot be evaluated ([`EntryFilter::validate`]).
pub(crate) fn push_filter(sql: &mut Sql, filter: &EntryFilter) -> Result<()> {
    filter.validate()?;
    if let Some(namespace) = &filter.namespace {
        push_text_eq(sql, "namespace", namespace);
    }
    if let Some(prefix) = filter.id_prefix.as_deref().filter(|p| !p.is_empty()) {
        if prefix.contains('\0') {
            sql.push(" AND FALSE");
        } else {
            // A range on the primary key (C collation: byte order) instead of LIKE.
            sql.push_arg(" AND id >= ", Arg::Text(prefix.to_owned()), "");
            if let Some(upper) = prefix_upper_bound(prefix) {
                sql.push_arg(" AND id < ", Arg::Text(upper), "");
            }
        }
    }
    if !filter.tags.is_empty() {
        if filter.tags.iter().any(|t| t.contains('\0')) {
            sql.push(" AND FALSE");
        } else {
            // The second term implies the partial GIN index's predicate.
            sql.push_arg(
                " AND tags @> ",
                Arg::Texts(filter.tags.clone()),
                "::text[] AND cardinality(tags) > 0",
            );
        }
    }
    for condition in &filter.params {
        sql.push(" AND ");
        push_condition(sql, PARAMS, condition);
    }
    for condition in &filter.metadata {
        sql.push(" AND ");
        push_condition(sql, USER_METADATA, condition);
    }
    if let Some(data_type) = &filter.data_type {
        // `DataType::Other("bytes")` reads back as `DataType::Bytes`, so it matches nothing.
        if DataType::parse(data_type.as_str()) == *data_type {
            push_text_eq(sql, "data_type", data_type.as_str());
        } else {
            sql.push(" AND FALSE");
        }
    }
    let mut time = |column: &str, op: &str, at: Option<cachet_core::Timestamp>| {
        if let Some(at) = at {
            sql.push_arg(&format!(" AND {column} {op} "), Arg::Int(at.0), "");
        }
    };
    time("created_at", "<", filter.created_before);
    time("created_at", ">=", filter.created_at_or_after);
    time("accessed_at", "<", filter.accessed_before);
    // NULL (no expiry) compares as NULL: never matches.
    time("expires_at", "<=", filter.expires_at_or_before);
    // Stored sizes are at most i64::MAX in the table (writes refuse larger ones).
    if let Some(min) = filter.min_stored_size {
        match i64::try_from(min) {
            Ok(min) => sql.push_arg(" AND stored_size >= ", Arg::Int(min), ""),
            Err(_) => sql.push(" AND FALSE"),
        }
    }
    if let Some(max) = filter.max_stored_size.and_then(|m| i64::try_from(m).ok()) {
        sql.push_arg(" AND stored_size <= ", Arg::Int(max), "");
    }
    Ok(())
}

/// ` AND column = value`; no stored text holds NUL, so such a value matches nothing.
fn push_text_eq(sql: &mut Sql, column: &str, value: &str) {
    if value.contains('\0') {
        sql.push(" AND FALSE");
    } else {
        sql.push_arg(
            &format!(" AND {column} = "),
            Arg::Text(value.to_owned()),
            "",
        );
    }
}

/// One top-level member of a JSON object column, as SQL.
struct Member {
    column: JsonColumn,
    /// The field name.
    name: String,
    /// The placeholder of the field name, bound on first use (containment does not use it).
    placeholder: Option<String>,
}

impl Member {
    /// The placeholder of the field name.
    fn field(&mut self, sql: &mut Sql) -> String {
        self.placeholder
            .get_or_insert_with(|| sql.arg(Arg::Text(self.name.clone())))
            .clone()
    }

    /// The member's JSONB value, NULL when absent (or when the column is NULL or not an
    /// object).
    fn value(&mut self, sql: &mut Sql) -> String {
        let field = self.field(sql);
        format!("({} -> {field}::text)", self.column.jsonb)
    }

    /// `TRUE` when the member is of JSON type `kind`.
    fn is(&mut self, sql: &mut Sql, kind: &str) -> String {
        format!("jsonb_typeof{} = '{kind}'", self.value(sql))
    }

    /// The member as text (meaningful for strings only).
    fn text(&mut self, sql: &mut Sql) -> String {
        let field = self.field(sql);
        format!("({} ->> {field}::text) COLLATE \"C\"", self.column.jsonb)
    }
}

fn push_condition(sql: &mut Sql, column: JsonColumn, condition: &FieldCondition) {
    let field = condition.field();
    if field.contains('\0') {
        // JSONB cannot hold NUL: no stored object has such a member.
        sql.push("FALSE");
        return;
    }
    let mut member = Member {
        column,
        name: field.to_owned(),
        placeholder: None,
    };
    match condition {
        FieldCondition::Exists { .. } => {
            let value = member.value(sql);
            sql.push(&value);
            sql.push(" IS NOT NULL");
        }
        FieldCondition::Compare { op, value, .. } => push_compare(sql, &mut member, *op, value),
        FieldCondition::In { values, .. } => {
            if values.is_empty() {
                sql.push("FALSE");
                return;
            }
            sql.push("(");
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                push_compare(sql, &mut member, Comparison::Eq, value);
            }
            sql.push(")");
        }
    }
}

fn symbol(op: Comparison) -> &'static str {
    match op {
        Comparison::Eq => "=",
        Comparison::Ne => "<>",
        Comparison::Lt => "<",
        Comparison::Le => "<=",
        Comparison::Gt => ">",
        Comparison::Ge => ">=",
    }
}

/// `col @> '{"field": value}'`: exact equality for strings and booleans, numeric equality for
/// numbers, and answered by the GIN index.
fn push_contains(sql: &mut Sql, member: &Member, value: serde_json::Value) {
    let mut object = serde_json::Map::new();
    object.insert(member.name.clone(), value);
    let object = serde_json::Value::Object(object).to_string();
    sql.push_arg(
        &format!("{} @> ", member.column.jsonb),
        Arg::Text(object),
        "::jsonb",
    );
}

fn push_compare(sql: &mut Sql, member: &mut Member, op: Comparison, value: &FieldValue) {
    let symbol = symbol(op);
    match value {
        FieldValue::Bool(b) => {
            // validate() allows only = and != on booleans: != is the other boolean.
            let wanted = *b == (op == Comparison::Eq);
            push_contains(sql, member, serde_json::Value::Bool(wanted));
        }
        FieldValue::Text(text) if op == Comparison::Eq && !text.contains('\0') => {
            push_contains(sql, member, serde_json::Value::String(text.clone()));
        }
        FieldValue::Text(text) => {
            let is_string = member.is(sql, "string");
            let (symbol, bound) = match text.find('\0') {
                None => (symbol, text.clone()),
                // Stored strings hold no NUL: `s < p + "\0" + rest` exactly when `s <= p`.
                Some(nul) => match op {
                    Comparison::Eq => return sql.push("FALSE"),
                    Comparison::Ne => return sql.push(&is_string),
                    Comparison::Lt | Comparison::Le => ("<=", text[..nul].to_owned()),
                    Comparison::Gt | Comparison::Ge => (">", text[..nul].to_owned()),
                },
            };
            let member_text = member.text(sql);
            sql.push(&format!("({is_string} AND {member_text} {symbol} "));
            sql.push_arg("", Arg::Text(bound), "::text)");
        }
        FieldValue::Int(i) if i.unsigned_abs() <= EXACT_F64_INTEGER => {
            if op == Comparison::Eq {
                push_contains(sql, member, serde_json::Value::from(*i));
            } else {
                let (is_number, v) = (member.is(sql, "number"), member.value(sql));
                sql.push(&format!(
                    "CASE WHEN {is_number} THEN {v}::numeric {symbol} "
                ));
                sql.push_arg("", Arg::Int(*i), "::numeric ELSE FALSE END");
            }
        }
        FieldValue::Int(i) => {
            // Beyond 2^53: exact unless both round to the same f64 without being equal; then
            // the stored text says whether the member was written as an integer. (The text is
            // valid JSON without `\u0000` whenever the JSONB copy exists.)
            let (is_number, v, f) = (
                member.is(sql, "number"),
                member.value(sql),
                member.field(sql),
            );
            let q = sql.arg(Arg::Int(*i));
            sql.push(&format!(
                "CASE WHEN {is_number} THEN (CASE \
                 WHEN {v}::numeric = {q}::numeric THEN 0 \
                 WHEN {v}::float8 <> {q}::float8 THEN sign({v}::numeric - {q}::numeric) \
                 WHEN scale({v}::numeric) = 0 \
                 AND {v}::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 \
                 AND ({text}::json -> {f}::text)::text !~ '[.eE]' \
                 THEN sign({v}::numeric - {q}::numeric) \
                 ELSE 0 END) {symbol} 0 ELSE FALSE END",
                text = member.column.text,
            ));
        }
        FieldValue::Float(f) => {
            if op == Comparison::Eq && f.abs() < EXACT_F64_INTEGER as f64 {
                push_contains(sql, member, value.to_json());
            } else {
                let (is_number, v) = (member.is(sql, "number"), member.value(sql));
                sql.push(&format!("CASE WHEN {is_number} THEN {v}::float8 {symbol} "));
                sql.push_arg("", Arg::Float(*f), "::float8 ELSE FALSE END");
            }
        }
    }
}
