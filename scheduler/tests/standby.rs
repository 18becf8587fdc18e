//! Two real `nexus-scheduler` processes: the one that does not lead still exports its metric
//! families from the start (`nexus_scheduler_is_leader 0`), so a dashboard can tell a healthy
//! standby from a dead exporter.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use nexus_shared::crypto::SecretKey;
use nexus_tests::{TestDb, eventually, redis_url};

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn spawn(db: &TestDb, prefix: &str, key: &SecretKey, port: u16) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_nexus-scheduler"))
        .env_clear()
        .env("NEXUS_DATABASE_URL", &db.url)
        .env("NEXUS_REDIS_URL", redis_url())
        .env("NEXUS_REDIS_PREFIX", prefix)
        .env("NEXUS_SECRET_KEY", key.to_base64())
        .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
        .env("NEXUS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nexus-scheduler starts");
    Process(child)
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[tokio::test]
async fn a_standby_scheduler_exports_its_metric_families_from_the_start() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let prefix = format!("nexus-test:{}", uuid::Uuid::new_v4().simple());
    let ports = [nexus_tests::free_port(), nexus_tests::free_port()];
    let _processes: Vec<Process> = ports
        .iter()
        .map(|port| spawn(&db, &prefix, &key, *port))
        .collect();
    let client = nexus_tests::http_client();
    // Once one of them leads, both pages are complete: one reports 1, the other 0.
    let pages = eventually(30, "one leader and one standby", || {
        let client = client.clone();
        async move {
            let mut pages = Vec::new();
            for port in ports {
                let page = client
                    .get(format!("http://127.0.0.1:{port}/metrics"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                pages.push(page);
            }
            let mut leading: Vec<f64> = pages
                .iter()
                .map(|page| sample(page, "nexus_scheduler_is_leader"))
                .collect::<Option<_>>()?;
            leading.sort_by(f64::total_cmp);
            (leading == [0.0, 1.0]).then_some(pages)
        }
    })
    .await;
    for page in &pages {
        for family in [
            "# HELP nexus_scheduler_is_leader",
            "# TYPE nexus_fire_lateness_seconds histogram",
            "nexus_fires_total{outcome=\"missed\"}",
            "nexus_scheduler_leadership_changes_total",
            "nexus_scheduler_pass_seconds_count",
        ] {
            assert!(page.contains(family), "{family} missing from:\n{page}");
        }
    }
}
