// A wasimoff provider in Node.js, built on the same npm package as the volunteer page.
//
//   node --experimental-websocket provider.mjs [brokerUrl] [workers]
//
// brokerUrl: the broker's HTTP origin (default http://127.0.0.1:4080). workers: tasks run at once
// (default: os.availableParallelism()). Node 22+ has WebSocket without the flag.
//
// Environment:
//   WASIMOFF_PKG      the built package's directory (holds wasimoff.js and wasimoff_bg.wasm);
//                     default $CARGO_TARGET_DIR/web/pkg, else <repository>/target/web/pkg
//   WASIMOFF_TOKEN    a broker token, if the broker wants one
//   WASIMOFF_NAME     the provider's name (default node-<hostname>)
//   WASIMOFF_GRACE_MS how long running tasks may take to finish on SIGINT/SIGTERM (default 30000)
//   WASIMOFF_LOG      the package's log level: error, warn, info (default), debug
//   WASIMOFF_STATUS_MS if set, looks at the status every that many ms and logs a `status` line
//                     (busy, executing, killed, ...) whenever it changes
//
// Every line on stdout is `<time> <event> ...`: `state`, `taskstart`, `taskend` (with the pool's
// counters `executing=` and `killed=`), `throughput`, `status`, `draining`, `stopped`. The package's own log
// lines (`wasimoff: ...`) go to the console as well (warnings and errors on stderr).
// SIGINT or SIGTERM drains: no new tasks, running ones finish (up to the grace), then the
// process exits with 0. A second signal exits at once with 1.

import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { availableParallelism, hostname } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const brokerUrl = process.argv[2] ?? "http://127.0.0.1:4080";
const workers = Number(process.argv[3] ?? availableParallelism());
const graceMs = Number(process.env.WASIMOFF_GRACE_MS ?? 30000);

/** Where the package was built: `cargo xtask web` writes `<target dir>/web/pkg`. */
function packageDir() {
  if (process.env.WASIMOFF_PKG) return process.env.WASIMOFF_PKG;
  if (process.env.CARGO_TARGET_DIR) return join(process.env.CARGO_TARGET_DIR, "web", "pkg");
  return fileURLToPath(new URL("../../target/web/pkg/", import.meta.url));
}

function log(event, ...fields) {
  console.log([new Date().toISOString(), event, ...fields].join(" "));
}

if (typeof globalThis.WebSocket !== "function") {
  console.error(
    `Node.js ${process.version} has no global WebSocket: run with --experimental-websocket ` +
      "(Node 20/21) or use Node 22+.",
  );
  process.exit(2);
}
if (!Number.isInteger(workers) || workers < 1 || workers > 1024) {
  console.error(`workers must be an integer from 1 to 1024, not ${process.argv[3]}`);
  process.exit(2);
}

const pkg = packageDir();
if (!existsSync(join(pkg, "wasimoff.js"))) {
  console.error(
    `No wasimoff package in ${pkg}: build it with \`cargo xtask web\` (writes ` +
      "<target dir>/web/pkg) or point WASIMOFF_PKG at it.",
  );
  process.exit(2);
}
// `--target web` glue fetches wasimoff_bg.wasm by URL, which Node's fetch cannot do for file:
// URLs: hand init the bytes. The pool's workers import wasimoff.js by its file URL and get the
// compiled module from here.
const { default: init, Provider } = await import(pathToFileURL(join(pkg, "wasimoff.js")).href);
await init({ module_or_path: await readFile(join(pkg, "wasimoff_bg.wasm")) });

const provider = await Provider.connect(brokerUrl, {
  workers,
  name: process.env.WASIMOFF_NAME ?? `node-${hostname()}`,
  token: process.env.WASIMOFF_TOKEN,
  logLevel: process.env.WASIMOFF_LOG ?? "info",
  // Node has no OPFS: the file cache lives in memory (asking for it saves a warning).
  storage: "memory",
});
log("provider", brokerUrl, `workers=${provider.workers}`, `storage=${provider.status().storage}`);

let lastState;
provider.on("state", ({ state, reason }) => {
  // disconnect() reports `stopped` itself as well: log each state once.
  if (state !== lastState) log("state", state, ...(reason ? [reason] : []));
  lastState = state;
});
provider.on("taskstart", ({ id, args }) => log("taskstart", id, JSON.stringify(args)));
provider.on("taskend", ({ id, ok, status, error, ms }) => {
  const s = provider.status();
  log(
    "taskend",
    id,
    ok ? `ok status=${status}` : `failed error=${JSON.stringify(error ?? "")}`,
    `ms=${Math.round(ms)}`,
    `executing=${s.workersExecuting}`,
    `killed=${s.workersKilled}`,
  );
});
let lastRate = -1;
provider.on("throughput", ({ tasksPerSecond }) => {
  // Only when it changes, so an idle provider stays quiet.
  const rate = Math.round(tasksPerSecond * 10) / 10;
  if (rate !== lastRate) log("throughput", `tasks/s=${rate}`);
  lastRate = rate;
});

const statusMs = Number(process.env.WASIMOFF_STATUS_MS ?? 0);
if (statusMs > 0) {
  // Polled rather than from the "status" event: the pool's counters change between the
  // runtime's status updates.
  let last = "";
  setInterval(() => {
    const s = provider.status();
    const line =
      `state=${s.state} busy=${s.busy} executing=${s.workersExecuting} ` +
      `killed=${s.workersKilled} finished=${s.tasksFinished} failed=${s.tasksFailed}`;
    if (line !== last) log("status", line);
    last = line;
  }, statusMs).unref();
}

let stopping = false;
async function drain(signal) {
  if (stopping) {
    log("exit", `second ${signal}: not waiting for running tasks`);
    process.exit(1);
  }
  stopping = true;
  const { busy } = provider.status();
  log("draining", signal, `busy=${busy}`, `grace_ms=${graceMs}`);
  await provider.disconnect(graceMs);
  const s = provider.status();
  log("stopped", `finished=${s.tasksFinished}`, `failed=${s.tasksFailed}`);
  // Idle workers are gone after disconnect, but do not wait for stray timers either.
  process.exit(0);
}
process.on("SIGINT", () => drain("SIGINT"));
process.on("SIGTERM", () => drain("SIGTERM"));
