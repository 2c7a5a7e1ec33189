// The wasimoff volunteer page: one button to contribute this tab's CPU as a provider.
//
// Plain ES module, no framework and no build step. The package (wasm-pack, `--target web`) is
// loaded at runtime from ./pkg/wasimoff.js so that a missing or broken package shows up as an
// error in the page instead of a blank screen. Its API is described in docs/browser-api.md.
//
// Options in the address fragment (read once, at load):
//   #broker=http://host:port   broker origin (default: this page's origin and directory)
//   #workers=N                 initial worker count (default: navigator.hardwareConcurrency)
//   #autostart                 start contributing right away
//
// Hooks for automated tests: `window.wasimoff` (see the bottom of this file), the element ids
// in index.html, and `document.body.dataset.state` (idle|connecting|connected|disconnected|stopped).

const SESSION_KEY = "wasimoff.volunteer";
const LOG_CAP = 300; // lines kept in the log panel
const TASK_ROWS = 60; // running tasks shown at most; the rest are counted
const HISTORY = 60; // seconds of throughput in the sparkline
const STOP_NOW_AFTER_MS = 1000; // a second press of Stop this long after the first cancels tasks

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  workers: $("workers"),
  workersRange: $("workers-range"),
  cores: $("cores"),
  broker: $("broker"),
  state: $("state"),
  stateText: $("state-text"),
  reason: $("reason"),
  error: $("error"),
  errorMessage: $("error-message"),
  workersNow: $("workers-now"),
  busy: $("busy"),
  done: $("done"),
  failed: $("failed"),
  throughput: $("throughput"),
  sparkLine: $("spark-line"),
  sparkArea: $("spark-area"),
  cluster: $("cluster"),
  clusterThroughputLine: $("cluster-throughput-line"),
  clusterThroughput: $("cluster-throughput"),
  storage: $("storage"),
  isolated: $("isolated"),
  isolatedHint: $("isolated-hint"),
  tasks: $("tasks"),
  tasksCount: $("tasks-count"),
  tasksEmpty: $("tasks-empty"),
  tasksMore: $("tasks-more"),
  log: $("log"),
  logDebug: $("log-debug"),
  logJump: $("log-jump"),
  logClear: $("log-clear"),
};

// ---------------------------------------------------------------------------------------------
// Configuration: fragment, session, defaults

const cores = Math.max(1, navigator.hardwareConcurrency || 1);
const fragment = new URLSearchParams(location.hash.slice(1));
const session = readSession();

/** This page's origin plus its directory, without a trailing slash: where the broker serves it. */
function defaultBroker() {
  const dir = new URL(".", location.href).pathname.replace(/\/+$/, "");
  return location.origin + dir;
}

function parseWorkers(value) {
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 ? n : undefined;
}

function flag(params, name) {
  if (!params.has(name)) return false;
  return !/^(0|false|no|off)$/i.test(params.get(name));
}

const brokerUrl = (fragment.get("broker") || "").trim() || defaultBroker();
const fragmentWorkers = parseWorkers(fragment.get("workers"));
const autostart = flag(fragment, "autostart");
const resuming = Boolean(session?.contributing);
const sessionWorkers = parseWorkers(session?.workers);
const maxWorkers = Math.max(cores * 2, fragmentWorkers ?? 0, sessionWorkers ?? 0);
let workers = clampWorkers((resuming && sessionWorkers) || fragmentWorkers || cores);

function clampWorkers(n) {
  return Math.min(maxWorkers, Math.max(1, Math.round(n)));
}

function readSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

function saveSession() {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ contributing: true, workers }));
  } catch {
    // storage disabled: the page just won't resume after a reload
  }
}

function clearSession() {
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // ignore
  }
}

// ---------------------------------------------------------------------------------------------
// The package

let packagePromise;

/** Imports ./pkg/wasimoff.js and runs its `init()` once; a failure can be retried. */
function loadPackage() {
  if (!packagePromise) {
    packagePromise = (async () => {
      let mod;
      try {
        mod = await import("./pkg/wasimoff.js");
      } catch (err) {
        throw new Error(`Could not load the package (./pkg/wasimoff.js): ${message(err)}`);
      }
      try {
        await mod.default();
      } catch (err) {
        throw new Error(`Could not initialize the package: ${message(err)}`);
      }
      return mod;
    })();
    packagePromise.catch(() => {
      packagePromise = undefined;
    });
  }
  return packagePromise;
}

function message(err) {
  if (err instanceof Error) return err.message || String(err);
  if (typeof err === "string") return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

// ---------------------------------------------------------------------------------------------
// State

const view = {
  state: "idle", // the provider's state, or ours before connect resolves / after it stopped
  reason: "",
  action: null, // "starting" | "stopping" | null
  stoppingSince: 0,
  error: "",
  status: null, // the last Status snapshot
  tasksPerSecond: 0,
  clusterTasksPerSecond: undefined,
  history: [],
  failuresThisSecond: 0,
  lastFailure: "",
};

let provider = null;
let unsubscribers = [];

function setState(state, reason = "") {
  const changed = state !== view.state || reason !== view.reason;
  view.state = state;
  view.reason = reason || "";
  if (document.body.dataset.state !== state) document.body.dataset.state = state;
  if (changed) schedule();
}

function showError(text) {
  view.error = text;
  log("error", text);
  console.error(`wasimoff: ${text}`);
  schedule();
}

function clearError() {
  view.error = "";
  schedule();
}

// ---------------------------------------------------------------------------------------------
// Start / stop

async function start() {
  if (provider || view.action) return;
  clearError();
  view.action = "starting";
  view.status = null;
  view.history = [];
  historyDirty = true;
  setState("connecting");
  saveSession();
  log("info", `Connecting to ${brokerUrl} with ${workers} worker${workers === 1 ? "" : "s"}`);

  let p;
  try {
    const { Provider } = await loadPackage();
    p = await Provider.connect(brokerUrl, { workers });
  } catch (err) {
    view.action = null;
    clearSession();
    setState("idle");
    const why = message(err);
    showError(why.startsWith("Could not") ? why : `Could not start contributing: ${why}`);
    return;
  }

  provider = p;
  view.action = null;
  attach(p);
  const s = p.status();
  view.status = s;
  setState(s.state, s.reason);
  // The worker count may have changed while we were connecting.
  if (p.workers !== workers) p.setWorkers(workers);
  schedule();
}

async function stop() {
  if (!provider) return;
  const p = provider;
  if (view.action === "stopping") {
    if (performance.now() - view.stoppingSince < STOP_NOW_AFTER_MS) return;
    log("warn", "Stopping now: cancelling the running tasks");
    p.disconnect(0).then(
      () => provider === p && finishStop("stopped"),
      (err) => showError(`Stopping failed: ${message(err)}`),
    );
    return;
  }
  view.action = "stopping";
  view.stoppingSince = performance.now();
  clearSession();
  log("info", "Stopping: no new tasks, running ones may finish (up to 30 s)");
  schedule();
  setTimeout(schedule, STOP_NOW_AFTER_MS);
  try {
    await p.disconnect();
  } catch (err) {
    showError(`Stopping failed: ${message(err)}`);
  }
  if (provider === p) finishStop("stopped");
}

/** Forgets the provider after it stopped, whether we asked for it or not. */
function finishStop(state, reason = "") {
  const p = provider;
  for (const off of unsubscribers) {
    try {
      off();
    } catch {
      // ignore
    }
  }
  unsubscribers = [];
  if (p) {
    try {
      view.status = p.status();
    } catch {
      // keep the last snapshot
    }
  }
  provider = null;
  view.action = null;
  view.tasksPerSecond = 0;
  clearRunning();
  setState(state, reason);
  schedule();
}

function attach(p) {
  unsubscribers = [
    p.on("status", (s) => {
      view.status = s;
      if (s.state !== view.state || (s.reason || "") !== view.reason) setState(s.state, s.reason);
      schedule();
    }),
    p.on("state", ({ state, reason }) => {
      const level = state === "disconnected" ? "warn" : "info";
      log(level, `${STATE_LOG[state] ?? state}${reason ? `: ${reason}` : ""}`);
      setState(state, reason);
      if (state === "stopped" && provider === p) {
        // Either our disconnect() is done or it stopped on its own: nothing to resume.
        clearSession();
        finishStop("stopped", reason);
      }
    }),
    p.on("taskstart", (t) => {
      taskStarted(t.id, t.args);
      schedule();
    }),
    p.on("taskend", (t) => {
      taskEnded(t.id);
      if (!t.ok) {
        view.failuresThisSecond++;
        view.lastFailure = `${t.id}: ${t.error ?? `exit status ${t.status}`}`;
      }
      schedule();
    }),
    p.on("throughput", (t) => {
      view.tasksPerSecond = t.tasksPerSecond ?? 0;
      view.clusterTasksPerSecond = t.clusterTasksPerSecond;
      view.history.push(view.tasksPerSecond);
      if (view.history.length > HISTORY) view.history.shift();
      historyDirty = true;
      if (view.failuresThisSecond > 0) {
        const n = view.failuresThisSecond;
        log("warn", `${n} task${n === 1 ? "" : "s"} failed; last: ${view.lastFailure}`);
        view.failuresThisSecond = 0;
      }
      schedule();
    }),
    p.on("log", (e) => log(e.level, e.message, e.time)),
  ];
}

// ---------------------------------------------------------------------------------------------
// Workers control

let workersTimer = 0;

function syncWorkerInputs(n) {
  if (ui.workers.value !== String(n)) ui.workers.value = String(n);
  if (ui.workersRange.value !== String(n)) ui.workersRange.value = String(n);
}

function applyWorkers(n) {
  clearTimeout(workersTimer);
  const parsed = parseWorkers(Math.round(Number(n)));
  if (parsed === undefined) {
    syncWorkerInputs(workers);
    return workers;
  }
  const next = clampWorkers(parsed);
  syncWorkerInputs(next);
  if (next === workers) return workers;
  workers = next;
  if (provider) {
    try {
      provider.setWorkers(next);
      log("info", `Workers set to ${next}`);
    } catch (err) {
      showError(`Could not change the worker count: ${message(err)}`);
    }
  }
  if (provider || view.action === "starting") saveSession();
  return workers;
}

function onWorkersInput(event) {
  const n = parseWorkers(event.target.value);
  if (n === undefined) return;
  syncWorkerInputs(clampWorkers(n));
  clearTimeout(workersTimer);
  workersTimer = setTimeout(() => applyWorkers(n), 300);
}

for (const input of [ui.workers, ui.workersRange]) {
  input.min = "1";
  input.max = String(maxWorkers);
  input.addEventListener("input", onWorkersInput);
  input.addEventListener("change", (event) => applyWorkers(event.target.value));
}
syncWorkerInputs(workers);

// ---------------------------------------------------------------------------------------------
// Running tasks: the model (`running`) follows the events right away; the DOM catches up once
// per frame, and at most TASK_ROWS rows exist (the oldest running tasks get them).

const running = new Map(); // id -> { args, t0, row, timeEl }
let waiting = []; // ids of running tasks without a row, oldest first
const finishedRows = []; // rows of ended tasks, removed at the next frame
let rows = 0; // rows in the list, including finishedRows
let tasksDirty = false;

function taskStarted(id, args) {
  if (running.has(id)) taskEnded(id);
  running.set(id, { args, t0: performance.now(), row: null, timeEl: null });
  waiting.push(id);
  tasksDirty = true;
}

function taskEnded(id) {
  const task = running.get(id);
  if (!task) return;
  if (task.row) finishedRows.push(task.row);
  running.delete(id);
  tasksDirty = true;
}

function applyTaskEvents() {
  if (!tasksDirty) return;
  tasksDirty = false;
  for (const row of finishedRows) row.remove();
  rows -= finishedRows.length;
  finishedRows.length = 0;

  let i = 0;
  const frag = document.createDocumentFragment();
  for (; i < waiting.length && rows < TASK_ROWS; i++) {
    const task = running.get(waiting[i]);
    if (!task || task.row) continue;
    task.row = taskRow(waiting[i], task);
    frag.append(task.row);
    rows++;
  }
  if (i > 0) waiting = waiting.slice(i);
  // Ended tasks pile up in `waiting` while all rows are taken; drop them now and then.
  if (waiting.length > 2 * running.size + 256) waiting = waiting.filter((id) => running.has(id));
  ui.tasks.append(frag);
}

function taskRow(id, task) {
  const li = document.createElement("li");
  const idEl = document.createElement("span");
  idEl.className = "task-id";
  idEl.textContent = id;
  idEl.title = id;
  const argsEl = document.createElement("code");
  argsEl.className = "task-args";
  argsEl.textContent = Array.isArray(task.args) ? task.args.join(" ") : String(task.args);
  argsEl.title = argsEl.textContent;
  const time = document.createElement("span");
  time.className = "task-time";
  time.textContent = "0.0 s";
  li.append(idEl, argsEl, time);
  li.dataset.id = id;
  task.timeEl = time;
  return li;
}

function clearRunning() {
  running.clear();
  waiting = [];
  finishedRows.length = 0;
  rows = 0;
  tasksDirty = false;
  ui.tasks.replaceChildren();
}

function formatElapsed(ms) {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, "0")} min`;
}

// Elapsed times tick on their own, a few times a second, only for rows that exist.
setInterval(() => {
  if (rows === 0 || document.hidden) return;
  const now = performance.now();
  for (const task of running.values()) {
    if (task.row) task.timeEl.textContent = formatElapsed(now - task.t0);
  }
}, 250);

// ---------------------------------------------------------------------------------------------
// Log: lines are queued and appended once per frame; the panel keeps LOG_CAP lines.

const logQueue = [];
const LEVELS = new Set(["error", "warn", "info", "debug"]);
const clock = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

function log(level, text, time) {
  if (!LEVELS.has(level)) level = "info";
  if (level === "debug" && !ui.logDebug.checked) return;
  logQueue.push({ level, text: String(text), time: toEpochMs(time) });
  if (logQueue.length > LOG_CAP) logQueue.splice(0, logQueue.length - LOG_CAP);
  schedule();
}

/** Log times may be epoch milliseconds or `performance.now()` values; both become epoch ms. */
function toEpochMs(time) {
  if (typeof time !== "number" || !Number.isFinite(time)) return Date.now();
  return time > 1e11 ? time : performance.timeOrigin + time;
}

function logAtBottom() {
  const box = ui.log;
  return box.scrollTop + box.clientHeight >= box.scrollHeight - 16;
}

function applyLog() {
  if (logQueue.length === 0) {
    setHidden(ui.logJump, true);
    return;
  }
  if (!logAtBottom()) {
    // The reader scrolled up: leave the lines they read in place and hold the new ones.
    const n = logQueue.length;
    setText(ui.logJump, `${n}${n >= LOG_CAP ? "+" : ""} new message${n === 1 ? "" : "s"} ↓`);
    setHidden(ui.logJump, false);
    return;
  }
  setHidden(ui.logJump, true);
  const frag = document.createDocumentFragment();
  for (const entry of logQueue) {
    const li = document.createElement("li");
    li.className = `log-${entry.level}`;
    const date = new Date(entry.time);
    const time = document.createElement("time");
    time.dateTime = date.toISOString();
    time.textContent = clock.format(date);
    const level = document.createElement("span");
    level.className = "log-level";
    level.textContent = entry.level;
    const text = document.createElement("span");
    text.className = "log-text";
    text.textContent = entry.text;
    li.append(time, level, text);
    frag.append(li);
  }
  logQueue.length = 0;
  ui.log.append(frag);
  for (let excess = ui.log.childElementCount - LOG_CAP; excess > 0; excess--) {
    ui.log.firstElementChild.remove();
  }
  ui.log.scrollTop = ui.log.scrollHeight;
}

ui.log.addEventListener(
  "scroll",
  () => {
    if (logQueue.length > 0 && logAtBottom()) schedule();
  },
  { passive: true },
);

ui.logJump.addEventListener("click", () => {
  ui.log.scrollTop = ui.log.scrollHeight;
  ui.log.focus();
  schedule();
});

ui.logClear.addEventListener("click", () => {
  logQueue.length = 0;
  ui.log.replaceChildren();
  schedule();
});

// ---------------------------------------------------------------------------------------------
// Rendering: everything visible is updated in one batch, at most five times a second, in an
// animation frame (background tabs get no animation frames: there the timer renders directly).
// The provider shares this thread with the page: rendering at 60 frames a second halved the
// tasks per second a page could run (benchmark: 560/s against 1,200/s at five frames).

const RENDER_EVERY_MS = 200;
let frameHandle = 0;
let timerHandle = 0;
let lastRender = 0;
let historyDirty = false;

function schedule() {
  if (frameHandle || timerHandle) return;
  const wait = Math.max(0, lastRender + RENDER_EVERY_MS - performance.now());
  timerHandle = setTimeout(() => {
    if (document.hidden) render();
    else frameHandle = requestAnimationFrame(render);
  }, wait);
}

const shown = new WeakMap(); // element -> last text, to skip needless DOM writes

function setText(el, value) {
  const text = String(value);
  if (shown.get(el) === text) return;
  shown.set(el, text);
  el.textContent = text;
}

function setHidden(el, hidden) {
  if (el.hidden !== hidden) el.hidden = hidden;
}

const STATE_LOG = {
  connecting: "Connecting to the broker",
  connected: "Connected to the broker",
  disconnected: "Disconnected, retrying",
  stopped: "Stopped",
};

const STATE_TEXT = {
  idle: "Not contributing yet.",
  connecting: "Connecting to the broker…",
  connected: "Contributing. Tasks arrive whenever the broker has work.",
  disconnected: "Connection lost, retrying on its own.",
  stopped: "Stopped. Thank you for contributing!",
};

function formatRate(n) {
  if (!Number.isFinite(n)) return "0";
  return n >= 100 ? String(Math.round(n)) : n.toFixed(1);
}

function render() {
  lastRender = performance.now();
  cancelAnimationFrame(frameHandle);
  clearTimeout(timerHandle);
  frameHandle = 0;
  timerHandle = 0;

  const s = view.status;
  const contributing = Boolean(provider);

  // State line and button.
  setText(ui.state, view.state);
  let stateText = STATE_TEXT[view.state] ?? view.state;
  if (view.action === "stopping") stateText = "Stopping: finishing the running tasks…";
  setText(ui.stateText, stateText);
  setText(ui.reason, view.reason);
  setHidden(ui.reason, !view.reason);

  let label = "Start contributing";
  let action = "start";
  let busyButton = false;
  if (view.action === "starting") {
    label = "Starting…";
    action = "none";
    busyButton = true;
  } else if (view.action === "stopping") {
    const canForce = performance.now() - view.stoppingSince >= STOP_NOW_AFTER_MS;
    if (canForce && s && s.busy > 0) {
      label = `Stop now (cancel ${s.busy} running)`;
      action = "stop-now";
    } else {
      label = "Stopping…";
      action = "stopping";
      busyButton = true;
    }
  } else if (contributing) {
    label = "Stop contributing";
    action = "stop";
  }
  setText(ui.start, label);
  if (ui.start.dataset.action !== action) ui.start.dataset.action = action;
  const disabled = busyButton ? "true" : "false";
  if (ui.start.getAttribute("aria-disabled") !== disabled) {
    ui.start.setAttribute("aria-disabled", disabled);
  }

  // Error box.
  setText(ui.errorMessage, view.error);
  setHidden(ui.error, !view.error);

  // Numbers.
  setText(ui.workersNow, s ? s.workers : "–");
  setText(ui.busy, s ? s.busy : 0);
  setText(ui.done, s ? s.tasksFinished : 0);
  setText(ui.failed, s ? s.tasksFailed : 0);
  setText(ui.throughput, formatRate(contributing ? view.tasksPerSecond : 0));
  setText(ui.cluster, s?.clusterProviders ?? "–");
  const clusterRate = contributing ? view.clusterTasksPerSecond : undefined;
  setHidden(ui.clusterThroughputLine, clusterRate === undefined);
  if (clusterRate !== undefined) setText(ui.clusterThroughput, formatRate(clusterRate));
  setText(ui.storage, s?.storage ?? "–");
  const isolated = s ? s.crossOriginIsolated : globalThis.crossOriginIsolated === true;
  setText(ui.isolated, isolated ? "yes" : "no");
  setText(ui.isolatedHint, isolated ? "sleeping tasks wait efficiently" : "sleeping tasks busy-wait");
  if (historyDirty) {
    historyDirty = false;
    drawSparkline();
  }

  // Tasks and log.
  applyTaskEvents();
  setText(ui.tasksCount, running.size);
  setHidden(ui.tasksEmpty, running.size > 0);
  const hiddenTasks = running.size - (rows - finishedRows.length);
  setHidden(ui.tasksMore, hiddenTasks <= 0);
  if (hiddenTasks > 0) setText(ui.tasksMore, `and ${hiddenTasks} more`);
  applyLog();

  // Tab title: shows activity in the tab strip.
  let title = "wasimoff · volunteer";
  if (view.state === "connected") {
    title = s && s.busy > 0 ? `▶ ${s.busy} busy · wasimoff` : "▶ contributing · wasimoff";
  } else if (view.state === "connecting" || view.state === "disconnected") {
    title = `… ${view.state} · wasimoff`;
  }
  if (document.title !== title) document.title = title;
}

function drawSparkline() {
  const h = view.history;
  const max = Math.max(1, ...h);
  const offset = HISTORY - h.length;
  const points = h.map((v, i) => `${offset + i},${(20 - (v / max) * 18 - 1).toFixed(2)}`);
  ui.sparkLine.setAttribute("points", points.join(" "));
  const area = h.length > 1 ? `${offset},20 ${points.join(" ")} ${HISTORY - 1},20` : "";
  ui.sparkArea.setAttribute("points", area);
}

// ---------------------------------------------------------------------------------------------
// Wiring

ui.start.addEventListener("click", () => {
  if (ui.start.getAttribute("aria-disabled") === "true") return;
  if (provider) stop();
  else start();
});

// The fragment holds the options, read once at load: apply an edited one by reloading (a
// running contribution resumes, with the new options).
window.addEventListener("hashchange", () => location.reload());

setText(ui.broker, brokerUrl);
setText(ui.cores, cores);
setState("idle");
render();

window.wasimoff = {
  /** The running `Provider`, or null. */
  get provider() {
    return provider;
  },
  /** A snapshot: the provider's Status (or the last one) plus the page's own view. */
  status() {
    let s = view.status;
    if (provider) {
      try {
        s = provider.status();
      } catch {
        // keep the last snapshot
      }
    }
    return {
      ...(s ?? {}),
      state: view.state,
      reason: view.reason || undefined,
      action: view.action,
      error: view.error || undefined,
      broker: brokerUrl,
      workersRequested: workers,
      tasksPerSecond: view.tasksPerSecond,
      clusterTasksPerSecond: view.clusterTasksPerSecond,
      running: running.size,
      logLines: ui.log.childElementCount + logQueue.length,
    };
  },
  start,
  stop,
  setWorkers: applyWorkers,
  config: Object.freeze({ broker: brokerUrl, workers, maxWorkers, autostart, resuming }),
};

if (resuming || autostart) {
  if (resuming) log("info", "Resuming after a reload");
  start();
} else {
  // Fetch and compile the package in the background so that Start is quick, and so that a
  // broken package shows up before anyone presses the button.
  loadPackage().then(
    () => {
      if (!provider && !view.action) log("info", `Ready to run tasks for ${brokerUrl}.`);
    },
    (err) => {
      if (!view.action) showError(message(err));
    },
  );
}
