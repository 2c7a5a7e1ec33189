//! The worker side of the [pool](crate::pool): each dedicated worker loads this package
//! (`js/worker.js` calls `init` with the page's own compiled module, then [`worker_main`]), runs
//! one [`BrowserExecutor`] and answers `run` messages one at a time (see [`crate::jsmsg`]).
//!
//! The guest runs synchronously in the worker, so the page stays responsive and can end a
//! runaway guest with `worker.terminate()`.

use std::rc::Rc;

use wasimoff_core::executor::CancellationToken;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::executor::{BrowserConfig, BrowserExecutor};
use crate::jsmsg;

/// Starts answering tasks in this dedicated worker. Called once by the package's worker
/// bootstrap after `init`; not meant for pages.
#[wasm_bindgen(js_name = workerMain)]
pub fn worker_main() -> Result<(), JsError> {
    let scope: DedicatedWorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| JsError::new("workerMain must run in a dedicated worker"))?;
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
        wasm_bindgen_futures::spawn_local(async move {
            let (message, transfer) = match jsmsg::decode_run(&data) {
                Ok(run) => {
                    if let Some(mirror) = &run.mirror {
                        mirror.reset();
                    }
                    let result = executor
                        .execute_module(&run.module, run.task, CancellationToken::new(), run.mirror)
                        .await;
                    jsmsg::encode_result(run.seq, &result)
                }
                Err(text) => {
                    let seq = jsmsg::get_f64(&data, "seq").unwrap_or(0.0) as u32;
                    jsmsg::encode_result(seq, &Err(wasimoff_core::executor::ExecError::Host(text)))
                }
            };
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
