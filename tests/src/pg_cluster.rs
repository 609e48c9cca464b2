//! A PostgreSQL cluster of a test's own (`scripts/pg-throwaway.sh`), for tests that stop and
//! start the server under a running core: the shared cluster of `scripts/test.sh` serves other
//! tests meanwhile. Removed when dropped. Panics, saying why, when it cannot start.

use std::path::PathBuf;
use std::process::Command;

pub struct PgCluster {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    dir: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-throwaway.sh")
}

fn run(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run pg-throwaway.sh: {e}"));
    assert!(
        out.status.success(),
        "pg-throwaway.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PgCluster {
    pub fn start() -> Self {
        let exports = run(&["start"]);
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("pg-throwaway.sh printed no {name}: {exports}"))
                .to_string()
        };
        Self {
            url: value("TEST_DATABASE_URL"),
            dir: value("PG_THROWAWAY_DIR"),
        }
    }

    /// Stops the server (data kept): clients see the database go away.
    pub fn pause(&self) {
        run(&["pause", &self.dir]);
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        run(&["resume", &self.dir]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.dir])
            .output();
    }
}
