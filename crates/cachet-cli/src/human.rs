//! Sizes and durations as people write and read them.
//!
//! Parsing (options such as `--larger-than 1GB`, `--ttl 2.5h`, `--older-than 7d`):
//!
//! * sizes: a number (decimals allowed) and an optional unit, case-insensitive, spaces
//!   allowed: `1024`, `500B`, `500MB`, `1.5GiB`, `2 tb`. **Decimal units are powers of 1000**
//!   (`kB`/`KB`, `MB`, `GB`, `TB`, `PB`), **binary units powers of 1024** (`KiB`, `MiB`, `GiB`,
//!   `TiB`, `PiB`), as on disk labels and in IEC 80000-13. `K`, `M`, `G`, `T`, `P` alone are
//!   binary (what `ls -h` and `du -h` print).
//! * durations: what [`cachet::parse_ttl`] reads: a number and one unit among `ms`, `s`, `m`,
//!   `h`, `d`, `w` (`30s`, `2.5h`, `7d`).
//!
//! Formatting: sizes in binary units with one decimal (`1.2 GiB`, `512 B`); durations as their
//! two largest units (`3d 4h`, `12m 5s`, `800ms`).

use std::time::Duration;

/// Parses a size such as `500MB`, `1.5GiB` or `1024` into bytes (see the module docs for the
/// units).
///
/// # Errors
/// A message naming the text and the accepted units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "`{text}` {why}; write a number and an optional unit: B, kB, MB, GB, TB (powers of \
             1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 500MB, 1.5GiB"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("is not a size"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        _ => return Err(bad("has an unknown unit")),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| bad("is too large"));
    }
    let value: f64 = number.parse().map_err(|_| bad("is not a size"))?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("is too large"));
    }
    Ok(bytes as u64)
}

/// Parses a duration such as `2.5h`, `7d` or `30s` (the units of [`cachet::parse_ttl`]).
///
/// # Errors
/// A message naming the text and the accepted units (zero is refused: no option here means
/// anything by a zero duration).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    cachet::parse_ttl(text).map_err(|e| match e {
        cachet::Error::Config { message, .. } => message,
        other => other.to_string(),
    })
}

/// `1.2 GiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
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

/// `3d 4h`, `12m 5s`, `800ms`; negative durations get a leading `-`.
pub fn format_duration_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", format_duration_ms(ms.saturating_neg()));
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

/// Like [`format_duration_ms`] for a [`Duration`].
pub fn format_duration(d: Duration) -> String {
    format_duration_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A timestamp (milliseconds since the Unix epoch) as RFC 3339 in UTC with milliseconds:
/// `2026-03-01T12:00:00.000Z`. Machine formats (JSON, CSV) print times this way.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_human_wrote_them() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(1 << 30), "1.0 GiB");
        assert_eq!(format_size(1_288_490_189), "1.2 GiB");
    }

    #[test]
    fn durations_read_like_a_human_wrote_them() {
        assert_eq!(format_duration_ms(800), "800ms");
        assert_eq!(format_duration_ms(5_000), "5s");
        assert_eq!(format_duration_ms(65_000), "1m 5s");
        assert_eq!(format_duration_ms(2 * 3_600_000 + 60_000), "2h 1m");
        assert_eq!(format_duration_ms((3 * 86_400 + 4 * 3600) * 1000), "3d 4h");
        assert_eq!(format_duration_ms(-65_000), "-1m 5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
    }

    #[test]
    fn decimal_units_are_powers_of_1000_and_binary_units_powers_of_1024() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("500B").unwrap(), 500);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1kB").unwrap(), 1_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("2 mib").unwrap(), 2 << 20);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size(" 0.5 KiB ").unwrap(), 512);
    }

    #[test]
    fn bad_sizes_name_the_text_and_the_units() {
        for bad in ["", "MB", "1.2.3GB", "-1GB", "12 parsecs", "99999999999PB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(err.contains("GiB"), "{err}");
        }
    }

    #[test]
    fn durations_parse_like_ttls() {
        assert_eq!(parse_duration("2.5h").unwrap(), Duration::from_secs(9_000));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        let err = parse_duration("7 fortnights").unwrap_err();
        assert!(
            err.contains("7 fortnights") && err.contains("2.5h"),
            "{err}"
        );
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_772_366_400_000),
            "2026-03-01T12:00:00.000Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
