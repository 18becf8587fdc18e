//! Configuration parsing: defaults, bounds, and the one-line errors.

use std::collections::HashMap;

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let config = config(&[]).expect("defaults are valid");
    assert_eq!(config.database_url, None);
    assert_eq!(
        config.require_database_url().expect_err("unset").var,
        "NEXUS_DATABASE_URL"
    );
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.public_url, "http://127.0.0.1:8080");
    assert_eq!(config.misfire_grace, Duration::from_secs(60));
    assert_eq!(config.schedule_lookahead, Duration::from_secs(5));
    assert_eq!(config.retention_days, Some(30));
    assert_eq!(
        (config.webhook_rate_per_sec, config.webhook_burst),
        (20, 100)
    );
    assert!(config.auto_migrate);
    assert!(config.secret_key.is_none());
    assert!(config.require_secret_key().is_err());
    assert!(config.redis_url.is_none());
    assert_eq!(
        config.require_redis_url().expect_err("unset").var,
        "NEXUS_REDIS_URL"
    );
}

#[test]
fn database_url_falls_back_to_database_url() {
    let config = config(&[("DATABASE_URL", "postgres://x@db/y")]).expect("valid");
    assert_eq!(config.database_url.as_deref(), Some("postgres://x@db/y"));
    let config = config_pair("postgres://a@b/c", "postgres://x@db/y");
    assert_eq!(config.database_url.as_deref(), Some("postgres://a@b/c"));
}

fn config_pair(nexus: &str, fallback: &str) -> Config {
    config(&[("NEXUS_DATABASE_URL", nexus), ("DATABASE_URL", fallback)]).expect("valid")
}

#[test]
fn invalid_values_name_the_variable() {
    let cases = [
        ("NEXUS_LISTEN", "not-an-address"),
        ("NEXUS_MISFIRE_GRACE_SECS", "-1"),
        ("NEXUS_SCHEDULE_LOOKAHEAD_MS", "60001"),
        ("NEXUS_WORKER_CONCURRENCY", "0"),
        ("NEXUS_RETENTION_DAYS", "3651"),
        ("NEXUS_RETENTION_DAYS", "-1"),
        ("NEXUS_WORKER_BATCH", "1001"),
        ("NEXUS_AUTO_MIGRATE", "yes"),
        ("NEXUS_WEBHOOK_RATE_PER_SEC", "fast"),
        ("NEXUS_WEBHOOK_BURST", "0"),
        ("NEXUS_LOG_FORMAT", "xml"),
        ("NEXUS_SECRET_KEY", "c2hvcnQ="),
        ("NEXUS_DATABASE_URL", "mysql://localhost/x"),
        ("NEXUS_REDIS_URL", "localhost:6379"),
        ("NEXUS_PUBLIC_URL", "example.com"),
        ("NEXUS_BOOTSTRAP_BOARD_TOKEN", "short"),
        (
            "NEXUS_BOOTSTRAP_BOARD_TOKEN",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        (
            "NEXUS_BOOTSTRAP_BOARD_TOKEN",
            "REPLACE-with-at-least-24-random-characters",
        ),
        (
            "NEXUS_BOOTSTRAP_BOARD_TOKEN",
            "a-bootstrap-token-of-sufficient-length",
        ),
        ("NEXUS_HTTP_HEADER_TIMEOUT_SECS", "0"),
        ("NEXUS_HTTP_MAX_CONNECTIONS", "8"),
        ("NEXUS_HTTP_MAX_EVENT_STREAMS", "0"),
        ("NEXUS_HTTP_MAX_EVENT_STREAMS", "100001"),
        ("NEXUS_ALLOW_PRIVATE_URLS", "yes"),
        ("NEXUS_HEARTBEAT_TIMEOUT_SECS", "5"),
        ("NEXUS_LEADER_TTL_SECS", "1"),
        ("NEXUS_JOB_LEASE_SECS", "1"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ];
    for (var, value) in cases {
        let err = config(&[(var, value)]).expect_err(var);
        assert_eq!(err.var, var);
        let line = err.to_string();
        assert!(
            line.starts_with(&format!("invalid configuration: {var}=")),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}

#[test]
fn a_bootstrap_token_must_be_long_varied_and_not_an_example() {
    let token = |t: &str| config(&[("NEXUS_BOOTSTRAP_BOARD_TOKEN", t)]);
    assert!(token("Xq3vT9mB2kL7pR4wZ8nC5hJ6").is_ok());
    // Fifteen distinct characters are too few; sixteen are enough.
    assert!(token("0123456789abcde0123456789abcde").is_err());
    assert!(token("0123456789abcdef0123456789abcdef").is_ok());
    let err = token("REPLACE-with-at-least-24-random-characters").expect_err("example");
    assert!(err.expected.contains("example"), "{err}");
    assert!(!err.to_string().contains("REPLACE"), "never echoed");
}

#[test]
fn secrets_are_never_echoed_in_errors() {
    let err = config(&[("NEXUS_SECRET_KEY", "dG9vLXNob3J0LXNlY3JldA==")]).expect_err("short");
    assert!(!err.to_string().contains("dG9vLXNob3J0"));
    let err = config(&[("NEXUS_DATABASE_URL", "mysql://user:hunter2@h/d")]).expect_err("scheme");
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn public_url_loses_its_trailing_slash() {
    let config = config(&[("NEXUS_PUBLIC_URL", "https://hooks.example.com/")]).expect("valid");
    assert_eq!(config.public_url, "https://hooks.example.com");
}

#[test]
fn retention_zero_keeps_history_for_ever() {
    let kept = config(&[("NEXUS_RETENTION_DAYS", "0")]).expect("valid");
    assert_eq!(kept.retention_days, None);
    let week = config(&[("NEXUS_RETENTION_DAYS", "7")]).expect("valid");
    assert_eq!(week.retention_days, Some(7));
}

#[test]
fn event_streams_default_to_a_thousand_and_never_take_more_than_half_the_connections() {
    let limits = |vars: &[(&str, &str)]| config(vars).expect("valid").http;
    assert_eq!(limits(&[]).event_streams(), 1000);
    assert_eq!(
        limits(&[("NEXUS_HTTP_MAX_EVENT_STREAMS", "5")]).event_streams(),
        5
    );
    assert_eq!(
        limits(&[("NEXUS_HTTP_MAX_CONNECTIONS", "100")]).event_streams(),
        50
    );
}
