// The smallest use of the wasimoff package: run one WASI guest in this page with `Executor`.
import init, { Executor } from "./pkg/wasimoff.js";

const $ = (id) => document.getElementById(id);

function show(status, { elapsed = "–", stdout = "", stderr = "", failed = false } = {}) {
  $("status").textContent = status;
  $("status").className = failed ? "error" : "";
  $("elapsed").textContent = elapsed;
  $("stdout").textContent = stdout;
  $("stderr").textContent = stderr;
}

// Load the package's own WebAssembly (init) and the guest binary, then enable Run.
let binary;
try {
  await init();
  const response = await fetch("./hello.wasm");
  if (!response.ok) throw new Error(`hello.wasm: HTTP ${response.status}`);
  binary = new Uint8Array(await response.arrayBuffer());
} catch (err) {
  show(`could not load: ${err}`, { failed: true });
  throw err;
}
const executor = new Executor({ workers: 1 });
$("run").disabled = false;

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("run").disabled = true;
  show("running…");
  try {
    const result = await executor.run({
      binary,
      args: $("args").value.split(" ").filter((word) => word !== ""),
      envs: $("env").value.split("\n").filter((line) => line.includes("=")),
      stdin: $("stdin").value,
      timeoutMs: 10_000,
    });
    // `status` is the guest's exit code; `error` says why it has none (trap, deadline, ...).
    // A stream longer than the output cap (16 MiB) is cut and flagged `…Truncated`.
    const cut = (text, truncated) => (truncated ? `${text}\n[truncated at the output limit]` : text);
    show(result.error ?? String(result.status), {
      elapsed: `${result.ms.toFixed(1)} ms`,
      stdout: cut(result.stdoutText, result.stdoutTruncated),
      stderr: cut(result.stderrText, result.stderrTruncated),
      failed: result.error !== undefined || result.status !== 0,
    });
  } catch (err) {
    // The task never ran: invalid task, the worker could not start, ...
    show(String(err), { failed: true });
  } finally {
    $("run").disabled = false;
  }
});
