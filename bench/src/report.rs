//! The report: the machine and the load on it, then one markdown table per scenario with
//! the systems side by side (the direct read, the Node relay, ours on SQLite and, with
//! `--database-url`, ours on PostgreSQL) and "added" columns (system minus the direct read of
//! the upstream in the same run), then issue 14's targets each marked met or missed. Printed
//! to stdout, to be pasted into `docs/performance.md`.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::fanout::FanoutResult;
use crate::growth::GrowthResult;
use crate::idle::IdleResult;
use crate::soak::SoakResult;
use crate::streams::StreamResult;
use crate::suite::RunArgs;
use crate::systems::Kind;
use crate::turns::TurnResult;

pub struct Report {
    started: String,
    finished: String,
    load_before: String,
    load_after: String,
    machine: String,
    settings: String,
    pub streams: Vec<(Kind, StreamResult)>,
    pub turns: Vec<(Kind, TurnResult)>,
    pub idle: Vec<(Kind, IdleResult)>,
    pub fanout: Vec<(Kind, FanoutResult)>,
    pub growth: Option<GrowthResult>,
    pub soak: Option<SoakResult>,
    /// Scenarios skipped or cut short, said in the report.
    pub notes: Vec<String>,
}

impl Report {
    /// Notes the machine, the time and the load before the run.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn start(args: &RunArgs) -> anyhow::Result<Report> {
        Ok(Report {
            started: now(),
            finished: String::new(),
            load_before: loadavg()?,
            load_after: String::new(),
            machine: machine()?,
            settings: format!(
                "upstream reply {} deltas {} ms apart; streams {:?} x {} measured rounds (+1 warm-up); \
                 turns: {} clients x {} s, short reply (5 deltas at once); fan-out rooms {:?}, \
                 reply {} deltas {} ms apart, {} replies into 1,000 members; growth: {} messages \
                 beside 100; idle sockets {:?}; PostgreSQL: {}",
                args.upstream.deltas,
                args.upstream.delay_ms,
                args.streams,
                args.rounds,
                args.turn_clients,
                args.turn_secs,
                args.fanout,
                args.upstream.fanout_deltas,
                args.upstream.fanout_delay_ms,
                args.fanout_replies,
                args.growth,
                args.idle,
                if args.database_url.is_some() {
                    "yes"
                } else {
                    "no"
                },
            ),
            streams: Vec::new(),
            turns: Vec::new(),
            idle: Vec::new(),
            fanout: Vec::new(),
            growth: None,
            soak: None,
            notes: Vec::new(),
        })
    }

    /// Notes the time and the load after the run.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.finished = now();
        self.load_after = loadavg()?;
        Ok(())
    }
}

fn now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn loadavg() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    Ok(text
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" "))
}

fn machine() -> anyhow::Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    Ok(format!(
        "{cores} cores ({model}), {:.1} GiB RAM",
        mem_kib as f64 / 1024.0 / 1024.0
    ))
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn added(system: Option<f64>, direct: Option<f64>) -> String {
    match (system, direct) {
        (Some(s), Some(d)) => format!("{:+.2}", s - d),
        _ => "-".to_owned(),
    }
}

fn micros_per(cpu: Option<std::time::Duration>, count: usize) -> Option<f64> {
    cpu.filter(|_| count > 0)
        .map(|cpu| cpu.as_secs_f64() * 1e6 / count as f64)
}

fn us(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The figures of one stream count, for the table and the targets.
struct StreamFigures {
    ttft50: Option<f64>,
    ttft99: Option<f64>,
    gap50: Option<f64>,
    gap99: Option<f64>,
    cpu_per_token: Option<f64>,
}

fn stream_figures(result: &mut StreamResult) -> StreamFigures {
    StreamFigures {
        ttft50: result.ttft.percentile(50.0),
        ttft99: result.ttft.percentile(99.0),
        gap50: result.gaps.percentile(50.0),
        gap99: result.gaps.percentile(99.0),
        cpu_per_token: micros_per(result.cpu.server, result.chunks),
    }
}

/// One figure taken from a system's stream figures.
type StreamPick = fn(&StreamFigures) -> Option<f64>;

/// The figures of the turns scenario for one system.
struct TurnFigures {
    kind: Kind,
    rate: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    cpu_per_turn: Option<f64>,
    turns: usize,
    failed: usize,
}

/// One figure taken from a system's turn figures.
type TurnPick = fn(&TurnFigures) -> Option<f64>;

/// One target line: what it asks, the figure, met or not.
struct Target {
    what: String,
    figure: String,
    met: Option<bool>,
}

/// The systems of a table, in column order; the direct read first.
const COLUMNS: [Kind; 4] = [Kind::Direct, Kind::Node, Kind::Ours, Kind::OursPostgres];

/// A column's short name.
fn column(kind: Kind) -> &'static str {
    match kind {
        Kind::Direct => "direct upstream",
        Kind::Node => "Node ws relay",
        Kind::Ours => "ours, SQLite",
        Kind::OursPostgres => "ours, PostgreSQL",
    }
}

/// The header of a table over `kinds`, with an "added" column for each one but the direct read.
fn header(out: &mut String, kinds: &[Kind]) -> std::fmt::Result {
    let names: Vec<&str> = kinds.iter().map(|&k| column(k)).collect();
    let added: Vec<String> = kinds
        .iter()
        .filter(|&&k| k != Kind::Direct)
        .map(|&k| format!("{} added", column(k)))
        .collect();
    let cells = kinds.len() + added.len();
    writeln!(
        out,
        "| figure | {} | {} |",
        names.join(" | "),
        added.join(" | ")
    )?;
    writeln!(out, "|{}", " --- |".repeat(cells + 1))
}

/// One row of figures over `kinds`, with their differences to the direct read when `show_added`.
fn figure_row(
    out: &mut String,
    name: &str,
    kinds: &[Kind],
    value: &dyn Fn(Kind) -> Option<f64>,
    show_added: bool,
) -> std::fmt::Result {
    let direct = value(Kind::Direct);
    let values: Vec<String> = kinds.iter().map(|&k| ms(value(k))).collect();
    let added: Vec<String> = kinds
        .iter()
        .filter(|&&k| k != Kind::Direct)
        .map(|&k| {
            if show_added {
                self::added(value(k), direct)
            } else {
                String::new()
            }
        })
        .collect();
    writeln!(
        out,
        "| {name} | {} | {} |",
        values.join(" | "),
        added.join(" | ")
    )
}

/// One row of text cells over `kinds`, the "added" cells left empty.
fn text_row(
    out: &mut String,
    name: &str,
    kinds: &[Kind],
    cell: &dyn Fn(Kind) -> String,
) -> std::fmt::Result {
    let values: Vec<String> = kinds.iter().map(|&k| cell(k)).collect();
    let empty = vec![""; kinds.len() - 1];
    writeln!(
        out,
        "| {name} | {} | {} |",
        values.join(" | "),
        empty.join(" | ")
    )
}

/// The added figure of `kind` against the direct read, from `figures`.
fn added_of(figures: &[(Kind, StreamFigures)], kind: Kind, pick: StreamPick) -> Option<f64> {
    let get = |k: Kind| {
        figures
            .iter()
            .find(|(x, _)| *x == k)
            .and_then(|(_, f)| pick(f))
    };
    get(kind).zip(get(Kind::Direct)).map(|(s, d)| s - d)
}

/// Writes the report to stdout.
///
/// # Errors
/// When stdout is closed.
pub fn print(report: &mut Report) -> anyhow::Result<()> {
    let mut out = String::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut notes = std::mem::take(&mut report.notes);
    writeln!(out, "## Run of {}\n", report.started)?;
    writeln!(out, "- machine: {}", report.machine)?;
    writeln!(
        out,
        "- load average (1, 5, 15 min): {} before, {} after (finished {})",
        report.load_before, report.load_after, report.finished
    )?;
    writeln!(out, "- {}", report.settings)?;
    writeln!(
        out,
        "- \"added\" = the system's figure minus the direct read of the fake upstream in the same run; \
         CPU is utime+stime from /proc of the server's processes (ours: the one `chatctl dev` process, \
         edge and core; Node: the relay), per delta received by the driver\n"
    )?;

    let mut counts: Vec<usize> = report.streams.iter().map(|(_, r)| r.streams).collect();
    counts.dedup();
    for count in counts {
        let mut results: Vec<&mut (Kind, StreamResult)> = report
            .streams
            .iter_mut()
            .filter(|(_, r)| r.streams == count)
            .collect();
        let figures: Vec<(Kind, StreamFigures)> = results
            .iter_mut()
            .map(|e| (e.0, stream_figures(&mut e.1)))
            .collect();
        let kinds: Vec<Kind> = COLUMNS
            .into_iter()
            .filter(|k| figures.iter().any(|(x, _)| x == k))
            .collect();
        let value_of = |kind: Kind, pick: StreamPick| {
            figures
                .iter()
                .find(|(k, _)| *k == kind)
                .and_then(|(_, f)| pick(f))
        };
        writeln!(out, "### {count} concurrent streams\n")?;
        header(&mut out, &kinds)?;
        let rows: [(&str, StreamPick); 4] = [
            ("time to first token p50 (ms)", |f| f.ttft50),
            ("time to first token p99 (ms)", |f| f.ttft99),
            ("per-token inter-arrival p50 (ms)", |f| f.gap50),
            ("per-token inter-arrival p99 (ms)", |f| f.gap99),
        ];
        for (name, pick) in rows {
            figure_row(&mut out, name, &kinds, &|k| value_of(k, pick), true)?;
        }
        let cell_of = |kind: Kind, f: &dyn Fn(&StreamResult) -> String| {
            results
                .iter()
                .find(|e| e.0 == kind)
                .map_or_else(|| "-".to_owned(), |e| f(&e.1))
        };
        text_row(&mut out, "chunks received / expected", &kinds, &|k| {
            cell_of(k, &|r| format!("{} / {}", r.chunks, r.expected_chunks))
        })?;
        text_row(
            &mut out,
            "replies complete / ended in an error / short of chunks / out of order",
            &kinds,
            &|k| {
                cell_of(k, &|r| {
                    format!(
                        "{} / {} / {} / {}",
                        r.replies, r.failed, r.short, r.out_of_order
                    )
                })
            },
        )?;
        text_row(&mut out, "server CPU per token (us)", &kinds, &|k| {
            cell_of(k, &|r| us(micros_per(r.cpu.server, r.chunks)))
        })?;
        text_row(&mut out, "fake upstream CPU per token (us)", &kinds, &|k| {
            cell_of(k, &|r| us(micros_per(Some(r.cpu.upstream), r.chunks)))
        })?;
        text_row(&mut out, "driver CPU (% of one core)", &kinds, &|k| {
            cell_of(k, &|r| {
                format!(
                    "{:.0}",
                    100.0 * r.cpu.driver.as_secs_f64() / r.cpu.wall.as_secs_f64().max(1e-9)
                )
            })
        })?;
        writeln!(out)?;
        for entry in &results {
            if let Some(err) = &entry.1.first_error {
                notes.push(format!("{} at {count} streams: {err}", entry.0.label()));
            }
        }

        let pg = |pick: StreamPick, unit: &str| {
            if kinds.contains(&Kind::OursPostgres) {
                format!(
                    "; PostgreSQL {} {unit}",
                    fmt_opt(added_of(&figures, Kind::OursPostgres, pick))
                )
            } else {
                String::new()
            }
        };
        let limit = match count {
            100 => Some(5.0),
            300 => Some(20.0),
            _ => None,
        };
        if let Some(limit) = limit {
            let ours = added_of(&figures, Kind::Ours, |f| f.ttft99);
            let node = added_of(&figures, Kind::Node, |f| f.ttft99);
            targets.push(Target {
                what: format!("added time to first token p99 <= {limit} ms at {count} streams"),
                figure: format!(
                    "{} ms (Node {} ms{})",
                    fmt_opt(ours),
                    fmt_opt(node),
                    pg(|f| f.ttft99, "ms")
                ),
                met: ours.map(|v| v <= limit),
            });
        }
        if count == 100 {
            let ours = added_of(&figures, Kind::Ours, |f| f.gap99);
            let node = added_of(&figures, Kind::Node, |f| f.gap99);
            targets.push(Target {
                what: "added per-token latency p99 <= 0.5 ms at 100 streams".to_owned(),
                figure: format!(
                    "{} ms (Node {} ms{})",
                    fmt_opt(ours),
                    fmt_opt(node),
                    pg(|f| f.gap99, "ms")
                ),
                met: ours.map(|v| v <= 0.5),
            });
            let cpu = |kind: Kind| {
                figures
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .and_then(|(_, f)| f.cpu_per_token)
            };
            let pg_cpu = if kinds.contains(&Kind::OursPostgres) {
                format!("; PostgreSQL {} us", us(cpu(Kind::OursPostgres)))
            } else {
                String::new()
            };
            targets.push(Target {
                what: "CPU per streamed token <= 15 us, both processes, 100 streams".to_owned(),
                figure: format!(
                    "{} us (Node {} us{pg_cpu})",
                    us(cpu(Kind::Ours)),
                    us(cpu(Kind::Node))
                ),
                met: cpu(Kind::Ours).map(|v| v <= 15.0),
            });
        }
        if count >= 1000 {
            for entry in results.iter().filter(|e| e.0.is_ours()) {
                let r = &entry.1;
                targets.push(Target {
                    what: format!("zero lost chunks at {count} streams ({})", column(entry.0)),
                    figure: format!(
                        "{} chunks lost in {} replies that ended normally, {} out of order; \
                         {} of {} turns ended in an error",
                        r.lost_chunks,
                        r.replies + r.short,
                        r.out_of_order,
                        r.failed,
                        r.replies + r.short + r.failed
                    ),
                    met: Some(r.lost_chunks == 0 && r.out_of_order == 0 && r.failed == 0),
                });
            }
        }
    }

    if !report.turns.is_empty() {
        writeln!(out, "### Chat turns, closed loop, short replies\n")?;
        let clients = report.turns.first().map_or(0, |(_, r)| r.clients);
        let mut per: Vec<TurnFigures> = Vec::new();
        for (kind, result) in report.turns.iter_mut() {
            per.push(TurnFigures {
                kind: *kind,
                rate: result.per_second(),
                p50: result.latency.percentile(50.0),
                p99: result.latency.percentile(99.0),
                cpu_per_turn: micros_per(result.cpu.server, result.turns),
                turns: result.turns,
                failed: result.failed,
            });
            if let Some(err) = &result.first_error {
                notes.push(format!("{} in the turns scenario: {err}", kind.label()));
            }
        }
        let kinds: Vec<Kind> = COLUMNS
            .into_iter()
            .filter(|k| per.iter().any(|p| p.kind == *k))
            .collect();
        let get = |kind: Kind, f: TurnPick| per.iter().find(|p| p.kind == kind).and_then(f);
        header(&mut out, &kinds)?;
        let rows: [(String, TurnPick, bool); 6] = [
            (
                format!("turns per second ({clients} clients)"),
                |p| Some(p.rate),
                false,
            ),
            ("turn latency p50 (ms)".to_owned(), |p| p.p50, true),
            ("turn latency p99 (ms)".to_owned(), |p| p.p99, true),
            (
                "server CPU per turn (us)".to_owned(),
                |p| p.cpu_per_turn,
                false,
            ),
            ("turns done".to_owned(), |p| Some(p.turns as f64), false),
            ("turns failed".to_owned(), |p| Some(p.failed as f64), false),
        ];
        for (name, pick, show_added) in rows {
            figure_row(&mut out, &name, &kinds, &|k| get(k, pick), show_added)?;
        }
        writeln!(out)?;
        for (kind, db) in [(Kind::Ours, "SQLite"), (Kind::OursPostgres, "PostgreSQL")] {
            if !kinds.contains(&kind) {
                continue;
            }
            let rate = get(kind, |p| Some(p.rate));
            let overhead = get(kind, |p| p.p99)
                .zip(get(Kind::Direct, |p| p.p99))
                .map(|(o, d)| o - d);
            targets.push(Target {
                what: format!("at least 1,000 chat turns/s on {db} (short replies)"),
                figure: format!(
                    "{} turns/s (Node {})",
                    fmt_opt(rate),
                    fmt_opt(get(Kind::Node, |p| Some(p.rate)))
                ),
                met: rate.map(|r| r >= 1000.0),
            });
            targets.push(Target {
                what: format!("turn overhead p99 <= 10 ms ({db})"),
                figure: format!("{} ms at the rate above", fmt_opt(overhead)),
                met: overhead.map(|v| v <= 10.0),
            });
        }
    }

    if !report.fanout.is_empty() {
        writeln!(out, "### Fan-out: one room, every reply to every member\n")?;
        writeln!(
            out,
            "| members | system | joined / refused / closed forming / closed streaming | room formed in (s) | \
             replies | chunks delivered / expected | deliveries per s (the server's intake: members x chunks stamped per s) | \
             latency from the server's stamp p50 / p99 (ms) | spread from the first receipt p50 / p99 (ms) | \
             server CPU per delivery (us) | driver CPU (% of one core) |"
        )?;
        writeln!(out, "|{}", " --- |".repeat(11))?;
        for (kind, r) in report.fanout.iter_mut() {
            let lat50 = r.latency.percentile(50.0);
            let lat99 = r.latency.percentile(99.0);
            let spread50 = r.spread.percentile(50.0);
            let spread99 = r.spread.percentile(99.0);
            writeln!(
                out,
                "| {} | {} | {} / {} / {} / {} | {:.1} | {} of {} | {} / {} | {:.0} ({:.0}) | {} / {} | {} / {} | {} | {:.0} |",
                r.members,
                column(*kind),
                r.joined,
                r.refused,
                r.closed_forming,
                r.closed_streaming,
                r.form_time.as_secs_f64(),
                r.replies_complete,
                r.replies,
                r.deliveries,
                r.expected,
                r.per_second(),
                r.intake_per_second(),
                ms(lat50),
                ms(lat99),
                ms(spread50),
                ms(spread99),
                us(micros_per(r.cpu.server, r.deliveries)),
                100.0 * r.cpu.driver.as_secs_f64() / r.cpu.wall.as_secs_f64().max(1e-9),
            )?;
            if let Some(err) = &r.first_error {
                notes.push(format!(
                    "{} in the {}-member room: {err}",
                    kind.label(),
                    r.members
                ));
            }
        }
        writeln!(out)?;
        let fanout = &report.fanout;
        for (kind, r) in fanout.iter().filter(|(k, _)| k.is_ours()) {
            let node = fanout
                .iter()
                .find(|(k, n)| *k == Kind::Node && n.members == r.members)
                .map(|(_, n)| n);
            let mut latency = r.latency.clone();
            let p99 = latency.percentile(99.0);
            let node_figure = node.map_or_else(
                || "-".to_owned(),
                |n| {
                    let mut l = n.latency.clone();
                    format!("{:.0}/s, p99 {} ms", n.per_second(), ms(l.percentile(99.0)))
                },
            );
            let whole = r.refused == 0
                && r.closed_forming == 0
                && r.closed_streaming == 0
                && r.deliveries == r.expected;
            targets.push(Target {
                what: format!(
                    "fan-out: a {}-member room forms with nobody dropped and gets every chunk at \
                     >= 250k deliveries/s, p99 <= 20 ms ({})",
                    r.members,
                    column(*kind)
                ),
                figure: format!(
                    "{} dropped, {} of {} chunks, {:.0} deliveries/s, p99 {} ms (Node {node_figure})",
                    r.refused + r.closed_forming + r.closed_streaming,
                    r.deliveries,
                    r.expected,
                    r.per_second(),
                    ms(p99)
                ),
                met: Some(whole && r.per_second() >= 250_000.0 && p99.is_some_and(|p| p <= 20.0)),
            });
        }
    }

    if let Some(growth) = report.growth.as_mut() {
        let (short_n, long_n) = (growth.short.messages, growth.long.messages);
        writeln!(
            out,
            "### Growth: reading a chat of {long_n} messages beside one of {short_n} (ours, SQLite)\n"
        )?;
        writeln!(
            out,
            "| request | {short_n} messages p50 / p99 (ms) | {long_n} messages p50 / p99 (ms) |"
        )?;
        writeln!(out, "| --- | --- | --- |")?;
        let mut rows: Vec<(&str, f64, f64)> = Vec::new();
        for (name, short, long) in [
            (
                "latest history page (50)",
                &mut growth.short.latest_page,
                &mut growth.long.latest_page,
            ),
            (
                "the page before it (cursor)",
                &mut growth.short.previous_page,
                &mut growth.long.previous_page,
            ),
            (
                "resume of the last 10 messages",
                &mut growth.short.resume,
                &mut growth.long.resume,
            ),
        ] {
            let (s50, s99) = (short.percentile(50.0), short.percentile(99.0));
            let (l50, l99) = (long.percentile(50.0), long.percentile(99.0));
            writeln!(
                out,
                "| {name} | {} / {} | {} / {} |",
                ms(s50),
                ms(s99),
                ms(l50),
                ms(l99)
            )?;
            if let (Some(s), Some(l)) = (s50, l50) {
                rows.push((name, s, l));
            }
        }
        writeln!(
            out,
            "\nFilling the long chat (one INSERT ... SELECT in sqlite3): {:.1} s. Last page held {} \
             messages, last resume replayed {} (50 and 10 expected).\n",
            growth.fill_time.as_secs_f64(),
            growth.long.page_len,
            growth.long.replayed
        )?;
        // "Independent of length": the long chat's median within 1.5 x the short one's + 0.5 ms.
        let flat = rows.iter().all(|&(_, s, l)| l <= 1.5 * s + 0.5);
        targets.push(Target {
            what: format!(
                "growth: history page and resume time independent of chat length ({long_n} messages)"
            ),
            figure: rows
                .iter()
                .map(|(name, s, l)| format!("{name} {s:.2} -> {l:.2} ms"))
                .collect::<Vec<_>>()
                .join("; "),
            met: (!rows.is_empty()).then_some(flat),
        });
    }

    if !report.idle.is_empty() {
        writeln!(out, "### Memory per idle WebSocket\n")?;
        writeln!(
            out,
            "| sockets | Node ws relay (KiB per socket) | ours, edge + core (KiB per socket) | Node RSS (MiB) | ours RSS (MiB) |"
        )?;
        writeln!(out, "| --- | --- | --- | --- | --- |")?;
        let node = report
            .idle
            .iter()
            .find(|(k, _)| *k == Kind::Node)
            .map(|(_, r)| r);
        let ours = report
            .idle
            .iter()
            .find(|(k, _)| *k == Kind::Ours)
            .map(|(_, r)| r);
        let mut steps: Vec<usize> = report
            .idle
            .iter()
            .flat_map(|(_, r)| r.steps.iter().map(|s| s.0))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        let at = |r: Option<&IdleResult>, n: usize| -> (Option<f64>, Option<f64>) {
            let Some(r) = r else { return (None, None) };
            let per = r.per_socket().into_iter().find(|p| p.0 == n).map(|p| p.1);
            let rss = r
                .steps
                .iter()
                .find(|s| s.0 == n)
                .map(|s| s.1 as f64 / 1024.0);
            (per, rss)
        };
        for &n in &steps {
            let (np, nr) = at(node, n);
            let (op, or) = at(ours, n);
            writeln!(
                out,
                "| {n} | {} | {} | {} | {} |",
                fmt_opt(np),
                fmt_opt(op),
                fmt_opt(nr),
                fmt_opt(or)
            )?;
            if n >= 10_000 {
                targets.push(Target {
                    what: format!("memory per idle WebSocket <= 6 KiB at {n} sockets"),
                    figure: format!("{} KiB (Node {} KiB)", fmt_opt(op), fmt_opt(np)),
                    met: op.map(|v| v <= 6.0),
                });
            }
        }
        for (kind, r) in &report.idle {
            writeln!(
                out,
                "\n{}: {:.1} MiB before any socket.",
                kind.label(),
                r.baseline_kib as f64 / 1024.0
            )?;
            if let Some(err) = &r.error {
                notes.push(format!("{} idle sockets: {err}", kind.label()));
            }
        }
        writeln!(out)?;
    }

    if let Some(soak) = report.soak.as_mut() {
        writeln!(
            out,
            "### Soak: {} connections, each asking for the short reply every {} s (ours, SQLite)\n",
            soak.clients,
            soak.interval.as_secs()
        )?;
        writeln!(out, "| minute | RSS (MiB) | turns so far | failed so far |")?;
        writeln!(out, "| --- | --- | --- | --- |")?;
        for sample in &soak.samples {
            writeln!(
                out,
                "| {:.0} | {:.1} | {} | {} |",
                sample.at.as_secs_f64() / 60.0,
                sample.rss_kib as f64 / 1024.0,
                sample.turns,
                sample.failed
            )?;
        }
        let (p50, p99) = (soak.latency.percentile(50.0), soak.latency.percentile(99.0));
        writeln!(
            out,
            "\n{:.1} MiB before any socket; turn latency p50 {} ms, p99 {} ms.\n",
            soak.baseline_kib as f64 / 1024.0,
            ms(p50),
            ms(p99)
        )?;
        if let Some(err) = &soak.first_error {
            notes.push(format!("soak: {err}"));
        }
        let failed = soak.samples.last().map_or(0, |s| s.failed);
        if let Some((change, per_minute)) = soak.drift() {
            // "Flat": after the first minute, at most 5% (or 2 MiB) more by the end.
            let first = soak.samples.first().map_or(0, |s| s.rss_kib) as f64;
            let flat = (change as f64) <= (first * 0.05).max(2048.0);
            targets.push(Target {
                what: format!(
                    "memory flat across a {:.0}-minute soak with {} active connections",
                    soak.samples.last().map_or(0.0, |s| s.at.as_secs_f64() / 60.0),
                    soak.clients
                ),
                figure: format!(
                    "{:+.1} MiB from minute 1 to the end ({per_minute:+.0} KiB/min), {failed} turns failed",
                    change as f64 / 1024.0
                ),
                met: Some(flat && failed == 0),
            });
        }
    }

    writeln!(out, "### Against issue 14's targets\n")?;
    writeln!(out, "| target | ours | met |")?;
    writeln!(out, "| --- | --- | --- |")?;
    for target in &targets {
        let met = match target.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "not measured",
        };
        writeln!(out, "| {} | {} | {met} |", target.what, target.figure)?;
    }
    writeln!(out)?;
    if !notes.is_empty() {
        writeln!(out, "Notes and errors seen (first of each scenario):\n")?;
        for note in notes {
            writeln!(out, "- {note}")?;
        }
        writeln!(out)?;
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn fmt_opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}
