//! The static files served at `/` (the volunteer page): a directory (`--static-dir`) or, with
//! the feature `embedded-page` and no directory, the page built into the binary.
//!
//! Both go through the same `ServeDir`:
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

/// The service for `/`: `static_dir` if given, else the embedded page (feature
/// `embedded-page`), else none.
pub(crate) fn service(static_dir: Option<&Path>) -> Option<MethodRouter> {
    match static_dir {
        Some(dir) => Some(serve(ServeDir::new(dir))),
        None => embedded(),
    }
}

#[cfg(feature = "embedded-page")]
fn embedded() -> Option<MethodRouter> {
    Some(serve(ServeDir::with_backend("", embedded::EmbeddedPage)))
}

#[cfg(not(feature = "embedded-page"))]
fn embedded() -> Option<MethodRouter> {
    None
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

/// The page built into the binary: `build.rs` checks the directory and hands its path to
/// rust-embed in `WASIMOFF_EMBEDDED_PAGE`.
#[cfg(feature = "embedded-page")]
mod embedded {
    use std::{
        borrow::Cow,
        collections::HashSet,
        future::{Ready, ready},
        io::{self, Cursor, SeekFrom},
        path::{Component, Path, PathBuf},
        pin::Pin,
        sync::LazyLock,
        task::{Context, Poll},
        time::{Duration, SystemTime},
    };

    use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
    use tower_http::services::fs::{Backend, File, Metadata};

    #[derive(rust_embed::RustEmbed)]
    #[folder = "$WASIMOFF_EMBEDDED_PAGE"]
    struct Page;

    /// The embedded files as a `ServeDir` backend (paths relative to the page's root).
    #[derive(Clone, Copy, Debug)]
    pub(super) struct EmbeddedPage;

    /// A file or directory of the embedded page.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Entry {
        dir: bool,
        len: u64,
        /// Seconds since the epoch, when the build recorded it.
        modified: Option<u64>,
    }

    impl Metadata for Entry {
        fn is_dir(&self) -> bool {
            self.dir
        }

        fn modified(&self) -> io::Result<SystemTime> {
            self.modified
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .ok_or_else(|| io::Error::other("no modification time recorded"))
        }

        fn len(&self) -> u64 {
            self.len
        }
    }

    /// An opened embedded file: its bytes (borrowed from the binary) and their entry.
    pub(super) struct Opened {
        bytes: Cursor<Cow<'static, [u8]>>,
        entry: Entry,
    }

    impl AsyncRead for Opened {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.bytes).poll_read(cx, buf)
        }
    }

    impl AsyncSeek for Opened {
        fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
            Pin::new(&mut self.bytes).start_seek(position)
        }

        fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
            Pin::new(&mut self.bytes).poll_complete(cx)
        }
    }

    impl File for Opened {
        type Metadata = Entry;
        type MetadataFuture<'a> = Ready<io::Result<Entry>>;

        fn metadata(&self) -> Self::MetadataFuture<'_> {
            ready(Ok(self.entry))
        }
    }

    /// `pkg/wasimoff.js` for a path of normal components; `None` for anything else.
    fn key(path: &Path) -> Option<String> {
        let mut key = String::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => {
                    if !key.is_empty() {
                        key.push('/');
                    }
                    key.push_str(part.to_str()?);
                }
                Component::CurDir => {}
                _ => return None,
            }
        }
        Some(key)
    }

    fn not_found() -> io::Error {
        io::Error::from(io::ErrorKind::NotFound)
    }

    /// Every directory of the page (`""`, `pkg`, `pkg/snippets`, ...), gathered once: a miss
    /// (every `.br` sibling a browser asks for first) then costs one hash lookup, not a scan.
    static DIRS: LazyLock<HashSet<String>> = LazyLock::new(|| {
        let mut dirs = HashSet::from([String::new()]);
        for name in Page::iter() {
            let mut name: &str = &name;
            while let Some((dir, _)) = name.rsplit_once('/') {
                dirs.insert(dir.to_owned());
                name = dir;
            }
        }
        dirs
    });

    fn file(key: &str) -> Option<(Entry, Cow<'static, [u8]>)> {
        let file = Page::get(key)?;
        let entry = Entry {
            dir: false,
            len: file.data.len() as u64,
            modified: file.metadata.last_modified(),
        };
        Some((entry, file.data))
    }

    impl Backend for EmbeddedPage {
        type File = Opened;
        type Metadata = Entry;
        type OpenFuture = Ready<io::Result<Opened>>;
        type MetadataFuture = Ready<io::Result<Entry>>;

        fn open(&self, path: PathBuf) -> Self::OpenFuture {
            let opened = key(&path)
                .and_then(|key| file(&key))
                .map(|(entry, bytes)| Opened {
                    bytes: Cursor::new(bytes),
                    entry,
                });
            ready(opened.ok_or_else(not_found))
        }

        fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
            let Some(key) = key(&path) else {
                return ready(Err(not_found()));
            };
            let entry = match file(&key) {
                Some((entry, _)) => Some(entry),
                None => DIRS.contains(&key).then_some(Entry {
                    dir: true,
                    len: 0,
                    modified: None,
                }),
            };
            ready(entry.ok_or_else(not_found))
        }
    }
}
