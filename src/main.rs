//! `nexus`: the operator CLI and the single-process mode.
//!
//! Server commands (they open the database themselves):
//! - `nexus` or `nexus serve`: every role in one process: the API, the scheduler and the worker.
//! - `nexus migrate`: apply pending migrations and exit.
//! - `nexus board-token create [--label LABEL]`: print a new board token on the last line.
//! - `nexus board-token list`: one line per board token (never the token itself).
//! - `nexus board-token revoke ID`: revoke one; every replica refuses it from then on.
//!
//! Client commands (`nexus routines list`, `nexus runs watch RUN`…) talk to a running server
//! over HTTP only: see [`client`] and docs/cli.md.

mod client;
mod key;

use std::sync::Arc;

use anyhow::{Context as _, bail};
use nexus_shared::{
    Config, SystemClock, db,
    runtime::{Resources, shutdown_signal},
    telemetry,
};

const USAGE: &str = "\
Nexus Routines: a distributed scheduler for AI-agent routines.

Usage:
  nexus [serve]                              run all roles in one process
  nexus migrate                              apply pending database migrations
  nexus board-token create [--label LABEL]   create a board (operator) token
  nexus board-token list                     list board tokens: id, label, created, last used
  nexus board-token revoke ID                revoke a board token (refused everywhere at once)
  nexus --help | --version

Client commands talk to a running server over HTTP (NEXUS_URL, default
http://127.0.0.1:8080, and NEXUS_TOKEN, a board token or an agent key):
  companies, agents, projects, routines, triggers, runs, heartbeats, issues, channels,
  activity
  `nexus routines --help` lists a group's commands; `nexus routines run --help` one command's.

Configuration comes from NEXUS_* environment variables; see docs/operations.md.";

enum Command {
    Serve,
    Migrate,
    CreateBoardToken { label: String },
    ListBoardTokens,
    RevokeBoardToken { id: uuid::Uuid },
    Help,
    Version,
}

fn parse(args: &[String]) -> anyhow::Result<Command> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(match args.as_slice() {
        [] | ["serve"] => Command::Serve,
        ["migrate"] => Command::Migrate,
        ["board-token", "create"] => Command::CreateBoardToken {
            label: "cli".to_owned(),
        },
        ["board-token", "create", "--label", label] => Command::CreateBoardToken {
            label: (*label).to_owned(),
        },
        ["board-token", "list"] => Command::ListBoardTokens,
        ["board-token", "revoke", id] => Command::RevokeBoardToken {
            id: id.parse().map_err(|_| {
                anyhow::anyhow!("{id:?} is not a board token id (a UUID)\n\n{USAGE}")
            })?,
        },
        ["-h" | "--help" | "help"] => Command::Help,
        ["-V" | "--version"] => Command::Version,
        _ => bail!("unrecognised arguments: {}\n\n{USAGE}", args.join(" ")),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if client::is_client_command(&args) {
        if args.len() == 1 || (args.len() == 2 && matches!(args[1].as_str(), "--help" | "-h")) {
            println!("{}", client::group_help(&args[0]));
            return Ok(());
        }
        let code = client::run(&args).await;
        std::process::exit(i32::from(code));
    }
    let command = parse(&args)?;
    match command {
        Command::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Command::Version => {
            println!("nexus {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        _ => {}
    }
    let config = Config::from_env().map_err(|e| anyhow::anyhow!(e))?;
    let telemetry = telemetry::init(&config, "nexus");
    let result = run(command, config).await;
    telemetry.shutdown();
    result
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            if let Some(url) = &config.database_url {
                db::create_database_if_missing(url).await?;
                db::migrate(&db::pool(url, 1)?).await?;
            } else {
                // Opening the embedded database applies its migrations.
                connect(config).await?;
            }
            println!("migrations applied");
            Ok(())
        }
        Command::CreateBoardToken { label } => {
            let resources = connect(config).await?;
            let token = resources.store.create_board_token(&label).await?;
            eprintln!(
                "created board token {} (label {label:?}); it is shown only once:",
                token.id
            );
            println!("{}", token.token);
            Ok(())
        }
        Command::ListBoardTokens => {
            let resources = connect(config).await?;
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%dT%H:%MZ").to_string(),
                )
            };
            println!(
                "{:<36}  {:<20}  {:<17}  {:<17}  REVOKED",
                "ID", "LABEL", "CREATED", "LAST USED"
            );
            for token in resources.store.board_tokens().await? {
                println!(
                    "{:<36}  {:<20}  {:<17}  {:<17}  {}",
                    token.id,
                    token.label,
                    time(Some(token.created_at)),
                    time(token.last_used_at),
                    time(token.revoked_at),
                );
            }
            Ok(())
        }
        Command::RevokeBoardToken { id } => {
            let resources = connect(config).await?;
            if !resources.store.revoke_board_token(id).await? {
                bail!("no board token has the id {id}");
            }
            println!("revoked board token {id}");
            Ok(())
        }
        Command::Help | Command::Version => Ok(()),
    }
}

/// Connects with the configured key, or the data directory's key in single-process use.
async fn connect(config: Config) -> anyhow::Result<Resources> {
    let key = key::resolve(&config)?;
    if let (Some(url), true) = (&config.database_url, config.auto_migrate) {
        db::create_database_if_missing(url).await?;
    }
    Resources::connect(config, &key, Arc::new(SystemClock)).await
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let public_url = config.public_url.clone();
    let resources = connect(config).await?;
    if !resources.store.has_board_token().await? {
        let token = resources.store.create_board_token("first start").await?;
        println!(
            "\nNexus Routines is starting at {public_url}\n\
             No board token existed, so one was created. It is shown only this once:\n\n  {token}\n\n\
             Try it:\n  curl -H 'Authorization: Bearer {token}' {public_url}/api/companies\n",
            token = token.token,
        );
    }
    let worker = nexus_worker::Worker::new(
        resources.store.clone(),
        nexus_worker::owner_name("worker"),
        nexus_worker::settings(&resources.config),
    )?;
    let scheduler = nexus_scheduler::scheduler(&resources);
    let app = nexus_api::build_with(resources, listen)
        .await
        .context("starting the API")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(worker.run(stopped.clone()));
    let scheduler = tokio::spawn(scheduler.run(stopped));
    app.run_until_stopped(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    })
    .await?;
    worker.await.context("the worker stopped abnormally")?;
    scheduler
        .await
        .context("the scheduler stopped abnormally")?;
    Ok(())
}
