//! Durable tasks (issue 19): a `wasimoff batch` whose broker is killed with SIGKILL and started
//! again on the same data directory still ends with every result, each exactly once.
//!
//! The broker runs in a child process so that it can be killed: this test binary itself,
//! started again to run only [`broker_child`], which serves a broker when
//! `WASIMOFF_TEST_BROKER_DIR` is set (and does nothing as an ordinary test).

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wasimoff_broker::{BrokerConfig, NatsConfig, StoreConfig, TaskStateConfig};

use crate::support::{Env, json_lines, text};

const DIR_VAR: &str = "WASIMOFF_TEST_BROKER_DIR";
const LISTEN_VAR: &str = "WASIMOFF_TEST_BROKER_LISTEN";
/// The NATS server of a broker child that keeps its tasks there (see `cluster.rs`).
const NATS_VAR: &str = "WASIMOFF_TEST_BROKER_NATS";
/// How long its tasks go without a sign of life before another broker takes them.
pub(crate) const NATS_ACK_WAIT: Duration = Duration::from_secs(2);

/// Not a test by itself: the broker process of the tests below (see the module's text).
#[test]
fn broker_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let listen = std::env::var(LISTEN_VAR).unwrap_or_else(|_| "127.0.0.1:0".into());
    let tasks = match std::env::var(NATS_VAR) {
        Ok(server) => TaskStateConfig::Nats(NatsConfig {
            servers: vec![server],
            ack_wait: NATS_ACK_WAIT,
            replicas: 1,
        }),
        Err(_) => TaskStateConfig::Auto,
    };
    let env = Env::start(BrokerConfig {
        listen: listen.parse().unwrap(),
        store: StoreConfig::Dir(dir.into()),
        tasks,
        log_tasks: false,
        ..BrokerConfig::default()
    });
    println!("BROKER {}", env.url);
    // Serve until the parent kills this process.
    loop {
        std::thread::park();
    }
}

/// The broker child process; killed (SIGKILL) when dropped.
pub(crate) struct BrokerProcess {
    child: Child,
    pub(crate) url: String,
}

impl BrokerProcess {
    fn start(dir: &std::path::Path, listen: &str) -> BrokerProcess {
        Self::start_with(dir, listen, None)
    }

    /// A broker on `dir` listening on `listen`, keeping its tasks in NATS if `nats` is given.
    pub(crate) fn start_with(
        dir: &std::path::Path,
        listen: &str,
        nats: Option<&str>,
    ) -> BrokerProcess {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["durable::broker_child", "--exact", "--nocapture"])
            .env(DIR_VAR, dir)
            .env(LISTEN_VAR, listen)
            .env_remove(NATS_VAR);
        if let Some(nats) = nats {
            command.env(NATS_VAR, nats);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the broker child ended before it listened")
                .unwrap();
            if let Some(url) = line.strip_prefix("BROKER ") {
                break url.to_owned();
            }
        };
        // Drain the rest, so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        BrokerProcess { child, url }
    }

    pub(crate) fn kill(mut self) {
        // `Child::kill` is SIGKILL.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls the broker's status until `check` holds (the broker is another process: there is no
/// event to wait on).
fn wait_status(
    client: &wasimoff_client::Client,
    what: &str,
    check: impl Fn(&wasimoff_client::Status) -> bool,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..3_000 {
        if let Ok(status) = runtime.block_on(client.status())
            && check(&status)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the broker never reported {what}");
}

#[test]
fn a_batch_survives_its_broker_killed_with_sigkill() {
    const TASKS: u64 = 1_000;
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path(), "127.0.0.1:0");
    let url = broker.url.clone();
    let client = wasimoff_client::Client::new(&url).unwrap();
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(client.upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm")))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.json");
    std::fs::write(
        &template,
        r#"{"info": {"reference": "task-{i}"},
            "params": {"binary": {"ref": "hello.wasm"}, "args": ["hello.wasm", "n={}"]}}"#,
    )
    .unwrap();
    // No provider yet: every task is accepted and waits.
    let batch = Command::new(env!("CARGO_BIN_EXE_wasimoff"))
        .env("WASIMOFF_BROKER", &url)
        .env_remove("WASIMOFF_TOKEN")
        .env_remove("WASIMOFF_CA_CERT")
        .args(["batch", "--template"])
        .arg(&template)
        .args(["--range", &TASKS.to_string(), "--concurrency", "1000"])
        .args(["--progress", "--reconnect-for", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_status(&client, "all tasks queued", |s| {
        u64::try_from(s.queued) == Ok(TASKS)
    });

    // kill -9, and start again on the same directory and address.
    let addr = url.trim_start_matches("http://").to_owned();
    broker.kill();
    let broker = BrokerProcess::start(data.path(), &addr);
    assert_eq!(broker.url, url);
    wait_status(&client, "the journaled tasks queued again", |s| {
        u64::try_from(s.queued) == Ok(TASKS)
    });

    // Now a provider joins, and the batch ends.
    let env = Env::attach(&url);
    let _provider = env.add_provider("after-restart", 4);
    let out = batch.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = json_lines(&out.stdout);
    let mut indexes = BTreeSet::new();
    for line in &lines {
        let index = line["index"].as_u64().unwrap();
        assert!(indexes.insert(index), "index {index} twice: {line}");
        assert_eq!(line["status"], 0, "{line}");
        assert_eq!(line["reference"], format!("task-{index}"));
        let stdout = line["stdout"].as_str().unwrap();
        assert!(stdout.contains(&format!(r#""n={index}""#)), "{stdout}");
    }
    assert_eq!(lines.len(), TASKS as usize, "{stderr}");
    assert_eq!(indexes, (0..TASKS).collect());
    assert!(stderr.contains("1000 exited 0"), "{stderr}");
    drop(broker);
}
