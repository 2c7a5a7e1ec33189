//! The executor conformance suite (feature `conformance`): one async check per behaviour that
//! every [`Executor`] must show, run over the guests of this crate (every guest appears in at
//! least one check).
//!
//! The checks only use the [`Executor`] trait and per-task [`ExecLimits`](wasimoff_core::executor::ExecLimits), so the native
//! `WasmtimeExecutor` and the browser's executor run the same cases. Each check panics with a
//! description when the executor misbehaves. Native crates get one `#[tokio::test]` per check
//! from [`executor_conformance_tests!`](crate::executor_conformance_tests); other runners can
//! iterate over [`CASES`].

use std::io::{Cursor, Read, Write};
use std::time::Duration;

use bytes::Bytes;
use wasimoff_core::executor::{
    CancellationToken, ExecError, ExecOutput, ExecTask, Executor, ResolvedFile, Termination,
};
use wasimoff_core::platform::{BoxFuture, Instant};
use zip::write::SimpleFileOptions;

use crate as apps;

/// The first line the `hello` guest prints.
pub const GREETING: &str = "Hello, wasimoff! This is the hello guest.";
/// The line `hello file:<path>` appends.
pub const APPENDED: &str = "appended by the wasimoff hello guest\n";

/// A task running `guest` with this argv.
pub fn task(guest: &[u8], args: &[&str]) -> ExecTask {
    ExecTask::new(
        "conformance",
        ResolvedFile::from_bytes(Bytes::copy_from_slice(guest)),
        args.iter().map(|arg| (*arg).to_owned()).collect(),
    )
}

/// Runs a task that must run (not an `ExecError`).
pub async fn run(executor: &dyn Executor, task: ExecTask) -> ExecOutput {
    let args = task.args.clone();
    match executor.execute(task, CancellationToken::new()).await {
        Ok(output) => output,
        Err(e) => panic!("task {args:?} failed to run: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts an exit status, showing the outputs otherwise.
pub fn assert_exit(output: &ExecOutput, status: i32) {
    assert_eq!(
        output.termination,
        Termination::Exited(status),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// A zip built from `(name, contents)` pairs; names ending in `/` are directories.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Bytes {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, contents) in entries {
        if name.ends_with('/') {
            writer
                .add_directory(*name, SimpleFileOptions::default())
                .expect("zip dir");
        } else {
            writer
                .start_file(*name, SimpleFileOptions::default())
                .expect("zip file");
            writer.write_all(contents).expect("zip write");
        }
    }
    Bytes::from(writer.finish().expect("zip finish").into_inner())
}

/// The `(name, contents)` entries of a zip, directories with empty contents, in zip order.
pub fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("artifacts are a zip");
    (0..archive.len())
        .map(|index| {
            let mut entry = archive.by_index(index).expect("zip entry");
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("zip read");
            (entry.name().to_owned(), contents)
        })
        .collect()
}

/// A check of the suite.
pub type Case = for<'a> fn(&'a dyn Executor) -> BoxFuture<'a, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every check with its name, for runners without the test macro.
        pub const CASES: &[(&str, Case)] = &[$((stringify!($name), |executor| Box::pin($name(executor)))),*];

        /// Generates one `#[tokio::test]` per conformance check; `$make` builds the executor
        /// (an expression evaluated per test). Needs `tokio` with `macros` and `rt-multi-thread`.
        #[macro_export]
        macro_rules! executor_conformance_tests {
            ($make:expr) => {
                $(
                    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let executor = $make;
                        $crate::conformance::$name(&executor).await;
                    }
                )*
            };
        }

        /// One `#[wasm_bindgen_test]` per check; see `executor_conformance_wasm_tests!`.
        #[doc(hidden)]
        #[macro_export]
        macro_rules! executor_conformance_wasm_cases {
            ($make:expr) => {
                $(
                    #[::wasm_bindgen_test::wasm_bindgen_test]
                    async fn $name() {
                        if let Some((_, reason)) = EXECUTOR_CONFORMANCE_SKIPPED
                            .iter()
                            .find(|(skipped, _)| *skipped == stringify!($name))
                        {
                            ::wasm_bindgen_test::console_log!(
                                "skipped {}: {}",
                                stringify!($name),
                                reason
                            );
                            return;
                        }
                        let executor = $make;
                        $crate::conformance::$name(&executor).await;
                    }
                )*
            };
        }
    };
}

/// The same as [`executor_conformance_tests!`](crate::executor_conformance_tests) with one `#[wasm_bindgen_test]` per check, for
/// executors in browsers (the calling crate needs `wasm-bindgen-test`). `skip` names the checks
/// an executor truly cannot pass, each with the reason: their tests log the reason and pass,
/// and a test checks that every skipped name is a check.
#[macro_export]
macro_rules! executor_conformance_wasm_tests {
    ($make:expr) => {
        $crate::executor_conformance_wasm_tests!($make, skip: {});
    };
    ($make:expr, skip: { $($skip:ident: $reason:literal),* $(,)? }) => {
        const EXECUTOR_CONFORMANCE_SKIPPED: &[(&str, &str)] = &[$((stringify!($skip), $reason)),*];
        $crate::executor_conformance_wasm_cases!($make);

        #[::wasm_bindgen_test::wasm_bindgen_test]
        fn executor_conformance_skips_name_checks() {
            for (skipped, _) in EXECUTOR_CONFORMANCE_SKIPPED {
                assert!(
                    $crate::conformance::CASES.iter().any(|(name, _)| name == skipped),
                    "{skipped} is not an executor conformance check"
                );
            }
        }
    };
}

cases!(
    hello_argv_exactly_as_given,
    hello_envs,
    env_without_equals_is_invalid_task,
    empty_argv_is_invalid_task,
    hello_stdin_is_readable,
    hello_exit_status,
    hello_trap_keeps_partial_output,
    hello_rootfs_files_and_artifacts,
    artifacts_without_rootfs,
    no_directory_without_rootfs_or_artifacts,
    wasi_probe_answers_as_wasmtime,
    missing_artifact_is_an_error,
    artifact_path_escaping_root_is_rejected,
    rootfs_path_traversal_is_rejected,
    corrupt_wasm_is_rejected,
    legacy_wasi_unstable_namespace,
    hello_c_guest,
    hello_go_guest,
    tsp_solves,
    load_prints_digest,
    sleep_sleeps,
    loop_stopped_at_deadline,
    loop_cancelled_by_token,
    poll_answers_clocks_and_fds,
    stdin_ends_and_never_blocks,
    sleep_stopped_at_deadline,
    sleep_cancelled_by_token,
    poll_waits_stopped_at_deadline,
    membomb_capped,
    membomb_report_survives_cap,
    flood_cut_at_output_cap,
    concurrent_hellos,
);

/// argv reaches the guest exactly, arg0 included; returning from `main` is status 0.
pub async fn hello_argv_exactly_as_given(executor: &dyn Executor) {
    let out = run(
        executor,
        task(apps::HELLO, &["hello.wasm", "one", "two words", "ünï", ""]),
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        format!("{GREETING}\nargs = [\"hello.wasm\", \"one\", \"two words\", \"ünï\", \"\"]\n")
    );
    assert!(out.stderr.is_empty());
    assert!(!out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(out.artifacts, None);
}

/// `KEY=value` entries become the guest's environment, and only those.
pub async fn hello_envs(executor: &dyn Executor) {
    let mut t = task(apps::HELLO, &["hello.wasm", "print_envs"]);
    t.envs = vec!["A=1".into(), "WITH_EQUALS=x=y".into(), "EMPTY=".into()];
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    let envs: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("env ").map(str::to_owned))
        .collect();
    assert_eq!(envs, ["A=1", "WITH_EQUALS=x=y", "EMPTY="]);
}

/// An environment entry without `=` is an `InvalidTask` error.
pub async fn env_without_equals_is_invalid_task(executor: &dyn Executor) {
    let mut t = task(apps::HELLO, &["hello.wasm"]);
    t.envs = vec!["NOEQUALS".into()];
    let result = executor.execute(t, CancellationToken::new()).await;
    assert!(
        matches!(result, Err(ExecError::InvalidTask(ref m)) if m.contains("NOEQUALS")),
        "{result:?}"
    );
}

/// A task without arg0 is an `InvalidTask` error.
pub async fn empty_argv_is_invalid_task(executor: &dyn Executor) {
    let result = executor
        .execute(task(apps::HELLO, &[]), CancellationToken::new())
        .await;
    assert!(
        matches!(result, Err(ExecError::InvalidTask(_))),
        "{result:?}"
    );
}

/// stdin bytes are readable on fd 0, binary-safe.
pub async fn hello_stdin_is_readable(executor: &dyn Executor) {
    let mut t = task(apps::HELLO, &["hello.wasm", "stdin"]);
    let input: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    t.stdin = Bytes::from(input.clone());
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    let prefix = format!("{GREETING}\nargs = [\"hello.wasm\", \"stdin\"]\n");
    assert!(out.stdout.starts_with(prefix.as_bytes()));
    assert_eq!(&out.stdout[prefix.len()..], &input[..]);
}

/// `proc_exit(n)` is `Exited(n)`, with the output before it.
pub async fn hello_exit_status(executor: &dyn Executor) {
    for status in [0, 1, 3, 42] {
        let arg = format!("exit:{status}");
        let out = run(executor, task(apps::HELLO, &["hello.wasm", &arg, "never"])).await;
        assert_exit(&out, status);
        assert!(text(&out.stdout).starts_with(GREETING));
    }
    // A usage error in the guest is its own non-zero exit with stderr.
    let out = run(executor, task(apps::HELLO, &["hello.wasm", "exit:nope"])).await;
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("not an exit status"));
}

/// A trap is `Trapped(message)` and keeps the stdout and stderr written before it.
pub async fn hello_trap_keeps_partial_output(executor: &dyn Executor) {
    let out = run(executor, task(apps::HELLO, &["hello.wasm", "trap"])).await;
    match &out.termination {
        Termination::Trapped(message) => assert!(!message.is_empty()),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(text(&out.stdout).starts_with(GREETING), "{out:?}");
    assert!(
        text(&out.stderr).contains("trap requested"),
        "stderr: {}",
        text(&out.stderr)
    );
}

/// The rootfs zip is the guest's writable `/`; files and whole directories come back as
/// artifacts.
pub async fn hello_rootfs_files_and_artifacts(executor: &dyn Executor) {
    let rootfs = zip_of(&[
        ("data/", b""),
        ("data/in.txt", b"hi\n"),
        ("data/nested/deep.txt", b"deep\n"),
        ("out/", b""),
    ]);
    let mut t = task(
        apps::HELLO,
        &[
            "hello.wasm",
            "print_rootfs",
            "file:/data/in.txt",
            "file:out/new.txt",
        ],
    );
    t.rootfs = Some(ResolvedFile::from_bytes(rootfs));
    t.artifacts = vec!["data/in.txt".into(), "/out".into()];
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    for line in [
        "rootfs: /data/ (dir)",
        "rootfs: /data/in.txt (3 bytes)",
        "rootfs: /data/nested/deep.txt (5 bytes)",
        "rootfs: /out/ (dir)",
        "file /data/in.txt: 3 bytes",
        "file out/new.txt: does not exist, creating it",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let artifacts = unzip(out.artifacts.as_ref().expect("artifacts requested"));
    let expected: Vec<(String, Vec<u8>)> = vec![
        ("data/in.txt".into(), format!("hi\n{APPENDED}").into_bytes()),
        ("out/".into(), Vec::new()),
        ("out/new.txt".into(), APPENDED.as_bytes().to_vec()),
    ];
    assert_eq!(artifacts, expected);

    // Directory artifacts recurse, in name order.
    let rootfs = zip_of(&[
        ("d/b.txt", b"b"),
        ("d/a/x.txt", b"x"),
        ("d/a/y/z.txt", b"z"),
    ]);
    let mut t = task(apps::HELLO, &["hello.wasm"]);
    t.rootfs = Some(ResolvedFile::from_bytes(rootfs));
    t.artifacts = vec!["d".into()];
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    let names: Vec<String> = unzip(out.artifacts.as_ref().expect("artifacts"))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        [
            "d/",
            "d/b.txt",
            "d/a/",
            "d/a/x.txt",
            "d/a/y/",
            "d/a/y/z.txt"
        ]
    );
}

/// Without a rootfs the guest still gets an empty writable `/`.
pub async fn artifacts_without_rootfs(executor: &dyn Executor) {
    let mut t = task(
        apps::HELLO,
        &["hello.wasm", "print_rootfs", "file:result.txt"],
    );
    t.artifacts = vec!["result.txt".into()];
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    assert!(!text(&out.stdout).contains("rootfs: /result.txt"));
    let artifacts = unzip(out.artifacts.as_ref().expect("artifacts"));
    assert_eq!(
        artifacts,
        vec![("result.txt".to_owned(), APPENDED.as_bytes().to_vec())]
    );
}

/// A task with neither a rootfs nor artifacts gets no preopened directory, as under
/// `wasmtime run` without `--dir`: listing `/` fails (the guest reports it and exits 1), and fd
/// 3 is not open.
pub async fn no_directory_without_rootfs_or_artifacts(executor: &dyn Executor) {
    let out = run(executor, task(apps::HELLO, &["hello.wasm", "print_rootfs"])).await;
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("print_rootfs"), "{out:?}");
    // With an empty rootfs the same guest lists an empty `/`.
    let mut t = task(apps::HELLO, &["hello.wasm", "print_rootfs"]);
    t.rootfs = Some(ResolvedFile::from_bytes(zip_of(&[])));
    assert_exit(&run(executor, t).await, 0);
}

/// `wasiprobe` (every WASI preview 1 function, edge cases included) prints exactly what it
/// prints under wasmtime-wasi ([`apps::PROBE_EXPECTED`], kept true by `wasimoff-wasi`'s
/// differential test) and exits with 7.
pub async fn wasi_probe_answers_as_wasmtime(executor: &dyn Executor) {
    let mut t = task(apps::PROBE, &["wasiprobe", "first arg", "ünïcode"]);
    t.rootfs = Some(ResolvedFile::from_bytes(zip_of(&[])));
    let out = run(executor, t).await;
    let stdout = text(&out.stdout);
    let differences: Vec<String> = apps::PROBE_EXPECTED
        .lines()
        .zip(stdout.lines().chain(std::iter::repeat("<missing>")))
        .filter(|(want, got)| want != got)
        .map(|(want, got)| format!("  want {want}\n  got  {got}"))
        .collect();
    assert!(
        differences.is_empty() && stdout.lines().count() == apps::PROBE_EXPECTED.lines().count(),
        "wasiprobe differs from wasmtime-wasi:\n{}\nstderr: {}",
        differences.join("\n"),
        text(&out.stderr)
    );
    assert_exit(&out, 7);
}

/// An artifact the guest did not create fails the task with `MissingArtifact(path)` in
/// [`ExecOutput::error`], and the guest's output is kept.
pub async fn missing_artifact_is_an_error(executor: &dyn Executor) {
    let mut t = task(apps::HELLO, &["hello.wasm"]);
    t.artifacts = vec!["nope.txt".into()];
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    assert_eq!(
        out.error,
        Some(ExecError::MissingArtifact("nope.txt".into()))
    );
    assert!(!out.stdout.is_empty(), "the output is kept: {out:?}");
    assert_eq!(out.artifacts, None);
}

/// Artifact paths may not leave the root.
pub async fn artifact_path_escaping_root_is_rejected(executor: &dyn Executor) {
    for path in ["../etc/passwd", "a/../../b"] {
        let mut t = task(apps::HELLO, &["hello.wasm"]);
        t.artifacts = vec![path.into()];
        // Refused before the run, or after it (then with the output kept).
        let result = executor.execute(t, CancellationToken::new()).await;
        let error = match &result {
            Ok(out) => out.error.as_ref(),
            Err(e) => Some(e),
        };
        assert!(
            matches!(
                error,
                Some(ExecError::InvalidTask(_) | ExecError::MissingArtifact(_))
            ),
            "{path}: {result:?}"
        );
    }
}

/// Rootfs entries with `..`, absolute paths or symlinks are `InvalidRootfs` naming the entry.
pub async fn rootfs_path_traversal_is_rejected(executor: &dyn Executor) {
    let mut symlink = zip::ZipWriter::new(Cursor::new(Vec::new()));
    symlink
        .add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
        .expect("zip symlink");
    let symlink = Bytes::from(symlink.finish().expect("zip").into_inner());
    for (entry, zip) in [
        ("../evil", zip_of(&[("../evil", b"x")])),
        ("a/../../evil", zip_of(&[("a/../../evil", b"x")])),
        ("/abs", zip_of(&[("/abs", b"x")])),
        ("link", symlink),
        ("not a zip", Bytes::from_static(b"this is not a zip file")),
    ] {
        let mut t = task(apps::HELLO, &["hello.wasm"]);
        t.rootfs = Some(ResolvedFile::from_bytes(zip));
        let result = executor.execute(t, CancellationToken::new()).await;
        match result {
            Err(ExecError::InvalidRootfs(message)) => {
                if entry != "not a zip" {
                    assert!(message.contains(entry), "{entry}: {message}");
                }
            }
            other => panic!("{entry}: expected InvalidRootfs, got {other:?}"),
        }
    }
}

/// Bytes that are not a (WASI command) module are `InvalidModule` with a message.
pub async fn corrupt_wasm_is_rejected(executor: &dyn Executor) {
    let truncated = &apps::HELLO[..apps::HELLO.len() / 2];
    for bytes in [
        &b"not wasm at all"[..],
        &b"\0asm\x01\0\0\0\x01\xff\xff"[..],
        truncated,
        &b"\0asm\x01\0\0\0"[..], // valid, but no `_start`
    ] {
        let result = executor
            .execute(task(bytes, &["bad.wasm"]), CancellationToken::new())
            .await;
        match result {
            Err(ExecError::InvalidModule(message)) => assert!(!message.is_empty()),
            other => panic!("expected InvalidModule, got {other:?}"),
        }
    }
}

/// A module importing from the legacy `wasi_unstable` namespace runs too.
pub async fn legacy_wasi_unstable_namespace(executor: &dyn Executor) {
    let out = run(
        executor,
        task(apps::HELLO_UNSTABLE, &["hello-unstable.wasm"]),
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "hello world\n");
}

/// The Go guest (Go's own wasip1 runtime) sees argv, envs and stdin and exits; skipped if it
/// was not built.
pub async fn hello_go_guest(executor: &dyn Executor) {
    let Some(hello_go) = apps::HELLO_GO else {
        #[allow(clippy::print_stdout)]
        {
            println!(
                "note: skipping hello_go_guest: {}",
                apps::HELLO_GO_SKIPPED.unwrap_or("HELLO_GO was not built")
            );
        }
        return;
    };
    let mut t = task(
        hello_go,
        &["hello-go.wasm", "x y", "print_envs", "stdin", "exit:7"],
    );
    t.envs = vec!["K=v".into()];
    t.stdin = Bytes::from_static(b"from stdin\n");
    let out = run(executor, t).await;
    assert_exit(&out, 7);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("Hello, wasimoff! This is the hello-go guest.\n"),
        "{stdout}"
    );
    assert!(stdout.contains("argv[1] = x y\n"), "{stdout}");
    assert!(stdout.contains("env K=v\n"), "{stdout}");
    assert!(stdout.ends_with("stdin: from stdin\n"), "{stdout}");
    let out = run(executor, task(hello_go, &["hello-go.wasm"])).await;
    assert_exit(&out, 0);
}

/// The C guest (wasi-libc) sees argv, envs and exits; skipped if it was not built.
pub async fn hello_c_guest(executor: &dyn Executor) {
    let Some(hello_c) = apps::HELLO_C else {
        #[allow(clippy::print_stdout)]
        {
            println!(
                "note: skipping hello_c_guest: {}",
                apps::HELLO_C_SKIPPED.unwrap_or("HELLO_C was not built")
            );
        }
        return;
    };
    let mut t = task(hello_c, &["hello-c.wasm", "x y", "print_envs", "exit:7"]);
    t.envs = vec!["K=v".into()];
    let out = run(executor, t).await;
    assert_exit(&out, 7);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("argv[1] = x y"), "{stdout}");
    assert!(stdout.contains("env K=v"), "{stdout}");
}

/// `tsp` solves a seeded random instance and reads one from stdin.
pub async fn tsp_solves(executor: &dyn Executor) {
    let out = run(executor, task(apps::TSP, &["tsp.wasm", "rand", "6", "42"])).await;
    assert_exit(&out, 0);
    assert!(text(&out.stdout).starts_with("distance = "), "{out:?}");
    let again = run(executor, task(apps::TSP, &["tsp.wasm", "rand", "6", "42"])).await;
    assert_eq!(out.stdout, again.stdout, "seeded runs are deterministic");

    let mut t = task(apps::TSP, &["tsp.wasm", "read"]);
    t.stdin = Bytes::from_static(b"0,0,a\n0,1,b\n1,1,c\n1,0,d\n");
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).trim(), "distance = 4");
}

/// `load` prints a digest that depends only on its arguments.
pub async fn load_prints_digest(executor: &dyn Executor) {
    let out = run(executor, task(apps::LOAD, &["load.wasm", "-i", "1000"])).await;
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let digest = stdout
        .trim()
        .strip_prefix("digest = ")
        .unwrap_or_else(|| panic!("no digest: {stdout}"));
    assert_eq!(digest.len(), 64);
    let again = run(executor, task(apps::LOAD, &["load.wasm", "-i", "1000"])).await;
    assert_eq!(out.stdout, again.stdout);
}

/// `sleep` (a `poll_oneoff` clock subscription) sleeps about as long as asked.
pub async fn sleep_sleeps(executor: &dyn Executor) {
    let started = Instant::now();
    let out = run(executor, task(apps::SLEEP, &["sleep.wasm", "50"])).await;
    assert_exit(&out, 0);
    assert!(text(&out.stdout).starts_with("requested 50 ms, slept"));
    assert!(started.elapsed() >= Duration::from_millis(50));
}

/// A guest spinning forever is stopped at its deadline with the output it made.
pub async fn loop_stopped_at_deadline(executor: &dyn Executor) {
    let mut t = task(apps::LOOP, &["loop.wasm"]);
    t.limits.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let out = run(executor, t).await;
    let elapsed = started.elapsed();
    assert_eq!(
        out.termination,
        Termination::TimedOut(Duration::from_millis(300))
    );
    assert_eq!(text(&out.stdout), "loop: spinning forever\n");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// Cancelling the token stops a spinning guest: `Cancelled`.
pub async fn loop_cancelled_by_token(executor: &dyn Executor) {
    let mut t = task(apps::LOOP, &["loop.wasm"]);
    t.limits.timeout = Some(Duration::from_secs(60));
    let token = CancellationToken::new();
    let started = Instant::now();
    let (result, ()) = futures::join!(executor.execute(t, token.clone()), async {
        wasimoff_core::platform::sleep(Duration::from_millis(200)).await;
        token.cancel();
    });
    let out = result.expect("runs");
    assert_eq!(out.termination, Termination::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Cancelled before it starts: no run at all.
    let token = CancellationToken::new();
    token.cancel();
    let out = executor
        .execute(task(apps::LOOP, &["loop.wasm"]), token)
        .await
        .expect("runs");
    assert_eq!(out.termination, Termination::Cancelled);
}

/// How long a check waits for a task that should end at once or at a short deadline before it
/// says the executor waited for the guest's sleep instead (the sleeps are 1000 s).
const PROMPTLY: Duration = Duration::from_secs(30);

/// Runs `future`, failing the check if it takes longer than [`PROMPTLY`].
async fn promptly<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match wasimoff_core::platform::timeout(PROMPTLY, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: still running after {PROMPTLY:?}"),
    }
}

/// A `hello` on every slot at once: all of them run, so no slot is still held.
async fn every_slot_is_free(executor: &dyn Executor) {
    let runs = (0..executor.concurrency().max(1)).map(|n| async move {
        let arg = format!("after-{n}");
        let out = run(executor, task(apps::HELLO, &["hello.wasm", &arg])).await;
        assert_exit(&out, 0);
    });
    promptly(
        "hello after a sleeping guest",
        futures::future::join_all(runs),
    )
    .await;
}

/// `poll_oneoff` answers every kind of clock subscription (relative, absolute monotonic,
/// absolute realtime, the earlier of two, `wasi_unstable`'s layout) when it is due, and an fd
/// subscription at once, without the long clock next to it.
pub async fn poll_answers_clocks_and_fds(executor: &dyn Executor) {
    for (mode, expected) in [
        ("rel", "poll: n=1 u=1 t=0 e=0\n"),
        ("abs", "poll: n=1 u=1 t=0 e=0\n"),
        ("wall", "poll: n=1 u=1 t=0 e=0\n"),
        ("two", "poll: n=1 u=2 t=0 e=0\n"),
        ("unstable", "poll: n=1 u=1 t=0 e=0\n"),
    ] {
        let started = Instant::now();
        let out = run(executor, task(apps::POLL, &["poll.wasm", mode, "30"])).await;
        assert_exit(&out, 0);
        assert_eq!(text(&out.stdout), expected, "{mode}");
        assert!(started.elapsed() >= Duration::from_millis(25), "{mode}");
    }
    let out = promptly(
        "a clock of 1000 s next to stdin",
        run(
            executor,
            task(apps::POLL, &["poll.wasm", "mixed", "1000000"]),
        ),
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "poll: n=1 u=2 t=1 e=0\n");
}

/// stdin reaches its end and stays there: reading it never waits.
pub async fn stdin_ends_and_never_blocks(executor: &dyn Executor) {
    let mut t = task(apps::POLL, &["poll.wasm", "stdin"]);
    t.stdin = Bytes::from_static(b"twelve bytes");
    let out = promptly("reading stdin to its end", run(executor, t)).await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "stdin: 12 bytes\n");
    let out = promptly(
        "reading an empty stdin",
        run(executor, task(apps::POLL, &["poll.wasm", "stdin"])),
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "stdin: 0 bytes\n");
}

/// A guest asleep (`sleep` for 1000 s, one relative clock in `poll_oneoff`) on every slot is
/// stopped at its 1 s time limit as `TimedOut`, with its output, and its slot is free again.
pub async fn sleep_stopped_at_deadline(executor: &dyn Executor) {
    let limit = Duration::from_secs(1);
    let runs = (0..executor.concurrency().max(1)).map(|_| async move {
        let mut t = task(apps::SLEEP, &["sleep.wasm", "1000000"]);
        t.limits.timeout = Some(limit);
        run(executor, t).await
    });
    let started = Instant::now();
    let outs = promptly(
        "guests asleep past their deadline",
        futures::future::join_all(runs),
    )
    .await;
    for out in outs {
        assert_eq!(out.termination, Termination::TimedOut(limit), "{out:?}");
    }
    assert!(started.elapsed() >= limit);
    every_slot_is_free(executor).await;
}

/// Cancelling guests asleep for 1000 s on every slot ends them as `Cancelled` at once, and
/// their slots are free again. (The cancel comes once the guests had time to fall asleep;
/// wherever it lands the result is the same. The native tests cancel exactly during the sleep.)
pub async fn sleep_cancelled_by_token(executor: &dyn Executor) {
    let token = CancellationToken::new();
    let runs = (0..executor.concurrency().max(1)).map(|_| {
        let token = token.clone();
        async move {
            let mut t = task(apps::SLEEP, &["sleep.wasm", "1000000"]);
            t.limits.timeout = Some(Duration::from_secs(3000));
            match executor.execute(t, token).await {
                Ok(out) => out,
                Err(e) => panic!("sleep failed to run: {e}"),
            }
        }
    });
    let (outs, ()) = promptly(
        "cancelled guests asleep",
        futures::future::join(futures::future::join_all(runs), async {
            wasimoff_core::platform::sleep(Duration::from_millis(300)).await;
            token.cancel();
        }),
    )
    .await;
    for out in outs {
        assert_eq!(out.termination, Termination::Cancelled, "{out:?}");
    }
    every_slot_is_free(executor).await;
}

/// Every other way of waiting in `poll_oneoff` for 1000 s (an absolute monotonic or realtime
/// clock, two clocks, `wasi_unstable`, and polling a clock with stdin in a loop) is stopped at
/// the time limit too.
pub async fn poll_waits_stopped_at_deadline(executor: &dyn Executor) {
    let limit = Duration::from_millis(500);
    for mode in ["abs", "wall", "two", "unstable", "loop"] {
        let mut t = task(apps::POLL, &["poll.wasm", mode, "1000000"]);
        t.limits.timeout = Some(limit);
        let out = promptly(mode, run(executor, t)).await;
        assert_eq!(
            out.termination,
            Termination::TimedOut(limit),
            "{mode}: {out:?}"
        );
    }
    every_slot_is_free(executor).await;
}

/// Growing memory past the cap ends as `MemoryExceeded(cap)` with the guest's report.
pub async fn membomb_capped(executor: &dyn Executor) {
    let mut t = task(apps::MEMBOMB, &["membomb.wasm"]);
    t.limits.max_memory = Some(64 << 20);
    t.limits.timeout = Some(Duration::from_secs(60));
    let out = run(executor, t).await;
    assert_eq!(
        out.termination,
        Termination::MemoryExceeded(64 << 20),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("allocation failed after"),
        "{}",
        text(&out.stderr)
    );
}

/// A guest that handles the refused allocation itself simply exits.
pub async fn membomb_report_survives_cap(executor: &dyn Executor) {
    let mut t = task(apps::MEMBOMB, &["membomb.wasm", "report"]);
    t.limits.max_memory = Some(32 << 20);
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    assert!(text(&out.stdout).starts_with("membomb: got "), "{out:?}");
}

/// 100 MiB of stdout with a 1 MiB cap: at most 1 MiB kept, flagged, guest ends cleanly.
pub async fn flood_cut_at_output_cap(executor: &dyn Executor) {
    let mut t = task(apps::FLOOD, &["flood.wasm"]);
    t.limits.max_output = Some(1 << 20);
    t.limits.timeout = Some(Duration::from_secs(120));
    let out = run(executor, t).await;
    assert!(
        matches!(out.termination, Termination::Exited(_)),
        "{:?}: {}",
        out.termination,
        text(&out.stderr)
    );
    assert!(out.stdout_truncated);
    assert!(!out.stderr_truncated);
    assert!(out.stdout.len() <= 1 << 20);
    assert!(
        out.stdout.len() >= 1 << 19,
        "kept {} bytes",
        out.stdout.len()
    );
    assert!(out.stdout.starts_with(b"wasimoff flood: "));

    // Under the cap nothing is flagged.
    let mut t = task(apps::FLOOD, &["flood.wasm", "64K"]);
    t.limits.max_output = Some(1 << 20);
    let out = run(executor, t).await;
    assert_exit(&out, 0);
    assert_eq!(out.stdout.len(), 64 << 10);
    assert!(!out.stdout_truncated);
}

/// Twenty tasks at once all get their own argv and output.
pub async fn concurrent_hellos(executor: &dyn Executor) {
    let runs = (0..20).map(|n| async move {
        let arg = format!("task-{n}");
        let out = run(executor, task(apps::HELLO, &["hello.wasm", &arg])).await;
        (arg, out)
    });
    for (arg, out) in futures::future::join_all(runs).await {
        assert_exit(&out, 0);
        assert_eq!(
            text(&out.stdout),
            format!("{GREETING}\nargs = [\"hello.wasm\", \"{arg}\"]\n")
        );
    }
}
