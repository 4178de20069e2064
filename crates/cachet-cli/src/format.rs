//! Human-readable output: sizes, durations, tables.

use std::io::Write;

use anyhow::Result;
use cachet::{Cache, ListQuery, Location, Timestamp};

/// `1.2 GiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `12m 5s`, `800ms`.
pub fn human_duration_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", human_duration_ms(-ms));
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

pub(crate) async fn stats(cache: &Cache, json: bool, out: &mut dyn Write) -> Result<()> {
    let s = cache.index_stats().await?;
    let ratio = if s.raw_bytes == 0 {
        1.0
    } else {
        s.stored_bytes as f64 / s.raw_bytes as f64
    };
    let blob_entry_bytes = stored_bytes_in_blobs(cache).await?;
    let dedup_saved = blob_entry_bytes.saturating_sub(s.blob_bytes);
    if json {
        let value = serde_json::json!({
            "entries": s.entries,
            "inline_entries": s.inline_entries,
            "raw_bytes": s.raw_bytes,
            "stored_bytes": s.stored_bytes,
            "compression_ratio": ratio,
            "blobs": s.blobs,
            "blob_bytes": s.blob_bytes,
            "dedup_saved_bytes": dedup_saved,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "entries        {} ({} inline in the index)",
        s.entries, s.inline_entries
    )?;
    writeln!(out, "raw size       {}", human_bytes(s.raw_bytes))?;
    writeln!(
        out,
        "stored size    {} ({:.1}% of raw)",
        human_bytes(s.stored_bytes),
        ratio * 100.0
    )?;
    writeln!(
        out,
        "blobs          {} holding {}",
        s.blobs,
        human_bytes(s.blob_bytes)
    )?;
    writeln!(out, "dedup saved    {}", human_bytes(dedup_saved))?;
    Ok(())
}

/// Sum of stored sizes of blob-backed entries (each entry counted), to compare with what the
/// blob store really holds (each blob once).
async fn stored_bytes_in_blobs(cache: &Cache) -> Result<u64> {
    let mut total = 0;
    let mut query = ListQuery {
        limit: 1000,
        ..Default::default()
    };
    loop {
        let page = cache.store().list(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = Some(last.key.clone());
        total += page
            .iter()
            .filter(|m| matches!(m.location, Location::Blob(_)))
            .map(|m| m.stored_size)
            .sum::<u64>();
    }
    Ok(total)
}

pub(crate) async fn list(
    cache: &Cache,
    mut query: ListQuery,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let now = cache.store().now();
    if !json {
        writeln!(
            out,
            "{:<40} {:<10} {:>10} {:>10} {:>9} {:>9} {:>6}",
            "KEY", "TYPE", "RAW", "STORED", "AGE", "TTL", "READS"
        )?;
    }
    let mut printed = 0;
    // Page through the index so that output starts at once and memory stays bounded.
    while printed < limit {
        query.limit = (limit - printed).min(1000);
        let page = cache.store().list(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = Some(last.key.clone());
        for m in &page {
            let ttl = match m.expires_at {
                Some(t) if t <= now => "expired".to_owned(),
                Some(t) => human_duration_ms(t.0 - now.0),
                None => "-".to_owned(),
            };
            if json {
                let line = serde_json::json!({
                    "namespace": m.key.namespace(),
                    "key": m.key.id(),
                    "data_type": m.data_type.as_str(),
                    "type_name": m.type_name,
                    "raw_bytes": m.raw_size,
                    "stored_bytes": m.stored_size,
                    "created_at_ms": m.created_at.0,
                    "accessed_at_ms": m.accessed_at.0,
                    "expires_at_ms": m.expires_at.map(|t: Timestamp| t.0),
                    "reads": m.access_count,
                    "params": m.params,
                    "tags": m.tags,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{:<40} {:<10} {:>10} {:>10} {:>9} {:>9} {:>6}",
                    m.key.to_string(),
                    m.data_type.as_str(),
                    human_bytes(m.raw_size),
                    human_bytes(m.stored_size),
                    human_duration_ms(now.0 - m.created_at.0),
                    ttl,
                    m.access_count
                )?;
            }
        }
        printed += page.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_human_wrote_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn durations_read_like_a_human_wrote_them() {
        assert_eq!(human_duration_ms(800), "800ms");
        assert_eq!(human_duration_ms(65_000), "1m 5s");
        assert_eq!(human_duration_ms((3 * 86_400 + 4 * 3600) * 1000), "3d 4h");
    }
}
