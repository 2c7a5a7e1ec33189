//! The operator view: `/metrics` (OpenMetrics content type, per-provider series removed when a
//! provider leaves, queue-wait and run-time histograms, build info), `/api/providers`,
//! `/api/dashboard`, the dashboard page, and the per-task log line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use tokio::sync::mpsc;
use wasimoff_core::transport::CloseReason;

use crate::support::*;

async fn get(base: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn json(base: &str, path: &str) -> serde_json::Value {
    let body = get(base, path, None).await.bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn metrics(base: &str) -> String {
    get(base, "/metrics", None).await.text().await.unwrap()
}

#[tokio::test]
async fn metrics_are_openmetrics_with_provider_series_histograms_and_build_info() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;

    // A provider that answers with the wrong payload fails every attempt (3, all on it: it is
    // the only one).
    let beta = provider(&base, "beta", 1, Behaviour::WrongPayload).await;
    wait_for_workers(&base, 1, 1).await;
    let (status, _) = run_proto(&base, &wasip1("empty.wasm", &["e"])).await;
    assert_ne!(status, 200);

    let response = get(&base, "/metrics", None).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!(r#"wasimoff_build_info{{version="{version}"}} 1"#)),
        "{text}"
    );
    assert!(text.contains(r#"name="beta",result="failed"} 3"#), "{text}");
    assert!(
        text.contains("wasimoff_task_queue_wait_seconds_count 1"),
        "{text}"
    );
    assert!(text.contains("wasimoff_task_run_seconds_count 0"), "{text}");

    // The one that leaves takes its series along; the newcomer's results count.
    beta.messenger.close(CloseReason::normal("bye")).await;
    wait_for_workers(&base, 0, 0).await;
    let _alpha = provider(&base, "alpha", 2, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 2).await;
    for _ in 0..2 {
        assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
    }
    let text = metrics(&base).await;
    assert!(!text.contains(r#"name="beta""#), "{text}");
    assert!(text.contains(r#"name="alpha",result="done"} 2"#), "{text}");
    assert!(
        text.contains("wasimoff_task_queue_wait_seconds_count 3"),
        "{text}"
    );
    assert!(text.contains("wasimoff_task_run_seconds_count 2"), "{text}");
    assert!(
        text.contains(r#"wasimoff_tasks_completed_total{outcome="ok"} 2"#),
        "{text}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn providers_are_listed_with_kind_slots_and_books() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let _native = provider(&base, "native-1", 3, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 3).await;
    assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
    // A browser sends Origin with the upgrade (here the broker's own, which is always allowed).
    let origin = base.clone();
    let _browser = provider_with_headers(
        &base,
        "volunteer",
        2,
        Behaviour::Hold,
        &[
            ("user-agent", "Mozilla/5.0 (X11) Chrome/140"),
            ("origin", &origin),
        ],
    )
    .await;
    wait_for_workers(&base, 2, 5).await;

    let status = status(&base).await;
    assert_eq!(status["slots"], 5, "{status}");

    assert_eq!(get(&base, "/api/providers", None).await.status(), 200);
    let list = json(&base, "/api/providers").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let (native, browser) = (&list[0], &list[1]);
    assert_eq!(native["name"], "native-1");
    assert_eq!(native["kind"], "native");
    assert_eq!(native["agent"], "fake-provider/1");
    assert_eq!(native["slots"], 3);
    assert_eq!(native["done"], 1);
    assert_eq!(native["failed"], 0);
    assert_eq!(native["running"], 0);
    assert!(native["last_seen"].as_i64().unwrap() >= native["connected_at"].as_i64().unwrap());
    assert_eq!(browser["name"], "volunteer");
    assert_eq!(browser["kind"], "browser");
    assert_eq!(browser["slots"], 2);
    assert_eq!(browser["done"], 0);

    let dashboard: serde_json::Value = json(&base, "/api/dashboard").await;
    assert_eq!(dashboard["providers"].as_array().unwrap().len(), 2);
    assert_eq!(dashboard["totals"]["completed"], 1);
    assert_eq!(dashboard["slots"], 5);
    broker.shutdown().await;
}

#[tokio::test]
async fn failures_are_kept_bounded_for_the_dashboard() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let long: &'static str = "x".repeat(10_000).leak();
    let _p = provider(&base, "trapper", 4, Behaviour::ResultError(long)).await;
    wait_for_workers(&base, 1, 4).await;
    for _ in 0..40 {
        assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
    }
    let dashboard: serde_json::Value = json(&base, "/api/dashboard").await;
    let failures = dashboard["failures"].as_array().unwrap();
    assert!(
        !failures.is_empty() && failures.len() <= 32,
        "{}",
        failures.len()
    );
    for f in failures {
        assert_eq!(f["provider"], "trapper");
        assert!(f["message"].as_str().unwrap().len() <= 240, "{f}");
    }
    assert_eq!(dashboard["totals"]["failed"], 40);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_operator_view_takes_a_token_when_tokens_are_set_and_the_page_does_not() {
    // (With client tokens only, providers need none and so neither do these routes: they take
    // either kind of token, like downloads.)
    let mut cfg = config();
    cfg.client_tokens = vec!["secret".into()];
    cfg.provider_tokens = vec!["volunteer".into()];
    let broker = broker(cfg).await;
    let base = http(&broker);
    for path in ["/api/providers", "/api/dashboard", "/metrics"] {
        assert_eq!(get(&base, path, None).await.status(), 401, "{path}");
        assert_eq!(get(&base, path, Some("nope")).await.status(), 401, "{path}");
        assert_eq!(
            get(&base, path, Some("secret")).await.status(),
            200,
            "{path}"
        );
        assert_eq!(
            get(&base, path, Some("volunteer")).await.status(),
            200,
            "{path}"
        );
    }
    let page = get(&base, "/status", None).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/api/dashboard"),
        "the page polls the dashboard JSON"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external requests"
    );
    // Without a page of its own the broker's front page is the dashboard.
    let front = get(&base, "/", None).await;
    if wasimoff_broker::EMBEDDED_PAGE {
        assert_eq!(front.status(), 200);
    } else {
        assert_eq!(front.text().await.unwrap(), html);
    }
    broker.shutdown().await;
}

/// The broker binary with `--log-tasks <log_tasks>`, one task run on it, then stopped with
/// SIGTERM; returns the task's id and the broker's whole log (read to its end).
async fn task_log(log_tasks: bool) -> (String, Vec<String>) {
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_wasimoff-broker"))
            .args(["--listen", "127.0.0.1:0", "--memory", "--log-tasks"])
            .arg(log_tasks.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start wasimoff-broker"),
    );
    // Reads the log to the end on a thread (a full pipe would stall the broker).
    let stdout = child.0.stdout.take().unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut log = Vec::new();
    let base = loop {
        let line = lines.recv().await.expect("the broker ended");
        let found = line
            .split_once("broker ready on ")
            .map(|(_, url)| url.trim().to_owned());
        log.push(line);
        if let Some(url) = found {
            break url;
        }
    };
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let p = provider(&base, "logger", 1, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 1).await;
    let (status, response) = run_proto(&base, &wasip1("empty.wasm", &["e"])).await;
    assert_eq!(status, 200);
    let id = response.unwrap().info.unwrap().id.unwrap();
    if log_tasks {
        // The line is written apart from the dispatcher: wait for it.
        loop {
            let line = lines.recv().await.expect("the broker ended");
            let found = line.contains("task finished");
            log.push(line);
            if found {
                break;
            }
        }
    }
    p.messenger.close(CloseReason::normal("done")).await;
    // A graceful stop, and its log to the end.
    let stopped = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    while let Some(line) = lines.recv().await {
        log.push(line);
    }
    assert_eq!(child.0.wait().unwrap().code(), Some(0), "{log:#?}");
    (id, log)
}

#[tokio::test]
async fn one_info_line_per_finished_task() {
    let (id, log) = task_log(true).await;
    let lines: Vec<&String> = log.iter().filter(|l| l.contains("task finished")).collect();
    assert_eq!(lines.len(), 1, "{log:#?}");
    let line = lines[0];
    for field in [
        " INFO ".to_owned(),
        format!("id={id}"),
        "provider=logger".into(),
        "outcome=ok".into(),
        "attempts=1".into(),
        "queue_wait=".into(),
        "run_time=".into(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
}

#[tokio::test]
async fn the_task_line_can_be_quieted() {
    let (_, log) = task_log(false).await;
    assert!(
        log.iter().any(|l| l.contains("provider joined")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("task finished")), "{log:#?}");
}

/// Every metric the example Grafana dashboard queries is one the broker exports.
#[tokio::test]
async fn the_grafana_dashboard_uses_exported_metrics() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    ))
    .unwrap();
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 1).await;
    assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
    let text = metrics(&base).await;
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut used = 0;
    for (at, _) in dashboard.match_indices("wasimoff_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used += 1;
        assert!(
            exported.contains(name.as_str()),
            "{name} is not exported:\n{text}"
        );
    }
    assert!(used >= 10, "{used}");
    broker.shutdown().await;
}

/// A provider's name is its own text: in the metrics it is escaped, so a quote or a newline in
/// it cannot forge lines of the exposition.
#[tokio::test]
async fn a_hostile_provider_name_cannot_break_the_exposition() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let _p = provider(
        &base,
        "evil%22%7D%201%0Awasimoff_forged%201",
        1,
        Behaviour::Echo,
    )
    .await;
    wait_for_workers(&base, 1, 1).await;
    assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
    let text = metrics(&base).await;
    assert!(
        text.contains(r#"name="evil\"} 1\nwasimoff_forged 1",result="done"} 1"#),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("wasimoff_forged")),
        "{text}"
    );
    let list = json(&base, "/api/providers").await;
    assert_eq!(list[0]["name"], "evil\"} 1\nwasimoff_forged 1");
    broker.shutdown().await;
}
