//! `cachet query "SELECT ..."`: read-only SQL on the index.
//!
//! SQLite (`--cache DIR`, `--index sqlite://...`): the index file is opened with
//! `SQLITE_OPEN_READ_ONLY`, so SQLite itself refuses every write, and before anything runs
//! the statement must be exactly one statement that SQLite reports as read-only
//! (`sqlite3_stmt_readonly`); an authorizer also refuses `ATTACH` and `DETACH` (which SQLite
//! counts as read-only: they change the connection, not the file) and every write action.
//!
//! PostgreSQL (`--index postgres://...`, feature `postgres`): the statement is first prepared
//! alone (PostgreSQL refuses to prepare several statements at once), then run inside
//! `BEGIN READ ONLY` in the URL's `cachet_schema`, and rolled back.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::output::{Cell, Column};
use crate::{CacheLocation, Context, Outcome};

/// The schema, shown by `cachet query --help`.
pub const SCHEMA_HELP: &str = "\
Runs one read-only SQL statement on the cache's index and prints the rows (--format table,
json or csv). Writes are refused: the SQLite index is opened read-only and the statement must
be a single statement that only reads; on PostgreSQL it runs inside BEGIN READ ONLY.

THE INDEX

Table `entries`, one row per entry, primary key (namespace, id):
  namespace, id      the key (`cachet list` shows `namespace/id`; the default namespace is '')
  params             the parameters the key was derived from (JSON text), NULL for explicit keys
  blob_id            the content-addressed blob holding the value, NULL when the value is
                     inline (then `inline_data` holds the stored container)
  data_type          bytes | msgpack | json | an extension's name
  type_name          the Rust type name given at write time (informational)
  compression        none | lz4 | zstd:<level>
  raw_size           bytes of the value
  stored_size        bytes of the stored container (after compression, with checksums)
  digest             content digest: xxh3-128:<hex> or sha256:<hex> (signed caches)
  created_at, updated_at, accessed_at
                     milliseconds since the Unix epoch (UTC); accessed_at is batched
  access_count       reads so far (batched)
  expires_at         milliseconds since the epoch, NULL for never
  tags               SQLite: a JSON array of strings; PostgreSQL: text[]
  user_metadata      user metadata (JSON text) or NULL
  signature          HMAC-SHA256 of the entry (signed caches), else NULL
  blob_etag          the blob store's ETag of the blob (S3), else NULL
  inline_data        the stored container of an inline value (shown as its length)
  PostgreSQL also has params_jsonb and user_metadata_jsonb, JSONB copies for queries.

Table `blobs`, the blob registry of the garbage collector, one row per stored blob:
  id                 the blob's id (entries.blob_id)
  size               bytes in the blob store
  lease_until        a writer's lease: the collector leaves the blob alone until then (ms)
  claimed_at         set while a collector is deleting the blob, else NULL

Values print typed: integers and reals as numbers in JSON, text as strings, NULL as null,
a blob of up to 64 bytes as x'<hex>' and a longer one as <blob: N bytes>.

EXAMPLES

  # the ten largest entries
  cachet query \"SELECT namespace, id, raw_size, stored_size FROM entries
                 ORDER BY stored_size DESC LIMIT 10\"

  # bytes and entries per data type, as CSV (SQLite: json_each reads the tags)
  cachet --format csv query \"SELECT data_type, count(*) AS entries, sum(raw_size) AS raw
                 FROM entries GROUP BY data_type\"

  # entries tagged nightly (SQLite)
  cachet query \"SELECT entries.id FROM entries, json_each(entries.tags)
                 WHERE json_each.value = 'nightly'\"
";

/// Arguments of `cachet query`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = SCHEMA_HELP)]
pub struct QueryArgs {
    /// One SQL statement that only reads, e.g. "SELECT id, raw_size FROM entries".
    /// `--help` describes the tables.
    pub sql: String,
    /// Stop after this many rows (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_rows: usize,
}

/// Where the index lives.
#[derive(Debug, Clone)]
pub enum IndexLocation {
    /// A SQLite index file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (with cachet's `cachet_*` options).
    Postgres(String),
}

impl IndexLocation {
    /// The index of a cache directory.
    pub fn of_directory(dir: &Path) -> IndexLocation {
        IndexLocation::Sqlite(dir.join(cachet::INDEX_FILE))
    }

    /// The index an `--index` URL names.
    pub fn of_url(url: &str) -> Result<IndexLocation> {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
        match scheme {
            "sqlite" => {
                let config = cachet::backends::sqlite::SqliteConfig::from_url(url)?;
                let path = config
                    .path()
                    .with_context(|| format!("`{url}` is an in-memory index: nothing to query"))?;
                Ok(IndexLocation::Sqlite(path.to_path_buf()))
            }
            "postgres" | "postgresql" => Ok(IndexLocation::Postgres(url.to_owned())),
            _ => bail!(
                "cannot query the index `{url}`: query reads sqlite:// and postgres:// indexes"
            ),
        }
    }
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// A boolean (PostgreSQL).
    Bool(bool),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// Blobs up to this size print as hex; longer ones as their length.
const BLOB_HEX_MAX: usize = 64;

impl SqlValue {
    /// The value as JSON: numbers, strings, booleans, null; a blob as text (see the help).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SqlValue::Null => serde_json::Value::Null,
            SqlValue::Integer(n) => (*n).into(),
            SqlValue::Real(x) => serde_json::Number::from_f64(*x)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| x.to_string().into()),
            SqlValue::Bool(b) => (*b).into(),
            SqlValue::Text(_) | SqlValue::Blob(_) => self.to_text().into(),
        }
    }

    /// The value as text (tables and CSV); NULL is empty.
    pub fn to_text(&self) -> String {
        match self {
            SqlValue::Null => String::new(),
            SqlValue::Integer(n) => n.to_string(),
            SqlValue::Real(x) => x.to_string(),
            SqlValue::Bool(b) => b.to_string(),
            SqlValue::Text(s) => s.clone(),
            SqlValue::Blob(b) if b.len() <= BLOB_HEX_MAX => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("x'{hex}'")
            }
            SqlValue::Blob(b) => format!("<blob: {} bytes>", b.len()),
        }
    }
}

/// The rows a statement returned.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<SqlValue>>,
    /// Whether rows were left out because of `max_rows`.
    pub truncated: bool,
}

/// Runs `sql` on the index.
pub async fn run_query(index: &IndexLocation, sql: &str, max_rows: usize) -> Result<QueryResult> {
    if sql.trim().is_empty() {
        return Err(crate::usage(
            "no SQL given: try cachet query \"SELECT id, raw_size FROM entries LIMIT 10\"",
        ));
    }
    match index {
        IndexLocation::Sqlite(path) => {
            let (path, sql) = (path.clone(), sql.to_owned());
            tokio::task::spawn_blocking(move || query_sqlite(&path, &sql, max_rows))
                .await
                .context("the query task failed")?
        }
        IndexLocation::Postgres(url) => query_postgres(url, sql, max_rows).await,
    }
}

/// Why a statement was refused, for the error message.
/// A usage error (exit code 2): the statement is not one `query` runs.
fn refused(why: &str) -> anyhow::Error {
    crate::usage(format!(
        "refused: {why}. `cachet query` only reads: give one SELECT (or another statement that \
         only reads, such as WITH ... SELECT or EXPLAIN); use cachet rm, cleanup or repair to \
         change the cache"
    ))
}

/// Runs `sql` on the SQLite index at `path`, read-only.
pub fn query_sqlite(path: &Path, sql: &str, max_rows: usize) -> Result<QueryResult> {
    anyhow::ensure!(
        path.exists(),
        "no cachet index at {} (pass --cache DIR or --index URL)",
        path.display()
    );
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening the index {} read-only", path.display()))?;
    // Writers hold the lock briefly; wait for them rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // First without the authorizer, to tell several statements (rusqlite compiles the rest
    // to see whether there is one) from a refused one. Compiling runs nothing.
    match conn.prepare(sql) {
        Ok(_) => {}
        Err(rusqlite::Error::MultipleStatement) => {
            return Err(refused("the SQL holds more than one statement"));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the SQL does not compile")),
    }
    conn.authorizer(Some(authorize))?;
    let mut stmt = match conn.prepare(sql) {
        Ok(stmt) => stmt,
        Err(e) if is_auth_error(&e) => {
            return Err(refused(
                "the statement writes, or attaches or detaches a database",
            ));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the SQL does not compile")),
    };
    if !stmt.readonly() {
        return Err(refused("the statement is not read-only"));
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let width = columns.len();
    let mut result = QueryResult {
        columns,
        ..QueryResult::default()
    };
    let mut rows = stmt.query([]).context("running the query")?;
    while let Some(row) = rows.next().context("reading the rows")? {
        if max_rows > 0 && result.rows.len() == max_rows {
            result.truncated = true;
            break;
        }
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(n) => SqlValue::Integer(n),
                ValueRef::Real(x) => SqlValue::Real(x),
                ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
            });
        }
        result.rows.push(values);
    }
    Ok(result)
}

fn is_auth_error(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::AuthorizationForStatementDenied)
}

/// The authorizer: reads, functions, pragmas that read, transactions; nothing that writes,
/// attaches or detaches.
fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::Select
        | AuthAction::Read { .. }
        | AuthAction::Function { .. }
        | AuthAction::Recursive
        | AuthAction::Transaction { .. } => Authorization::Allow,
        // Read-only pragmas (table_info, index_list...) help to explore the schema; a pragma
        // that changes the file fails on the read-only connection anyway.
        AuthAction::Pragma { .. } => Authorization::Allow,
        _ => Authorization::Deny,
    }
}

#[cfg(feature = "postgres")]
async fn query_postgres(url: &str, sql: &str, max_rows: usize) -> Result<QueryResult> {
    use sqlx::{
        AssertSqlSafe, Column, Connection as _, Executor, Row, SqlSafeStr, Statement, TypeInfo,
        ValueRef as _,
    };

    let config = cachet::backends::postgres::PostgresConfig::from_url(url)?;
    config.validate()?;
    // sqlx does not know cachet's own `cachet_*` options: leave them out.
    let mut parsed = url::Url::parse(url).context("parsing the index URL")?;
    let theirs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(name, _)| !name.starts_with("cachet_"))
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    if theirs.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&theirs);
    }
    let mut conn = sqlx::PgConnection::connect(parsed.as_str())
        .await
        .with_context(|| format!("connecting to {}", config.redacted_url()))?;
    // The schema name was validated by `validate` (lowercase letters, digits, `_`).
    conn.execute(AssertSqlSafe(format!(
        "SET search_path TO \"{}\"",
        config.schema()
    )))
    .await?;
    conn.execute("BEGIN READ ONLY").await?;
    // One statement only: PostgreSQL refuses to prepare several ("cannot insert multiple
    // commands into a prepared statement"), so that a `COMMIT; DELETE ...` never runs.
    let columns: Vec<String> = match conn
        .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
    {
        Ok(statement) => statement
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect(),
        Err(e) if e.to_string().contains("multiple commands") => {
            return Err(refused("the SQL holds more than one statement"));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the SQL does not compile")),
    };
    // The simple protocol returns every value as text, whatever its type.
    let rows = match sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
    {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25006") => {
            return Err(refused(&format!("the statement writes ({})", e.message())));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("running the query")),
    };
    let _ = conn.execute("ROLLBACK").await;
    let mut result = QueryResult {
        columns,
        ..QueryResult::default()
    };
    for row in &rows {
        if max_rows > 0 && result.rows.len() == max_rows {
            result.truncated = true;
            break;
        }
        let mut values = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                values.push(SqlValue::Null);
                continue;
            }
            let text = raw
                .as_str()
                .map_err(|e| anyhow::anyhow!("column {}: {e}", column.name()))?
                .to_owned();
            values.push(match column.type_info().name() {
                "INT2" | "INT4" | "INT8" | "OID" => text
                    .parse()
                    .map(SqlValue::Integer)
                    .unwrap_or(SqlValue::Text(text)),
                "NUMERIC" => match text.parse() {
                    Ok(n) => SqlValue::Integer(n),
                    Err(_) => text
                        .parse()
                        .map(SqlValue::Real)
                        .unwrap_or(SqlValue::Text(text)),
                },
                "FLOAT4" | "FLOAT8" => text
                    .parse()
                    .map(SqlValue::Real)
                    .unwrap_or(SqlValue::Text(text)),
                "BOOL" => SqlValue::Bool(text == "t"),
                "BYTEA" => match text.strip_prefix("\\x").map(hex_decode) {
                    Some(Some(bytes)) => SqlValue::Blob(bytes),
                    _ => SqlValue::Text(text),
                },
                _ => SqlValue::Text(text),
            });
        }
        result.rows.push(values);
    }
    Ok(result)
}

#[cfg(feature = "postgres")]
fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(not(feature = "postgres"))]
async fn query_postgres(_url: &str, _sql: &str, _max_rows: usize) -> Result<QueryResult> {
    bail!(
        "this cachet was built without PostgreSQL support; rebuild the CLI with \
         `--features postgres` to query a postgres:// index"
    )
}

/// Runs `cachet query`.
///
/// # Errors
/// A statement that writes or does not compile, an index that cannot be opened.
pub async fn run(args: QueryArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let index = match ctx.location()? {
        CacheLocation::Directory(dir) => IndexLocation::of_directory(&dir),
        CacheLocation::Urls { index, .. } => IndexLocation::of_url(&index)?,
    };
    let result = run_query(&index, &args.sql, args.max_rows).await?;
    // Column keys are `&'static str` in the output model; a query's columns live as long as
    // the process anyway.
    let columns: Vec<Column> = result
        .columns
        .iter()
        .map(|name| {
            let name: &'static str = Box::leak(name.clone().into_boxed_str());
            Column::left(name, name)
        })
        .collect();
    let mut rows = ctx.rows(&columns);
    for row in &result.rows {
        rows.row(row.iter().map(SqlValue::to_cell).collect())?;
    }
    let count = rows.count();
    rows.finish()?;
    if result.truncated {
        ctx.info(format!(
            "stopped after {count} rows (--max-rows); add LIMIT/OFFSET or raise --max-rows"
        ));
    } else {
        ctx.detail(format!("{count} rows"));
    }
    Ok(Outcome::Success)
}

impl SqlValue {
    fn to_cell(&self) -> Cell {
        match self {
            SqlValue::Null => Cell::Null,
            SqlValue::Integer(n) => Cell::Int(*n),
            SqlValue::Text(s) => Cell::Text(s.clone()),
            SqlValue::Bool(b) => Cell::Bool(*b),
            // Reals in full (a table's Float shows two decimals), blobs as text.
            SqlValue::Real(_) | SqlValue::Blob(_) => Cell::Custom {
                human: self.to_text(),
                machine: self.to_json(),
            },
        }
    }
}
