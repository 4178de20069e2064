//! Points and half-open ranges of a range column, and exact interval-set arithmetic on them.

use std::cmp::Ordering;
use std::fmt;

use crate::error::SqlCacheError;

/// A value of a range column, in the form coverage is computed on.
///
/// Integers, dates (days since 1970-01-01) and timestamps (milliseconds since the epoch) are
/// `Int`; floats are `Float`. A column's points are always of one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    /// An integer, a date as days since 1970-01-01, or a timestamp in milliseconds.
    Int(i64),
    /// A float (NaN is refused where points are made).
    Float(f64),
}

impl Point {
    fn total_cmp(&self, other: &Point) -> Ordering {
        match (self, other) {
            (Point::Int(a), Point::Int(b)) => a.cmp(b),
            (Point::Float(a), Point::Float(b)) => a.total_cmp(b),
            (Point::Int(a), Point::Float(b)) => (*a as f64).total_cmp(b),
            (Point::Float(a), Point::Int(b)) => a.total_cmp(&(*b as f64)),
        }
    }

    /// `self - other` as a distance, for merging gaps.
    pub(crate) fn distance(&self, other: &Point) -> f64 {
        match (self, other) {
            (Point::Int(a), Point::Int(b)) => (i128::from(*a) - i128::from(*b)) as f64,
            (a, b) => a.as_f64() - b.as_f64(),
        }
    }

    pub(crate) fn as_f64(&self) -> f64 {
        match self {
            Point::Int(v) => *v as f64,
            Point::Float(v) => *v,
        }
    }
}

impl PartialOrd for Point {
    fn partial_cmp(&self, other: &Point) -> Option<Ordering> {
        Some(self.total_cmp(other))
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Int(v) => write!(f, "{v}"),
            Point::Float(v) => write!(f, "{v}"),
        }
    }
}

/// A half-open range `[start, end)` of a range column. Empty when `start >= end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// The first point in the range.
    pub start: Point,
    /// The first point after the range.
    pub end: Point,
}

impl Span {
    /// `[start, end)`.
    pub fn new(start: Point, end: Point) -> Span {
        Span { start, end }
    }

    /// Whether the range holds no point.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Whether `point` is in the range.
    pub fn contains(&self, point: &Point) -> bool {
        self.start <= *point && *point < self.end
    }

    /// The common part of two ranges (possibly empty).
    pub fn intersect(&self, other: &Span) -> Span {
        let start = if self.start >= other.start {
            self.start
        } else {
            other.start
        };
        let end = if self.end <= other.end {
            self.end
        } else {
            other.end
        };
        Span { start, end }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// Sorts and merges ranges into disjoint, non-adjacent, non-empty ranges in order.
pub fn normalize(mut spans: Vec<Span>) -> Vec<Span> {
    spans.retain(|s| !s.is_empty());
    spans.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match out.last_mut() {
            Some(last) if span.start <= last.end => {
                if span.end > last.end {
                    last.end = span.end;
                }
            }
            _ => out.push(span),
        }
    }
    out
}

/// The parts of `range` that no span of `covered` holds (inner holes included), in order.
pub fn difference(range: Span, covered: &[Span]) -> Vec<Span> {
    let mut gaps = Vec::new();
    if range.is_empty() {
        return gaps;
    }
    let mut cursor = range.start;
    for span in normalize(covered.to_vec()) {
        if span.end <= cursor {
            continue;
        }
        if span.start >= range.end {
            break;
        }
        if span.start > cursor {
            gaps.push(Span::new(cursor, span.start));
        }
        if span.end > cursor {
            cursor = span.end;
        }
        if cursor >= range.end {
            break;
        }
    }
    if cursor < range.end {
        gaps.push(Span::new(cursor, range.end));
    }
    gaps
}

/// Merges consecutive gaps separated by at most `distance` (what lies between them is
/// fetched again, saving a fetch call).
pub fn merge_close(gaps: Vec<Span>, distance: f64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(gaps.len());
    for gap in gaps {
        match out.last_mut() {
            Some(last) if gap.start.distance(&last.end) <= distance => last.end = gap.end,
            _ => out.push(gap),
        }
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(text: &str) -> Result<i64, SqlCacheError> {
    let bad = || SqlCacheError::InvalidValue {
        column: String::new(),
        detail: format!("`{text}` is not a date (YYYY-MM-DD)"),
    };
    let mut parts = text.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let year: i64 = y.parse().map_err(|_| bad())?;
    let month: u32 = m.parse().map_err(|_| bad())?;
    let day: u32 = d.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || day == 0 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    // Round trip: rejects 2026-02-30 and the like.
    if civil_from_days(days) != (year, month, day) {
        return Err(bad());
    }
    Ok(days)
}

/// 0000-01-01, the first date with a four-digit year, in days since 1970-01-01.
pub const FIRST_DAY: i64 = -719_528;
/// 9999-12-31, the last date with a four-digit year.
pub const LAST_DAY: i64 = 2_932_896;

/// Formats days since 1970-01-01 as `YYYY-MM-DD` (clamped to years 0000-9999, the dates
/// that sort as text).
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days.clamp(FIRST_DAY, LAST_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: i64, b: i64) -> Span {
        Span::new(Point::Int(a), Point::Int(b))
    }

    #[test]
    fn difference_finds_outer_and_inner_gaps() {
        let covered = [s(10, 20), s(30, 40)];
        assert_eq!(
            difference(s(0, 50), &covered),
            [s(0, 10), s(20, 30), s(40, 50)]
        );
        assert_eq!(difference(s(12, 18), &covered), []);
        assert_eq!(difference(s(15, 35), &covered), [s(20, 30)]);
        assert_eq!(difference(s(5, 5), &covered), []);
    }

    #[test]
    fn adjacent_and_overlapping_coverage_merges() {
        assert_eq!(
            normalize(vec![s(5, 8), s(0, 5), s(7, 9), s(20, 20)]),
            [s(0, 9)]
        );
    }

    #[test]
    fn close_gaps_merge_within_the_distance() {
        let gaps = vec![s(0, 2), s(4, 6), s(20, 21)];
        assert_eq!(merge_close(gaps.clone(), 2.0), [s(0, 6), s(20, 21)]);
        assert_eq!(merge_close(gaps, 1.0).len(), 3);
    }

    #[test]
    fn dates_round_trip_and_bad_dates_are_refused() {
        assert_eq!(parse_date("1970-01-01").unwrap(), 0);
        assert_eq!(
            parse_date("2024-03-01").unwrap() - parse_date("2024-02-28").unwrap(),
            2
        );
        // Years 0000-9999 (four digits), both sides of the epoch.
        for days in [-719_528, -1, 0, 19_000, 2_932_896] {
            assert_eq!(parse_date(&format_date(days)).unwrap(), days);
        }
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "26-01-01",
            "2026/01/01",
            "2026-1-1",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
