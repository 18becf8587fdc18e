//! `bench`: benchmarks that run against the real Postgres (and Redis) on localhost, each on a
//! fresh database, bounded in count and time, printing a table and the machine they ran on.
//!
//! ```text
//! cargo run --release -p nexus-bench -- pickup [--runs N]
//! cargo run --release -p nexus-bench -- burst [--routines R] [--boundaries B] [--workers N]
//! ```

mod burst;
mod machine;
mod pickup;

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
    println!("{}", machine::describe());
    match args.first().map(String::as_str) {
        Some("pickup") => pickup::run(flag("--runs", 200)?).await,
        Some("burst") => {
            burst::run(
                flag("--routines", 1_000)?,
                flag("--boundaries", 2)?,
                flag("--workers", 8)?,
            )
            .await
        }
        _ => {
            eprintln!(
                "usage: bench pickup [--runs N] | burst [--routines R] [--boundaries B] [--workers N]"
            );
            std::process::exit(2);
        }
    }
}
