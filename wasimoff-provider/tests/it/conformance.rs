//! The shared executor conformance suite, run on a default `WasmtimeExecutor`.

use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};

wasimoff_wasi_apps::executor_conformance_tests!(
    WasmtimeExecutor::new(WasmtimeConfig::default()).unwrap()
);
