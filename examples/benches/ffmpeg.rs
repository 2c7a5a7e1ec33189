//! FFmpeg as a wasimoff workload (issue 18), measured in the same run:
//!
//! - **recode**: a 10 s 1280x720 clip (MPEG-4 Part 2, 25 fps, made by FFmpeg's `testsrc`) to
//!   Motion JPEG, the recode example's codec, with the result returned: Debian's native
//!   `ffmpeg` (its SIMD code and threads, then with `-threads 1`, then also `-cpuflags 0`, no
//!   SIMD), the native provider (wasmtime, 1 worker) and the volunteer page in headless
//!   Chromium (1 worker). The wasimoff figures are end to end: the client's request, the clip
//!   (the task's rootfs) fetched by the provider, the recoded file back as the artifacts zip.
//!   Each is the median of `--reps` runs after one warm-up run (which compiles the module);
//! - **thumbnails**: the median of `--reps` runs of the example batch (`templates/ffmpeg-thumbnail.json`, a PNG from each of
//!   20 seconds of the example clip) on one native provider with 1 worker, then on two (after
//!   an untimed batch, in which the second fetches and compiles the module).
//!
//! ```text
//! cargo xtask ffmpeg                      # the module (WASIMOFF_FFMPEG=<path> picks another)
//! cargo xtask web                         # the page, optimised
//! WASIMOFF_WEB_DIR=$CARGO_TARGET_DIR/web cargo bench -p wasimoff-examples --bench ffmpeg
//! ... -- --quick                          # small sizes (CI: checks that it works)
//! ```
//! (`cargo xtask bench` does all of it and installs Debian's `ffmpeg` as root.) Without Debian's
//! `ffmpeg`, the page (`WASIMOFF_WEB_DIR`) or Chromium, that column says why it is missing.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/chrome.rs"]
#[allow(
    dead_code,
    reason = "shared with the tests; not every helper is used here"
)]
mod chrome;
#[path = "../tests/support/zipfile.rs"]
mod zipfile;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::{sync::Arc, time::Duration, time::Instant};

use chrome::{Chrome, wait_for};
use futures::StreamExt as _;
use wasimoff_client::{Client, Output, Task};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{Provider, ProviderConfig},
};
use zipfile::entry;

/// The sizes of one run.
struct Sizes {
    /// The recoded clip: seconds, width, height.
    clip: (u32, u32, u32),
    /// Timed runs per recode figure.
    reps: usize,
    /// Thumbnails in the batch.
    thumbnails: usize,
}

fn ok(what: &str, output: &Output) {
    assert_eq!(output.status, 0, "{what}: {}", output.stderr_lossy());
}

/// A zip archive holding `bytes` as `name` (stored).
fn zip_one(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    writer.start_file(name, options).unwrap();
    writer.write_all(bytes).unwrap();
    writer.finish().unwrap().into_inner()
}

/// FFmpeg's arguments for the recode, with the clip at `input` and the result at `output`.
fn recode_args(input: &str, output: &str) -> Vec<String> {
    format!("-hide_banner -nostdin -benchmark -y -i {input} -c:v mjpeg -q:v 5 {output}")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn recode_task() -> Task {
    Task::wasip1("ffmpeg.wasm")
        .argv0("ffmpeg")
        .args(recode_args("/clip.mp4", "/recoded.mov"))
        .rootfs("ffmpeg-bench-clip.zip")
        .artifacts(["/recoded.mov"])
}

/// FFmpeg's own wall-clock time (`-benchmark` prints `bench: utime=..s stime=..s rtime=..s`).
fn ffmpeg_rtime(stderr: &str) -> f64 {
    stderr
        .rsplit_once("rtime=")
        .and_then(|(_, rest)| rest.split('s').next()?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A recode figure: the median seconds end to end and FFmpeg's own median `rtime`.
type Recode = (f64, f64);

/// The median seconds of `reps` recodes through the broker, after one untimed run.
async fn recode_wasimoff(client: &Client, reps: usize) -> Recode {
    ok("warm-up recode", &client.run(recode_task()).await.unwrap());
    let (mut samples, mut rtimes) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let started = Instant::now();
        let output = client.run(recode_task()).await.unwrap();
        samples.push(started.elapsed().as_secs_f64());
        ok("recode", &output);
        rtimes.push(ffmpeg_rtime(&output.stderr_lossy()));
        let recoded = entry(&output.artifacts.expect("the recode"), "recoded.mov");
        assert_eq!(&recoded[4..8], b"ftyp", "a QuickTime file");
    }
    (median(samples), median(rtimes))
}

/// The median seconds of `reps` recodes by Debian's `ffmpeg` with `extra` arguments first, or
/// why there is none.
fn recode_debian(clip: &std::path::Path, reps: usize, extra: &[&str]) -> Result<Recode, String> {
    let out = clip.with_file_name("recoded.mov");
    let run = || {
        let started = Instant::now();
        let result = Command::new("ffmpeg")
            .args(extra)
            .args(recode_args(clip.to_str().unwrap(), out.to_str().unwrap()))
            .output();
        match result {
            Err(e) => Err(format!("no Debian ffmpeg ({e}): apt-get install ffmpeg")),
            Ok(o) if !o.status.success() => Err(format!(
                "Debian's ffmpeg failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Ok(o) => Ok((
                started.elapsed().as_secs_f64(),
                ffmpeg_rtime(&String::from_utf8_lossy(&o.stderr)),
            )),
        }
    };
    run()?;
    let runs: Vec<Recode> = (0..reps).map(|_| run()).collect::<Result<_, _>>()?;
    Ok((
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
    ))
}

/// A native provider with `workers` workers, connected to `base` and running.
fn native_provider(base: &str, name: &str, workers: usize) -> Provider {
    let executor = WasmtimeExecutor::new(WasmtimeConfig {
        workers,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let provider = Provider::builder(
        ProviderConfig {
            name: name.into(),
            ..ProviderConfig::new(base.to_owned())
        },
        Arc::new(executor),
    )
    .build()
    .unwrap();
    tokio::spawn({
        let provider = provider.clone();
        async move { provider.run().await }
    });
    provider
}

async fn wait_providers(client: &Client, providers: i64) {
    wait_for(&format!("{providers} providers at the broker"), || async {
        let status = client.status().await.ok()?;
        (status.providers == providers).then_some(())
    })
    .await;
}

/// Seconds for the thumbnail batch, all at once.
async fn thumbnails(client: &Client, n: usize) -> f64 {
    let template = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks/templates/ffmpeg-thumbnail.json"),
    )
    .unwrap();
    let tasks: Vec<Task> = (0..n)
        .map(|i| Task::from_json(&template.replace("{}", &i.to_string())).unwrap())
        .collect();
    let started = Instant::now();
    let mut results = client.submit_many(tasks, n);
    while let Some((i, result)) = results.next().await {
        ok(&format!("thumbnail {i}"), &result.unwrap());
    }
    started.elapsed().as_secs_f64()
}

/// The median of `reps` thumbnail batches (a batch takes well under a second).
async fn thumbnail_batches(client: &Client, sizes: &Sizes) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..sizes.reps {
        samples.push(thumbnails(client, sizes.thumbnails).await);
    }
    median(samples)
}

fn seconds(figure: &Result<Recode, String>) -> String {
    match figure {
        Ok((s, rtime)) => format!("{s:.2} s | {rtime:.2} s"),
        Err(why) => format!("{why} | –"),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3);
    let sizes = if quick {
        Sizes {
            clip: (2, 320, 240),
            reps: 1,
            thumbnails: 4,
        }
    } else {
        Sizes {
            clip: (10, 1280, 720),
            reps,
            thumbnails: 20,
        }
    };
    println!("# FFmpeg{}", if quick { " (quick)" } else { "" });
    let ffmpeg = match wasimoff_wasi_apps::ffmpeg() {
        Ok(ffmpeg) => ffmpeg,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    println!(
        "module: {} ({:.1} MiB)",
        wasimoff_wasi_apps::ffmpeg_path().display(),
        ffmpeg.len() as f64 / f64::from(1 << 20)
    );
    let web_dir = std::env::var_os("WASIMOFF_WEB_DIR").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let broker = chrome::broker(web_dir.clone().unwrap_or(scratch.path().to_path_buf())).await;
    let base = format!("http://{}", broker.local_addr());
    let client = Client::new(base.clone()).unwrap();
    client.upload(ffmpeg, Some("ffmpeg.wasm")).await.unwrap();

    // The inputs, made by FFmpeg itself on a native provider (not timed): the recode's clip
    // and the example clip the thumbnails are taken from.
    let provider = native_provider(&base, "native-1", 1);
    wait_providers(&client, 1).await;
    let (secs, width, height) = sizes.clip;
    let make = Task::wasip1("ffmpeg.wasm")
        .argv0("ffmpeg")
        .args(
            format!(
                "-hide_banner -nostdin -f lavfi -i testsrc=duration={secs}:size={width}x{height}:rate=25 \
                 -c:v mpeg4 -q:v 5 /clip.mp4"
            )
            .split_whitespace(),
        )
        .artifacts(["/clip.mp4"]);
    let output = client.run(make).await.unwrap();
    ok("make the clip", &output);
    let clip = entry(&output.artifacts.unwrap(), "clip.mp4");
    let clip_path = scratch.path().join("clip.mp4");
    std::fs::write(&clip_path, &clip).unwrap();
    client
        .upload(zip_one("clip.mp4", &clip), Some("ffmpeg-bench-clip.zip"))
        .await
        .unwrap();
    let example = Task::from_json(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks/ffmpeg-make-clip.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let output = client.run(example).await.unwrap();
    ok("make the example clip", &output);
    client
        .upload(output.artifacts.unwrap().to_vec(), Some("ffmpeg-clip.zip"))
        .await
        .unwrap();
    println!(
        "recode: {secs} s of {width}x{height} MPEG-4 at 25 fps ({:.1} MB) to Motion JPEG; median of {} runs",
        clip.len() as f64 / 1e6,
        sizes.reps
    );

    // Recode: Debian's ffmpeg, three ways.
    let debian = recode_debian(&clip_path, sizes.reps, &[]);
    let debian_1 = recode_debian(&clip_path, sizes.reps, &["-threads", "1"]);
    let debian_plain = recode_debian(&clip_path, sizes.reps, &["-threads", "1", "-cpuflags", "0"]);

    // The native provider (1 worker), already connected.
    let native = recode_wasimoff(&client, sizes.reps).await;

    // Thumbnails: one provider of 1 worker, then two.
    let one = thumbnail_batches(&client, &sizes).await;
    let second = native_provider(&base, "native-2", 1);
    wait_providers(&client, 2).await;
    // Untimed: the new provider fetches and compiles the module (as the first did for the
    // recode's warm-up).
    thumbnails(&client, sizes.thumbnails).await;
    let two = thumbnail_batches(&client, &sizes).await;
    for provider in [provider, second] {
        provider.shutdown(Duration::from_secs(5)).await;
    }
    wait_providers(&client, 0).await;

    // The volunteer page, 1 worker.
    let browser: Result<Recode, String> = match (&web_dir, Chrome::start().await) {
        (None, _) => Err("no page (WASIMOFF_WEB_DIR; `cargo xtask web`)".into()),
        (_, Err(why)) => Err(why),
        (Some(_), Ok(chrome)) => {
            chrome
                .webdriver
                .goto(&format!("{base}/#workers=1&autostart"))
                .await
                .unwrap();
            wait_providers(&client, 1).await;
            let recode = recode_wasimoff(&client, sizes.reps).await;
            chrome.webdriver.clone().close().await.unwrap();
            Ok(recode)
        }
    };

    let ratio = |figure: &Result<Recode, String>| {
        figure
            .as_ref()
            .map_or_else(|_| "–".to_owned(), |(s, _)| format!("{:.2}", s / native.0))
    };
    println!("\n| recode | end to end | FFmpeg's rtime | end to end / native provider |");
    println!("|---|---|---|---|");
    for (what, figure) in [
        ("Debian ffmpeg (SIMD, threads)", &debian),
        ("Debian ffmpeg -threads 1", &debian_1),
        ("Debian ffmpeg -threads 1 -cpuflags 0", &debian_plain),
        ("wasimoff native provider (wasmtime)", &Ok(native)),
        ("wasimoff volunteer page (Chromium)", &browser),
    ] {
        println!("| {what} | {} | {} |", seconds(figure), ratio(figure));
    }
    println!(
        "\n| {} thumbnails of the example clip | seconds | speed-up |\n|---|---|---|\n\
         | 1 native provider, 1 worker | {one:.2} | 1.00 |\n\
         | 2 native providers, 1 worker each | {two:.2} | {:.2} |",
        sizes.thumbnails,
        one / two
    );
    broker.shutdown().await;
}
