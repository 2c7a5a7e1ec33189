//! Brokers that share NATS JetStream (issue 19): one `nats-server -js`, three brokers (child
//! processes, see `durable.rs`), four providers spread over them, 10,000 tasks submitted to the
//! brokers in turn; two brokers are killed with SIGKILL during the run and one of them is
//! started again. Every task is answered exactly once, with its own output.
//!
//! `nats-server` comes from Debian (`cargo xtask test` installs it).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;

use crate::durable::BrokerProcess;
use crate::support::Env;
use wasimoff_wasi_apps::nats::NatsServer;

#[test]
fn three_brokers_on_jetstream_answer_every_task_once_through_two_sigkills() {
    const TASKS: usize = 10_000;
    let nats = NatsServer::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start =
        |i: usize, listen: &str| BrokerProcess::start_with(dirs[i].path(), listen, Some(&nats.url));
    let a = start(0, "127.0.0.1:0");
    let b = start(1, "127.0.0.1:0");
    let c = start(2, "127.0.0.1:0");
    let urls = [a.url.clone(), b.url.clone(), c.url.clone()];

    // Four providers: two at A, one each at B and C.
    let providers: Vec<_> = [
        (&urls[0], "a1"),
        (&urls[0], "a2"),
        (&urls[1], "b1"),
        (&urls[2], "c1"),
    ]
    .into_iter()
    .map(|(url, name)| {
        let env = Env::attach(url);
        let provider = env.add_provider(name, 2);
        (env, provider)
    })
    .collect();

    let client = wasimoff_client::Client::builder(&urls[0])
        .also_broker(&urls[1])
        .also_broker(&urls[2])
        .reconnect_for(Duration::from_secs(120))
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Uploaded at A only: the others fetch it from the cluster by its ref.
    let hello = runtime
        .block_on(client.upload(wasimoff_wasi_apps::HELLO, None))
        .unwrap();
    let tasks = (0..TASKS).map(move |i| {
        wasimoff_client::Task::wasip1(hello.as_str()).args(["hello.wasm".into(), format!("n={i}")])
    });

    let mut b = Some(b);
    let mut c = Some(c);
    let mut restarted = None;
    let mut seen = BTreeSet::new();
    let mut by_provider = std::collections::BTreeMap::<String, usize>::new();
    let began = std::time::Instant::now();
    runtime.block_on(async {
        let mut results = client.run_all(tasks, TASKS);
        while let Some((index, result)) = results.next().await {
            let output = result.unwrap_or_else(|e| panic!("task {index}: {e}"));
            assert!(seen.insert(index), "task {index} answered twice");
            let stdout = output.stdout_lossy();
            assert!(
                stdout.contains(&format!(r#""n={index}""#)),
                "{index}: {stdout}"
            );
            *by_provider
                .entry(output.provider.unwrap_or_default())
                .or_default() += 1;
            if seen.len() == TASKS / 5 {
                // Mid-run: kill B and C (SIGKILL), start B again on its address and data.
                let addr = urls[1].trim_start_matches("http://").to_owned();
                b.take().unwrap().kill();
                c.take().unwrap().kill();
                eprintln!("killed B and C after {:?}", began.elapsed());
                restarted = Some(start(1, &addr));
            }
        }
    });
    eprintln!(
        "{TASKS} tasks in {:?}, by provider: {by_provider:?}",
        began.elapsed()
    );
    assert_eq!(seen.len(), TASKS);
    // Tasks went to the brokers in turn and ran wherever a provider was free: every provider
    // ran some, so tasks crossed brokers (C's provider ran tasks submitted at A and B).
    for name in ["a1", "a2", "b1", "c1"] {
        assert!(
            by_provider.get(name).is_some_and(|n| *n > 0),
            "{name}: {by_provider:?}"
        );
    }
    assert_eq!(seen, (0..TASKS).collect());
    assert!(restarted.is_some(), "the brokers were killed mid-run");
    drop(providers);
}
