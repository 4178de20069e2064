//! Filter push-down: an [`EntryFilter`] written as SQL conditions on the `entries` table, so
//! that `list` and `delete_matching` are answered by SQLite, never by reading rows into Rust.
//!
//! The SQL gives exactly the answers of [`EntryFilter::matches`]:
//!
//! - `namespace` and `id_prefix` are ranges on the primary key (`id >= prefix AND id < next`),
//!   not `LIKE`: case-sensitive, no wildcards, and the index bounds the scan.
//! - A field condition reads one top-level member of the `params` / `user_metadata` JSON text
//!   through the path `$."<name>"`, where `<name>` is the member name as a JSON string body.
//!   SQLite (3.45+) honours JSON escapes inside a quoted path label, so a name holding quotes,
//!   dots, `$`, brackets, backslashes or spaces addresses exactly that member. A name holding
//!   NUL cannot be addressed that way (SQLite's label comparison stops at a decoded NUL), so
//!   such a name is looked up with `json_each` instead.
//! - Kinds never mix: a number condition matches only `integer` / `real` members (SQLite orders
//!   every number before every text, so `x >= 0.9` would otherwise match text), a text condition
//!   only `text` members (compared in byte order, SQLite's BINARY collation), a boolean only
//!   `true` / `false` members. `!=` requires a member of the same kind.
//! - Numbers compare like the reference: integer with integer exactly, anything with a float as
//!   `f64` (SQLite's own integer / real comparison is exact, which differs beyond 2^53).
//! - A JSON column that is NULL matches no field condition; one that is not valid JSON (a
//!   damaged row) matches none either, instead of failing the whole statement, so a damaged row
//!   never blocks `delete_matching` for the rest of the index. `list` still reports such a row
//!   as `Error::Corrupt` when another condition selects it.

use rusqlite::types::Value;

use cachet_core::entry::prefix_upper_bound;
use cachet_core::{Comparison, DataType, EntryFilter, FieldCondition, FieldValue, Result};

/// Appends `filter` to a `WHERE` clause over the table `entries` as ` AND ...` terms, pushing
/// the bound values onto `args` in order (the terms use anonymous `?` parameters).
///
/// # Errors
/// `Error::Config` when the filter cannot be evaluated ([`EntryFilter::validate`]).
pub(crate) fn push_filter(
    sql: &mut String,
    args: &mut Vec<Value>,
    filter: &EntryFilter,
) -> Result<()> {
    filter.validate()?;
    if let Some(namespace) = &filter.namespace {
        sql.push_str(" AND namespace = ?");
        args.push(Value::Text(namespace.clone()));
    }
    if let Some(prefix) = filter.id_prefix.as_deref().filter(|p| !p.is_empty()) {
        // A range on the primary key instead of LIKE: case-sensitive, no wildcards. Text
        // compares in byte order, which for UTF-8 is code point order, so the range holds
        // exactly the ids starting with the prefix.
        sql.push_str(" AND id >= ?");
        args.push(Value::Text(prefix.to_owned()));
        if let Some(upper) = prefix_upper_bound(prefix) {
            sql.push_str(" AND id < ?");
            args.push(Value::Text(upper));
        }
    }
    for tag in &filter.tags {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(entries.tags) \
             THEN entries.tags ELSE '[]' END) WHERE type = 'text' AND value = ?)",
        );
        args.push(Value::Text(tag.clone()));
    }
    push_fields(sql, args, "entries.params", &filter.params);
    push_fields(sql, args, "entries.user_metadata", &filter.metadata);
    if let Some(data_type) = &filter.data_type {
        // `DataType::Other("bytes")` reads back as `DataType::Bytes`, so it matches nothing.
        if DataType::parse(data_type.as_str()) == *data_type {
            sql.push_str(" AND data_type = ?");
            args.push(Value::Text(data_type.as_str().to_owned()));
        } else {
            sql.push_str(" AND 0");
        }
    }
    let mut time = |column: &str, op: &str, at: Option<cachet_core::Timestamp>| {
        if let Some(at) = at {
            sql.push_str(" AND ");
            sql.push_str(column);
            sql.push_str(op);
            sql.push('?');
            args.push(Value::Integer(at.0));
        }
    };
    time("created_at", " < ", filter.created_before);
    time("created_at", " >= ", filter.created_at_or_after);
    time("accessed_at", " < ", filter.accessed_before);
    // NULL (no expiry) compares as NULL: never matches.
    time("expires_at", " <= ", filter.expires_at_or_before);
    // Stored sizes are at most i64::MAX in the table (writes refuse larger ones).
    if let Some(min) = filter.min_stored_size {
        match i64::try_from(min) {
            Ok(min) => {
                sql.push_str(" AND stored_size >= ?");
                args.push(Value::Integer(min));
            }
            Err(_) => sql.push_str(" AND 0"),
        }
    }
    if let Some(max) = filter.max_stored_size.and_then(|m| i64::try_from(m).ok()) {
        sql.push_str(" AND stored_size <= ?");
        args.push(Value::Integer(max));
    }
    Ok(())
}

/// ` AND <every condition on the JSON object in column>`, NULL and damaged JSON matching none.
fn push_fields(
    sql: &mut String,
    args: &mut Vec<Value>,
    column: &str,
    conditions: &[FieldCondition],
) {
    if conditions.is_empty() {
        return;
    }
    // CASE evaluates its branches in order: the JSON functions never see invalid JSON.
    sql.push_str(" AND CASE WHEN json_valid(");
    sql.push_str(column);
    sql.push_str(") THEN (1");
    for condition in conditions {
        sql.push_str(" AND ");
        push_condition(sql, args, column, condition);
    }
    sql.push_str(") ELSE 0 END");
}

/// One member of a JSON object column, as SQL expressions.
struct Member<'a> {
    column: &'a str,
    field: &'a str,
    /// Looked up with `json_each` (names holding NUL) rather than a path.
    by_scan: bool,
}

impl<'a> Member<'a> {
    fn new(column: &'a str, field: &'a str) -> Self {
        Member {
            column,
            field,
            by_scan: field.contains('\0'),
        }
    }

    /// The member's JSON type name (`null`, `true`, `false`, `integer`, `real`, `text`, `array`,
    /// `object`), NULL when absent.
    fn push_type(&self, sql: &mut String, args: &mut Vec<Value>) {
        self.push_lookup(sql, args, "json_type", "type");
    }

    /// The member's SQL value (booleans as 1 / 0, NULL for null and absent).
    fn push_value(&self, sql: &mut String, args: &mut Vec<Value>) {
        self.push_lookup(sql, args, "json_extract", "atom");
    }

    fn push_lookup(&self, sql: &mut String, args: &mut Vec<Value>, function: &str, each: &str) {
        if self.by_scan {
            sql.push_str("(SELECT ");
            sql.push_str(each);
            sql.push_str(" FROM json_each(");
            sql.push_str(self.column);
            // A non-object has integer keys (array) or a NULL key (scalar): never equal to text.
            sql.push_str(") WHERE key = ? LIMIT 1)");
            args.push(Value::Text(self.field.to_owned()));
        } else {
            sql.push_str(function);
            sql.push('(');
            sql.push_str(self.column);
            sql.push_str(", ?)");
            args.push(Value::Text(json_path(self.field)));
        }
    }
}

/// `$."<field>"`, the field name written as a JSON string (quotes and backslashes escaped).
pub(crate) fn json_path(field: &str) -> String {
    let mut path = String::with_capacity(field.len() + 4);
    path.push_str("$.");
    path.push_str(&serde_json::Value::String(field.to_owned()).to_string());
    path
}

fn push_condition(
    sql: &mut String,
    args: &mut Vec<Value>,
    column: &str,
    condition: &FieldCondition,
) {
    let member = Member::new(column, condition.field());
    match condition {
        FieldCondition::Exists { .. } => {
            member.push_type(sql, args);
            sql.push_str(" IS NOT NULL");
        }
        FieldCondition::Compare { op, value, .. } => push_compare(sql, args, &member, *op, value),
        FieldCondition::In { values, .. } => {
            if values.is_empty() {
                sql.push('0');
                return;
            }
            sql.push('(');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                push_compare(sql, args, &member, Comparison::Eq, value);
            }
            sql.push(')');
        }
    }
}

fn push_compare(
    sql: &mut String,
    args: &mut Vec<Value>,
    member: &Member<'_>,
    op: Comparison,
    value: &FieldValue,
) {
    let symbol = match op {
        Comparison::Eq => " = ",
        Comparison::Ne => " != ",
        Comparison::Lt => " < ",
        Comparison::Le => " <= ",
        Comparison::Gt => " > ",
        Comparison::Ge => " >= ",
    };
    match value {
        FieldValue::Bool(b) => {
            // validate() allows only = and != on booleans.
            let wanted = *b == (op == Comparison::Eq);
            member.push_type(sql, args);
            sql.push_str(if wanted { " = 'true'" } else { " = 'false'" });
        }
        FieldValue::Text(text) => {
            sql.push('(');
            member.push_type(sql, args);
            sql.push_str(" = 'text' AND ");
            member.push_value(sql, args);
            sql.push_str(symbol);
            sql.push('?');
            args.push(Value::Text(text.clone()));
            sql.push(')');
        }
        FieldValue::Int(i) => {
            // An integer member compares exactly; a real one (or an integer literal beyond
            // i64, which SQLite reads as real) as f64 against the integer converted to f64.
            sql.push('(');
            member.push_type(sql, args);
            sql.push_str(" IN ('integer', 'real') AND CASE typeof(");
            member.push_value(sql, args);
            sql.push_str(") WHEN 'integer' THEN ");
            member.push_value(sql, args);
            sql.push_str(symbol);
            sql.push('?');
            args.push(Value::Integer(*i));
            sql.push_str(" ELSE ");
            member.push_value(sql, args);
            sql.push_str(symbol);
            sql.push('?');
            args.push(Value::Real(*i as f64));
            sql.push_str(" END)");
        }
        FieldValue::Float(f) => {
            // `CAST(integer AS REAL)` rounds like Rust's `as f64`.
            sql.push('(');
            member.push_type(sql, args);
            sql.push_str(" IN ('integer', 'real') AND CAST(");
            member.push_value(sql, args);
            sql.push_str(" AS REAL)");
            sql.push_str(symbol);
            sql.push('?');
            args.push(Value::Real(*f));
            sql.push(')');
        }
    }
}
