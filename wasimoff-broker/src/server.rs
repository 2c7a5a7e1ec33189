//! The broker's own HTTP server (what [`Broker::spawn`](crate::Broker::spawn) runs): hyper's
//! HTTP/1 with the defences `axum::serve` leaves out.
//!
//! - **Header read timeout**: a connection must deliver each request's headers within
//!   `header_timeout` of connecting (or of its previous response), else it is closed.
//! - **Connection cap with eviction**: at most `max_connections` sockets are open (lowered to
//!   fit the process's file limit). When a new one arrives at the cap, the connection that has
//!   waited longest without a request in progress (a slowloris socket still sending headers,
//!   an idle keep-alive) is closed to make room; if there is none, the newcomer gets a 503.
//! - **A share for providers**: client requests and client sockets may hold at most
//!   `max_connections - max_connections * provider_share / 100` connections; beyond that they
//!   get 503, so a flood of clients cannot lock volunteers out.
//!
//! - **TLS** (with [`crate::TlsConfig`]): each connection's handshake runs in its own task
//!   once the connection is admitted, bounded by `tls_handshake_timeout` (the header timeout
//!   starts after it); a connection still in its handshake is idle, so it is the first evicted
//!   at the cap. A plain HTTP request on the TLS port is answered 400, saying to use https://.
//!
//! The minimum body rate ([`min_rate`]) and the WebSocket keepalive ([`crate::ws`]) are part
//! of the router and the sockets, so they also hold when the router is mounted elsewhere.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, StatusCode, header},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::{either::Either, sync::CancellationToken};
use tower::Service as _;

/// The path of the provider socket: requests to it use the providers' share.
pub(crate) const PROVIDER_PATH: &str = "/api/provider/ws";

/// Settings of the server.
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) max_connections: usize,
    pub(crate) provider_share: usize,
    pub(crate) header_timeout: Duration,
    /// TLS for every connection, if set.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) tls_handshake_timeout: Duration,
}

/// One open connection, as the registry sees it.
#[derive(Debug)]
struct Conn {
    /// Requests being served now.
    busy: AtomicUsize,
    /// When it last became idle (accepted, or a response finished); for eviction.
    idle_since: Mutex<Instant>,
    /// Upgraded to a WebSocket: no longer HTTP, never evicted.
    upgraded: AtomicBool,
    /// Counted in [`Registry::active_clients`].
    counted: AtomicBool,
    /// Cancelled to evict it.
    evict: CancellationToken,
}

impl Conn {
    /// Counts toward its class: a request in progress or an open socket.
    fn active(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0 || self.upgraded.load(Ordering::Acquire)
    }
}

/// Every open connection of the server.
#[derive(Debug)]
struct Registry {
    config: ServerConfig,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicUsize,
    /// Client connections with a request in progress or an open socket.
    active_clients: AtomicUsize,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection, evicting an idle one at the cap. `None`: the cap is reached
    /// and every connection is busy.
    fn admit(self: &Arc<Self>) -> Option<Guard> {
        let mut conns = self.lock();
        if conns.len() >= self.config.max_connections {
            let victim = conns
                .values()
                .filter(|c| !c.active() && !c.evict.is_cancelled())
                .min_by_key(|c| *c.idle_since.lock().unwrap_or_else(|e| e.into_inner()))
                .cloned();
            let victim = victim?;
            tracing::debug!("connection limit reached: closing the longest idle connection");
            victim.evict.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            upgraded: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            evict: CancellationToken::new(),
        });
        conns.insert(id, conn.clone());
        Some(Guard {
            registry: self.clone(),
            id,
            conn,
        })
    }

    /// Counts a client connection as active (once), unless the clients' share is used up.
    fn start_client(&self, conn: &Conn) -> bool {
        if conn.counted.load(Ordering::Acquire) {
            return true;
        }
        let cap = self.client_cap();
        let admitted = self
            .active_clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            conn.counted.store(true, Ordering::Release);
        }
        admitted
    }

    /// A connection no longer counts as an active client.
    fn stop_client(&self, conn: &Conn) {
        if conn.counted.swap(false, Ordering::AcqRel) {
            self.active_clients.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn client_cap(&self) -> usize {
        let c = &self.config;
        c.max_connections - c.max_connections * c.provider_share.min(100) / 100
    }
}

/// Keeps a connection registered while its socket is open (moves into an upgraded socket).
#[derive(Debug)]
struct Guard {
    registry: Arc<Registry>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.registry.stop_client(&self.conn);
        self.registry.lock().remove(&self.id);
    }
}

/// A TCP stream that keeps its connection registered until it is dropped.
struct Tracked {
    io: tokio::net::TcpStream,
    _guard: Guard,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A connection's byte stream: TCP, or TLS over it.
type Io = Either<Tracked, Box<tokio_rustls::server::TlsStream<Tracked>>>;

/// What a plain HTTP request on the TLS port is told (a client given http:// for an https://
/// broker), instead of a handshake failure it would only see as a closed connection.
const PLAIN_HTTP_ON_TLS: &str =
    "this broker speaks TLS on this port: use https:// (or wss://) URLs\n";

/// Answers a plain HTTP request 400 with [`PLAIN_HTTP_ON_TLS`]: reads its head, answers, and
/// reads on a little until the client closes (closing with unread bytes would reset the
/// connection and lose the answer). The caller bounds the time.
async fn refuse_plain_http(tcp: &mut tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{PLAIN_HTTP_ON_TLS}",
        PLAIN_HTTP_ON_TLS.len()
    );
    if tcp.write_all(answer.as_bytes()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let mut drained = 0;
    while drained < 64 << 10 {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Runs a new connection's TLS handshake within `limit`. `None`: it failed, timed out, or was
/// plain HTTP (answered with [`PLAIN_HTTP_ON_TLS`]).
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut tcp: Tracked,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<Tracked>> {
    let attempt = async {
        let mut first = [0u8; 1];
        // A TLS connection starts with a handshake record (22); HTTP with a method's letters.
        if matches!(tcp.io.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase()) {
            refuse_plain_http(&mut tcp.io).await;
            return None;
        }
        match acceptor.accept(tcp).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                // Often a client that does not trust the certificate: its own error says so.
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(tls) => tls,
        Err(_) => {
            tracing::debug!("TLS handshake not completed within {limit:?}: connection closed");
            None
        }
    }
}

/// Marks a request in progress on its connection until dropped.
struct Busy(Arc<Conn>, Arc<Registry>);

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        *conn.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        conn.busy.fetch_sub(1, Ordering::AcqRel);
        // An upgraded client socket stays counted until its connection closes.
        if !conn.upgraded.load(Ordering::Acquire) {
            self.1.stop_client(conn);
        }
    }
}

fn unavailable(text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = response.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The largest number of sockets the process can hold: its soft file limit, less room for the
/// store's files and everything else the broker opens.
fn file_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        Some(soft.saturating_sub(64).max(16))
    }
    #[cfg(not(unix))]
    None
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for open requests.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut config: ServerConfig,
    stop: CancellationToken,
) {
    if let Some(files) = file_limit()
        && files < config.max_connections
    {
        tracing::info!(
            "serving at most {files} connections (the file limit allows no more than the \
             configured {})",
            config.max_connections
        );
        config.max_connections = files;
    }
    config.max_connections = config.max_connections.max(1);
    let header_timeout = config.header_timeout;
    let handshake_timeout = config.tls_handshake_timeout;
    let acceptor = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let registry = Arc::new(Registry {
        config,
        conns: Mutex::new(HashMap::new()),
        next_id: AtomicUsize::new(0),
        active_clients: AtomicUsize::new(0),
    });
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Small messages (pings, results) must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let Some(guard) = registry.admit() else {
            // Every connection is busy: answer this one 503 and close it, all within 5 s.
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(unavailable(
                    "the broker is at its connection limit; retry later\n",
                ))
            });
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let answer = async {
                    let io = match acceptor {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => Either::Right(Box::new(tls)),
                            Err(_) => return,
                        },
                        None => Either::Left(tcp),
                    };
                    let _ = http.serve_connection(TokioIo::new(io), service).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
            });
            continue;
        };
        let conn = guard.conn.clone();
        let registry = registry.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (conn, registry, mut router) = (conn.clone(), registry.clone(), router.clone());
            async move {
                // Providers have their share; health checks must work under a client flood.
                let exempt = matches!(req.uri().path(), PROVIDER_PATH | "/healthz");
                if !exempt && !registry.start_client(&conn) {
                    return Ok(unavailable(
                        "the broker is at its connection limit for clients; retry later\n",
                    ));
                }
                conn.busy.fetch_add(1, Ordering::AcqRel);
                let busy = Busy(conn.clone(), registry.clone());
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let response = router.call(req).await;
                if let Ok(r) = &response
                    && r.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    conn.upgraded.store(true, Ordering::Release);
                }
                drop(busy);
                response
            }
        });
        let evict = guard.conn.evict.clone();
        let tracked = Tracked {
            io: tcp,
            _guard: guard,
        };
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            let io = match acceptor {
                None => Io::Left(tracked),
                // The handshake is the connection's, not the loop's: a client that never
                // finishes it holds only its own (evictable, time-limited) slot.
                Some(acceptor) => tokio::select! {
                    tls = handshake(acceptor, tracked, handshake_timeout) => match tls {
                        Some(tls) => Io::Right(Box::new(tls)),
                        None => return,
                    },
                    () = evict.cancelled() => return,
                    () = stop.cancelled() => return,
                },
            };
            let connection = http
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!("connection ended: {e}");
                    }
                    return;
                }
                () = evict.cancelled() => return,
                () = stop.cancelled() => {}
            }
            // Shutting down: finish the request in progress, then close.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after 10 s; closing them");
    }
}

/// The minimum rate of request bodies: after a grace period, a body must have arrived at
/// `rate` bytes per second on average, or the request fails (and its connection closes).
pub(crate) mod min_rate {
    use super::*;
    use axum::{body::Bytes, extract::Request, middleware::Next};
    use http_body::{Body as HttpBody, Frame, SizeHint};

    /// The rate and grace of [`layer`].
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct MinRate {
        pub(crate) grace: Duration,
        /// Bytes per second; 0 disables the check.
        pub(crate) rate: u64,
    }

    /// Middleware that wraps every request body in [`RateBody`].
    pub(crate) async fn layer(
        axum::extract::State(limit): axum::extract::State<MinRate>,
        req: Request,
        next: Next,
    ) -> axum::response::Response {
        if limit.rate == 0 {
            return next.run(req).await;
        }
        let req = req.map(|body| Body::new(RateBody::new(body, limit)));
        next.run(req).await
    }

    /// A body that fails when it arrives slower than its minimum rate.
    pub(crate) struct RateBody {
        inner: Body,
        limit: MinRate,
        started: Instant,
        received: u64,
        timer: Pin<Box<tokio::time::Sleep>>,
    }

    impl RateBody {
        fn new(inner: Body, limit: MinRate) -> Self {
            let started = Instant::now();
            RateBody {
                inner,
                limit,
                started,
                received: 0,
                timer: Box::pin(tokio::time::sleep(limit.grace)),
            }
        }

        /// When the body must have grown past what it has.
        fn deadline(&self) -> Instant {
            let earned = Duration::from_secs_f64(self.received as f64 / self.limit.rate as f64);
            self.started + self.limit.grace + earned
        }
    }

    impl HttpBody for RateBody {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            let this = &mut *self;
            if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    this.received += data.len() as u64;
                }
                return Poll::Ready(frame);
            }
            let deadline = tokio::time::Instant::from_std(this.deadline());
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(format!(
                    "request body arrived slower than the minimum of {} bytes/s",
                    this.limit.rate
                ))))),
                Poll::Pending => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }
}
