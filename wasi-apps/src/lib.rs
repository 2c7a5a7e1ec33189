//! wasimoff-wasi-apps
