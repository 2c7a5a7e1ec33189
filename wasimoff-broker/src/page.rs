//! The static files served at `/` (the volunteer page, `--static-dir`), through `ServeDir`:
//! - a precompressed sibling (`app.js.br`, `app.js.gz`, written by `cargo xtask web`) is sent
//!   when the client accepts its encoding, so a large `.wasm` costs no CPU per request;
//! - files without one are compressed on the fly (brotli level 4, gzip), except images;
//! - `Vary: Accept-Encoding`, the content type from the extension (`application/wasm` for
//!   `.wasm`, which `WebAssembly.instantiateStreaming` requires), ETag, ranges;
//! - `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy:
//!   require-corp`: the page is cross-origin isolated, so it gets `SharedArrayBuffer` and its
//!   workers sleep in `Atomics.wait` instead of spinning while a guest waits in `poll_oneoff`.
//!
//! Only these files are compressed: the API routes (Connect, sockets, storage, `/metrics`) are
//! sent as they are.

use std::{convert::Infallible, path::Path};

use axum::{
    http::{HeaderName, HeaderValue},
    routing::MethodRouter,
};
use tower_http::{
    compression::CompressionLayer,
    services::fs::{Backend, ServeDir},
    set_header::SetResponseHeaderLayer,
};

/// The service for `/`: `static_dir` if given.
pub(crate) fn service(static_dir: Option<&Path>) -> Option<MethodRouter> {
    static_dir.map(|dir| serve(ServeDir::new(dir)))
}

fn serve<B: Backend>(
    files: ServeDir<tower_http::services::fs::DefaultServeDirFallback, B>,
) -> MethodRouter {
    let files = files.precompressed_br().precompressed_gzip();
    axum::routing::get_service(files)
        // Skips responses that already have a Content-Encoding (the precompressed siblings).
        .layer::<_, Infallible>(CompressionLayer::new().br(true).gzip(true))
        .layer::<_, Infallible>(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer::<_, Infallible>(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-embedder-policy"),
            HeaderValue::from_static("require-corp"),
        ))
}
