//! Test harness: every test gets its own freshly migrated Postgres database and its own Redis
//! key prefix, and a [`TestApp`] that runs the API on port 0 with one method per endpoint.
//! With `NEXUS_TEST_BACKEND=sqlite` the API runs on the embedded backend instead, in a
//! temporary data directory (see [`backend_is_postgres`]); [`backends`] serves the storage
//! conformance suite.
//!
//! The server is found through `NEXUS_TEST_DATABASE_URL` (a URL of the server, any database;
//! default `postgres://postgres@127.0.0.1:5432/postgres`) and `NEXUS_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

pub mod backends;
pub mod browser;
mod client;
mod db;
mod proxy;
mod roles;
mod senders;
mod stream;

use std::{net::SocketAddr, sync::Arc};

use nexus_shared::{
    Config, Store, SystemClock, clock::SharedClock, coord::Coordination, crypto::SecretKey,
    runtime::Resources,
};
use serde_json::Value;
use tokio::task::JoinHandle;

pub use crate::{
    client::{Caller, Resp},
    db::TestDb,
    proxy::Proxy,
    roles::Team,
    senders::signed_as,
    stream::{EventStream, StreamEvent},
};

/// An HTTP client for tests (with the process's TLS provider installed).
#[must_use]
pub fn http_client() -> reqwest::Client {
    nexus_worker::install_tls_provider();
    reqwest::Client::new()
}

/// Whether the servers most tests need — Postgres at `NEXUS_TEST_DATABASE_URL` and Redis at
/// `NEXUS_TEST_REDIS_URL` — answer. Checked once per test binary. Where they do not, a test
/// that needs them passes without running and says so on standard error (past the test
/// harness's capture) — unless `CI` is set: there a missing server fails the test, so CI never
/// skips anything. The embedded backend's tests need neither server.
///
/// # Panics
/// Under CI, when a server does not answer.
pub async fn servers_available() -> bool {
    static AVAILABLE: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *AVAILABLE
        .get_or_init(|| async {
            let postgres = backends::postgres_answers().await;
            let redis =
                nexus_shared::kv::Redis::new(&redis_url(), "nexus-test", Arc::new(SystemClock))
                    .expect("NEXUS_TEST_REDIS_URL is a Redis URL")
                    .ping(std::time::Duration::from_secs(3))
                    .await;
            if postgres && redis {
                return true;
            }
            let missing = match (postgres, redis) {
                (false, false) => "Postgres and Redis do not answer",
                (false, true) => "Postgres does not answer",
                _ => "Redis does not answer",
            };
            backends::skip_without(
                &format!("{missing} (NEXUS_TEST_DATABASE_URL, NEXUS_TEST_REDIS_URL)"),
                "the tests that need them",
            );
            false
        })
        .await
}

/// Returns from the calling test when [`servers_available`] says the servers are missing.
#[macro_export]
macro_rules! needs_servers {
    () => {
        if !$crate::servers_available().await {
            $crate::backends::skipped($crate::backends::SERVERS_MISSING);
            return;
        }
    };
}

/// Whether [`TestApp`] runs on Postgres — the default — rather than on the embedded SQLite
/// backend (`NEXUS_TEST_BACKEND=sqlite`). With SQLite, the tests that inspect Postgres rows
/// directly (or share one database between replicas) return at once with a note: the
/// conformance suite checks the same behaviour on SQLite at the storage level.
#[must_use]
pub fn backend_is_postgres() -> bool {
    let postgres = std::env::var("NEXUS_TEST_BACKEND").as_deref() != Ok("sqlite");
    if !postgres {
        backends::notice(
            "NEXUS_TEST_BACKEND=sqlite: the tests that inspect Postgres rows directly are skipped",
        );
    }
    postgres
}

/// Returns from the calling test when [`TestApp`] runs on the embedded backend (see
/// [`backend_is_postgres`]).
#[macro_export]
macro_rules! needs_postgres_rows {
    () => {
        if !$crate::backend_is_postgres() {
            $crate::backends::skipped($crate::backends::POSTGRES_ROWS);
            return;
        }
    };
}

/// Redis URL of the tests.
#[must_use]
pub fn redis_url() -> String {
    std::env::var("NEXUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Options of [`TestApp::spawn_with`].
#[derive(Debug, Default)]
pub struct Options {
    /// The clock (default: the system clock).
    pub clock: Option<SharedClock>,
    /// Overrides applied to the configuration, as environment variables would be.
    pub env: Vec<(&'static str, String)>,
}

/// A running API on its own database and Redis prefix.
#[derive(Debug)]
pub struct TestApp {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub base: String,
    /// The store the API uses (for assertions and set-up).
    pub store: Store,
    /// A board token.
    pub board_token: String,
    /// The configuration the API runs with.
    pub config: Config,
    /// The database.
    pub db: TestDb,
    /// The secret key the API runs with.
    pub key: SecretKey,
    /// The API's coordination (Redis under the test's prefix, or in process).
    pub coordination: Coordination,
    http: reqwest::Client,
    server: JoinHandle<()>,
    /// The embedded database's directory, when `NEXUS_TEST_BACKEND=sqlite`.
    data_dir: Option<std::path::PathBuf>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(dir) = &self.data_dir {
            drop(std::fs::remove_dir_all(dir));
        }
    }
}

impl TestApp {
    /// Starts the API with defaults.
    ///
    /// # Panics
    /// When Postgres or the listener cannot be set up.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// Starts the API with `options`.
    ///
    /// # Panics
    /// When Postgres or the listener cannot be set up.
    pub async fn spawn_with(options: Options) -> Self {
        let db = TestDb::create().await;
        let prefix = format!("nexus-test:{}", uuid::Uuid::new_v4().simple());
        let key = SecretKey::generate();
        let mut vars: Vec<(&str, String)> = vec![
            ("NEXUS_DATABASE_URL", db.url.clone()),
            ("NEXUS_REDIS_URL", redis_url()),
            ("NEXUS_REDIS_PREFIX", prefix),
            ("NEXUS_SECRET_KEY", key.to_base64()),
            ("NEXUS_LISTEN", "127.0.0.1:0".to_owned()),
            ("NEXUS_DB_MAX_CONNECTIONS", "20".to_owned()),
            // Test receivers listen on loopback.
            ("NEXUS_ALLOW_PRIVATE_URLS", "true".to_owned()),
        ];
        let data_dir =
            (std::env::var("NEXUS_TEST_BACKEND").as_deref() == Ok("sqlite")).then(|| {
                std::env::temp_dir().join(format!("nexus-test-{}", uuid::Uuid::new_v4().simple()))
            });
        if let Some(dir) = &data_dir {
            vars.push(("NEXUS_DATABASE_URL", String::new()));
            vars.push(("NEXUS_DATA_DIR", dir.display().to_string()));
        }
        vars.extend(options.env);
        let config = Config::from_lookup(|name| {
            vars.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("test configuration is valid");
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let resources = Resources::connect(config.clone(), &key, clock)
            .await
            .expect("connect to the test database");
        let store = resources.store.clone();
        let coordination = resources.coordination.clone();
        let app = nexus_api::build_with(resources, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the API");
        let base = format!("http://127.0.0.1:{}", app.port());
        let server = tokio::spawn(async move {
            app.run_until_stopped(std::future::pending())
                .await
                .expect("API runs");
        });
        let board_token = store
            .create_board_token("tests")
            .await
            .expect("board token")
            .token;
        Self {
            base,
            store,
            board_token,
            config,
            db,
            key,
            coordination,
            http: http_client(),
            server,
            data_dir,
        }
    }

    /// Another API replica on the same database, Redis prefix and key; returns its base URL.
    /// It runs until the test's runtime ends.
    ///
    /// # Panics
    /// When it cannot start.
    pub async fn spawn_replica(&self) -> String {
        let resources =
            Resources::connect(self.config.clone(), &self.key, self.store.clock().clone())
                .await
                .expect("connect");
        let app = nexus_api::build_with(resources, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(async move {
            app.run_until_stopped(std::future::pending())
                .await
                .expect("replica runs");
        });
        base
    }

    /// Calls as the board.
    #[must_use]
    pub fn board(&self) -> Caller<'_> {
        self.caller(Some(&self.board_token))
    }

    /// Calls with `token`, or with no `Authorization` header.
    #[must_use]
    pub fn caller(&self, token: Option<&str>) -> Caller<'_> {
        Caller::new(self, token.map(str::to_owned))
    }

    /// A new company; returns its id.
    ///
    /// # Panics
    /// When the API refuses.
    pub async fn seed_company(&self, name: &str) -> String {
        let resp = self
            .board()
            .create_company(&serde_json::json!({ "name": name }))
            .await;
        resp.expect(201).id()
    }

    /// A new poll agent of `company`; returns `(agent id, api key)`.
    ///
    /// # Panics
    /// When the API refuses.
    pub async fn seed_agent(&self, company: &str, name: &str) -> (String, String) {
        let resp = self
            .board()
            .create_agent(company, &serde_json::json!({ "name": name }))
            .await;
        let body = resp.expect(201).body;
        (str_at(&body, "/agent/id"), str_at(&body, "/apiKey"))
    }

    /// A new project of `company`; returns its id.
    ///
    /// # Panics
    /// When the API refuses.
    pub async fn seed_project(&self, company: &str) -> String {
        let resp = self
            .board()
            .create_project(company, &serde_json::json!({ "name": "Ops" }))
            .await;
        resp.expect(201).id()
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `seconds`.
///
/// # Panics
/// When the deadline passes.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    seconds: u64,
    what: &str,
    check: impl FnMut() -> F,
) -> T {
    within(seconds, check)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Polls `check` every 20 ms until it returns `Some`, or returns `None` after `seconds` (for a
/// caller that explains the failure itself).
pub async fn within<T, F: std::future::Future<Output = Option<T>>>(
    seconds: u64,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The `hmac_sha256` signature of a webhook call: hex HMAC-SHA256 of `"{timestamp}.{body}"`
/// under the trigger's secret (the value of `X-Paperclip-Signature`, without `sha256=`).
///
/// # Panics
/// Never: HMAC takes keys of any length.
#[must_use]
pub fn webhook_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    hmac_hex(secret, &[timestamp.as_bytes(), b".", body])
}

/// Lowercase hex HMAC-SHA256 of `parts` (concatenated), keyed with the bytes of `secret`.
#[must_use]
pub fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits until `GET {base}/readyz` answers 200, or panics after `seconds`.
///
/// # Panics
/// When the deadline passes.
pub async fn wait_until_ready(base: &str, seconds: u64) {
    let http = http_client();
    eventually(seconds, &format!("{base} to be ready"), || {
        let request = http.get(format!("{base}/readyz"));
        async move {
            request
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
}

/// The string at a JSON pointer.
///
/// # Panics
/// When there is no string there.
#[must_use]
pub fn str_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
        .to_owned()
}

/// A company, an agent, a project and an `always_enqueue` routine written through `store`
/// directly (for tests that drive processes rather than a [`TestApp`]); returns the routine's id.
///
/// # Panics
/// When the store refuses.
pub async fn seed_store_routine(store: &Store, title: &str) -> uuid::Uuid {
    use nexus_shared::{
        model::{
            Actor, CatchUpPolicy, ConcurrencyPolicy, DEFAULT_CATCH_UP_CAP, Description, Priority,
            RoutineStatus, Title,
        },
        store::{NewRoutine, WakeupSpec},
    };
    let text = |s: &str| Title::parse(s.to_owned()).expect("title");
    let company = store
        .create_company(text("Acme"), Actor::System)
        .await
        .expect("company");
    let agent = store
        .create_agent(company.id, text("Ada"), WakeupSpec::Poll, Actor::System)
        .await
        .expect("agent");
    let project = store
        .create_project(company.id, text("Ops"), Actor::System)
        .await
        .expect("project");
    let routine = NewRoutine {
        title: text(title),
        description: Description::default(),
        assignee_agent_id: agent.agent.id,
        project_id: project.id,
        goal_id: None,
        parent_issue_id: None,
        priority: Priority::Medium,
        status: RoutineStatus::Active,
        concurrency_policy: ConcurrencyPolicy::AlwaysEnqueue,
        catch_up_policy: CatchUpPolicy::SkipMissed,
        catch_up_cap: DEFAULT_CATCH_UP_CAP,
        run_timeout_sec: None,
        pause_after_failures: None,
    };
    store
        .create_routine(company.id, routine, Actor::System)
        .await
        .expect("routine")
        .id
}

/// A free port on the loopback interface (bound, read and released), for a process to listen on.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Sends `head` — a request's start line and headers, its body announced but not sent — to
/// `address` (`host:port`) and returns the status answered within 5 s without the body (`None`
/// when the server waits for the body, or closes without answering).
pub async fn status_without_the_body(address: &str, head: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
        Some(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .ok()??;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}
