//! What commands print, in the three `--format`s.
//!
//! A command describes its output as **rows** of typed [`Cell`]s under [`Column`]s (a listing:
//! [`RowWriter`]) or as one **record** of named fields ([`Record`]); this module renders them:
//!
//! | format | rows ([`RowWriter`]) | a record ([`Record`]) |
//! |---|---|---|
//! | `table` | aligned columns under an upper-case header, sizes and durations for humans | `label  value` lines |
//! | `json` | **JSON lines**: one object per row and per line, keys = column keys | one pretty-printed object |
//! | `csv` | a header of column keys, then one record per row (RFC 4180, `csv` crate) | a header and one record |
//!
//! Machine formats (JSON, CSV) print exact values: sizes in bytes, times in RFC 3339 UTC with
//! milliseconds, durations in milliseconds (keys ending in `_ms`), absent values as `null`
//! (JSON) or an empty field (CSV); nested values (parameters, tags, metadata) as JSON (in CSV,
//! as compact JSON text).
//!
//! **Streaming.** Rows are written as they come, so a listing of millions of entries starts at
//! once and holds one page in memory. JSON and CSV write each row immediately. The table is
//! rendered page by page ([`TABLE_PAGE`] rows): the first page fixes the column widths (with
//! [`comfy_table`]) and later pages keep at least those widths, so columns stay aligned unless
//! a later value is wider than every value of the first page (that row then pushes its column
//! right). Output is flushed after every page, so a pipe sees it at once.

use std::io::Write;

use anyhow::Result;
use cachet::Timestamp;
use comfy_table::{CellAlignment, ColumnConstraint, Table, Width};

use crate::human;

/// An output format (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people: human sizes (`1.2 GiB`) and durations (`3d 4h`).
    #[default]
    Table,
    /// JSON: one object per row and per line for listings, one document otherwise.
    Json,
    /// CSV with a header row of column keys.
    Csv,
}

/// Where a column's text sits in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers, sizes, durations.
    Right,
}

/// Which formats show a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Every format.
    Always,
    /// JSON and CSV always; the table only with `-v`.
    Verbose,
    /// JSON and CSV only (too wide or too detailed for a table: parameters, digests...).
    Machine,
}

/// A column of a listing: its key (JSON key, CSV header), its table header, alignment and
/// visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The JSON key and CSV header (`raw_bytes`).
    pub key: &'static str,
    /// The table header (`RAW`).
    pub header: &'static str,
    /// Alignment in a table.
    pub align: Align,
    /// Which formats show it.
    pub show: Show,
}

impl Column {
    /// A left-aligned column shown in every format.
    pub const fn left(key: &'static str, header: &'static str) -> Self {
        Column {
            key,
            header,
            align: Align::Left,
            show: Show::Always,
        }
    }

    /// A right-aligned column shown in every format.
    pub const fn right(key: &'static str, header: &'static str) -> Self {
        Column {
            key,
            header,
            align: Align::Right,
            show: Show::Always,
        }
    }

    /// The same column, shown in tables only with `-v`.
    pub const fn verbose(mut self) -> Self {
        self.show = Show::Verbose;
        self
    }

    /// The same column, shown in JSON and CSV only.
    pub const fn machine(mut self) -> Self {
        self.show = Show::Machine;
        self
    }

    fn visible(&self, format: Format, verbose: bool) -> bool {
        match (format, self.show) {
            (Format::Json | Format::Csv, _) | (_, Show::Always) => true,
            (Format::Table, Show::Verbose) => verbose,
            (Format::Table, Show::Machine) => false,
        }
    }
}

/// One typed value: rendered for people in tables, exactly in JSON and CSV.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Nothing: `-` in a table, `null` in JSON, an empty CSV field.
    Null,
    /// Text, as it is.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A count or another unsigned number.
    UInt(u64),
    /// A ratio or another fraction: two decimals in a table.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A size in bytes: `1.2 GiB` in a table, the number of bytes otherwise.
    Size(u64),
    /// A past time shown as an age: `3d 4h ago` in a table (relative to `now`), RFC 3339
    /// otherwise.
    Age {
        /// When.
        at: Timestamp,
        /// Now, for the age.
        now: Timestamp,
    },
    /// A point in time: `2026-03-01 12:00:00Z` in a table, RFC 3339 with milliseconds
    /// otherwise.
    Time(Timestamp),
    /// A duration in milliseconds: `3d 4h` in a table, the number of milliseconds otherwise.
    DurationMs(i64),
    /// Time left until `until` (a TTL): `3d 4h`, `expired` or `-` (never) in a table; the
    /// milliseconds left (zero or negative once expired) or `null` otherwise.
    Remaining {
        /// When it runs out (`None`: never).
        until: Option<Timestamp>,
        /// Now.
        now: Timestamp,
    },
    /// A JSON value (parameters, tags, metadata): compact JSON in a table and in CSV.
    Json(serde_json::Value),
    /// Anything else: this text in a table, this value in JSON (and CSV).
    Custom {
        /// For people.
        human: String,
        /// For programs.
        machine: serde_json::Value,
    },
}

impl Cell {
    /// A text cell.
    pub fn text(text: impl Into<String>) -> Self {
        Cell::Text(text.into())
    }

    /// Text, or [`Cell::Null`] when absent.
    pub fn opt_text(text: Option<impl Into<String>>) -> Self {
        text.map_or(Cell::Null, |t| Cell::Text(t.into()))
    }

    /// The text shown in a table.
    pub fn human(&self) -> String {
        match self {
            Cell::Null => "-".to_owned(),
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::UInt(u) => u.to_string(),
            Cell::Float(f) => format!("{f:.2}"),
            Cell::Bool(b) => b.to_string(),
            Cell::Size(bytes) => human::format_size(*bytes),
            Cell::Age { at, now } => {
                format!(
                    "{} ago",
                    human::format_duration_ms(now.0.saturating_sub(at.0))
                )
            }
            Cell::Time(at) => {
                let full = human::format_rfc3339_ms(at.0);
                format!("{} {}Z", &full[..10], &full[11..19])
            }
            Cell::DurationMs(ms) => human::format_duration_ms(*ms),
            Cell::Remaining { until, now } => match until {
                None => "-".to_owned(),
                Some(t) if t.0 <= now.0 => "expired".to_owned(),
                Some(t) => human::format_duration_ms(t.0 - now.0),
            },
            Cell::Json(serde_json::Value::Null) => "-".to_owned(),
            Cell::Json(v) => v.to_string(),
            Cell::Custom { human, .. } => human.clone(),
        }
    }

    /// The value printed in JSON.
    pub fn machine(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Cell::Null => Value::Null,
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Int(i) => Value::from(*i),
            Cell::UInt(u) | Cell::Size(u) => Value::from(*u),
            Cell::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Age { at, .. } | Cell::Time(at) => Value::String(human::format_rfc3339_ms(at.0)),
            Cell::DurationMs(ms) => Value::from(*ms),
            Cell::Remaining { until, now } => {
                until.map_or(Value::Null, |t| Value::from(t.0.saturating_sub(now.0)))
            }
            Cell::Json(v) => v.clone(),
            Cell::Custom { machine, .. } => machine.clone(),
        }
    }

    /// The field printed in CSV: the JSON value, strings unquoted, `null` empty, arrays and
    /// objects as compact JSON.
    pub fn csv(&self) -> String {
        match self.machine() {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }
    }
}

/// How many rows a streamed table renders at a time (and how many fix the column widths).
pub const TABLE_PAGE: usize = 1000;

/// Writes a listing row by row in the chosen format (see the module docs).
///
/// ```
/// use cachet_cli::output::{Cell, Column, Format, RowWriter};
///
/// const COLUMNS: &[Column] = &[Column::left("key", "KEY"), Column::right("raw_bytes", "RAW")];
/// let mut out = Vec::new();
/// let mut rows = RowWriter::new(&mut out, Format::Csv, COLUMNS, false, false);
/// rows.row(vec![Cell::text("a"), Cell::Size(2048)])?;
/// rows.finish()?;
/// assert_eq!(String::from_utf8(out)?, "key,raw_bytes\na,2048\n");
/// # Ok::<(), anyhow::Error>(())
/// ```
pub struct RowWriter<'w> {
    out: &'w mut dyn Write,
    format: Format,
    columns: Vec<(usize, Column)>,
    color: bool,
    /// Table: rows waiting to be rendered; their widths once the first page is out.
    pending: Vec<Vec<String>>,
    widths: Option<Vec<u16>>,
    csv_header_done: bool,
    rows: u64,
}

impl std::fmt::Debug for RowWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowWriter")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<'w> RowWriter<'w> {
    /// A writer of rows under `columns` (cells are given for every column, in order; the
    /// format decides which are shown). `verbose` shows [`Show::Verbose`] columns in tables;
    /// `color` makes the table header bold.
    pub fn new(
        out: &'w mut dyn Write,
        format: Format,
        columns: &[Column],
        verbose: bool,
        color: bool,
    ) -> Self {
        RowWriter {
            out,
            format,
            columns: columns
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, c)| c.visible(format, verbose))
                .collect(),
            color,
            pending: Vec::new(),
            widths: None,
            csv_header_done: false,
            rows: 0,
        }
    }

    /// Writes one row: one cell per column given to [`new`](Self::new), in order.
    ///
    /// # Errors
    /// When the output cannot be written (a closed pipe, a full disk).
    ///
    /// # Panics
    /// When the row has fewer cells than there are columns (a bug in the command).
    pub fn row(&mut self, cells: Vec<Cell>) -> Result<()> {
        self.rows += 1;
        match self.format {
            Format::Json => {
                let mut object = serde_json::Map::with_capacity(self.columns.len());
                for (i, column) in &self.columns {
                    object.insert(column.key.to_owned(), cells[*i].machine());
                }
                serde_json::to_writer(&mut *self.out, &object)?;
                self.out.write_all(b"\n")?;
                if self.rows % TABLE_PAGE as u64 == 0 {
                    self.out.flush()?;
                }
            }
            Format::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(&mut *self.out);
                if !self.csv_header_done {
                    writer.write_record(self.columns.iter().map(|(_, c)| c.key))?;
                    self.csv_header_done = true;
                }
                writer.write_record(self.columns.iter().map(|(i, _)| cells[*i].csv()))?;
                writer.flush()?;
                drop(writer);
                if self.rows % TABLE_PAGE as u64 == 0 {
                    self.out.flush()?;
                }
            }
            Format::Table => {
                self.pending.push(
                    self.columns
                        .iter()
                        .map(|(i, _)| cells[*i].human())
                        .collect(),
                );
                if self.pending.len() >= TABLE_PAGE {
                    self.render_page()?;
                }
            }
        }
        Ok(())
    }

    /// How many rows were written so far.
    pub fn count(&self) -> u64 {
        self.rows
    }

    /// Renders what is pending and flushes the output (call it between slow pages, so that
    /// a pipe sees what is ready).
    ///
    /// # Errors
    /// When the output cannot be written.
    pub fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.render_page()?;
        }
        self.out.flush()?;
        Ok(())
    }

    /// Writes what is pending (a table with no rows still gets its header; a CSV its header
    /// row) and flushes.
    ///
    /// # Errors
    /// When the output cannot be written.
    pub fn finish(mut self) -> Result<()> {
        match self.format {
            Format::Table if self.widths.is_none() => self.render_page()?,
            Format::Csv if !self.csv_header_done => {
                let mut writer = csv::Writer::from_writer(&mut *self.out);
                writer.write_record(self.columns.iter().map(|(_, c)| c.key))?;
                writer.flush()?;
            }
            _ => {}
        }
        self.flush()
    }

    fn render_page(&mut self) -> Result<()> {
        let first = self.widths.is_none();
        let mut table = plain_table();
        if first {
            table.set_header(self.columns.iter().map(|(_, c)| c.header));
        }
        table.add_rows(std::mem::take(&mut self.pending));
        if table.column_count() == 0 {
            return Ok(());
        }
        let last = self.columns.len().saturating_sub(1);
        for (position, (_, column)) in self.columns.iter().enumerate() {
            let Some(col) = table.column_mut(position) else {
                continue;
            };
            col.set_cell_alignment(match column.align {
                Align::Left => CellAlignment::Left,
                Align::Right => CellAlignment::Right,
            });
            col.set_padding((0, if position == last { 0 } else { 2 }));
            if let Some(widths) = &self.widths {
                col.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(
                    widths[position] + col.padding_width(),
                )));
            }
        }
        if first {
            self.widths = Some(table.column_max_content_widths());
        }
        for (n, line) in table.lines().enumerate() {
            let line = line.trim_end();
            if first && n == 0 && self.color {
                writeln!(self.out, "\x1b[1m{line}\x1b[0m")?;
            } else {
                writeln!(self.out, "{line}")?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

fn plain_table() -> Table {
    let mut table = Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table
}

/// One record of named fields (a summary, an entry's metadata): `label  value` lines in a
/// table, one object in JSON, a header and one record in CSV.
///
/// ```
/// use cachet_cli::output::{Cell, Format, Record};
///
/// let mut record = Record::new();
/// record.field("entries", "entries", Cell::UInt(3));
/// record.field("raw_bytes", "raw size", Cell::Size(3 << 20));
/// let mut out = Vec::new();
/// record.write(&mut out, Format::Table)?;
/// assert_eq!(String::from_utf8(out)?, "entries   3\nraw size  3.0 MiB\n");
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Record {
    fields: Vec<(String, String, Cell)>,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record::default()
    }

    /// Adds a field: its JSON key / CSV header, its label in a table, its value.
    pub fn field(&mut self, key: impl Into<String>, label: impl Into<String>, value: Cell) {
        self.fields.push((key.into(), label.into(), value));
    }

    /// The fields as one JSON object (exact values).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.fields
                .iter()
                .map(|(key, _, cell)| (key.clone(), cell.machine()))
                .collect(),
        )
    }

    /// The table form: one `label  value` line per field, labels aligned.
    pub fn to_table(&self) -> String {
        let mut table = plain_table();
        table.add_rows(
            self.fields
                .iter()
                .map(|(_, label, cell)| vec![label.clone(), cell.human()]),
        );
        if let Some(col) = table.column_mut(0) {
            col.set_padding((0, 2));
        }
        if let Some(col) = table.column_mut(1) {
            col.set_padding((0, 0));
        }
        let mut text = String::new();
        for line in table.lines() {
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    /// Writes the record in `format`.
    ///
    /// # Errors
    /// When the output cannot be written.
    pub fn write(&self, out: &mut dyn Write, format: Format) -> Result<()> {
        match format {
            Format::Table => out.write_all(self.to_table().as_bytes())?,
            Format::Json => write_json(out, &self.to_json())?,
            Format::Csv => {
                let mut writer = csv::Writer::from_writer(&mut *out);
                writer.write_record(self.fields.iter().map(|(key, _, _)| key))?;
                writer.write_record(self.fields.iter().map(|(_, _, cell)| cell.csv()))?;
                writer.flush()?;
            }
        }
        Ok(())
    }
}

/// Writes one pretty-printed JSON document and a newline.
///
/// # Errors
/// When the output cannot be written.
pub fn write_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        Column::left("key", "KEY"),
        Column::right("raw_bytes", "RAW"),
        Column::left("params", "PARAMS").machine(),
    ];

    fn render(format: Format, rows: usize) -> String {
        let mut out = Vec::new();
        let mut writer = RowWriter::new(&mut out, format, COLUMNS, false, false);
        for i in 0..rows {
            writer
                .row(vec![
                    Cell::text(format!("key-{i}")),
                    Cell::Size(1 << (10 * (i % 3))),
                    Cell::Json(serde_json::json!({ "i": i })),
                ])
                .unwrap();
        }
        writer.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_table_aligns_columns_and_hides_machine_columns() {
        let text = render(Format::Table, 3);
        assert_eq!(
            text,
            "KEY        RAW\nkey-0      1 B\nkey-1  1.0 KiB\nkey-2  1.0 MiB\n"
        );
    }

    #[test]
    fn a_table_keeps_the_first_pages_widths_on_later_pages() {
        let text = render(Format::Table, TABLE_PAGE + 5);
        let widths: std::collections::BTreeSet<usize> = text.lines().map(str::len).collect();
        // "key-1000" is wider than "key-999": only rows with a wider key may be longer.
        assert!(widths.len() <= 2, "{widths:?}");
        assert!(text.lines().last().unwrap().ends_with("1.0 MiB") || text.contains("key-1004"));
    }

    #[test]
    fn with_colour_only_the_header_is_bold() {
        let mut out = Vec::new();
        let mut writer = RowWriter::new(&mut out, Format::Table, COLUMNS, false, true);
        writer
            .row(vec![Cell::text("k"), Cell::Size(1), Cell::Null])
            .unwrap();
        writer.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "\u{1b}[1mKEY  RAW\u{1b}[0m\nk    1 B\n");
    }

    #[test]
    fn an_empty_table_still_has_its_header() {
        assert_eq!(render(Format::Table, 0), "KEY  RAW\n");
    }

    #[test]
    fn json_lines_carry_exact_values_and_every_column() {
        let text = render(Format::Json, 2);
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows[1]["raw_bytes"], 1024);
        assert_eq!(rows[1]["params"]["i"], 1);
    }

    #[test]
    fn csv_has_a_header_of_keys_and_json_for_nested_values() {
        assert_eq!(
            render(Format::Csv, 1),
            "key,raw_bytes,params\nkey-0,1,\"{\"\"i\"\":0}\"\n"
        );
        assert_eq!(render(Format::Csv, 0), "key,raw_bytes,params\n");
    }

    #[test]
    fn cells_render_for_people_and_for_programs() {
        let now = Timestamp(10 * 86_400_000);
        let ttl = Cell::Remaining {
            until: Some(Timestamp(now.0 + 3_600_000)),
            now,
        };
        assert_eq!(
            (ttl.human(), ttl.machine()),
            ("1h 0m".into(), 3_600_000.into())
        );
        let gone = Cell::Remaining {
            until: Some(Timestamp(now.0 - 1)),
            now,
        };
        assert_eq!(gone.human(), "expired");
        let age = Cell::Age {
            at: Timestamp(now.0 - 90_000),
            now,
        };
        assert_eq!(age.human(), "1m 30s ago");
        assert_eq!(age.machine(), "1970-01-10T23:58:30.000Z");
        assert_eq!(Cell::Time(now).human(), "1970-01-11 00:00:00Z");
        assert_eq!(Cell::Null.csv(), "");
    }
}
