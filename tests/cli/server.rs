//! A real `nexus serve` for the client-command tests, and what they read of a command's end.

use std::process::{Child, Command, Output, Stdio};

use nexus_shared::crypto::SecretKey;
use nexus_tests::TestDb;
use serde_json::Value;

/// A `nexus serve` on a fresh database, stopped when dropped.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) board: String,
    child: Child,
    _db: TestDb,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

impl Server {
    pub(crate) async fn start() -> Self {
        let db = TestDb::create().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let board = "cli-test-board-token-0123456789abcdef".to_owned();
        let child = Command::new(env!("CARGO_BIN_EXE_nexus"))
            .arg("serve")
            .env_clear()
            .env("NEXUS_DATABASE_URL", &db.url)
            .env("NEXUS_SECRET_KEY", SecretKey::generate().to_base64())
            .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
            .env("NEXUS_BOOTSTRAP_BOARD_TOKEN", &board)
            .env("NEXUS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("nexus serve starts");
        let base = format!("http://127.0.0.1:{port}");
        nexus_tests::wait_until_ready(&base, 20).await;
        Self {
            base,
            board,
            child,
            _db: db,
        }
    }

    /// The client command `args` with `token`, as a process that has not finished.
    pub(crate) fn spawn(&self, token: &str, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_nexus"))
            .args(args)
            .env_clear()
            .env("NEXUS_URL", &self.base)
            .env("NEXUS_TOKEN", token)
            .env("TZ", "UTC")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nexus runs")
    }

    /// Runs the client command `args` with `token` to its end.
    pub(crate) async fn run(&self, token: &str, args: &[&str]) -> Output {
        let child = self.spawn(token, args);
        tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("joined")
            .expect("nexus ends")
    }

    /// Runs `args` with `--json` and parses what it printed; the command must succeed.
    pub(crate) async fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.run(token, &with_json).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("--json prints JSON")
    }

    /// The API's own answer to `GET path` with the board token.
    pub(crate) async fn api(&self, path: &str) -> Value {
        nexus_tests::http_client()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.board)
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json")
    }
}

pub(crate) fn id(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
        .to_owned()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The command ended with `code`, its error line saying `says`.
pub(crate) fn assert_ended(output: &Output, code: i32, says: &str) {
    let line = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{line}");
    assert!(line.contains(says), "expected {says:?} in {line}");
}
