//! What `chatctl` prints: aligned tables for people, JSON for scripts (`--json`, the same
//! objects as the admin REST routes), and times always in UTC (`2024-05-01T12:00:00Z`) so the
//! output does not depend on the machine's time zone.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// A table printed with columns padded to their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Cells longer than this are cut (with `…`) so one long title cannot break the layout.
const MAX_CELL: usize = 48;

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, header first.
    pub fn render(&self) -> String {
        let cut: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|c| cut(c)).collect())
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &cut {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| -> String {
            let last = cells.len().saturating_sub(1);
            let mut out = String::new();
            for (i, cell) in cells.into_iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.trim_end().to_owned()
        };
        let mut text = line(self.headers.clone());
        text.push('\n');
        for row in &cut {
            text.push_str(&line(row.iter().map(String::as_str).collect()));
            text.push('\n');
        }
        text
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

fn cut(cell: &str) -> String {
    let one_line = cell.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= MAX_CELL {
        return one_line;
    }
    let mut short: String = one_line.chars().take(MAX_CELL - 1).collect();
    short.push('…');
    short
}

/// A JSON document, pretty-printed.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// A JSON document on one line (for feeds: one object per line).
pub fn print_json_line(value: &Value) {
    println!("{value}");
}

/// `2024-05-01T12:00:00Z`, or `-` when absent.
pub fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| {
        let t = t.clone().normalized();
        DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
    })
    .map_or_else(
        || "-".to_owned(),
        |at| at.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// `850ms`, `12s`, `3m05s`, `2h04m`, `3d02h`.
pub fn duration_ms(ms: i64) -> String {
    if ms < 1_000 {
        return format!("{}ms", ms.max(0));
    }
    let s = ms / 1_000;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// An optional duration, `-` when absent.
pub fn opt_ms(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), duration_ms)
}

/// `yes` / empty, for flag columns.
pub fn flag(on: bool, word: &str) -> String {
    if on { word.to_owned() } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_cut_long_cells() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide cell".into(), "x".into()]);
        table.row(vec!["b".into(), "y".repeat(60)]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "A          LONGER");
        assert_eq!(lines[1], "wide cell  x");
        assert!(lines[2].starts_with("b          yyy"));
        assert!(lines[2].ends_with('…'));
        assert_eq!(lines[2].chars().count(), 11 + MAX_CELL);
    }

    #[test]
    fn durations_and_times_read_at_a_glance() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(12_400), "12s");
        assert_eq!(duration_ms(185_000), "3m05s");
        assert_eq!(duration_ms(7_440_000), "2h04m");
        let at = prost_types::Timestamp {
            seconds: 1_714_564_800,
            nanos: 5,
        };
        assert_eq!(time(Some(&at)), "2024-05-01T12:00:00Z");
        assert_eq!(time(None), "-");
    }
}
