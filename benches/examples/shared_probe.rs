//! Where a 1 MiB put over PostgreSQL + S3 spends its time: each request cachet makes, timed
//! alone, next to the raw object PUT (the `shared` bench's baseline).
//!
//! ```text
//! eval "$(cargo xtask services up)"
//! cargo run --release -p cachet-benches --example shared_probe
//! ```

use std::time::Instant;

use bytes::Bytes;
use cachet::backends::postgres::PostgresConfig;
use cachet::backends::s3::S3Config;
use cachet::{BlobBackend, BlobId, ContentDigest, MetadataBackend, Timestamp};
use cachet_benches::{MIB, median, random_bytes};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

const N: usize = 30;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: cargo xtask services up"))
}

async fn time<F, Fut>(label: &str, mut f: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::new();
    for i in 0..N {
        let started = Instant::now();
        f(i).await;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!("{label:<44} {:>8.3} ms", median(&samples));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (database, endpoint, bucket) = (env("DATABASE_URL"), env("S3_ENDPOINT"), env("S3_BUCKET"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("probe_{nanos}");
    let separator = if database.contains('?') { '&' } else { '?' };
    let index = PostgresConfig::from_url(&format!("{database}{separator}cachet_schema={name}"))
        .unwrap()
        .open()
        .await
        .unwrap();
    let blobs = S3Config::from_url(&format!(
        "s3://{bucket}/{name}?endpoint={endpoint}&allow_http=true"
    ))
    .unwrap()
    .build()
    .unwrap();
    let raw = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    let data = Bytes::from(random_bytes(MIB, 9));
    let id = |i: usize, salt: u128| {
        BlobId::from_digest(&ContentDigest::Xxh3_128((salt << 64) | i as u128))
    };
    let far = Timestamp(i64::MAX / 2);

    println!("1 MiB values, median of {N}:");
    time("raw object_store put (overwrite)", |i| {
        let (raw, data) = (&raw, data.clone());
        let path = object_store::path::Path::from(format!("{name}/raw/{i}"));
        async move {
            raw.put(&path, data.into()).await.unwrap();
        }
    })
    .await;
    time("raw object_store put (If-None-Match)", |i| {
        let (raw, data) = (&raw, data.clone());
        let path = object_store::path::Path::from(format!("{name}/raw-create/{i}"));
        async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            raw.put_opts(&path, data.into(), opts).await.unwrap();
        }
    })
    .await;
    time("cachet-blob-s3 put", |i| {
        let (blobs, data, id) = (&blobs, data.clone(), id(i, 1));
        async move {
            blobs.put(&id, data).await.unwrap();
        }
    })
    .await;
    time("cachet-blob-s3 head", |i| {
        let (blobs, id) = (&blobs, id(i, 1));
        async move {
            blobs.head(&id).await.unwrap();
        }
    })
    .await;
    time("cachet-meta-postgres reserve_blob", |i| {
        let (index, id) = (&index, id(i, 2));
        async move {
            index
                .reserve_blob(&id, MIB as u64, far, Timestamp(0))
                .await
                .unwrap();
        }
    })
    .await;
    time("cachet-meta-postgres put (blob entry)", |i| {
        let (index, blob) = (&index, id(i, 2));
        async move {
            let key = cachet::CacheKey::explicit("", format!("k{i}")).unwrap();
            let record = cachet_core_record(&key, &blob);
            index.put(record).await.unwrap();
        }
    })
    .await;
    time("cachet-meta-postgres put (inline 100 B)", |i| {
        let index = &index;
        async move {
            let key = cachet::CacheKey::explicit("", format!("inline{i}")).unwrap();
            let mut record = cachet_core_record(&key, &id(i, 9));
            record.meta.location = cachet::Location::Inline;
            record.meta.blob_etag = None;
            record.inline_data = Some(Bytes::from(vec![7u8; 100]));
            index.put(record).await.unwrap();
        }
    })
    .await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .test_before_acquire(false)
        .connect(&database)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {name}_raw (k TEXT PRIMARY KEY, v BYTEA)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let upsert = format!(
        "INSERT INTO {name}_raw (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
    );
    time("raw sqlx upsert (100 B)", |i| {
        let (pool, upsert) = (&pool, upsert.clone());
        async move {
            sqlx::query(sqlx::AssertSqlSafe(upsert))
                .bind(format!("k{i}"))
                .bind(vec![7u8; 100])
                .execute(pool)
                .await
                .unwrap();
        }
    })
    .await;
    let index: std::sync::Arc<dyn MetadataBackend> = std::sync::Arc::new(index);
    let blobs: std::sync::Arc<dyn BlobBackend> = std::sync::Arc::new(blobs);
    let memory_index: std::sync::Arc<dyn MetadataBackend> =
        std::sync::Arc::new(cachet::backends::memory::MemoryMetadata::new());
    let memory_blobs: std::sync::Arc<dyn BlobBackend> =
        std::sync::Arc::new(cachet::backends::memory::MemoryBlobs::new());
    for (label, meta, blob) in [
        (
            "Store::put_bytes, PostgreSQL + S3",
            index.clone(),
            blobs.clone(),
        ),
        (
            "Store::put_bytes, memory index + S3",
            memory_index.clone(),
            blobs.clone(),
        ),
        (
            "Store::put_bytes, PostgreSQL + memory blobs",
            index.clone(),
            memory_blobs.clone(),
        ),
        (
            "Store::put_bytes, memory + memory",
            memory_index.clone(),
            memory_blobs.clone(),
        ),
    ] {
        let store = cachet::Store::new(meta, blob, cachet::StoreConfig::default()).unwrap();
        // Distinct values made before timing, so no copy is charged to the put.
        let values: Vec<Vec<u8>> = (0..N)
            .map(|i| {
                let mut value = data.to_vec();
                cachet_benches::stamp(&mut value, (i as u64) << 8 | label.len() as u64);
                value
            })
            .collect();
        time(label, |i| {
            let (store, value) = (&store, &values[i]);
            let key = cachet::CacheKey::explicit("", format!("s{i}")).unwrap();
            async move {
                store
                    .put_bytes(&key, value, cachet::PutOptions::default())
                    .await
                    .unwrap();
            }
        })
        .await;
        let mut ids = Vec::new();
        for i in 0..N {
            let key = cachet::CacheKey::explicit("", format!("s{i}")).unwrap();
            let meta = store.metadata(&key).await.unwrap().unwrap();
            ids.push(meta.location.blob_id().unwrap().clone());
        }
        let blob_store = store.blob_backend().clone();
        time("  the same blobs, BlobBackend::get alone", |i| {
            let (blob_store, id) = (&blob_store, ids[i].clone());
            async move {
                blob_store.get(&id).await.unwrap();
            }
        })
        .await;
        time("  Store::lookup", |i| {
            let store = &store;
            let key = cachet::CacheKey::explicit("", format!("s{i}")).unwrap();
            async move {
                store.lookup(&key).await.unwrap().unwrap();
            }
        })
        .await;
        let mut entries = Vec::new();
        for i in 0..N {
            let key = cachet::CacheKey::explicit("", format!("s{i}")).unwrap();
            entries.push(store.lookup(&key).await.unwrap().unwrap());
        }
        time("  Store::read_bytes of a looked-up entry", |i| {
            let (store, entry) = (&store, &entries[i]);
            async move {
                store.read_bytes(entry).await.unwrap();
            }
        })
        .await;
        time("  BlobBackend::get + format::decode_all", |i| {
            let (blob_store, id, raw) = (&blob_store, ids[i].clone(), entries[i].meta.raw_size);
            async move {
                let stored = blob_store.get(&id).await.unwrap();
                cachet::cachet_storage::format::decode_all("probe", stored, raw).unwrap();
            }
        })
        .await;
        let mut fetched = Vec::new();
        for id in &ids {
            fetched.push(blob_store.get(id).await.unwrap());
        }
        time("  format::decode_all of fetched bytes", |i| {
            let (stored, raw) = (fetched[i].clone(), entries[i].meta.raw_size);
            async move {
                cachet::cachet_storage::format::decode_all("probe", stored, raw).unwrap();
            }
        })
        .await;
        drop(fetched);
        let get_label = label.replace("put_bytes", "get_bytes");
        time(&get_label, |i| {
            let store = &store;
            let key = cachet::CacheKey::explicit("", format!("s{i}")).unwrap();
            async move {
                assert_eq!(store.get_bytes(&key).await.unwrap().unwrap().len(), MIB);
            }
        })
        .await;
    }
    time("raw object_store get", |i| {
        let raw = &raw;
        let path = object_store::path::Path::from(format!("{name}/raw/{i}"));
        async move {
            let bytes = raw.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(bytes.len(), MIB);
        }
    })
    .await;
    time("cachet-blob-s3 get", |i| {
        let (blobs, id) = (&blobs, id(i, 1));
        async move {
            assert_eq!(blobs.get(&id).await.unwrap().len(), MIB);
        }
    })
    .await;
    time("cachet-meta-postgres claim (nothing to claim)", |i| {
        let (index, blob) = (&index, id(i, 3));
        async move {
            index
                .claim_unreferenced_blobs(Some(std::slice::from_ref(&blob)), Timestamp(0), 1)
                .await
                .unwrap();
        }
    })
    .await;
}

fn cachet_core_record(key: &cachet::CacheKey, blob: &BlobId) -> cachet::cachet_core::EntryRecord {
    let now = Timestamp::now();
    cachet::cachet_core::EntryRecord {
        meta: cachet::EntryMeta {
            key: key.clone(),
            params: None,
            location: cachet::Location::Blob(blob.clone()),
            data_type: cachet::DataType::Bytes,
            type_name: None,
            compression: cachet::Compression::Lz4,
            raw_size: MIB as u64,
            stored_size: MIB as u64,
            digest: ContentDigest::Xxh3_128(7),
            created_at: now,
            updated_at: now,
            accessed_at: now,
            access_count: 0,
            expires_at: None,
            tags: Vec::new(),
            user_metadata: None,
            signature: None,
            blob_etag: Some("\"etag\"".into()),
        },
        inline_data: None,
    }
}
