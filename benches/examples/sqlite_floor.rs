//! The floor SQLite puts under cachet's small operations on this machine, and what schema and
//! transaction changes would buy: rusqlite directly (same bundled SQLite as cachet), cachet's
//! `entries` schema and statements, WAL + `synchronous=NORMAL`, 100 B inline values.
//!
//! ```text
//! cargo run --release -p cachet-benches --example sqlite_floor
//! ```
//!
//! Variants: cachet's schema as is (a rowid table with a separate primary-key index, plus an
//! `accessed_at` index), `WITHOUT ROWID`, without the `accessed_at` index, lookups inside one
//! long read transaction (what the per-lookup lock round trip costs), and puts batched 32 per
//! transaction (group commit); and access-time batches (`record_access`) written to the wide
//! rows, without their index, or to a narrow side table. Medians of 3 runs.

use std::hint::black_box;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, params};

const ROWS: usize = 10_000;
const LOOKUPS: usize = 200_000;
const PUTS: usize = 20_000;

fn schema(without_rowid: bool, accessed_index: bool) -> String {
    format!(
        "CREATE TABLE entries (
            namespace TEXT NOT NULL, id TEXT NOT NULL, params TEXT, blob_id TEXT,
            data_type TEXT NOT NULL, type_name TEXT, compression TEXT NOT NULL,
            raw_size INTEGER NOT NULL, stored_size INTEGER NOT NULL, digest TEXT NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, accessed_at INTEGER NOT NULL,
            access_count INTEGER NOT NULL, expires_at INTEGER, tags TEXT NOT NULL,
            user_metadata TEXT, signature TEXT, inline_data BLOB,
            PRIMARY KEY (namespace, id)){};
         CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;
         {}
         CREATE INDEX entries_blob_id ON entries (blob_id) WHERE blob_id IS NOT NULL;",
        if without_rowid { " WITHOUT ROWID" } else { "" },
        if accessed_index {
            "CREATE INDEX entries_accessed_at ON entries (accessed_at);"
        } else {
            ""
        }
    )
}

const COLUMNS: &str = "params, blob_id, data_type, type_name, compression, raw_size, \
    stored_size, digest, created_at, updated_at, accessed_at, access_count, expires_at, tags, \
    user_metadata, signature";

fn open(path: &std::path::Path) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open");
    conn.pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))
        .expect("wal");
    conn.pragma_update(None, "synchronous", "normal")
        .expect("synchronous");
    conn.pragma_update(None, "temp_store", "memory")
        .expect("temp_store");
    conn
}

/// Puts `n` rows as cachet does (BEGIN IMMEDIATE, read the old row, upsert, COMMIT), `batch`
/// rows per transaction; returns µs per put.
fn puts(conn: &mut Connection, n: usize, batch: usize, prefix: &str) -> f64 {
    let upsert = format!(
        "INSERT INTO entries (namespace, id, {COLUMNS}, inline_data) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) \
         ON CONFLICT (namespace, id) DO UPDATE SET inline_data = excluded.inline_data"
    );
    let select = format!("SELECT {COLUMNS} FROM entries WHERE namespace = ?1 AND id = ?2");
    let inline = vec![7u8; 150];
    let digest = format!("xxh3-128:{:032x}", 0xDEAD_BEEFu128);
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        for _ in 0..batch.min(n - i) {
            let id = format!("{prefix}{i}");
            let now = 1_800_000_000_000i64 + i as i64;
            {
                let mut stmt = tx.prepare_cached(&select).expect("prepare select");
                let mut rows = stmt.query(params!["", id]).expect("select");
                black_box(rows.next().expect("row").is_some());
            }
            tx.prepare_cached(&upsert)
                .expect("prepare upsert")
                .execute(params![
                    "",
                    id,
                    None::<String>,
                    None::<String>,
                    "bytes",
                    None::<String>,
                    "lz4",
                    100,
                    150,
                    digest,
                    now,
                    now,
                    now,
                    0,
                    None::<i64>,
                    "[]",
                    None::<String>,
                    None::<String>,
                    inline,
                ])
                .expect("upsert");
            i += 1;
        }
        tx.commit().expect("commit");
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Looks up `n` keys (hits unless `miss`) on a reader connection, all columns as cachet's get;
/// `per_txn` lookups share one read transaction (1 = autocommit). Returns µs per lookup.
fn lookups(reader: &Connection, n: usize, miss: bool, per_txn: usize) -> f64 {
    let sql =
        format!("SELECT {COLUMNS}, inline_data FROM entries WHERE namespace = ?1 AND id = ?2");
    let keys: Vec<String> = (0..ROWS)
        .map(|i| {
            if miss {
                format!("miss{i}")
            } else {
                format!("k{i}")
            }
        })
        .collect();
    let mut stmt = reader.prepare_cached(&sql).expect("prepare");
    let start = Instant::now();
    let mut in_txn = 0;
    for i in 0..n {
        if per_txn > 1 && in_txn == 0 {
            reader.execute_batch("BEGIN").expect("begin");
        }
        let mut rows = stmt.query(params!["", keys[i % ROWS]]).expect("query");
        match rows.next().expect("row") {
            Some(row) => {
                let blob: Vec<u8> = row.get(16).expect("inline");
                let digest: String = row.get(7).expect("digest");
                black_box((blob, digest));
            }
            None => assert!(miss),
        }
        drop(rows);
        if per_txn > 1 {
            in_txn += 1;
            if in_txn == per_txn {
                reader.execute_batch("COMMIT").expect("commit");
                in_txn = 0;
            }
        }
    }
    if in_txn > 0 {
        reader.execute_batch("COMMIT").expect("commit");
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Writes access times as cachet's `record_access` does: one transaction per batch of
/// `batch` distinct random keys, one UPDATE per key. `separate` writes them to a narrow side
/// table (`access(namespace, id, accessed_at, access_count)`) instead of the wide `entries`
/// rows that hold the inline values. Returns µs per updated row.
fn access_batches(
    conn: &mut Connection,
    rows: usize,
    batch: usize,
    batches: usize,
    separate: bool,
) -> f64 {
    let sql = if separate {
        "UPDATE access SET accessed_at = max(accessed_at, ?3), access_count = access_count + ?4 \
         WHERE namespace = ?1 AND id = ?2"
    } else {
        "UPDATE entries SET accessed_at = max(accessed_at, ?3), access_count = access_count + ?4 \
         WHERE namespace = ?1 AND id = ?2"
    };
    let mut rng = cachet_benches::Rng::new(11);
    let start = Instant::now();
    for b in 0..batches {
        let mut keys = std::collections::HashSet::new();
        while keys.len() < batch.min(rows) {
            keys.insert(rng.below(rows));
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        {
            let mut stmt = tx.prepare_cached(sql).expect("prepare");
            let at = 1_900_000_000_000i64 + b as i64;
            for k in &keys {
                stmt.execute(params!["", format!("k{k}"), at, 1])
                    .expect("update");
            }
        }
        tx.commit().expect("commit");
    }
    start.elapsed().as_secs_f64() * 1e6 / (batches * batch.min(rows)) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let variants = [
        (
            "cachet schema (rowid table + PK index + accessed_at index)",
            false,
            true,
        ),
        ("WITHOUT ROWID", true, true),
        ("no accessed_at index", false, false),
        ("WITHOUT ROWID, no accessed_at index", true, false),
    ];
    println!(
        "{:<62} {:>12} {:>12} {:>12}",
        "puts (µs/put)", "1 per txn", "32 per txn", ""
    );
    for (name, without_rowid, accessed) in variants {
        let mut single = Vec::new();
        let mut batched = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut conn = open(&dir.path().join("index.db"));
            conn.execute_batch(&schema(without_rowid, accessed))
                .expect("schema");
            single.push(puts(&mut conn, PUTS, 1, "a"));
            batched.push(puts(&mut conn, PUTS, 32, "b"));
        }
        println!(
            "{name:<62} {:>12.1} {:>12.1}",
            median(single),
            median(batched)
        );
    }
    println!();
    println!(
        "{:<62} {:>12} {:>12}",
        "access-time batches, 20k rows (µs/row)", "4096/batch", "256/batch"
    );
    for (name, without_rowid, accessed, separate) in [
        (
            "cachet schema (accessed_at in the wide row, indexed)",
            false,
            true,
            false,
        ),
        ("no accessed_at index", false, false, false),
        (
            "narrow side table access(namespace, id, ...) WITHOUT ROWID",
            false,
            true,
            true,
        ),
    ] {
        let (mut big, mut small) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut conn = open(&dir.path().join("index.db"));
            conn.execute_batch(&schema(without_rowid, accessed && !separate))
                .expect("schema");
            puts(&mut conn, 20_000, 1000, "k");
            if separate {
                conn.execute_batch(
                    "CREATE TABLE access (namespace TEXT NOT NULL, id TEXT NOT NULL, \
                     accessed_at INTEGER NOT NULL, access_count INTEGER NOT NULL, \
                     PRIMARY KEY (namespace, id)) WITHOUT ROWID; \
                     INSERT INTO access SELECT namespace, id, accessed_at, access_count FROM entries;",
                )
                .expect("access table");
            }
            big.push(access_batches(&mut conn, 20_000, 4096, 6, separate));
            small.push(access_batches(&mut conn, 20_000, 256, 40, separate));
        }
        println!("{name:<62} {:>12.2} {:>12.2}", median(big), median(small));
    }
    println!();
    println!(
        "{:<62} {:>12} {:>12} {:>12}",
        "lookups, 10k rows (µs/lookup)", "hit", "miss", "hit, 1000/txn"
    );
    for (name, without_rowid, accessed) in variants {
        let (mut hit, mut miss, mut txn) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("index.db");
            let mut conn = open(&path);
            conn.execute_batch(&schema(without_rowid, accessed))
                .expect("schema");
            puts(&mut conn, ROWS, 1000, "k");
            let reader = open(&path);
            hit.push(lookups(&reader, LOOKUPS, false, 1));
            miss.push(lookups(&reader, LOOKUPS, true, 1));
            txn.push(lookups(&reader, LOOKUPS, false, 1000));
        }
        println!(
            "{name:<62} {:>12.2} {:>12.2} {:>12.2}",
            median(hit),
            median(miss),
            median(txn)
        );
    }
}
