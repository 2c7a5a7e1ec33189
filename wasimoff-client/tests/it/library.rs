//! The library against the shared broker: Connect runs, the stream API, typed errors.

use std::time::Duration;

use futures::StreamExt;
use wasimoff_client::{Error, FailureKind, Task};

use crate::support::shared;

#[test]
fn run_over_connect_returns_output_and_status() {
    let env = shared();
    let client = env.client();
    let output = env
        .block_on(async move {
            client
                .run(
                    Task::wasip1("hello.wasm")
                        .args(["print_envs", "stdin", "exit:7"])
                        .env("K", "v")
                        .stdin("in\n")
                        .reference("lib-1"),
                )
                .await
        })
        .unwrap();
    assert_eq!(output.status, 7);
    assert!(output.stdout_lossy().contains("env K=v"));
    assert!(output.stdout_lossy().contains("in\n"));
    assert_eq!(output.reference.as_deref(), Some("lib-1"));
    assert_eq!(output.provider.as_deref(), Some("native-1"));
    assert!(output.id.is_some());
}

#[test]
fn inline_modules_and_typed_errors() {
    let env = shared();
    let client = env.client();
    let results = env.block_on(async move {
        let inline = client
            .run(Task::wasip1(wasimoff_wasi_apps::HELLO).arg("inline"))
            .await;
        let trap = client.run(Task::wasip1("hello.wasm").arg("trap")).await;
        let missing = client.run(Task::wasip1("missing.wasm")).await;
        let bad = client.run(Task::wasip1(b"not wasm".to_vec())).await;
        (inline, trap, missing, bad)
    });
    let inline = results.0.unwrap();
    assert!(
        inline
            .stdout_lossy()
            .contains(r#"args = ["task.wasm", "inline"]"#)
    );
    // A trap keeps what the guest wrote before it: stdout, and stderr (the panic message).
    let Err(Error::Task(trap)) = &results.1 else {
        panic!("{:?}", results.1)
    };
    assert_eq!(trap.kind, FailureKind::Trap, "{trap:?}");
    assert!(
        trap.output.stdout_lossy().contains("Hello, wasimoff!"),
        "{trap:?}"
    );
    assert!(
        trap.output.stderr_lossy().contains("trap requested"),
        "{trap:?}"
    );
    assert!(trap.reason().starts_with("trapped"), "{trap:?}");
    assert!(!trap.reason().contains("trap requested"), "{trap:?}");
    assert_eq!(trap.output.provider.as_deref(), Some("native-1"));
    assert!(
        matches!(results.2, Err(Error::NotFound(_))),
        "{:?}",
        results.2
    );
    assert!(
        matches!(results.3, Err(Error::BadRequest(_))),
        "{:?}",
        results.3
    );
}

#[test]
fn submit_many_yields_each_result_once_with_per_task_errors() {
    let env = shared();
    let client = env.client();
    let results = env.block_on(async move {
        let tasks = (0..200).map(|i| {
            let binary = if i % 50 == 0 {
                "missing.wasm"
            } else {
                "tsp.wasm"
            };
            Task::wasip1(binary)
                .args(["rand", "6"])
                .reference(i.to_string())
        });
        client.submit_many(tasks, 16).collect::<Vec<_>>().await
    });
    assert_eq!(results.len(), 200);
    let mut seen = [false; 200];
    for (index, result) in results {
        assert!(!seen[index], "index {index} twice");
        seen[index] = true;
        match result {
            Ok(output) => {
                assert_ne!(index % 50, 0);
                assert_eq!(output.reference, Some(index.to_string()));
                assert!(output.stdout_lossy().contains("distance"));
            }
            Err(e) => {
                assert_eq!(index % 50, 0);
                assert!(matches!(e, Error::NotFound(_)), "{e}");
            }
        }
    }
}

#[test]
fn submit_many_to_an_unreachable_broker_fails_every_task() {
    let env = shared();
    let client = wasimoff_client::Client::new("http://127.0.0.1:1").unwrap();
    let results = env.block_on(async move {
        client
            .submit_many((0..3).map(|_| Task::wasip1("x")), 2)
            .collect::<Vec<_>>()
            .await
    });
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, Err(Error::Transport(_))))
    );
}

#[test]
fn session_uploads_and_status() {
    let env = shared();
    let client = env.client();
    let (r, output, status) = env.block_on(async move {
        let session = client.session().await.unwrap();
        let r = session
            .upload(wasimoff_wasi_apps::HELLO, Some("hello-session.wasm"))
            .await
            .unwrap();
        let output = session
            .run(Task::wasip1("hello-session.wasm").arg("via-session"))
            .await
            .unwrap();
        session.close().await;
        (r, output, client.status().await.unwrap())
    });
    assert_eq!(r, wasimoff_core::store::Ref::of(wasimoff_wasi_apps::HELLO));
    assert!(output.stdout_lossy().contains("via-session"));
    assert_eq!(status.providers, 1);
}

#[test]
fn a_missing_artifact_fails_the_task_and_keeps_its_output() {
    let env = shared();
    let client = env.client();
    let result = env.block_on(async move {
        client
            .run(
                Task::wasip1("hello.wasm")
                    .arg("kept")
                    .artifacts(["nope.txt"]),
            )
            .await
    });
    let Err(Error::Task(failure)) = &result else {
        panic!("{result:?}")
    };
    assert_eq!(failure.kind, FailureKind::Other, "{failure:?}");
    assert!(
        failure.message.starts_with("artifact not found: nope.txt"),
        "{failure:?}"
    );
    assert!(
        failure.output.stdout_lossy().contains(r#""kept""#),
        "{failure:?}"
    );
    assert_eq!(failure.output.status, 0);
    assert_eq!(failure.output.artifacts, None);
}

/// `Session::map` yields results in the order of its inputs even when later tasks finish
/// first, and `with_progress` counts every result and every failure.
#[test]
fn map_keeps_the_input_order_and_progress_counts_everything() {
    let env = shared();
    let client = env.client();
    let (results, seen) = env.block_on(async move {
        let session = client.session().await.unwrap();
        // The first inputs sleep longest, so they finish last; input 3 traps.
        let inputs = vec![300u64, 200, 100, 0, 0, 0];
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let results = wasimoff_client::with_progress(
            session.map(inputs.into_iter().enumerate(), 6, |(i, ms)| {
                let word = if i == 3 {
                    "trap".to_owned()
                } else {
                    format!("sleep:{ms}")
                };
                Task::wasip1("hello.wasm").args([format!("n={i}"), word])
            }),
            Some(6),
            move |p| record.lock().unwrap().push(p),
        )
        .collect::<Vec<_>>()
        .await;
        let seen = seen.lock().unwrap().clone();
        (results, seen)
    });
    assert_eq!(results.len(), 6);
    for (i, result) in results.iter().enumerate() {
        if i == 3 {
            assert!(matches!(result, Err(Error::Task(_))), "{result:?}");
        } else {
            let stdout = result.as_ref().unwrap().stdout_lossy();
            assert!(stdout.contains(&format!("\"n={i}\"")), "{i}: {stdout}");
        }
    }
    assert_eq!(seen.len(), 6);
    let last = seen.last().unwrap();
    assert_eq!((last.done, last.failed, last.total), (6, 1, Some(6)));
    assert!(seen.windows(2).all(|w| w[1].done == w[0].done + 1));
}

/// `submit` answers an id at once; `result`/`wait` fetch the output later (more than once),
/// `cancel` ends a task that has not finished, and ids this client does not own are unknown.
#[test]
fn submit_now_fetch_later_and_cancel_by_id() {
    let env = shared();
    let client = env.client();
    env.block_on(async move {
        let id = client
            .submit(Task::wasip1("hello.wasm").arg("later"))
            .await
            .unwrap();
        let output = client.wait(&id).await.unwrap();
        assert!(output.stdout_lossy().contains(r#""later""#));
        assert_eq!(output.id.as_deref(), Some(id.as_str()));
        // Kept: a second fetch finds it again.
        let again = client.result(&id, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(again.stdout, output.stdout);

        // A long task: pending at first, then cancelled.
        let id = client
            .submit(Task::wasip1("hello.wasm").arg("sleep:60000"))
            .await
            .unwrap();
        assert_eq!(client.result(&id, Duration::ZERO).await.unwrap(), None);
        client.cancel(&id).await.unwrap();
        let cancelled = client.wait(&id).await;
        assert!(
            matches!(&cancelled, Err(e) if e.code() == "canceled"),
            "{cancelled:?}"
        );

        // A failed task keeps its output here too.
        let id = client
            .submit(Task::wasip1("hello.wasm").arg("trap"))
            .await
            .unwrap();
        let Err(Error::Task(failure)) = client.wait(&id).await else {
            panic!("expected a trap")
        };
        assert!(failure.output.stdout_lossy().contains("Hello, wasimoff!"));

        let unknown = client.result("no-such-task", Duration::ZERO).await;
        assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
        let unknown = client.cancel("no-such-task").await;
        assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
    });
}

/// One task of a session is cancelled on its own: the broker stops it (its slot is freed) and
/// the call ends `canceled`, while another task on the same session runs to its end.
#[test]
fn one_task_of_a_session_is_cancelled_alone() {
    let env = shared();
    let client = env.client();
    env.block_on(async move {
        let session = client.session().await.unwrap();
        let cancel = wasimoff_client::CancellationToken::new();
        let slow = session.run_with_cancel(
            Task::wasip1("hello.wasm").arg("sleep:60000"),
            cancel.clone(),
        );
        let other = session.run(Task::wasip1("hello.wasm").args(["sleep:300", "other"]));
        let stopper = async {
            // Cancel once the slow task runs on the provider.
            let status = client.clone();
            loop {
                if status.status().await.is_ok_and(|s| s.running >= 1) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            cancel.cancel();
        };
        let (slow, other, ()) = tokio::join!(slow, other, stopper);
        assert!(
            matches!(&slow, Err(e) if e.code() == "canceled"),
            "{slow:?}"
        );
        let other = other.unwrap();
        assert!(other.stdout_lossy().contains("\"other\""));
        // The same session still works, and the name can be used again.
        let again = session
            .run_with_cancel(
                Task::wasip1("hello.wasm").arg("again"),
                wasimoff_client::CancellationToken::new(),
            )
            .await
            .unwrap();
        assert!(again.stdout_lossy().contains("\"again\""));
    });
}
