//! The messages between the [worker pool](crate::pool) and its [workers](crate::worker): plain
//! JS objects sent with `postMessage`, byte buffers transferred rather than copied, the guest as
//! an already compiled `WebAssembly.Module` (structured clone shares its code).
//!
//! ```text
//! pool → worker   { kind: "init", module }            (the package's own module)
//! worker → pool   { kind: "ready" } | { kind: "fatal", message }
//! pool → worker   { kind: "run", seq, id, moduleId, module?, args, envs, stdin, rootfs?,
//!                   artifacts, timeoutMs?, maxOutput?, maxMemory?, mirror? }
//! worker → pool   { kind: "done", seq, end, status?, message?, stdout, stderr,
//!                   stdoutTruncated, stderrTruncated, artifacts? }
//!                 { kind: "failed", seq, error, message }
//! ```
//!
//! `end` is `exited`, `trapped`, `timeout` or `memory`; `error` names an [`ExecError`] variant. `mirror`
//! is a `SharedArrayBuffer` the worker copies stdout and stderr into as they are written
//! ([`OutputMirror`]), so a worker terminated at a deadline leaves its output behind.

use std::time::Duration;

use crate::host::OutputMirror;
use bytes::Bytes;
use js_sys::{Array, Object, Reflect, Uint8Array, WebAssembly};
use wasimoff_core::executor::{
    ExecError, ExecLimits, ExecOutput, ExecTask, ResolvedFile, Termination,
};
use wasm_bindgen::{JsCast, JsValue};

/// Compiled modules a worker keeps, least recently used first out. The pool tracks each
/// worker's set with the same policy, so it knows when it must send the module again.
pub(crate) const WORKER_MODULES: usize = 16;

/// A worker's answer when it no longer holds the module a task names (`failed`, `error`).
pub(crate) const MISSING_MODULE: &str = "MissingModule";

/// Touches `id` in a least-recently-used list of at most [`WORKER_MODULES`] ids (used by the
/// pool and by the worker alike); returns whether it was already there.
pub(crate) fn touch_module<T>(
    list: &mut Vec<(u64, T)>,
    id: u64,
    value: impl FnOnce() -> Option<T>,
) -> Option<&T> {
    if let Some(index) = list.iter().position(|(i, _)| *i == id) {
        let entry = list.remove(index);
        list.push(entry);
    } else {
        let value = value()?;
        if list.len() >= WORKER_MODULES {
            list.remove(0);
        }
        list.push((id, value));
    }
    list.last().map(|(_, v)| v)
}

/// Sets `key` on `target` (objects made here are plain and extensible, so this cannot fail).
/// Keys are [interned](wasm_bindgen::intern): each crosses into JS once per thread, not once
/// per message.
pub fn set(target: &Object, key: &str, value: impl Into<JsValue>) {
    let key = JsValue::from_str(wasm_bindgen::intern(key));
    let _ = Reflect::set(target, &key, &value.into());
}

/// `target[key]`, `undefined` where missing (keys are interned, as in [`set`]).
pub fn get(target: &JsValue, key: &str) -> JsValue {
    Reflect::get(target, &JsValue::from_str(wasm_bindgen::intern(key)))
        .unwrap_or(JsValue::UNDEFINED)
}

pub fn get_string(target: &JsValue, key: &str) -> Option<String> {
    get(target, key).as_string()
}

pub fn get_f64(target: &JsValue, key: &str) -> Option<f64> {
    get(target, key).as_f64()
}

/// A fresh `Uint8Array` holding a copy of `bytes` (its buffer can be transferred).
pub fn bytes_to_js(bytes: &[u8]) -> Uint8Array {
    Uint8Array::from(bytes)
}

/// The bytes of a `Uint8Array`, an `ArrayBuffer` or a string (UTF-8) at `key`.
pub fn get_bytes(target: &JsValue, key: &str) -> Option<Vec<u8>> {
    js_bytes(&get(target, key))
}

/// The bytes of a `Uint8Array`, an `ArrayBuffer` or a string (UTF-8).
pub fn js_bytes(value: &JsValue) -> Option<Vec<u8>> {
    if let Some(text) = value.as_string() {
        return Some(text.into_bytes());
    }
    if let Some(array) = value.dyn_ref::<Uint8Array>() {
        return Some(array.to_vec());
    }
    if let Some(buffer) = value.dyn_ref::<js_sys::ArrayBuffer>() {
        return Some(Uint8Array::new(buffer).to_vec());
    }
    None
}

/// The strings of an array at `key` (non-strings are an error).
pub fn get_strings(target: &JsValue, key: &str) -> Result<Vec<String>, String> {
    let value = get(target, key);
    if value.is_undefined() || value.is_null() {
        return Ok(Vec::new());
    }
    if !Array::is_array(&value) {
        return Err(format!("`{key}` must be an array of strings"));
    }
    Array::from(&value)
        .iter()
        .map(|v| {
            v.as_string()
                .ok_or_else(|| format!("`{key}` must be an array of strings"))
        })
        .collect()
}

pub fn strings_to_js(items: &[String]) -> Array {
    items.iter().map(|s| JsValue::from_str(s)).collect()
}

/// The `run` message for `task` with its compiled `module`, and the buffers to transfer.
pub(crate) fn encode_run(
    seq: u32,
    module_id: u64,
    module: Option<&WebAssembly::Module>,
    task: &ExecTask,
    mirror: Option<&OutputMirror>,
) -> (Object, Array) {
    let message = Object::new();
    let transfer = Array::new();
    if let Some(mirror) = mirror {
        set(&message, "mirror", mirror.buffer().clone());
    }
    set(&message, "kind", wasm_bindgen::intern("run"));
    set(&message, "seq", seq);
    set(&message, "id", task.id.as_str());
    set(&message, "moduleId", module_id as f64);
    if let Some(module) = module {
        set(&message, "module", module.clone());
    }
    set(&message, "args", strings_to_js(&task.args));
    set(&message, "envs", strings_to_js(&task.envs));
    let stdin = bytes_to_js(&task.stdin);
    transfer.push(&stdin.buffer());
    set(&message, "stdin", stdin);
    if let Some(rootfs) = &task.rootfs {
        let zip = bytes_to_js(&rootfs.bytes);
        transfer.push(&zip.buffer());
        set(&message, "rootfs", zip);
    }
    set(&message, "artifacts", strings_to_js(&task.artifacts));
    if let Some(timeout) = task.limits.timeout {
        set(&message, "timeoutMs", timeout.as_secs_f64() * 1000.0);
    }
    if let Some(max) = task.limits.max_output {
        set(&message, "maxOutput", max as f64);
    }
    if let Some(max) = task.limits.max_memory {
        set(&message, "maxMemory", max as f64);
    }
    (message, transfer)
}

/// A `run` message decoded in the worker: the module, the task (its `binary` left empty) and
/// the output mirror, if the page sent one.
pub(crate) fn decode_run(message: &JsValue) -> Result<Run, String> {
    let seq = get_f64(message, "seq").ok_or("run message without `seq`")? as u32;
    let module_id = get_f64(message, "moduleId").ok_or("run message without `moduleId`")? as u64;
    let module = get(message, "module")
        .dyn_into::<WebAssembly::Module>()
        .ok();
    let mut task = ExecTask::new(
        get_string(message, "id").unwrap_or_default(),
        ResolvedFile::from_bytes(Bytes::new()),
        get_strings(message, "args")?,
    );
    task.envs = get_strings(message, "envs")?;
    task.stdin = get_bytes(message, "stdin").unwrap_or_default().into();
    task.rootfs = get_bytes(message, "rootfs").map(ResolvedFile::from_bytes);
    task.artifacts = get_strings(message, "artifacts")?;
    task.limits = ExecLimits {
        timeout: get_f64(message, "timeoutMs")
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
        max_output: get_f64(message, "maxOutput").map(|n| n as usize),
        max_memory: get_f64(message, "maxMemory").map(|n| n as u64),
        ..ExecLimits::default()
    };
    let mirror = get(message, "mirror")
        .dyn_into::<js_sys::SharedArrayBuffer>()
        .ok()
        .map(OutputMirror::over);
    Ok(Run {
        seq,
        module_id,
        module,
        task,
        mirror,
    })
}

/// A decoded `run` message.
pub(crate) struct Run {
    pub(crate) seq: u32,
    /// The pool's id of the module; the module itself comes only the first time a worker
    /// needs it (workers keep the last [`WORKER_MODULES`] they were sent).
    pub(crate) module_id: u64,
    pub(crate) module: Option<WebAssembly::Module>,
    pub(crate) task: ExecTask,
    pub(crate) mirror: Option<OutputMirror>,
}

/// The worker's answer for one run, and the buffers to transfer.
pub(crate) fn encode_result(seq: u32, result: &Result<ExecOutput, ExecError>) -> (Object, Array) {
    let message = Object::new();
    let transfer = Array::new();
    set(&message, "seq", seq);
    match result {
        Ok(output) => {
            set(&message, "kind", wasm_bindgen::intern("done"));
            match &output.termination {
                Termination::Exited(status) => {
                    set(&message, "end", "exited");
                    set(&message, "status", *status);
                }
                Termination::Trapped(trap) => {
                    set(&message, "end", "trapped");
                    set(&message, "message", trap.as_str());
                }
                Termination::TimedOut(_) => set(&message, "end", "timeout"),
                Termination::MemoryExceeded(cap) => {
                    set(&message, "end", "memory");
                    set(&message, "cap", *cap as f64);
                }
                // The browser executor reports no other endings from inside a worker.
                other => {
                    set(&message, "end", "trapped");
                    set(&message, "message", format!("{other:?}"));
                }
            }
            for (key, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
                let array = bytes_to_js(bytes);
                transfer.push(&array.buffer());
                set(&message, key, array);
            }
            set(&message, "stdoutTruncated", output.stdout_truncated);
            set(&message, "stderrTruncated", output.stderr_truncated);
            if let Some(zip) = &output.artifacts {
                let array = bytes_to_js(zip);
                transfer.push(&array.buffer());
                set(&message, "artifacts", array);
            }
            // The guest ran, but its result could not be collected (artifacts).
            if let Some(error) = &output.error {
                let (name, text) = error_parts(error);
                set(&message, "outputError", name);
                set(&message, "outputErrorMessage", text.as_str());
            }
        }
        Err(error) => {
            set(&message, "kind", wasm_bindgen::intern("failed"));
            let (name, text) = error_parts(error);
            set(&message, "error", name);
            set(&message, "message", text.as_str());
        }
    }
    (message, transfer)
}

/// An [`ExecError`] as its variant's name and its text, for the messages between threads.
fn error_parts(error: &ExecError) -> (&'static str, String) {
    match error {
        ExecError::InvalidModule(m) => ("InvalidModule", m.clone()),
        ExecError::InvalidRootfs(m) => ("InvalidRootfs", m.clone()),
        ExecError::MissingArtifact(m) => ("MissingArtifact", m.clone()),
        ExecError::ArtifactsTooLarge(m) => ("ArtifactsTooLarge", m.clone()),
        ExecError::InvalidTask(m) => ("InvalidTask", m.clone()),
        ExecError::Host(m) => ("Host", m.clone()),
        other => ("Host", other.to_string()),
    }
}

/// The [`ExecError`] of [`error_parts`]; unknown names are host errors.
fn error_from_parts(name: Option<&str>, text: String) -> ExecError {
    match name {
        Some("InvalidModule") => ExecError::InvalidModule(text),
        Some("InvalidRootfs") => ExecError::InvalidRootfs(text),
        Some("MissingArtifact") => ExecError::MissingArtifact(text),
        Some("ArtifactsTooLarge") => ExecError::ArtifactsTooLarge(text),
        Some("InvalidTask") => ExecError::InvalidTask(text),
        _ => ExecError::Host(text),
    }
}

/// The answer to a task whose module this worker no longer holds.
pub(crate) fn missing_module(seq: u32) -> (Object, Array) {
    let message = Object::new();
    set(&message, "kind", wasm_bindgen::intern("failed"));
    set(&message, "seq", seq);
    set(&message, "error", MISSING_MODULE);
    set(&message, "message", "the worker does not hold this module");
    (message, Array::new())
}

/// A `done` or `failed` message decoded on the page; `timeout` is the task's limit.
pub(crate) fn decode_result(message: &JsValue, timeout: Duration) -> Result<ExecOutput, ExecError> {
    let text = get_string(message, "message").unwrap_or_default();
    match get_string(message, "kind").as_deref() {
        Some("done") => {}
        Some("failed") => {
            return Err(error_from_parts(
                get_string(message, "error").as_deref(),
                text,
            ));
        }
        other => {
            return Err(ExecError::Host(format!(
                "unexpected message from a worker: {other:?}"
            )));
        }
    }
    let termination = match get_string(message, "end").as_deref() {
        Some("exited") => Termination::Exited(get_f64(message, "status").unwrap_or(0.0) as i32),
        Some("timeout") => Termination::TimedOut(timeout),
        Some("memory") => {
            Termination::MemoryExceeded(get_f64(message, "cap").unwrap_or(0.0) as u64)
        }
        _ => Termination::Trapped(text),
    };
    let bytes = |key| Bytes::from(get_bytes(message, key).unwrap_or_default());
    Ok(ExecOutput {
        termination,
        stdout: bytes("stdout"),
        stderr: bytes("stderr"),
        stdout_truncated: get(message, "stdoutTruncated").is_truthy(),
        stderr_truncated: get(message, "stderrTruncated").is_truthy(),
        artifacts: get_bytes(message, "artifacts").map(Bytes::from),
        error: get_string(message, "outputError").map(|name| {
            let text = get_string(message, "outputErrorMessage").unwrap_or_default();
            error_from_parts(Some(&name), text)
        }),
    })
}
