//! A headless Chromium driven through WebDriver (Debian's `chromium` and `chromium-driver`),
//! for the console's browser tests. A small client of the W3C WebDriver protocol over HTTP:
//! sessions, navigation, elements, script, window size and screenshots.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine as _;
use serde_json::{Value, json};

/// The element key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the driver and the browser are installed (`.ci/run` installs them when missing).
pub const DRIVER: &str = "/usr/bin/chromedriver";
/// The browser binary.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether the browser and its driver are installed. Under CI a missing browser fails the
/// test (`.ci/run` installs it); elsewhere the test returns with a note.
#[macro_export]
macro_rules! needs_browser {
    () => {
        if !$crate::browser::available() {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromedriver are required under CI"
            );
            $crate::backends::skipped("chromium or chromedriver is not installed");
            return;
        }
    };
}

/// Whether [`DRIVER`] and [`CHROMIUM`] exist.
#[must_use]
pub fn available() -> bool {
    std::path::Path::new(DRIVER).exists() && std::path::Path::new(CHROMIUM).exists()
}

/// A browser session; the driver process is killed when dropped.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        drop(self.driver.kill());
        drop(self.driver.wait());
    }
}

/// How long [`Browser::wait`] looks for something before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

impl Browser {
    /// Starts the driver on a free port and opens a headless session `width` × `height`.
    ///
    /// # Panics
    /// When the driver does not start.
    pub async fn start(width: u32, height: u32) -> Self {
        let port = crate::free_port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = crate::http_client();
        let base = format!("http://127.0.0.1:{port}");
        let ready = crate::within(10, || async {
            let status = http.get(format!("{base}/status")).send().await.ok()?;
            let body: Value = status.json().await.ok()?;
            body["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        assert!(ready.is_some(), "chromedriver answers within 10 s");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", "--lang=en-US",
                         format!("--window-size={width},{height}")],
            },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a session: {created}"))
            .to_owned();
        Self {
            http,
            session: format!("{base}/session/{session}"),
            driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .expect("WebDriver request")
            .json()
            .await
            .expect("WebDriver JSON");
        response["value"].clone()
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command("/url", json!({"url": url})).await;
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Runs an asynchronous `script` whose last argument is the callback to call with the
    /// result.
    pub async fn run_async(&self, script: &str, args: Value) -> Value {
        self.command("/execute/async", json!({"script": script, "args": args}))
            .await
    }

    /// The browser's console messages since the last call (errors a page's script raised).
    pub async fn console_log(&self) -> Vec<String> {
        let entries = self.command("/se/log", json!({"type": "browser"})).await;
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Grants this origin the clipboard permissions (WebDriver's permissions extension).
    pub async fn allow_clipboard(&self) {
        for name in ["clipboard-read", "clipboard-write"] {
            self.command(
                "/permissions",
                json!({"descriptor": {"name": name}, "state": "granted"}),
            )
            .await;
        }
    }

    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .command("/element", json!({"using": "css selector", "value": css}))
            .await;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits until an element matching `css` exists and is displayed; returns its id.
    ///
    /// # Panics
    /// When none appears within [`PATIENCE`].
    pub async fn wait(&self, css: &str) -> String {
        let found = crate::within(PATIENCE.as_secs(), || async {
            let element = self.find(css).await?;
            let shown = self
                .call(
                    reqwest::Method::GET,
                    &format!("/element/{element}/displayed"),
                    None,
                )
                .await;
            shown.as_bool().filter(|s| *s).map(|_| element)
        })
        .await;
        found.unwrap_or_else(|| panic!("{css} did not appear within {PATIENCE:?}"))
    }

    /// Waits until the text of `css` contains `wanted`; returns the text.
    ///
    /// # Panics
    /// When it does not within [`PATIENCE`].
    pub async fn wait_text(&self, css: &str, wanted: &str) -> String {
        let mut last = String::new();
        let found = crate::within(PATIENCE.as_secs(), || async {
            let text = self.text(css).await?;
            text.contains(wanted).then_some(text)
        })
        .await;
        if let Some(text) = found {
            return text;
        }
        if let Some(text) = self.text(css).await {
            last = text;
        }
        panic!("{css} did not show {wanted:?} within {PATIENCE:?}; it shows {last:?}");
    }

    /// Waits until `css` matches exactly `count` elements.
    ///
    /// # Panics
    /// When it does not within [`PATIENCE`].
    pub async fn wait_count(&self, css: &str, count: u64) {
        let script = "return document.querySelectorAll(arguments[0]).length;";
        let matched = crate::within(PATIENCE.as_secs(), || async {
            let n = self.run(script, json!([css])).await.as_u64()?;
            (n == count).then_some(())
        })
        .await;
        assert!(
            matched.is_some(),
            "{css} did not match {count} elements within {PATIENCE:?}"
        );
    }

    /// The rendered text of the first element matching `css`, if any.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css).await?;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Clicks the element matching `css` once it is shown. A page that redraws what it shows
    /// as live updates arrive may replace the element between finding and clicking it (the
    /// driver answers "stale element reference"): then it is found again.
    ///
    /// # Panics
    /// When no click succeeds within [`PATIENCE`].
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let element = self.wait(css).await;
            let answer = self
                .command(&format!("/element/{element}/click"), json!({}))
                .await;
            if answer.get("error").is_none() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "clicking {css} failed: {answer}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Replaces the value of the input matching `css` with `text`, as typed.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.wait(css).await;
        self.command(&format!("/element/{element}/clear"), json!({}))
            .await;
        self.command(&format!("/element/{element}/value"), json!({"text": text}))
            .await;
    }

    /// Chooses `value` in the select matching `css`.
    pub async fn choose(&self, css: &str, value: &str) {
        self.wait(css).await;
        self.run(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1];
             s.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([css, value]),
        )
        .await;
    }

    /// Saves a PNG of the window, scrolled to the top, to `path`.
    ///
    /// # Panics
    /// When the screenshot cannot be taken or written.
    pub async fn screenshot(&self, path: &std::path::Path) {
        self.run("window.scrollTo(0, 0);", json!([])).await;
        self.capture(path).await;
    }

    /// Saves a PNG of the window scrolled so that `css` is at the top, to `path`.
    ///
    /// # Panics
    /// When the screenshot cannot be taken or written.
    pub async fn screenshot_of(&self, css: &str, path: &std::path::Path) {
        self.run(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});",
            json!([css]),
        )
        .await;
        self.capture(path).await;
    }

    async fn capture(&self, path: &std::path::Path) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .expect("PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}
