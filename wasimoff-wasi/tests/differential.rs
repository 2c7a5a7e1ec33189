//! Differential tests: the same guest under wasmtime-wasi (the reference: where the two differ,
//! wasmtime is right) and under this crate's host bound to wasmtime's `Linker`, comparing what
//! the guest printed, its exit status and the directory tree it left.
//!
//! The guest is `wasiprobe` (`wasi-apps/guests/probe`), which calls every preview 1 function,
//! edge cases included, and prints one `<label>: <result>` line per call.
//!
//! [`KNOWN_DIFFERENCES`] lists the labels on which this host still differs, each a bug to fix.
//! The test fails on any other difference, and on a listed label that no longer differs (so
//! the list only shrinks).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasimoff_wasi::abi::{self, Errno};
use wasimoff_wasi::ctx::{Memory, Platform, Stop, WasiCtx, function_index};
use wasimoff_wasi::fs::{Fs, Node, ROOT};
use wasmtime::{Engine, ExternType, Linker, Module, Store, Val};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// Labels of `wasiprobe` whose results still differ from wasmtime-wasi's.
const KNOWN_DIFFERENCES: &[&str] = &[];

/// Labels of `wasiprobe-c` whose results still differ from wasmtime-wasi's.
const KNOWN_C_DIFFERENCES: &[&str] = &[];

/// What a run left: its exit status, its stdout by label (in order) and its file tree.
#[derive(Debug)]
struct Run {
    status: Option<i32>,
    lines: Vec<(String, String)>,
    stderr: String,
    tree: BTreeMap<String, String>,
}

fn lines(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((label, result)) => (label.to_owned(), result.to_owned()),
            None => (line.to_owned(), String::new()),
        })
        .collect()
}

fn exit_status(result: wasmtime::Result<()>) -> (Option<i32>, String) {
    match result {
        Ok(()) => (Some(0), String::new()),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => (Some(exit.0), String::new()),
            None => (None, format!("{e:#}")),
        },
    }
}

/// The guest under wasmtime-wasi, with an empty directory preopened at `/`.
fn reference(engine: &Engine, module: &Module, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(args)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .preopened_dir(dir.path(), "/", FsPerms::ReadWrite)
        .unwrap();
    let mut linker: Linker<wasmtime_wasi::p1::WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx).unwrap();
    let mut store = Store::new(engine, builder.build_p1());
    let instance = linker.instantiate(&mut store, module).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    let (status, trap) = exit_status(start.call(&mut store, ()));
    drop(store);
    Run {
        status,
        lines: lines(&stdout.contents()),
        stderr: format!("{}{trap}", String::from_utf8_lossy(&stderr.contents())),
        tree: host_tree(dir.path()),
    }
}

/// A host directory as `path -> what`: `dir`, `file <contents>` or `link -> <target>`.
fn host_tree(root: &Path) -> BTreeMap<String, String> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(&path).unwrap().to_string_lossy()
                )
            } else if meta.is_dir() {
                pending.push(path.clone());
                "dir".to_owned()
            } else {
                format!(
                    "file {:?}",
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                )
            };
            tree.insert(name, what);
        }
    }
    tree
}

/// This crate's file system in the same form.
fn our_tree(fs: &Fs) -> BTreeMap<String, String> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![(ROOT, String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for (name, &ino) in fs.entries(dir).unwrap() {
            let path = format!("{prefix}{name}");
            let what = match fs.node(ino) {
                Node::Dir { .. } => {
                    pending.push((ino, format!("{path}/")));
                    "dir".to_owned()
                }
                Node::File(data) => format!("file {:?}", String::from_utf8_lossy(data)),
                Node::Symlink(target) => format!("link -> {target}"),
            };
            tree.insert(path, what);
        }
    }
    tree
}

/// The guest's memory during one call.
struct Slice<'a>(&'a mut [u8]);

impl Memory for Slice<'_> {
    fn read(&self, ptr: u32, buf: &mut [u8]) -> Result<(), Errno> {
        let start = ptr as usize;
        let src = self
            .0
            .get(start..start + buf.len())
            .ok_or(abi::errno::FAULT)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let start = ptr as usize;
        self.0
            .get_mut(start..start + data.len())
            .ok_or(abi::errno::FAULT)?
            .copy_from_slice(data);
        Ok(())
    }
}

/// Real clocks, sleeps, and randomness good enough for a test.
struct Clock(Instant);

impl Platform for Clock {
    fn realtime_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
    fn monotonic_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
    fn resolution_ns(&self) -> u64 {
        1
    }
    fn random(&self, buf: &mut [u8]) {
        let mut x = self.realtime_ns() | 1;
        for byte in buf {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
    }
    fn sleep_ns(&self, ns: u64) {
        std::thread::sleep(std::time::Duration::from_nanos(ns));
    }
}

/// The guest under this crate's host, bound to wasmtime: every WASI import calls
/// [`WasiCtx::call`] with the caller's memory.
fn ours(engine: &Engine, module: &Module, args: &[&str]) -> Run {
    struct State {
        ctx: WasiCtx,
        clock: Clock,
    }
    let ctx = WasiCtx::new(
        args.iter().map(|a| (*a).to_owned()).collect(),
        Vec::new(),
        Vec::new(),
        Fs::new(),
        1 << 20,
    );
    let mut linker: Linker<State> = Linker::new(engine);
    for import in module.imports() {
        let namespace = import.module();
        if !abi::NAMESPACES.contains(&namespace) {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let name = import.name().to_owned();
        let func = function_index(&name).unwrap_or_else(|| panic!("no host function {name}"));
        let unstable = namespace == "wasi_unstable";
        linker
            .func_new(namespace, &name, ty, move |mut caller, params, results| {
                let args: Vec<i64> = params
                    .iter()
                    .map(|v| match v {
                        Val::I32(x) => i64::from(*x),
                        Val::I64(x) => *x,
                        _ => 0,
                    })
                    .collect();
                let memory = caller
                    .get_export("memory")
                    .and_then(wasmtime::Extern::into_memory)
                    .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
                let (data, state) = memory.data_and_store_mut(&mut caller);
                let State { ctx, clock } = state;
                match ctx.call(clock, &mut Slice(data), func, &args, unstable) {
                    Ok(errno) => {
                        if let Some(result) = results.first_mut() {
                            *result = Val::I32(errno);
                        }
                        Ok(())
                    }
                    Err(Stop::Exit(code)) => Err(I32Exit(code).into()),
                    Err(Stop::Deadline) => Err(wasmtime::Error::msg("deadline")),
                }
            })
            .unwrap();
    }
    let mut store = Store::new(
        engine,
        State {
            ctx,
            clock: Clock(Instant::now()),
        },
    );
    let instance = linker.instantiate(&mut store, module).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    let (status, trap) = exit_status(start.call(&mut store, ()));
    let state = store.into_data();
    Run {
        status,
        lines: lines(&state.ctx.stdout.data),
        stderr: format!("{}{trap}", String::from_utf8_lossy(&state.ctx.stderr.data)),
        tree: our_tree(&state.ctx.fs),
    }
}

#[test]
fn the_probe_sees_what_it_sees_under_wasmtime_wasi() {
    let engine = Engine::default();
    let module = Module::new(&engine, wasimoff_wasi_apps::PROBE).unwrap();
    let args = ["wasiprobe", "first arg", "ünïcode"];
    let want = reference(&engine, &module, &args);
    let got = ours(&engine, &module, &args);
    assert_eq!(
        want.status,
        Some(7),
        "the probe did not finish under wasmtime: {want:#?}"
    );
    // The reference output is also kept as a file, which the executor conformance suite
    // (browsers included) compares with; `WASIMOFF_BLESS_PROBE=1` rewrites it.
    let text: String = want
        .lines
        .iter()
        .map(|(label, result)| match result.as_str() {
            "" => format!("{label}\n"),
            result => format!("{label}: {result}\n"),
        })
        .collect();
    let expected = Path::new(wasimoff_wasi_apps::GUESTS_DIR).join("probe/expected.txt");
    if std::env::var_os("WASIMOFF_BLESS_PROBE").is_some() {
        std::fs::write(&expected, &text).unwrap();
    }
    assert_eq!(
        text,
        wasimoff_wasi_apps::PROBE_EXPECTED,
        "wasiprobe's output under wasmtime-wasi is not {} (rerun with WASIMOFF_BLESS_PROBE=1 if the probe changed)",
        expected.display()
    );
    assert!(
        want.lines.len() > 120,
        "the probe printed too little: {want:#?}"
    );

    assert_same(&want, &got, KNOWN_DIFFERENCES);
}

/// The C probe (`wasiprobe-c`: stdio, POSIX calls, directories, links, times and the current
/// directory through wasi-libc) prints, exits and leaves the same under both hosts.
#[test]
fn the_c_probe_sees_what_it_sees_under_wasmtime_wasi() {
    let Some(probe) = wasimoff_wasi_apps::PROBE_C else {
        eprintln!(
            "skipping: wasiprobe-c was not built: {}",
            wasimoff_wasi_apps::HELLO_C_SKIPPED.unwrap_or("unknown reason")
        );
        return;
    };
    let engine = Engine::default();
    let module = Module::new(&engine, probe).unwrap();
    let args = ["wasiprobe-c", "first arg"];
    let want = reference(&engine, &module, &args);
    let got = ours(&engine, &module, &args);
    assert_eq!(
        want.status,
        Some(7),
        "the C probe did not finish under wasmtime: {want:#?}"
    );
    assert!(
        want.lines.len() > 80,
        "the C probe printed too little: {want:#?}"
    );
    assert_same(&want, &got, KNOWN_C_DIFFERENCES);
}

/// Compares two runs line by label, then the exit status and the file tree; `known` lists the
/// labels that may (and must) still differ.
fn assert_same(want: &Run, got: &Run, known: &[&str]) {
    let want_by_label: BTreeMap<&str, &str> = want
        .lines
        .iter()
        .map(|(l, r)| (l.as_str(), r.as_str()))
        .collect();
    let got_by_label: BTreeMap<&str, &str> = got
        .lines
        .iter()
        .map(|(l, r)| (l.as_str(), r.as_str()))
        .collect();
    let mut differing = Vec::new();
    let mut report = String::new();
    for (label, expected) in &want_by_label {
        let actual = got_by_label.get(label).copied().unwrap_or("<missing>");
        if actual != *expected {
            differing.push(*label);
            report.push_str(&format!(
                "  {label}\n    wasmtime-wasi: {expected}\n    wasimoff-wasi: {actual}\n"
            ));
        }
    }
    for label in got_by_label.keys() {
        if !want_by_label.contains_key(label) {
            differing.push(label);
            report.push_str(&format!("  {label}: only under wasimoff-wasi\n"));
        }
    }
    println!(
        "{} labels compared; differences:\n{report}",
        want_by_label.len()
    );
    let unexpected: Vec<&&str> = differing.iter().filter(|l| !known.contains(l)).collect();
    let fixed: Vec<&&str> = known.iter().filter(|l| !differing.contains(l)).collect();
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "new differences: {unexpected:#?}\nfixed (remove from known): {fixed:#?}\n{report}\nstderr under wasimoff-wasi: {}",
        got.stderr
    );
    assert_eq!(
        got.status, want.status,
        "exit status; stderr: {}",
        got.stderr
    );
    assert_eq!(got.tree, want.tree, "the file trees differ");
}
