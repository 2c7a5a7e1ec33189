//! The worker side of the [pool](crate::pool): each dedicated worker loads this package
//! (the pool's bootstrap module calls `init` with the page's own compiled module, then
//! [`worker_main`]), runs one [`BrowserExecutor`] and answers `run` messages one at a time (see
//! [`crate::jsmsg`]). In a Web Worker it talks through its global scope; in a Node.js
//! `worker_threads` worker through the `parentPort` the bootstrap passes in.
//!
//! The guest runs synchronously in the worker, so the page stays responsive and can end a
//! runaway guest with `worker.terminate()`.

use std::rc::Rc;

use wasimoff_core::executor::CancellationToken;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::executor::{BrowserConfig, BrowserExecutor};
use crate::host::{self, RunTimes};
use crate::jsmsg;

thread_local! {
    /// The compiled modules this worker was sent, by the pool's module id (see
    /// [`jsmsg::touch_module`]).
    static MODULES: std::cell::RefCell<Vec<(u64, js_sys::WebAssembly::Module)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[wasm_bindgen]
extern "C" {
    /// Where a worker receives tasks and posts results: a `DedicatedWorkerGlobalScope`, or a
    /// Node.js `MessagePort` (`worker_threads.parentPort`); members are looked up by name.
    #[derive(Clone, Debug)]
    type Port;
    #[wasm_bindgen(method, catch, js_name = postMessage)]
    fn post_message_with_transfer(
        this: &Port,
        message: &JsValue,
        transfer: &JsValue,
    ) -> Result<(), JsValue>;
    #[wasm_bindgen(method, setter)]
    fn set_onmessage(this: &Port, handler: Option<&js_sys::Function>);
}

/// Starts answering tasks in this dedicated worker. Called once by the package's worker
/// bootstrap after `init`; not meant for pages. `port`: where tasks come from and results go
/// (Node.js: `parentPort`); by default the dedicated worker's global scope.
#[wasm_bindgen(js_name = workerMain)]
pub fn worker_main(port: Option<js_sys::Object>) -> Result<(), JsError> {
    let scope: Port = match port {
        Some(port) => port.unchecked_into(),
        None => js_sys::global()
            .dyn_into::<DedicatedWorkerGlobalScope>()
            .map_err(|_| {
                JsError::new("workerMain must run in a dedicated worker or be given a port")
            })?
            .unchecked_into(),
    };
    let executor = Rc::new(
        BrowserExecutor::new(BrowserConfig::default()).map_err(|e| JsError::new(&e.to_string()))?,
    );
    let reply_to = scope.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let data = event.data();
        if jsmsg::get_string(&data, "kind").as_deref() != Some("run") {
            return;
        }
        let (executor, scope) = (executor.clone(), reply_to.clone());
        let received_at = host::wall_ms();
        wasm_bindgen_futures::spawn_local(async move {
            let started = wasimoff_core::platform::Instant::now();
            let mut decode_ms = 0.0;
            let mut times = RunTimes::default();
            let (message, transfer) = match jsmsg::decode_run(&data) {
                Ok(run) => {
                    decode_ms = started.elapsed().as_secs_f64() * 1e3;
                    let module = MODULES.with(|modules| {
                        let mut modules = modules.borrow_mut();
                        jsmsg::touch_module(&mut modules, run.module_id, || run.module.clone())
                            .cloned()
                    });
                    match module {
                        Some(module) => {
                            if let Some(mirror) = &run.mirror {
                                mirror.reset();
                            }
                            let result = executor
                                .execute_module(
                                    &module,
                                    run.task,
                                    CancellationToken::new(),
                                    run.mirror,
                                )
                                .await;
                            times = executor.last_run_times();
                            jsmsg::encode_result(run.seq, &result)
                        }
                        None => jsmsg::missing_module(run.seq),
                    }
                }
                Err(text) => {
                    let seq = jsmsg::get_f64(&data, "seq").unwrap_or(0.0) as u32;
                    jsmsg::encode_result(seq, &Err(wasimoff_core::executor::ExecError::Host(text)))
                }
            };
            // Where the worker's time went, for the pool's breakdown (the page's figure adds
            // the message round trip).
            jsmsg::set(&message, "workerMs", started.elapsed().as_secs_f64() * 1e3);
            jsmsg::set(&message, "decodeMs", decode_ms);
            jsmsg::set(&message, "instantiateMs", times.instantiate_ms);
            jsmsg::set(&message, "runMs", times.run_ms);
            jsmsg::set(&message, "receivedAt", received_at);
            jsmsg::set(&message, "sentAt", host::wall_ms());
            if let Err(e) = scope.post_message_with_transfer(&message, &transfer) {
                web_sys::console::error_2(&"wasimoff worker: cannot post a result".into(), &e);
            }
        });
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    on_message.forget();
    Ok(())
}
