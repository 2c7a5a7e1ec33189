// Transcodes a file the visitor picks, in this tab: FFmpeg (a WASI build, `cargo xtask ffmpeg`)
// run by the package's `Executor`, the file handed in as the task's root directory and the
// results taken back as its artifacts. Nothing is uploaded anywhere.
import init, { Executor, unzipFiles, zipFiles } from "./pkg/wasimoff.js";

const $ = (id) => document.getElementById(id);

// The largest file the page accepts: it is held several times over (the page, the zip, the
// worker's file system, FFmpeg's buffers), and a page's wasm memory ends at 4 GiB.
const MAX_INPUT_BYTES = 256 * 1024 * 1024;
const TIMEOUT_MS = 10 * 60 * 1000;

// What to make. `{in}` is the input's path; every output is returned as an artifact. Video
// outputs come with a small PNG of their first frame, as browsers play neither MPEG-4 Part 2
// nor Motion JPEG.
const PRESETS = {
  mp4: {
    label: "MPEG-4 video, 480 lines high (.mp4, no audio)",
    args: "-i {in} -vf scale=-2:480 -c:v mpeg4 -q:v 5 -an /output.mp4 -frames:v 1 -vf scale=-2:180 /preview.png",
  },
  mov: {
    label: "Motion JPEG with PCM audio (.mov)",
    args: "-i {in} -c:v mjpeg -q:v 4 -c:a pcm_s16le /output.mov -frames:v 1 -vf scale=-2:180 /preview.png",
  },
  wav: { label: "Audio only (.wav)", args: "-i {in} -vn -c:a pcm_s16le /output.wav" },
  png: { label: "One frame at 1 s (.png)", args: "-ss 1 -i {in} -frames:v 1 /output.png" },
};

const TYPES = { mp4: "video/mp4", mov: "video/quicktime", wav: "audio/wav", png: "image/png" };

let input; // { name, bytes }
let running; // the task id while one runs
const urls = []; // object URLs of the last result, revoked before the next

function say(text, failed = false) {
  $("status").textContent = text;
  $("status").className = failed ? "error" : "";
}

function inputPath() {
  const ext = /\.([a-z0-9]{1,5})$/i.exec(input?.name ?? "")?.[1]?.toLowerCase();
  return ext ? `/input.${ext}` : "/input";
}

function showArgs() {
  $("args").value = `ffmpeg -hide_banner -nostdin ${PRESETS[$("preset").value].args}`.replace(
    "{in}",
    inputPath(),
  );
}

function setInput(name, bytes) {
  input = { name, bytes };
  $("input-info").textContent = `${name}, ${(bytes.length / 1e6).toFixed(2)} MB`;
  showArgs();
  $("run").disabled = running !== undefined;
}

function clearResult() {
  for (const url of urls.splice(0)) URL.revokeObjectURL(url);
  $("outputs").replaceChildren();
  $("log").textContent = "";
}

function showOutput(name, bytes) {
  const ext = name.split(".").pop();
  const blob = new Blob([bytes], { type: TYPES[ext] ?? "application/octet-stream" });
  const url = URL.createObjectURL(blob);
  urls.push(url);
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.textContent = `${name} (${(bytes.length / 1e6).toFixed(2)} MB)`;
  item.append(link);
  if (ext === "png") {
    const img = document.createElement("img");
    img.src = url;
    img.alt = name;
    item.append(document.createElement("br"), img);
  } else if (ext === "wav") {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.src = url;
    item.append(document.createElement("br"), audio);
  }
  $("outputs").append(item);
}

async function transcode(executor, ffmpeg, args) {
  const outputs = args.filter((arg) => arg.startsWith("/") && !arg.startsWith("/input"));
  const id = `transcode-${Date.now()}`;
  running = id;
  $("run").disabled = true;
  $("cancel").disabled = false;
  clearResult();
  const started = performance.now();
  const tick = setInterval(() => say(`running… ${((performance.now() - started) / 1000).toFixed(0)} s`), 1000);
  say("running…");
  try {
    const result = await executor.run({
      id,
      binary: ffmpeg,
      args,
      // The picked file is the only file of the task's root directory.
      rootfs: zipFiles({ [inputPath()]: input.bytes }),
      artifacts: outputs,
      timeoutMs: TIMEOUT_MS,
    });
    $("log").textContent = result.stderrText;
    const seconds = (result.ms / 1000).toFixed(1);
    if (result.error !== undefined || result.status !== 0) {
      say(`failed after ${seconds} s: ${result.error ?? `exit status ${result.status}`}`, true);
      return;
    }
    const files = result.artifacts ? unzipFiles(result.artifacts) : {};
    for (const [name, bytes] of Object.entries(files)) showOutput(name, bytes);
    say(`done in ${seconds} s`);
  } catch (err) {
    // The task could not run at all (a missing output file is such a case: FFmpeg wrote none).
    say(String(err), true);
  } finally {
    clearInterval(tick);
    running = undefined;
    $("run").disabled = input === undefined;
    $("cancel").disabled = true;
  }
}

// Load the package and FFmpeg, then enable the form.
let ffmpeg;
try {
  await init();
  const response = await fetch("./ffmpeg.wasm");
  if (!response.ok) {
    throw new Error(`ffmpeg.wasm: HTTP ${response.status} (build it with \`cargo xtask ffmpeg\`)`);
  }
  ffmpeg = new Uint8Array(await response.arrayBuffer());
} catch (err) {
  say(`could not load: ${err}`, true);
  throw err;
}
const executor = new Executor({ workers: 1 });
for (const [key, { label }] of Object.entries(PRESETS)) $("preset").add(new Option(label, key));
showArgs();
say("pick a file");
$("pick").disabled = false;
$("sample").disabled = false;
$("preset").addEventListener("change", showArgs);

$("pick").addEventListener("change", async () => {
  const file = $("pick").files[0];
  if (!file) return;
  if (file.size > MAX_INPUT_BYTES) {
    say(`${file.name} is ${(file.size / 1e6).toFixed(0)} MB; this page takes up to ${MAX_INPUT_BYTES / 1e6} MB`, true);
    return;
  }
  setInput(file.name, new Uint8Array(await file.arrayBuffer()));
  say("ready");
});

// No file at hand: FFmpeg makes one from its test pattern and a tone.
$("sample").addEventListener("click", async () => {
  $("sample").disabled = true;
  say("making a test clip…");
  try {
    const result = await executor.run({
      binary: ffmpeg,
      args: ["ffmpeg", "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "testsrc=duration=5:size=640x360:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:duration=5", "-c:v", "mjpeg", "-q:v", "5", "-c:a", "pcm_s16le",
             "/test-clip.mov"],
      artifacts: ["/test-clip.mov"],
      timeoutMs: TIMEOUT_MS,
    });
    if (result.status !== 0) throw new Error(result.error ?? result.stderrText);
    setInput("test-clip.mov", unzipFiles(result.artifacts)["test-clip.mov"]);
    say("ready");
  } catch (err) {
    say(`could not make a test clip: ${err}`, true);
  } finally {
    $("sample").disabled = false;
  }
});

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (input === undefined || running !== undefined) return;
  transcode(executor, ffmpeg, $("args").value.split(" ").filter((word) => word !== ""));
});

$("cancel").addEventListener("click", () => {
  if (running !== undefined) executor.cancel(running);
});
