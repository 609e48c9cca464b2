//! The report: the machine and the load on it, then one markdown table per scenario with
//! the three systems side by side and "added" columns (system minus the direct read of the
//! upstream in the same run), then issue 14's targets each marked met or missed. Printed to
//! stdout, to be pasted into `docs/performance.md`.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::idle::IdleResult;
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
                 turns: {} clients x {} s, short reply (5 deltas at once); idle sockets {:?}",
                args.upstream.deltas,
                args.upstream.delay_ms,
                args.streams,
                args.rounds,
                args.turn_clients,
                args.turn_secs,
                args.idle,
            ),
            streams: Vec::new(),
            turns: Vec::new(),
            idle: Vec::new(),
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

/// One target line: what it asks, the figure, met or not.
struct Target {
    what: String,
    figure: String,
    met: Option<bool>,
}

/// Writes the report to stdout.
///
/// # Errors
/// When stdout is closed.
pub fn print(report: &mut Report) -> anyhow::Result<()> {
    let mut out = String::new();
    let mut targets: Vec<Target> = Vec::new();
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
    let mut notes = Vec::new();
    for count in counts {
        let mut figures = Vec::new();
        let mut results: Vec<&mut (Kind, StreamResult)> = report
            .streams
            .iter_mut()
            .filter(|(_, r)| r.streams == count)
            .collect();
        for (kind, result) in results.iter_mut().map(|e| (e.0, &mut e.1)) {
            figures.push((kind, stream_figures(result)));
        }
        let get = |kind: Kind| figures.iter().find(|(k, _)| *k == kind).map(|(_, f)| f);
        let (direct, node, ours) = (get(Kind::Direct), get(Kind::Node), get(Kind::Ours));
        writeln!(out, "### {count} concurrent streams\n")?;
        writeln!(
            out,
            "| figure | direct upstream | Node ws relay | ours | Node added | ours added |"
        )?;
        writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
        let row = |out: &mut String, name: &str, pick: &dyn Fn(&StreamFigures) -> Option<f64>| {
            let d = direct.and_then(pick);
            let n = node.and_then(pick);
            let o = ours.and_then(pick);
            writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                ms(d),
                ms(n),
                ms(o),
                added(n, d),
                added(o, d)
            )
        };
        row(&mut out, "time to first token p50 (ms)", &|f| f.ttft50)?;
        row(&mut out, "time to first token p99 (ms)", &|f| f.ttft99)?;
        row(&mut out, "per-token inter-arrival p50 (ms)", &|f| f.gap50)?;
        row(&mut out, "per-token inter-arrival p99 (ms)", &|f| f.gap99)?;
        let cell = |kind: Kind, f: &dyn Fn(&StreamResult) -> String| {
            results
                .iter()
                .find(|e| e.0 == kind)
                .map_or_else(|| "-".to_owned(), |e| f(&e.1))
        };
        let line = |name: &str, f: &dyn Fn(&StreamResult) -> String| {
            format!(
                "| {name} | {} | {} | {} | | |",
                cell(Kind::Direct, f),
                cell(Kind::Node, f),
                cell(Kind::Ours, f)
            )
        };
        writeln!(
            out,
            "{}",
            line("chunks received / expected", &|r| format!(
                "{} / {}",
                r.chunks, r.expected_chunks
            ))
        )?;
        writeln!(
            out,
            "{}",
            line(
                "replies complete / ended in an error / short of chunks / out of order",
                &|r| format!(
                    "{} / {} / {} / {}",
                    r.replies, r.failed, r.short, r.out_of_order
                )
            )
        )?;
        writeln!(
            out,
            "{}",
            line("server CPU per token (us)", &|r| us(micros_per(
                r.cpu.server,
                r.chunks
            )))
        )?;
        writeln!(
            out,
            "{}",
            line("fake upstream CPU per token (us)", &|r| us(micros_per(
                Some(r.cpu.upstream),
                r.chunks
            )))
        )?;
        writeln!(
            out,
            "{}",
            line("driver CPU (% of one core)", &|r| format!(
                "{:.0}",
                100.0 * r.cpu.driver.as_secs_f64() / r.cpu.wall.as_secs_f64().max(1e-9)
            ))
        )?;
        writeln!(out)?;
        for entry in &results {
            if let Some(err) = &entry.1.first_error {
                notes.push(format!("{} at {count} streams: {err}", entry.0.label()));
            }
        }

        let added_of = |f: Option<&StreamFigures>, pick: fn(&StreamFigures) -> Option<f64>| match (
            f.and_then(pick),
            direct.and_then(pick),
        ) {
            (Some(s), Some(d)) => Some(s - d),
            _ => None,
        };
        let ours_ttft = added_of(ours, |f| f.ttft99);
        let node_ttft = added_of(node, |f| f.ttft99);
        let limit = match count {
            100 => Some(5.0),
            300 => Some(20.0),
            _ => None,
        };
        if let Some(limit) = limit {
            targets.push(Target {
                what: format!("added time to first token p99 <= {limit} ms at {count} streams"),
                figure: format!("{} ms (Node {} ms)", fmt_opt(ours_ttft), fmt_opt(node_ttft)),
                met: ours_ttft.map(|v| v <= limit),
            });
        }
        if count == 100 {
            let ours_gap = added_of(ours, |f| f.gap99);
            let node_gap = added_of(node, |f| f.gap99);
            targets.push(Target {
                what: "added per-token latency p99 <= 0.5 ms at 100 streams".to_owned(),
                figure: format!("{} ms (Node {} ms)", fmt_opt(ours_gap), fmt_opt(node_gap)),
                met: ours_gap.map(|v| v <= 0.5),
            });
            let ours_cpu = ours.and_then(|f| f.cpu_per_token);
            let node_cpu = node.and_then(|f| f.cpu_per_token);
            targets.push(Target {
                what: "CPU per streamed token <= 15 us, both processes, 100 streams".to_owned(),
                figure: format!("{} us (Node {} us)", us(ours_cpu), us(node_cpu)),
                met: ours_cpu.map(|v| v <= 15.0),
            });
        }
        if count >= 1000
            && let Some(entry) = results.iter().find(|e| e.0 == Kind::Ours)
        {
            let r = &entry.1;
            targets.push(Target {
                what: format!("zero lost chunks at {count} streams"),
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

    if !report.turns.is_empty() {
        writeln!(out, "### Chat turns, closed loop, short replies\n")?;
        writeln!(
            out,
            "| figure | direct upstream | Node ws relay | ours | Node added | ours added |"
        )?;
        writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
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
        let pick = |kind: Kind, f: &dyn Fn(&TurnFigures) -> Option<f64>| {
            per.iter().find(|p| p.kind == kind).and_then(f)
        };
        let row = |out: &mut String,
                   name: &str,
                   f: &dyn Fn(&TurnFigures) -> Option<f64>,
                   show_added: bool| {
            let (d, n, o) = (
                pick(Kind::Direct, f),
                pick(Kind::Node, f),
                pick(Kind::Ours, f),
            );
            let (an, ao) = if show_added {
                (added(n, d), added(o, d))
            } else {
                (String::new(), String::new())
            };
            writeln!(
                out,
                "| {name} | {} | {} | {} | {an} | {ao} |",
                ms(d),
                ms(n),
                ms(o)
            )
        };
        row(
            &mut out,
            &format!("turns per second ({clients} clients)"),
            &|p| Some(p.rate),
            false,
        )?;
        row(&mut out, "turn latency p50 (ms)", &|p| p.p50, true)?;
        row(&mut out, "turn latency p99 (ms)", &|p| p.p99, true)?;
        row(
            &mut out,
            "server CPU per turn (us)",
            &|p| p.cpu_per_turn,
            false,
        )?;
        row(&mut out, "turns done", &|p| Some(p.turns as f64), false)?;
        row(&mut out, "turns failed", &|p| Some(p.failed as f64), false)?;
        writeln!(out)?;
        let ours_rate = pick(Kind::Ours, &|p| Some(p.rate));
        let ours_p99 = pick(Kind::Ours, &|p| p.p99);
        let direct_p99 = pick(Kind::Direct, &|p| p.p99);
        let overhead = ours_p99.zip(direct_p99).map(|(o, d)| o - d);
        targets.push(Target {
            what: "at least 1,000 chat turns/s on SQLite (short replies)".to_owned(),
            figure: format!(
                "{} turns/s (Node {})",
                fmt_opt(ours_rate),
                fmt_opt(pick(Kind::Node, &|p| Some(p.rate)))
            ),
            met: ours_rate.map(|r| r >= 1000.0),
        });
        targets.push(Target {
            what: "turn overhead p99 <= 10 ms (SQLite)".to_owned(),
            figure: format!("{} ms at the rate above", fmt_opt(overhead)),
            met: overhead.map(|v| v <= 10.0),
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
        writeln!(out, "Errors seen (first of each scenario):\n")?;
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
