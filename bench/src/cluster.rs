//! Real processes for the benchmarks: the release binaries next to the `bench` binary, started
//! against a fresh database and a private Redis prefix, killed when the cluster is dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nexus_tests::{TestDb, redis_url};

/// The board token every benchmark process accepts.
pub(crate) const BOARD: &str = "bench-board-token-0123456789abcdef";

/// Processes sharing one database and one Redis prefix.
pub(crate) struct Cluster {
    pub(crate) db: TestDb,
    key: String,
    prefix: String,
    children: Vec<(String, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

/// A role binary built next to this one (`cargo build --release --workspace`).
pub(crate) fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built: run `cargo build --release --workspace` first",
        path.display()
    );
    Ok(path)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// A cluster over a fresh, migrated database.
    pub(crate) async fn new() -> Self {
        Self::on(TestDb::create().await)
    }

    /// A cluster over `db`.
    pub(crate) fn on(db: TestDb) -> Self {
        use base64::Engine as _;
        let key: [u8; 32] = nexus_shared::crypto::random_bytes();
        Self {
            db,
            key: base64::engine::general_purpose::STANDARD.encode(key),
            prefix: format!("nexus-bench:{}", uuid::Uuid::new_v4().simple()),
            children: Vec::new(),
        }
    }

    /// Stops the processes and leaves the database behind (its URL printed), for `bench purge`
    /// or `psql` afterwards.
    pub(crate) fn keep_database(mut self) {
        self.stop_processes();
        println!("keeping database {}", self.db.url);
        std::mem::forget(self);
    }

    fn stop_processes(&mut self) {
        for (_, child) in &mut self.children {
            drop(child.kill());
            drop(child.wait());
        }
    }

    /// The Redis key prefix the processes share.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Starts `binary` (with `args` and extra variables), waits until it is ready and returns
    /// its base URL.
    pub(crate) async fn start(
        &mut self,
        name: &str,
        binary_name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<String> {
        let port = free_port()?;
        let mut command = Command::new(binary(binary_name)?);
        command
            .args(args)
            .env_clear()
            .env("NEXUS_DATABASE_URL", &self.db.url)
            .env("NEXUS_REDIS_URL", redis_url())
            .env("NEXUS_REDIS_PREFIX", &self.prefix)
            .env("NEXUS_SECRET_KEY", &self.key)
            .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
            .env("NEXUS_BOOTSTRAP_BOARD_TOKEN", BOARD)
            .env("NEXUS_AUTO_MIGRATE", "false")
            .env("NEXUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn()?;
        self.children.push((name.to_owned(), child));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("{url}/readyz")).send().await
                && response.status().is_success()
            {
                return Ok(url);
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory of each process now and at its peak, in MiB: (name, rss, peak).
    pub(crate) fn memory(&self) -> Vec<(String, f64, f64)> {
        self.children
            .iter()
            .map(|(name, child)| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                    .unwrap_or_default();
                let field = |key: &str| {
                    status
                        .lines()
                        .find(|l| l.starts_with(key))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                        .map_or(f64::NAN, |kb| kb / 1024.0)
                };
                (name.clone(), field("VmRSS:"), field("VmHWM:"))
            })
            .collect()
    }

    /// Prints [`Self::memory`] as a table.
    pub(crate) fn print_memory(&self) {
        println!("\n{:<16} {:>10} {:>10}", "process", "RSS MiB", "peak MiB");
        for (name, rss, peak) in self.memory() {
            println!("{name:<16} {rss:>10.1} {peak:>10.1}");
        }
    }
}
