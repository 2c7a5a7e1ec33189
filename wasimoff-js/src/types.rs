//! The TypeScript declarations of the package's option, result and event objects.
//!
//! wasm-bindgen writes `wasimoff.d.ts` from the exported classes; the methods that take or
//! return plain JS objects name the interfaces below (`unchecked_param_type` /
//! `unchecked_return_type` in `api.rs`), and `Provider.on` gets one overload per event type
//! by merging an interface into the class. Nothing here is checked by the compiler against
//! `api.rs`: the example `wasimoff-js/types/check.ts` is compiled with `tsc --noEmit` against
//! the built package in CI (`cargo xtask ci`), and the page and Node tests use the fields.
//! Keep the three (these declarations, `api.rs`, docs/browser-api.md) in step.

use wasm_bindgen::prelude::*;

// The options objects as Rust types, so that an omitted argument stays optional in
// TypeScript (`options?: ProviderOptions | null`; `unchecked_param_type` would drop the `?`).
#[wasm_bindgen]
extern "C" {
    /// The options of `Provider.connect` (`ProviderOptions` in `wasimoff.d.ts`).
    #[wasm_bindgen(typescript_type = "ProviderOptions")]
    pub type ProviderOptions;

    /// The options of `new Client` (`ClientOptions` in `wasimoff.d.ts`).
    #[wasm_bindgen(typescript_type = "ClientOptions")]
    pub type ClientOptions;

    /// The options of `new Executor` (`ExecutorOptions` in `wasimoff.d.ts`).
    #[wasm_bindgen(typescript_type = "ExecutorOptions")]
    pub type ExecutorOptions;
}

#[wasm_bindgen(typescript_custom_section)]
const DECLARATIONS: &str = r#"
/** Options of `Provider.connect`. */
export interface ProviderOptions {
    /** Tasks run at once (Web Workers); default `navigator.hardwareConcurrency`, required on Node.js 20. From 1 to 1024. */
    workers?: number;
    /** Tasks accepted beyond the workers, waiting for a free one; default one per worker, `0` for none. */
    prefetch?: number;
    /** The provider's name at the broker (default `wasimoff-provider`; the broker also gets the user agent). */
    name?: string;
    /** The broker's provider token (sent as `?token=`). */
    token?: string;
    /** Where downloaded files are cached: `"auto"` (OPFS when available, else memory) or `"memory"`. */
    storage?: "auto" | "memory";
    /** The most detailed log level forwarded to the console and to `"log"` listeners. */
    logLevel?: LogLevel;
    /** Where workers import the package's glue (`wasimoff.js`) from; default next to this module. */
    glueUrl?: string;
}

export type LogLevel = "error" | "warn" | "info" | "debug" | "trace";

/** The provider's connection to its broker. */
export type ConnectionState = "idle" | "connecting" | "connected" | "disconnected" | "stopped";

/** A snapshot of a provider: `Provider.status()` and the `"status"` event. */
export interface ProviderStatus {
    state: ConnectionState;
    /** Why it is disconnected. */
    reason?: string;
    workers: number;
    busy: number;
    draining: boolean;
    /** Tasks running in a worker right now. */
    workersExecuting: number;
    /** Workers terminated for a cancel or a deadline. */
    workersKilled: number;
    tasksStarted: number;
    /** Every task that ended, failed ones included. */
    tasksFinished: number;
    /** Tasks that ended with an error result (trap, deadline, bad file); a non-zero exit is not a failure. */
    tasksFailed: number;
    /** Tasks refused while every worker was busy (the broker places them elsewhere). */
    tasksRefused: number;
    connections: number;
    filesFetched: number;
    /** Providers connected to the broker, from its ClusterInfo. */
    clusterProviders?: number;
    storage: "opfs" | "memory";
    /** Whether sleeps block in `Atomics.wait` (else they busy-wait). */
    crossOriginIsolated: boolean;
}

/** The `"state"` event: the connection state changed. */
export interface StateEvent {
    state: ConnectionState;
    reason?: string;
}

/** The `"taskstart"` event. */
export interface TaskStartEvent {
    id: string;
    args: string[];
}

/** The `"taskend"` event. */
export interface TaskEndEvent {
    id: string;
    /** `false` when the task failed (trap, deadline, bad file); a non-zero exit is `ok`. */
    ok: boolean;
    /** The exit status, when the guest exited. */
    status?: number;
    error?: string;
    ms: number;
}

/** The `"throughput"` event, every second while connected. */
export interface ThroughputEvent {
    /** This provider's rate over the last 5 s. */
    tasksPerSecond: number;
    /** The cluster's, from the broker's Throughput event. */
    clusterTasksPerSecond?: number;
}

/** The `"log"` event: one log line of the package. */
export interface LogEvent {
    /** `"trace"` lines arrive as `"debug"`. */
    level: "error" | "warn" | "info" | "debug";
    message: string;
    /** Milliseconds since the epoch (`Date.now()`). */
    time: number;
}

/** Each event type of `Provider.on` and what its listener receives. */
export interface ProviderEventMap {
    status: ProviderStatus;
    state: StateEvent;
    taskstart: TaskStartEvent;
    taskend: TaskEndEvent;
    throughput: ThroughputEvent;
    log: LogEvent;
}

export type ProviderEventType = keyof ProviderEventMap;

export interface Provider {
    /** Calls `listener` on every status change (at most every 100 ms); returns a function that unsubscribes. */
    on(type: "status", listener: (status: ProviderStatus) => void): () => void;
    /** Calls `listener` when the connection state changes; returns a function that unsubscribes. */
    on(type: "state", listener: (event: StateEvent) => void): () => void;
    /** Calls `listener` when a task starts; returns a function that unsubscribes. */
    on(type: "taskstart", listener: (event: TaskStartEvent) => void): () => void;
    /** Calls `listener` when a task ends; returns a function that unsubscribes. */
    on(type: "taskend", listener: (event: TaskEndEvent) => void): () => void;
    /** Calls `listener` every second with the throughput; returns a function that unsubscribes. */
    on(type: "throughput", listener: (event: ThroughputEvent) => void): () => void;
    /** Calls `listener` on every log line; returns a function that unsubscribes. */
    on(type: "log", listener: (event: LogEvent) => void): () => void;
    /** Any event type, e.g. a variable one; throws on an unknown type. */
    on<K extends ProviderEventType>(type: K, listener: (detail: ProviderEventMap[K]) => void): () => void;
}

/** A worker pool's counters: `Executor.stats()`, `Provider.poolStats()`. */
export interface PoolStats {
    size: number;
    running: number;
    executing: number;
    idle: number;
    spawned: number;
    killed: number;
    answered: number;
    workerMs: number;
    roundTripMs: number;
    /** Milliseconds in each part of a task's trip through the pool, summed over `answered`. */
    parts: TaskParts;
}

/** Where the pool's tasks spent their time (ms, summed over the answered tasks). */
export interface TaskParts {
    /** The page encodes the task and posts it to a worker. */
    postMs: number;
    /** From the post to the worker's message handler. */
    toWorkerMs: number;
    /** The worker decodes the task. */
    decodeMs: number;
    /** `new WebAssembly.Instance`. */
    instantiateMs: number;
    /** The guest runs (`_start`). */
    runMs: number;
    /** The rest of the worker's time (file system, context, the answer). */
    collectMs: number;
    /** From the worker's post to the pool seeing the answer. */
    toPageMs: number;
    /** The page decodes the answer. */
    answerMs: number;
}

/** Options of `new Client`. */
export interface ClientOptions {
    /** The broker's client token. */
    token?: string;
}

/** Bytes as the package takes them: a string is taken as its UTF-8 bytes. */
export type Bytes = Uint8Array | ArrayBuffer | string;

/** A task for `Client.submit`. */
export interface ClientTask {
    /** The module: a ref (`sha256:...`), an alias of an uploaded file, or its bytes. */
    binary: string | Uint8Array | ArrayBuffer;
    /** The whole argv, the program's name first. */
    args?: string[];
    /** `KEY=value` pairs. */
    envs?: string[];
    stdin?: Bytes;
    /** A zip archive mounted as the task's root directory: a ref, an alias, or its bytes. */
    rootfs?: string | Uint8Array | ArrayBuffer;
    /** Files the task leaves in its root directory, returned zipped as `artifacts`. */
    artifacts?: string[];
    /** The task's time limit in milliseconds. */
    timeoutMs?: number;
}

/** What a task wrote and left: the part `TaskResult` and `ExecutorResult` share. */
export interface TaskOutput {
    stdout: Uint8Array;
    stderr: Uint8Array;
    /** `stdout` as text (invalid UTF-8 replaced). */
    stdoutText: string;
    stderrText: string;
    /** The stream was cut at the output cap (16 MiB by default). */
    stdoutTruncated: boolean;
    stderrTruncated: boolean;
    /** The requested `artifacts`, as a zip archive. */
    artifacts?: Uint8Array;
}

/** What `Client.submit` resolves to: the task ran to its end (any exit status). */
export interface TaskResult extends TaskOutput {
    /** The broker's task id. */
    id?: string;
    /** The exit status. */
    status: number;
}

/** The stable `code` of an error of `Client.submit` and `Client.upload`. */
export type ErrorCode =
    | "resource_exhausted"
    | "invalid_argument"
    | "not_found"
    | "deadline_exceeded"
    | "unavailable"
    | "aborted"
    | "unauthenticated"
    | "task_failed"
    | "transport"
    | "tls"
    | "endpoint_not_found"
    | "invalid_response"
    | "local"
    | (string & {});

/** How a task failed (`code` `"task_failed"`). */
export type FailureKind = "trap" | "timeout" | "memory" | "fuel" | "cancelled" | "other";

/** What `Client.submit` and `Client.upload` reject with. */
export interface WasimoffError extends Error {
    code: ErrorCode;
    /** Set when `code` is `"task_failed"`. */
    kind?: FailureKind;
    /** What the guest wrote before it failed (when `code` is `"task_failed"`). */
    stdout?: string;
    stderr?: string;
}

/** Options of `new Executor`. */
export interface ExecutorOptions {
    /** Dedicated workers; default 1. */
    workers?: number;
    /** As for `Provider.connect`. */
    glueUrl?: string;
}

/** A task for `Executor.run`. */
export interface ExecutorTask {
    /** The module's bytes. */
    binary: Uint8Array | ArrayBuffer;
    /** The whole argv, the program's name first. */
    args?: string[];
    envs?: string[];
    stdin?: Bytes;
    /** A zip archive mounted as the task's root directory. */
    rootfs?: Uint8Array | ArrayBuffer;
    artifacts?: string[];
    timeoutMs?: number;
    /** Your id for the task, to `cancel` it; one is generated otherwise. */
    id?: string;
}

/** What `Executor.run` resolves to. */
export interface ExecutorResult extends TaskOutput {
    id: string;
    /** The exit status, when the guest exited. */
    status?: number;
    /** Why it did not exit: trapped, deadline exceeded, cancelled. */
    error?: string;
    /** Milliseconds from the call to the result. */
    ms: number;
}
"#;
