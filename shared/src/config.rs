//! Configuration from environment variables, parsed once at start into a typed [`Config`].
//!
//! Every variable has a documented default (see `docs/operations.md`); an invalid value stops
//! start-up with one line naming the variable, its value and what was expected.

use std::{net::SocketAddr, num::NonZeroUsize, path::PathBuf, time::Duration};

use crate::crypto::SecretKey;

/// The whole configuration of a Nexus process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `NEXUS_DATABASE_URL`, falling back to `DATABASE_URL`; `None` when neither is set. The
    /// role binaries require it; `nexus serve` without it keeps its data in an embedded SQLite
    /// database in `NEXUS_DATA_DIR`.
    pub database_url: Option<String>,
    /// `NEXUS_REDIS_URL`; `None` when unset. The role binaries require it; `nexus serve` without
    /// it keeps rate limits and leadership in process (see [`crate::coord`]).
    pub redis_url: Option<String>,
    /// `NEXUS_REDIS_PREFIX`: prefix of every Redis key, so deployments can share one Redis.
    pub redis_prefix: String,
    /// `NEXUS_LISTEN`: address of the HTTP listener (the API, or the operational endpoints).
    pub listen: SocketAddr,
    /// `NEXUS_PUBLIC_URL`: base of webhook URLs, without a trailing slash.
    pub public_url: String,
    /// `NEXUS_SECRET_KEY`: encrypts stored secrets and peppers token hashes. `None` when unset;
    /// see [`Config::require_secret_key`].
    pub secret_key: Option<SecretKey>,
    /// `NEXUS_BOOTSTRAP_BOARD_TOKEN`: a board token accepted from the first start.
    pub bootstrap_board_token: Option<String>,
    /// `NEXUS_MISFIRE_GRACE_SECS`: how late a schedule fire may be handled before it is missed.
    pub misfire_grace: Duration,
    /// `NEXUS_SCHEDULE_LOOKAHEAD_MS`: how far ahead of its nominal time the scheduler prepares
    /// a schedule fire (its run and a dispatch job due at that time); 0 prepares nothing.
    pub schedule_lookahead: Duration,
    /// `NEXUS_LEADER_TTL_SECS`: the scheduler leader's lease; a successor takes over within it.
    pub leader_ttl: Duration,
    /// `NEXUS_RETENTION_DAYS`: how many days finished history is kept (default 30, 1–3650);
    /// `None` (the value 0) keeps it for ever. See [`crate::engine::retention`].
    pub retention_days: Option<u32>,
    /// `NEXUS_WORKER_CONCURRENCY`: jobs one worker process handles at once.
    pub worker_concurrency: NonZeroUsize,
    /// `NEXUS_WORKER_BATCH`: most dispatch jobs one worker loop claims and dispatches in one
    /// transaction.
    pub worker_batch: NonZeroUsize,
    /// `NEXUS_JOB_LEASE_SECS`: how long a worker holds a claimed job before another may take it.
    pub job_lease: Duration,
    /// `NEXUS_AUTO_MIGRATE`: run pending migrations at start.
    pub auto_migrate: bool,
    /// `NEXUS_WEBHOOK_RATE_PER_SEC`: sustained webhook calls per trigger and second.
    pub webhook_rate_per_sec: u32,
    /// `NEXUS_WEBHOOK_BURST`: webhook calls per trigger allowed in a burst.
    pub webhook_burst: u32,
    /// `NEXUS_HEARTBEAT_TIMEOUT_SECS`: heartbeat runs queued or running longer become `timed_out`.
    pub heartbeat_timeout: Duration,
    /// `NEXUS_DB_MAX_CONNECTIONS`: size of the Postgres connection pool of one process.
    pub db_max_connections: u32,
    /// What every HTTP listener allows a client (`NEXUS_HTTP_*`).
    pub http: HttpLimits,
    /// `NEXUS_DB_STATEMENT_TIMEOUT_MS` and `NEXUS_DB_LOCK_TIMEOUT_MS`.
    pub db_timeouts: crate::db::DbTimeouts,
    /// `NEXUS_ALLOW_PRIVATE_URLS`: whether wake-up URLs may reach loopback, link-local or
    /// private addresses (default `false`; see [`crate::outbound`]).
    pub allow_private_urls: bool,
    /// `NEXUS_DATA_DIR`: local state of the single-process mode (its generated secret key).
    pub data_dir: PathBuf,
    /// `NEXUS_LOG`: tracing filter directives.
    pub log: String,
    /// `NEXUS_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otel_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`.
    pub otel_service_name: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otel_protocol: OtlpProtocol,
}

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Wire format of exported spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// A configuration variable with an unusable value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {var}={value:?}: {expected}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// The value it had.
    pub value: String,
    /// What a valid value looks like.
    pub expected: String,
}

/// Every variable [`Config`] reads, for documentation and deployment-file checks.
pub const VARIABLES: &[&str] = &[
    "NEXUS_DATABASE_URL",
    "DATABASE_URL",
    "NEXUS_REDIS_URL",
    "NEXUS_REDIS_PREFIX",
    "NEXUS_LISTEN",
    "NEXUS_PUBLIC_URL",
    "NEXUS_SECRET_KEY",
    "NEXUS_BOOTSTRAP_BOARD_TOKEN",
    "NEXUS_MISFIRE_GRACE_SECS",
    "NEXUS_SCHEDULE_LOOKAHEAD_MS",
    "NEXUS_LEADER_TTL_SECS",
    "NEXUS_RETENTION_DAYS",
    "NEXUS_WORKER_CONCURRENCY",
    "NEXUS_WORKER_BATCH",
    "NEXUS_JOB_LEASE_SECS",
    "NEXUS_AUTO_MIGRATE",
    "NEXUS_WEBHOOK_RATE_PER_SEC",
    "NEXUS_WEBHOOK_BURST",
    "NEXUS_HEARTBEAT_TIMEOUT_SECS",
    "NEXUS_DB_MAX_CONNECTIONS",
    "NEXUS_HTTP_HEADER_TIMEOUT_SECS",
    "NEXUS_HTTP_REQUEST_TIMEOUT_SECS",
    "NEXUS_HTTP_MAX_CONNECTIONS",
    "NEXUS_HTTP_SHUTDOWN_SECS",
    "NEXUS_HTTP_MAX_EVENT_STREAMS",
    "NEXUS_ALLOW_PRIVATE_URLS",
    "NEXUS_DB_STATEMENT_TIMEOUT_MS",
    "NEXUS_DB_LOCK_TIMEOUT_MS",
    "NEXUS_DATA_DIR",
    "NEXUS_LOG",
    "NEXUS_LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// What an HTTP listener allows each client, so that no client can hold the process's
/// connections or memory: the headers of a request must arrive within `header_timeout` (also
/// the longest a kept-alive connection may sit idle), the whole request be handled within
/// `request_timeout`, at most `max_connections` be open at once (further clients wait in the
/// kernel's queue), and a process shutting down closes what is still open after
/// `shutdown_deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `NEXUS_HTTP_HEADER_TIMEOUT_SECS` (default 30).
    pub header_timeout: Duration,
    /// `NEXUS_HTTP_REQUEST_TIMEOUT_SECS` (default 60).
    pub request_timeout: Duration,
    /// `NEXUS_HTTP_MAX_CONNECTIONS` (default 4096).
    pub max_connections: usize,
    /// `NEXUS_HTTP_SHUTDOWN_SECS` (default 10).
    pub shutdown_deadline: Duration,
    /// `NEXUS_HTTP_MAX_EVENT_STREAMS` (default 1000): live-update streams open at once on
    /// the process; never more than half of `max_connections`, so streams cannot take every
    /// connection.
    pub max_event_streams: usize,
}

impl HttpLimits {
    /// The streams allowed at once: the configured number, at most half the connections.
    #[must_use]
    pub fn event_streams(&self) -> usize {
        self.max_event_streams.min(self.max_connections / 2).max(1)
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 4096,
            shutdown_deadline: Duration::from_secs(10),
            max_event_streams: 1000,
        }
    }
}

/// Fewest distinct characters in an accepted `NEXUS_BOOTSTRAP_BOARD_TOKEN` (a long token of few
/// characters — `aaaa…`, a hex string's 16 — is weak or not random).
pub const MIN_BOOTSTRAP_TOKEN_DISTINCT: usize = 16;

/// Placeholders and examples shipped in this repository: a token still set to one of them was
/// never replaced, and anyone who reads the repository holds it.
const EXAMPLE_TOKENS: &[&str] = &[
    "REPLACE-with-at-least-24-random-characters",
    "a-bootstrap-token-of-sufficient-length",
    "bootstrap-token-0123456789abcdef",
];

/// Why `token` may not be the bootstrap board token, if it may not.
fn bootstrap_token_problem(token: &str) -> Option<String> {
    let distinct = token
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if token.len() < MIN_BOOTSTRAP_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some(format!(
            "at least {MIN_BOOTSTRAP_TOKEN_LEN} printable characters without spaces"
        ))
    } else if distinct < MIN_BOOTSTRAP_TOKEN_DISTINCT {
        Some(format!(
            "a random token with at least {MIN_BOOTSTRAP_TOKEN_DISTINCT} distinct characters \
             (e.g. openssl rand -base64 32)"
        ))
    } else if EXAMPLE_TOKENS.contains(&token) || token.starts_with("REPLACE") {
        Some("a token of your own, not an example value from the repository".to_owned())
    } else {
        None
    }
}

/// Shortest accepted `NEXUS_BOOTSTRAP_BOARD_TOKEN`.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 24;

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first variable whose value cannot be used.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests). Empty values
    /// count as unset.
    ///
    /// # Errors
    /// The first variable whose value cannot be used.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let database_url = get("NEXUS_DATABASE_URL").or_else(|| get("DATABASE_URL"));
        if let Some(url) = &database_url {
            check_url_scheme("NEXUS_DATABASE_URL", url, &["postgres://", "postgresql://"])?;
        }
        let redis_url = get("NEXUS_REDIS_URL");
        if let Some(url) = &redis_url {
            check_url_scheme("NEXUS_REDIS_URL", url, &["redis://", "rediss://"])?;
        }
        let redis_prefix = get("NEXUS_REDIS_PREFIX").unwrap_or_else(|| "nexus".to_owned());
        let listen = parse_or("NEXUS_LISTEN", get("NEXUS_LISTEN"), "127.0.0.1:8080", |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| "a socket address such as 0.0.0.0:8080".to_owned())
        })?;
        let public_url = match get("NEXUS_PUBLIC_URL") {
            Some(v) => {
                check_url_scheme("NEXUS_PUBLIC_URL", &v, &["http://", "https://"])?;
                v.trim_end_matches('/').to_owned()
            }
            None => format!("http://{listen}"),
        };
        let secret_key = get("NEXUS_SECRET_KEY")
            .map(|v| {
                SecretKey::from_base64(&v).map_err(|expected| ConfigError {
                    var: "NEXUS_SECRET_KEY",
                    value: "<redacted>".to_owned(),
                    expected: expected.to_owned(),
                })
            })
            .transpose()?;
        let bootstrap_board_token = get("NEXUS_BOOTSTRAP_BOARD_TOKEN")
            .map(|v| match bootstrap_token_problem(&v) {
                None => Ok(v),
                Some(expected) => Err(ConfigError {
                    var: "NEXUS_BOOTSTRAP_BOARD_TOKEN",
                    value: "<redacted>".to_owned(),
                    expected,
                }),
            })
            .transpose()?;
        let misfire_grace = Duration::from_secs(parse_or(
            "NEXUS_MISFIRE_GRACE_SECS",
            get("NEXUS_MISFIRE_GRACE_SECS"),
            "60",
            |v| int_in_range(v, 0, 86_400),
        )?);
        let schedule_lookahead = Duration::from_millis(parse_or(
            "NEXUS_SCHEDULE_LOOKAHEAD_MS",
            get("NEXUS_SCHEDULE_LOOKAHEAD_MS"),
            "5000",
            |v| int_in_range(v, 0, 60_000),
        )?);
        let leader_ttl = Duration::from_secs(parse_or(
            "NEXUS_LEADER_TTL_SECS",
            get("NEXUS_LEADER_TTL_SECS"),
            "15",
            |v| int_in_range(v, 3, 300),
        )?);
        let retention_days = parse_or(
            "NEXUS_RETENTION_DAYS",
            get("NEXUS_RETENTION_DAYS"),
            "30",
            |v| int_in_range(v, 0, 3650),
        )?;
        let retention_days = u32::try_from(retention_days).ok().filter(|d| *d > 0);
        let worker_concurrency = parse_or(
            "NEXUS_WORKER_CONCURRENCY",
            get("NEXUS_WORKER_CONCURRENCY"),
            "8",
            |v| {
                int_in_range(v, 1, 1024).map(|n| {
                    NonZeroUsize::new(usize::try_from(n).unwrap_or(1)).unwrap_or(NonZeroUsize::MIN)
                })
            },
        )?;
        let worker_batch = parse_or(
            "NEXUS_WORKER_BATCH",
            get("NEXUS_WORKER_BATCH"),
            "100",
            |v| {
                int_in_range(v, 1, 1000).map(|n| {
                    NonZeroUsize::new(usize::try_from(n).unwrap_or(1)).unwrap_or(NonZeroUsize::MIN)
                })
            },
        )?;
        let job_lease = Duration::from_secs(parse_or(
            "NEXUS_JOB_LEASE_SECS",
            get("NEXUS_JOB_LEASE_SECS"),
            "30",
            |v| int_in_range(v, 5, 3600),
        )?);
        let auto_migrate = parse_or(
            "NEXUS_AUTO_MIGRATE",
            get("NEXUS_AUTO_MIGRATE"),
            "true",
            |v| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err("true or false".to_owned()),
            },
        )?;
        let webhook_rate_per_sec = parse_or(
            "NEXUS_WEBHOOK_RATE_PER_SEC",
            get("NEXUS_WEBHOOK_RATE_PER_SEC"),
            "20",
            |v| int_in_range(v, 1, 1_000_000).map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        )?;
        let webhook_burst = parse_or(
            "NEXUS_WEBHOOK_BURST",
            get("NEXUS_WEBHOOK_BURST"),
            "100",
            |v| int_in_range(v, 1, 1_000_000).map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        )?;
        let heartbeat_timeout = Duration::from_secs(parse_or(
            "NEXUS_HEARTBEAT_TIMEOUT_SECS",
            get("NEXUS_HEARTBEAT_TIMEOUT_SECS"),
            "3600",
            |v| int_in_range(v, 10, 604_800),
        )?);
        let db_max_connections = parse_or(
            "NEXUS_DB_MAX_CONNECTIONS",
            get("NEXUS_DB_MAX_CONNECTIONS"),
            "10",
            |v| int_in_range(v, 1, 1000).map(|n| u32::try_from(n).unwrap_or(10)),
        )?;
        let data_dir =
            PathBuf::from(get("NEXUS_DATA_DIR").unwrap_or_else(|| "nexus-data".to_owned()));
        let log = get("NEXUS_LOG").unwrap_or_else(|| "info".to_owned());
        let log_format = parse_or(
            "NEXUS_LOG_FORMAT",
            get("NEXUS_LOG_FORMAT"),
            "text",
            |v| match v {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("text or json".to_owned()),
            },
        )?;
        let otel_protocol = parse_or(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            get("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "http/protobuf",
            |v| match v {
                "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
                "http/json" => Ok(OtlpProtocol::HttpJson),
                _ => Err("http/protobuf or http/json (gRPC export is not built in)".to_owned()),
            },
        )?;
        let seconds = |var: &'static str, default: &str, min: u64, max: u64| {
            parse_or(var, get(var), default, |v| int_in_range(v, min, max)).map(Duration::from_secs)
        };
        let http = HttpLimits {
            header_timeout: seconds("NEXUS_HTTP_HEADER_TIMEOUT_SECS", "30", 1, 300)?,
            request_timeout: seconds("NEXUS_HTTP_REQUEST_TIMEOUT_SECS", "60", 1, 3600)?,
            max_connections: parse_or(
                "NEXUS_HTTP_MAX_CONNECTIONS",
                get("NEXUS_HTTP_MAX_CONNECTIONS"),
                "4096",
                |v| int_in_range(v, 16, 1_000_000).map(|n| usize::try_from(n).unwrap_or(4096)),
            )?,
            shutdown_deadline: seconds("NEXUS_HTTP_SHUTDOWN_SECS", "10", 0, 300)?,
            max_event_streams: parse_or(
                "NEXUS_HTTP_MAX_EVENT_STREAMS",
                get("NEXUS_HTTP_MAX_EVENT_STREAMS"),
                "1000",
                |v| int_in_range(v, 1, 100_000).map(|n| usize::try_from(n).unwrap_or(1000)),
            )?,
        };
        let millis = |var: &'static str, default: &str| {
            parse_or(var, get(var), default, |v| int_in_range(v, 100, 3_600_000))
                .map(Duration::from_millis)
        };
        let db_timeouts = crate::db::DbTimeouts {
            statement: millis("NEXUS_DB_STATEMENT_TIMEOUT_MS", "30000")?,
            lock: millis("NEXUS_DB_LOCK_TIMEOUT_MS", "10000")?,
        };
        let allow_private_urls = parse_or(
            "NEXUS_ALLOW_PRIVATE_URLS",
            get("NEXUS_ALLOW_PRIVATE_URLS"),
            "false",
            |v| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err("true or false".to_owned()),
            },
        )?;
        let otel_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        if let Some(endpoint) = &otel_endpoint {
            check_url_scheme(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                endpoint,
                &["http://", "https://"],
            )?;
        }
        Ok(Self {
            database_url,
            redis_url,
            redis_prefix,
            listen,
            public_url,
            secret_key,
            bootstrap_board_token,
            misfire_grace,
            schedule_lookahead,
            leader_ttl,
            retention_days,
            worker_concurrency,
            worker_batch,
            job_lease,
            auto_migrate,
            webhook_rate_per_sec,
            webhook_burst,
            heartbeat_timeout,
            db_max_connections,
            http,
            db_timeouts,
            allow_private_urls,
            data_dir,
            log,
            log_format,
            otel_endpoint,
            otel_service_name: get("OTEL_SERVICE_NAME"),
            otel_protocol,
        })
    }

    /// The configured secret key; distributed roles cannot work without one, because every
    /// replica must hash tokens and decrypt secrets the same way.
    ///
    /// # Errors
    /// `NEXUS_SECRET_KEY` is unset.
    pub fn require_secret_key(&self) -> Result<&SecretKey, ConfigError> {
        self.secret_key.as_ref().ok_or_else(|| ConfigError {
            var: "NEXUS_SECRET_KEY",
            value: String::new(),
            expected: "base64 of 32 random bytes (e.g. `openssl rand -base64 32`); \
                       required by the separate role binaries"
                .to_owned(),
        })
    }

    /// The configured Postgres URL; the role binaries cannot work without one, because their
    /// replicas share the database.
    ///
    /// # Errors
    /// Neither `NEXUS_DATABASE_URL` nor `DATABASE_URL` is set.
    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().ok_or_else(|| ConfigError {
            var: "NEXUS_DATABASE_URL",
            value: String::new(),
            expected: "a URL starting with postgres:// or postgresql://; required by the separate \
                       role binaries (`nexus serve` without it uses an embedded database)"
                .to_owned(),
        })
    }

    /// The configured Redis URL; the role binaries cannot work without one, because replicas
    /// share leadership and rate limits through it.
    ///
    /// # Errors
    /// `NEXUS_REDIS_URL` is unset.
    pub fn require_redis_url(&self) -> Result<&str, ConfigError> {
        self.redis_url.as_deref().ok_or_else(|| ConfigError {
            var: "NEXUS_REDIS_URL",
            value: String::new(),
            expected: "a URL starting with redis:// or rediss://; required by the separate role \
                       binaries (`nexus serve` runs without Redis)"
                .to_owned(),
        })
    }
}

fn parse_or<T>(
    var: &'static str,
    value: Option<String>,
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    parse(value.trim()).map_err(|expected| ConfigError {
        var,
        value,
        expected,
    })
}

fn int_in_range(value: &str, min: u64, max: u64) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("an integer from {min} to {max}"))
}

fn check_url_scheme(var: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let ok = schemes
        .iter()
        .any(|s| value.starts_with(s) && value.len() > s.len());
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            var,
            // URLs may carry passwords: show only the scheme part.
            value: value.split("://").next().unwrap_or_default().to_owned() + "://…",
            expected: format!("a URL starting with {}", schemes.join(" or ")),
        })
    }
}

#[cfg(test)]
mod tests;
