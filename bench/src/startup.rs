//! Start-up cost of the `nexus` binary: the time from starting `nexus serve` (embedded
//! database, already created by an earlier start) to its first ready `/readyz`, and the time
//! `nexus --version` takes to run, for the binary built next to this one and, with
//! `--compare PATH`, for another build of it (before a change), alternating run by run so both
//! see the same machine.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::machine::percentile;

pub(crate) async fn run(runs: usize, compare: Option<PathBuf>) -> anyhow::Result<()> {
    let runs = runs.clamp(1, 200);
    let mut binaries = vec![(
        "this build".to_owned(),
        std::env::current_exe()?.with_file_name("nexus"),
    )];
    if let Some(other) = compare {
        binaries.push((other.display().to_string(), other));
    }
    for (_, path) in &binaries {
        anyhow::ensure!(path.exists(), "{} is not built", path.display());
    }
    let scratch = std::env::temp_dir().join(format!("nexus-bench-startup-{}", std::process::id()));
    let mut ready = vec![Vec::new(); binaries.len()];
    let mut version = vec![Vec::new(); binaries.len()];
    for (i, (_, path)) in binaries.iter().enumerate() {
        // The first start creates the database and its key; it is not measured.
        serve_until_ready(path, &scratch.join(i.to_string())).await?;
    }
    for _ in 0..runs {
        for (i, (_, path)) in binaries.iter().enumerate() {
            ready[i].push(serve_until_ready(path, &scratch.join(i.to_string())).await?);
            let started = Instant::now();
            let status = Command::new(path)
                .arg("--version")
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "nexus --version failed");
            version[i].push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    drop(std::fs::remove_dir_all(&scratch));
    println!("nexus start-up, {runs} runs per binary, alternating; embedded database, warm\n");
    println!(
        "{:<44} {:>14} {:>14} {:>14} {:>16}",
        "binary", "ready p50 ms", "ready p90 ms", "ready max ms", "--version p50 ms"
    );
    for (i, (name, _)) in binaries.iter().enumerate() {
        ready[i].sort_by(f64::total_cmp);
        version[i].sort_by(f64::total_cmp);
        println!(
            "{name:<44} {:>14.1} {:>14.1} {:>14.1} {:>16.2}",
            percentile(&ready[i], 50.0),
            percentile(&ready[i], 90.0),
            ready[i].last().copied().unwrap_or_default(),
            percentile(&version[i], 50.0),
        );
    }
    if binaries.len() == 2 {
        println!(
            "\nratio this/other: ready p50 {:.3}, --version p50 {:.3}",
            percentile(&ready[0], 50.0) / percentile(&ready[1], 50.0),
            percentile(&version[0], 50.0) / percentile(&version[1], 50.0),
        );
    }
    Ok(())
}

/// Starts `nexus serve` on `data_dir`, waits for `/readyz` (at most 30 s), stops it; returns
/// the milliseconds until ready.
async fn serve_until_ready(binary: &Path, data_dir: &Path) -> anyhow::Result<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/readyz");
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("serve")
        .env_clear()
        .env("NEXUS_DATA_DIR", data_dir)
        .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
        .env("NEXUS_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = loop {
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
        if started.elapsed() > Duration::from_secs(30) {
            break Err(anyhow::anyhow!("nexus serve was not ready within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    drop(child.kill());
    drop(child.wait());
    result
}
