//! `bench`: benchmarks that run against the real Postgres (and Redis) on localhost, each on a
//! fresh database, bounded in count and time, printing a table and the machine they ran on.
//!
//! ```text
//! bench pickup  [--runs N]
//! bench burst   [--routines R] [--boundaries B] [--workers N] [--batch N]
//!               [--mode in-process|serve|split] [--processes P] [--lookahead-ms MS]
//! bench ingest  [--concurrency 16,64] [--seconds S] [--modes hmac_sha256|all|m1,m2] [--apis 1,2]
//!               [--repeats]
//! bench latency [--rates 10,200] [--seconds S]
//! bench scale   [--routines 10000,1000000] [--due N]
//! bench queue   [--jobs N] [--loops N]
//! bench jitter  [--routines R] [--jitter S] [--workers N]
//! bench fanout  [--routines R] [--workers N] [--rounds N]
//! bench embedded [--routines 1000,10000] [--boundaries B] [--runs N] [--concurrency 16,64]
//!               [--seconds S]
//! bench week    [--routines R] [--days D]
//! bench history [--routines R] [--history H] [--expired E] [--boundaries B] [--workers N]
//!               [--batch N] [--requests N]
//! bench startup [--runs N] [--compare PATH-TO-ANOTHER-nexus]
//! bench console [--routines R] [--loads N] [--runs N]
//! ```
//!
//! Build with `cargo build --release --workspace`: the process scenarios start the role
//! binaries found next to this one.

mod burst;
mod cluster;
mod console;
mod embedded;
mod fanout;
mod fleet;
mod history;
mod ingest;
mod jitter;
mod latency;
mod machine;
mod pickup;
mod queue;
mod scale;
mod slowloris;
mod startup;
mod upcoming;
mod week;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| -> anyhow::Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args
                .get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?
                .parse()?),
            None => Ok(default),
        }
    };
    let text = |name: &str, default: &str| -> anyhow::Result<String> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args
                .get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?
                .clone()),
            None => Ok(default.to_owned()),
        }
    };
    let list = |name: &str, default: &str| -> anyhow::Result<Vec<usize>> {
        text(name, default)?
            .split(',')
            .map(|n| Ok(n.trim().parse()?))
            .collect()
    };
    nexus_shared::telemetry::install_tls_provider();
    println!("{}", machine::describe());
    match args.first().map(String::as_str) {
        Some("pickup") => pickup::run(flag("--runs", 200)?).await,
        Some("burst") => {
            burst::run(burst::Shape {
                routines: flag("--routines", 1_000)?,
                boundaries: flag("--boundaries", 2)?,
                workers: flag("--workers", 8)?,
                processes: flag("--processes", 2)?,
                batch: flag("--batch", 100)?,
                mode: text("--mode", "in-process")?.parse()?,
                lookahead_ms: u64::try_from(flag("--lookahead-ms", 5_000)?)?,
            })
            .await
        }
        Some("embedded") => {
            embedded::run(embedded::Shape {
                routines: list("--routines", "1000,10000")?,
                boundaries: flag("--boundaries", 2)?,
                runs: flag("--runs", 200)?,
                concurrency: list("--concurrency", "16,64")?,
                seconds: u64::try_from(flag("--seconds", 10)?)?,
            })
            .await
        }
        Some("week") => {
            week::run(week::Shape {
                routines: flag("--routines", 1_000)?,
                days: flag("--days", 7)?,
            })
            .await
        }
        Some("history") => {
            history::run(history::Shape {
                routines: flag("--routines", 10_000)?,
                history: flag("--history", 5_000_000)?,
                expired: flag("--expired", 2_000_000)?,
                boundaries: flag("--boundaries", 2)?,
                workers: flag("--workers", 2)?,
                batch: flag("--batch", 500)?,
                requests: flag("--requests", 200)?,
            })
            .await
        }
        Some("purge") => {
            let url = text("--database", "")?;
            anyhow::ensure!(
                !url.is_empty(),
                "purge needs --database URL (a kept database)"
            );
            history::direct_batches(&url, flag("--batches", 10)?).await
        }
        Some("ingest") => {
            ingest::run(ingest::Shape {
                concurrencies: &list("--concurrency", "16,64")?,
                seconds: u64::try_from(flag("--seconds", 10)?)?,
                modes: &text("--modes", "hmac_sha256")?,
                apis: &list("--apis", "1,2")?,
                repeats: args.iter().any(|a| a == "--repeats"),
            })
            .await
        }
        Some("latency") => {
            latency::run(
                &list("--rates", "10,200")?,
                u64::try_from(flag("--seconds", 10)?)?,
            )
            .await
        }
        Some("scale") => {
            scale::run(&list("--routines", "10000,1000000")?, flag("--due", 1_000)?).await
        }
        Some("jitter") => {
            jitter::run(
                flag("--routines", 10_000)?,
                flag("--jitter", 60)?,
                flag("--workers", 8)?,
            )
            .await
        }
        Some("fanout") => {
            fanout::run(
                flag("--routines", 10_000)?,
                flag("--workers", 8)?,
                flag("--rounds", 2)?,
            )
            .await
        }
        Some("queue") => queue::run(flag("--jobs", 50_000)?, flag("--loops", 8)?).await,
        Some("startup") => {
            let compare = text("--compare", "")?;
            startup::run(
                flag("--runs", 30)?,
                (!compare.is_empty()).then(|| std::path::PathBuf::from(compare)),
            )
            .await
        }
        Some("upcoming") => upcoming::run(flag("--calls", 200)?).await,
        Some("console") => {
            console::run(
                flag("--routines", 10_000)?,
                flag("--loads", 200)?,
                flag("--runs", 3)?,
            )
            .await
        }
        Some("slowloris") => {
            slowloris::run(flag("--connections", 1_000)?, flag("--calls", 500)?).await
        }
        _ => {
            eprintln!(
                "usage: bench pickup|burst|embedded|history|purge|week|ingest|fanout|jitter|latency|scale|queue|upcoming|slowloris|startup|console [options] (see bench/src/main.rs)"
            );
            std::process::exit(2);
        }
    }
}
