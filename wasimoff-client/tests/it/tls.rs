//! A broker serving TLS itself with a self-signed certificate (made here with rcgen), client
//! and provider tokens: a native provider connects over wss:// trusting that certificate, the
//! CLI runs tasks over https:// (`run`) and wss:// (`task`) with `--ca-cert`. Setup errors
//! fail at once with one message naming what to check and exit 78, even with `--retry`:
//! an untrusted certificate, a wrong token, a wrong path; a provider with a wrong token, a
//! wrong path or no CA stops instead of retrying.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use wasimoff_broker::{BrokerConfig, TlsConfig};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{ConnectFailure, ConnectionState, Provider, ProviderConfig, ProviderError},
};

use crate::support::{Env, json_lines, run, text};

const CLIENT_TOKEN: &str = "client-secret";
const PROVIDER_TOKEN: &str = "provider-secret";

/// Far longer than any of these commands takes when it fails at once; far shorter than the
/// two minutes `--retry` would keep trying.
const FAST: Duration = Duration::from_secs(20);

struct Tls {
    env: Env,
    /// The broker's certificate (PEM), which is its own CA.
    cert: String,
    cert_file: PathBuf,
    /// A local copy of hello.wasm.
    hello: PathBuf,
}

/// The TLS broker of this file, with one native provider that trusts its certificate.
fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let key =
            rcgen::generate_simple_self_signed(["127.0.0.1".into(), "localhost".into()]).unwrap();
        let (cert, key) = (key.cert.pem(), key.signing_key.serialize_pem());
        let dir = tempfile::tempdir().unwrap().keep();
        let cert_file = dir.join("broker.pem");
        std::fs::write(&cert_file, &cert).unwrap();
        let hello = dir.join("hello.wasm");
        std::fs::write(&hello, wasimoff_wasi_apps::HELLO).unwrap();
        let env = Env::start(BrokerConfig {
            tls: Some(TlsConfig::pem(cert.clone(), key)),
            client_tokens: vec![CLIENT_TOKEN.into()],
            provider_tokens: vec![PROVIDER_TOKEN.into()],
            ..crate::support::config(1000)
        });
        assert!(env.url.starts_with("https://127.0.0.1:"), "{}", env.url);
        let tls = Tls {
            env,
            cert,
            cert_file,
            hello,
        };
        let provider = tls.provider(&tls.env.url, Some(PROVIDER_TOKEN), true);
        let runner = provider.clone();
        tls.env.spawn(async move {
            let _ = runner.run().await;
        });
        // Connected over wss:// (the broker's own Listing call follows; tasks wait for it).
        let mut state = provider.watch();
        tls.env
            .block_on(async move {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    state.wait_for(|s| s.state == ConnectionState::Connected),
                )
                .await
                .map(|_| ())
            })
            .expect("the provider never connected over wss://");
        tls
    })
}

impl Tls {
    /// A native provider (one worker) for `broker`; it does not reconnect for an hour, so a
    /// provider that retried instead of stopping would never end.
    fn provider(&self, broker: &str, token: Option<&str>, trust: bool) -> Provider {
        let executor = WasmtimeExecutor::new(WasmtimeConfig {
            workers: 1,
            ..WasmtimeConfig::default()
        })
        .unwrap();
        let config = ProviderConfig {
            name: "tls-provider".into(),
            concurrency: Some(1),
            token: token.map(str::to_owned),
            ca_cert_pem: trust.then(|| self.cert.clone().into_bytes()),
            reconnect_min: Duration::from_secs(3600),
            reconnect_max: Duration::from_secs(3600),
            ..ProviderConfig::new(broker)
        };
        Provider::builder(config, Arc::new(executor))
            .build()
            .unwrap()
    }

    /// Runs a provider until it gives up; fails if it does not within a minute.
    fn provider_gives_up(&self, provider: Provider) -> ProviderError {
        self.env
            .block_on(
                async move { tokio::time::timeout(Duration::from_secs(60), provider.run()).await },
            )
            .expect("the provider kept retrying")
            .expect_err("the provider ran")
    }

    /// The CLI with the client token; `--ca-cert` only when asked.
    fn cli(&self, trust: bool) -> std::process::Command {
        let mut command = self.env.cli();
        command.env("WASIMOFF_TOKEN", CLIENT_TOKEN);
        if trust {
            command.arg("--ca-cert").arg(&self.cert_file);
        }
        command
    }
}

/// Asserts a CLI failure that came at once, as one line naming `hint`, with exit code 78.
fn fails_once(command: &mut std::process::Command, hints: &[&str]) -> String {
    let started = Instant::now();
    let out = run(command);
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(elapsed < FAST, "took {elapsed:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for hint in hints {
        assert!(stderr.contains(hint), "no {hint:?} in: {stderr}");
    }
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    stderr
}

#[test]
fn the_cli_runs_tasks_over_https_and_wss_with_the_brokers_certificate() {
    let tls = tls();
    // run: upload and Connect RPC over https://.
    let out = run(tls
        .cli(true)
        .args(["run", tls.hello.to_str().unwrap(), "--", "over", "tls"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Hello, wasimoff!"), "{stdout}");
    assert!(
        stdout.contains(r#"args = ["hello.wasm", "over", "tls"]"#),
        "{stdout}"
    );

    // task: the client socket over wss://, after an upload under an alias.
    let out = run(tls.cli(true).args([
        "upload",
        tls.hello.to_str().unwrap(),
        "--name",
        "tls-hello.wasm",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks.json");
    let task = |n: u32| {
        serde_json::json!({
            "info": {"reference": format!("tls-{n}")},
            "params": {"binary": {"ref": "tls-hello.wasm"}, "args": ["hello.wasm", n.to_string()]},
        })
    };
    std::fs::write(&tasks, serde_json::json!([task(1), task(2)]).to_string()).unwrap();
    let out = run(tls.cli(true).args(["task", tasks.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["status"], 0, "{line}");
        assert_eq!(line["provider"], "tls-provider", "{line}");
    }

    let out = run(tls.cli(true).args(["status", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_lines(&out.stdout)[0]["healthy"], true);
}

#[test]
fn without_the_brokers_certificate_the_cli_fails_at_once_even_with_retry() {
    let tls = tls();
    // https:// (status, run's upload) and wss:// (task) alike.
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks.json");
    let task = serde_json::json!({"params": {"binary": {"ref": "hello.wasm"}}});
    std::fs::write(&tasks, serde_json::json!([task, task, task]).to_string()).unwrap();
    for args in [
        vec!["--retry", "status"],
        vec!["--retry", "run", tls.hello.to_str().unwrap()],
        vec!["--retry", "task", tasks.to_str().unwrap()],
    ] {
        let stderr = fails_once(tls.cli(false).args(&args), &["TLS", "--ca-cert"]);
        assert!(stderr.contains("UnknownIssuer"), "{args:?}: {stderr}");
    }

    // A --ca-cert that is not the broker's is named in the advice.
    let other = rcgen::generate_simple_self_signed(["127.0.0.1".into()]).unwrap();
    let wrong = dir.path().join("other.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    fails_once(
        tls.cli(false)
            .args(["status", "--ca-cert", wrong.to_str().unwrap()]),
        // Same issuer name as the broker's (rcgen's default), so: BadSignature.
        &["invalid peer certificate", "other.pem"],
    );

    // A file that holds no certificate is a local error, before anything is sent.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let out = run(tls
        .cli(false)
        .args(["status", "--ca-cert", garbage.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("garbage.pem: invalid CA certificate"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_wrong_token_or_path_fails_the_cli_at_once_with_advice() {
    let tls = tls();
    fails_once(
        tls.cli(true)
            .args(["--retry", "--token", "wrong", "status"]),
        &["unauthenticated", "--token"],
    );
    fails_once(
        tls.cli(true)
            .env_remove("WASIMOFF_TOKEN")
            .args(["run", "hello.wasm"]),
        &["requires a client token", "--token"],
    );
    let wrong_path = format!("{}/not-the-prefix", tls.env.url);
    for args in [vec!["status"], vec!["run", "hello.wasm"]] {
        fails_once(
            tls.cli(true).args(["--broker", &wrong_path]).args(&args),
            &[
                "no wasimoff broker API at this URL",
                "not-the-prefix",
                "--broker",
            ],
        );
    }
    // http:// to the TLS port: the broker says to use https://.
    let plain = tls.env.url.replacen("https://", "http://", 1);
    let out = run(tls.cli(true).args(["--broker", &plain, "status"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("use https://"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_provider_stops_on_a_wrong_token_path_or_certificate_instead_of_retrying() {
    let tls = tls();
    let url = &tls.env.url;

    let e = tls.provider_gives_up(tls.provider(url, Some("wrong"), true));
    let text = e.to_string();
    assert!(
        matches!(&e, ProviderError::Refused { error, .. } if error.kind == ConnectFailure::Status(401)),
        "{text}"
    );
    assert!(
        text.contains("HTTP 401") && text.contains("--token"),
        "{text}"
    );

    let e = tls.provider_gives_up(tls.provider(
        &format!("{url}/not-the-prefix"),
        Some(PROVIDER_TOKEN),
        true,
    ));
    let text = e.to_string();
    assert!(
        matches!(&e, ProviderError::Refused { error, .. } if error.kind == ConnectFailure::Status(404)),
        "{text}"
    );
    assert!(
        text.contains("/not-the-prefix/api/provider/ws") && text.contains("--broker"),
        "{text}"
    );

    let e = tls.provider_gives_up(tls.provider(url, Some(PROVIDER_TOKEN), false));
    let text = e.to_string();
    assert!(
        matches!(&e, ProviderError::Refused { error, .. } if error.kind == ConnectFailure::Tls),
        "{text}"
    );
    assert!(
        text.contains("UnknownIssuer") && text.contains("--ca-cert"),
        "{text}"
    );
}

/// A self-signed certificate made as a CA (what `openssl req -x509` makes by default) is
/// refused as a server's own: the advice says how to make one that works.
#[test]
fn a_ca_certificate_as_the_brokers_own_gets_its_own_advice() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let env = Env::start(BrokerConfig {
        tls: Some(TlsConfig::pem(cert.pem(), key.serialize_pem())),
        ..crate::support::config(10)
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, cert.pem()).unwrap();
    fails_once(
        env.cli()
            .args(["--ca-cert", file.to_str().unwrap(), "status"]),
        &["CaUsedAsEndEntity", "CA:FALSE"],
    );
}
