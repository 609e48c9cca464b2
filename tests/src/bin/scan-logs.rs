//! `scan-logs <dir> [--partial]`: the suite's last step (scripts/test.sh). Scans the log
//! copies the test processes wrote to `<dir>` for every token and message text they recorded
//! (see `chat_tests::log_capture`) and exits 1, printing each offending line, on a leak or when
//! the capture proves nothing (no logs, no secrets, no verbose lines from both servers).
//! `--partial` (a filtered run) passes when no test stack ran at all.

use std::path::PathBuf;
use std::process::ExitCode;

use chat_tests::log_capture;

fn main() -> ExitCode {
    let mut dir = None;
    let mut partial = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--partial" => partial = true,
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("usage: scan-logs <dir> [--partial]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: scan-logs <dir> [--partial]");
        return ExitCode::from(2);
    };
    let summary = match log_capture::scan(&dir) {
        Ok(summary) => summary,
        Err(err) => {
            eprintln!("scan-logs: cannot read {}: {err}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if partial && summary.log_files == 0 {
        eprintln!("scan-logs: this partial run started no test stack; nothing to scan");
        return ExitCode::SUCCESS;
    }
    let mut kinds: Vec<_> = summary.secrets.iter().collect();
    kinds.sort();
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    eprintln!(
        "scan-logs: {} lines in {} log files ({} chat_core, {} chat_edge, {} DEBUG/TRACE from \
         our crates) against {} secrets ({}; {} short ones or deltas matched whole or quoted; \
         {} texts skipped as a frame also carried them openly)",
        summary.log_lines,
        summary.log_files,
        summary.core_lines,
        summary.edge_lines,
        summary.verbose_lines,
        summary.secrets.values().sum::<usize>(),
        kinds.join(", "),
        summary.short_secrets,
        summary.public_secrets,
    );
    let problems = summary.problems();
    if problems.is_empty() {
        eprintln!("scan-logs: no token or message text in the logs");
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("scan-logs: FAIL: {problem}");
    }
    eprintln!(
        "scan-logs: {} problem(s); the capture is in {}",
        problems.len(),
        dir.display()
    );
    ExitCode::FAILURE
}
