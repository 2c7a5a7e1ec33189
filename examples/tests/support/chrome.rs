//! Headless Chromium through chromedriver (WebDriver, with fantoccini), and a broker serving
//! the pages, shared by the browser end-to-end tests and the browser benchmark
//! (`#[path]`-included by both).

use std::time::Duration;

use fantoccini::{Client as WebDriver, ClientBuilder};
use serde_json::{Value, json};

/// Chromium flags for this sandbox (root, no GPU, no network besides loopback).
const CHROME_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1500",
];

/// A Chrome DevTools Protocol command through chromedriver (`goog/cdp/execute`), e.g.
/// `Profiler.start`; the answer is the command's result.
#[derive(Debug)]
#[allow(dead_code, reason = "the benchmark's, not the tests'")]
pub(crate) struct Cdp {
    pub(crate) cmd: &'static str,
    pub(crate) params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// How long any one condition may take before [`wait_for`] gives up.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// A chromedriver process and one browser session; both end when this is dropped.
pub(crate) struct Chrome {
    pub(crate) webdriver: WebDriver,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Chrome {
    /// Starts chromedriver and a headless Chromium session; `Err` says what is missing.
    pub(crate) async fn start() -> Result<Chrome, String> {
        let driver_path =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        for path in [&driver_path, &chromium] {
            if !std::path::Path::new(path).exists() {
                return Err(format!("{path} is missing"));
            }
        }
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let driver = tokio::process::Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {driver_path}: {e}"))?;
        let profile = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let mut args: Vec<String> = CHROME_ARGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver needs a moment to listen: retry the session until it does.
        let webdriver = wait_for("chromedriver", || {
            let (capabilities, url) = (capabilities.clone(), url.clone());
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        Ok(Chrome {
            webdriver,
            _driver: driver,
            _profile: profile,
        })
    }

    /// chromedriver's process id (Chromium's processes are its children).
    #[allow(dead_code, reason = "the benchmark's, not the tests'")]
    pub(crate) fn driver_pid(&self) -> Option<u32> {
        self._driver.id()
    }

    /// The volunteer page's provider status (`window.wasimoff.status()`), `null` if none.
    pub(crate) async fn page_status(&self) -> Value {
        self.webdriver
            .execute(
                "return window.wasimoff ? window.wasimoff.status() : null",
                vec![],
            )
            .await
            .unwrap_or(Value::Null)
    }
}

/// A broker on a free loopback port serving `dir` as its static files (the volunteer page or
/// the web demo).
pub(crate) async fn broker(dir: std::path::PathBuf) -> wasimoff_broker::BrokerHandle {
    let config = wasimoff_broker::BrokerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        static_dir: Some(dir),
        ..wasimoff_broker::BrokerConfig::default()
    };
    let builder = wasimoff_broker::Broker::builder().config(config);
    let broker = builder.build().await.expect("broker builds");
    broker.spawn().await.expect("broker listens")
}

/// A number field of a status object, -1 if absent.
pub(crate) fn number(status: &Value, key: &str) -> i64 {
    status.get(key).and_then(Value::as_i64).unwrap_or(-1)
}

/// Polls `check` until it yields a value (the condition, not a fixed delay, ends the wait);
/// panics after [`PATIENCE`].
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
