// Compiled with `tsc --noEmit` against the packed npm package by `cargo xtask ci` (see
// xtask/src/web.rs, `check_types`): the declarations in `wasimoff.d.ts` must accept the
// documented uses below and reject the misuses marked `@ts-expect-error` (tsc fails on such a
// line when it compiles).
import init, {
  Client,
  Executor,
  Provider,
  type ExecutorResult,
  type PoolStats,
  type ProviderEventType,
  type ProviderStatus,
  type TaskResult,
  type WasimoffError,
  unzipFiles,
  zipFiles,
} from "wasimoff";

export async function provide(brokerUrl: string): Promise<void> {
  await init();
  const p: Provider = await Provider.connect(brokerUrl, { workers: 2, name: "my-page", storage: "memory", logLevel: "debug" });
  await Provider.connect(brokerUrl);
  const offs: Array<() => void> = [
    p.on("status", (s) => {
      const busy: number = s.busy;
      const storage: "opfs" | "memory" = s.storage;
      const providers: number | undefined = s.clusterProviders;
      void [busy, storage, providers];
    }),
    p.on("state", (e) => {
      if (e.state === "disconnected") console.log(e.reason ?? "no reason");
    }),
    p.on("taskstart", (e) => console.log(e.id, e.args.join(" "))),
    p.on("taskend", (e) => {
      const ms: number = e.ms;
      if (!e.ok) console.log(e.error?.toUpperCase(), ms);
      const status: number | undefined = e.status;
      void status;
    }),
    p.on("throughput", (e) => console.log(e.tasksPerSecond.toFixed(1), e.clusterTasksPerSecond)),
    p.on("log", (e) => console.log(e.level, e.message, new Date(e.time))),
  ];
  // An event type held in a variable.
  const kind: ProviderEventType = "taskend";
  offs.push(p.on(kind, (detail) => console.log(detail)));
  // @ts-expect-error: no such event type
  p.on("taskfinished", () => {});
  // @ts-expect-error: a taskend event has no `tasksPerSecond`
  p.on("taskend", (e) => e.tasksPerSecond);
  // @ts-expect-error: a status event's `busy` is a number
  p.on("status", (s: { busy: string }) => s.busy);
  // @ts-expect-error: storage is "auto" or "memory"
  await Provider.connect(brokerUrl, { storage: "disk" });
  // @ts-expect-error: workers is a number
  await Provider.connect(brokerUrl, { workers: "2" });

  const status: ProviderStatus = p.status();
  const stats: PoolStats = p.poolStats();
  console.log(status.tasksFinished, status.state, stats.killed, p.workers);
  console.log(stats.parts.instantiateMs / stats.answered, stats.parts.toWorkerMs);
  p.setWorkers(4);
  offs.forEach((off) => off());
  await p.disconnect();
  await p.disconnect(0);
}

export async function offload(brokerUrl: string, bytes: Uint8Array): Promise<string> {
  const c = new Client(brokerUrl, { token: "secret" });
  new Client(brokerUrl);
  const ref: string = await c.upload(bytes, "hello.wasm");
  try {
    const r: TaskResult = await c.submit({
      binary: ref,
      args: ["hello.wasm", "x"],
      envs: ["A=1"],
      stdin: "text",
      artifacts: [],
      timeoutMs: 10000,
    });
    await c.submit({ binary: bytes, rootfs: new Uint8Array(0) });
    // @ts-expect-error: args are strings
    await c.submit({ binary: ref, args: [1, 2] });
    // @ts-expect-error: a task needs its binary
    await c.submit({ args: ["hello.wasm"] });
    const status: number = r.status;
    const out: Uint8Array = r.stdout;
    if (r.stdoutTruncated || r.artifacts !== undefined) console.log(out.length);
    return `${status} ${r.stdoutText}${r.stderrText} ${r.id ?? ""}`;
  } catch (e) {
    const error = e as WasimoffError;
    if (error.code === "resource_exhausted") return "queue full: retry later";
    if (error.code === "task_failed" && error.kind === "trap") return `${error.stdout}${error.stderr}`;
    // @ts-expect-error: no such failure kind
    if (error.kind === "segfault") return "";
    throw error;
  }
}

export async function runLocally(bytes: Uint8Array): Promise<number | undefined> {
  const ex = new Executor({ workers: 1 });
  new Executor();
  const r: ExecutorResult = await ex.run({
    binary: bytes,
    args: ["hello.wasm"],
    envs: [],
    stdin: "",
    artifacts: [],
    timeoutMs: 5000,
    id: "mine",
  });
  // @ts-expect-error: the Executor takes the module's bytes, not a ref
  await ex.run({ binary: "sha256:00" });
  const cancelled: boolean = ex.cancel("mine");
  const stats: PoolStats = ex.stats();
  ex.setWorkers(2);
  console.log(cancelled, stats.size, r.ms, r.error ?? r.stdoutText, r.stdoutTruncated);
  return r.status;
}

export async function transcode(ex: Executor, ffmpeg: Uint8Array, video: Uint8Array): Promise<Uint8Array | undefined> {
  const rootfs: Uint8Array = zipFiles({ "input.mp4": video, "notes/readme.txt": "text", raw: new ArrayBuffer(1) });
  const r = await ex.run({ binary: ffmpeg, args: ["ffmpeg", "-i", "/input.mp4", "/out.mov"], rootfs, artifacts: ["/out.mov"] });
  // @ts-expect-error: contents are bytes or strings
  zipFiles({ "a.txt": 1 });
  if (r.artifacts === undefined) return undefined;
  const files: Record<string, Uint8Array> = unzipFiles(r.artifacts);
  // @ts-expect-error: an archive is bytes
  unzipFiles("archive.zip");
  return files["out.mov"];
}
