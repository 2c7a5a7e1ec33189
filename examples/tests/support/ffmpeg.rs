//! FFmpeg's example tasks (`examples/tasks/ffmpeg-*.json` and the thumbnail template) through
//! a broker, on whichever provider serves it: the native provider (`examples.rs`) or the
//! volunteer page in headless Chromium (`browser.rs`). Skipped with a note without
//! `cargo xtask ffmpeg`'s module, unless `WASIMOFF_REQUIRE_FFMPEG` is set (CI).

use std::path::PathBuf;

use futures::StreamExt as _;
use wasimoff_client::{Client, Output, Task};

use crate::zipfile::entry;

fn tasks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks")
}

/// The example task `file`, with `{}` replaced by `n` (templates).
fn task(file: &str, n: Option<usize>) -> Task {
    let mut text = std::fs::read_to_string(tasks_dir().join(file)).unwrap();
    if let Some(n) = n {
        text = text.replace("{}", &n.to_string());
    }
    Task::from_json(&text).unwrap()
}

/// Width and height of a PNG image (its IHDR chunk).
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn ok(what: &str, out: &Output) {
    assert_eq!(out.status, 0, "{what}: {}", out.stderr_lossy());
}

/// Runs FFmpeg's example tasks through `client` and checks what comes back: the version, a
/// clip made from a test pattern, a screenshot of that clip in a rootfs, a recode of it, and
/// `thumbnails` thumbnails of it as one batch. Returns whether they ran (`false`: skipped).
pub(crate) async fn example_tasks(client: &Client, thumbnails: usize) -> bool {
    let ffmpeg = match wasimoff_wasi_apps::ffmpeg() {
        Ok(ffmpeg) => ffmpeg,
        Err(why) => {
            eprintln!("skipping the FFmpeg tasks: {why}");
            return false;
        }
    };
    client.upload(ffmpeg, Some("ffmpeg.wasm")).await.unwrap();

    let out = client.run(task("ffmpeg-version.json", None)).await.unwrap();
    ok("-version", &out);
    assert!(
        out.stdout_lossy().starts_with("ffmpeg version"),
        "{}",
        out.stdout_lossy()
    );

    // The clip comes back as the artifacts zip, which is the rootfs of the tasks after it.
    let out = client
        .run(task("ffmpeg-make-clip.json", None))
        .await
        .unwrap();
    ok("make a clip", &out);
    let zip = out.artifacts.expect("the clip");
    let clip = entry(&zip, "clip.mp4");
    assert_eq!(&clip[4..8], b"ftyp", "an MP4 file");
    assert!(clip.len() > 50_000, "20 s of video: {} bytes", clip.len());
    client
        .upload(zip.to_vec(), Some("ffmpeg-clip.zip"))
        .await
        .unwrap();

    let out = client
        .run(task("ffmpeg-screenshot.json", None))
        .await
        .unwrap();
    ok("screenshot", &out);
    let shot = entry(&out.artifacts.expect("the screenshot"), "shot.png");
    assert_eq!(png_size(&shot), (320, 240));

    let out = client.run(task("ffmpeg-recode.json", None)).await.unwrap();
    ok("recode", &out);
    let stderr = out.stderr_lossy();
    let recoded = entry(&out.artifacts.expect("the recode"), "recoded.mov");
    assert_eq!(&recoded[4..8], b"ftyp", "a QuickTime file");
    assert!(
        stderr.contains("mjpeg") && stderr.contains("frame=   50"),
        "2 s at 25 fps as MJPEG: {stderr}"
    );

    let batch: Vec<Task> = (0..thumbnails)
        .map(|i| task("templates/ffmpeg-thumbnail.json", Some(i)))
        .collect();
    let mut results = client.submit_many(batch, 16);
    let mut done = 0;
    while let Some((i, result)) = results.next().await {
        let out = result.unwrap();
        ok("thumbnail", &out);
        let thumb = entry(
            &out.artifacts.expect("a thumbnail"),
            &format!("thumb-{i}.png"),
        );
        assert_eq!(png_size(&thumb), (160, 120), "thumbnail {i}");
        done += 1;
    }
    assert_eq!(done, thumbnails);
    true
}
