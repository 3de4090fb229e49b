//! The local API: HTTP + JSON on 127.0.0.1, for the CLI and for apps in other
//! languages; on Unix also on a socket in the data dir (`api.sock`), same
//! endpoints and token, which the CLI prefers.
//!
//! # Goals
//! - Every CLI command can talk to a running daemon instead of opening the
//!   store (which only one process may own).
//! - Other local users get nothing: every request must carry the bearer token
//!   kept in the data dir (mode 0600), or it is answered 401.
//!
//! # Non-goals
//! - Remote access: the listener binds 127.0.0.1 only.
//!
//! # Files in the data dir
//! `api.token` (32 random bytes, hex; owner-only) is written before
//! `api.port` (the decimal port), so a client that sees the port also finds
//! the token. A stale port file from a crashed daemon is harmless: the client
//! treats a daemon as running only after an authenticated `GET /v1/status`
//! succeeds.
//!
//! `api.sock` (Unix only; owner-only) serves the same HTTP. A client on the
//! same machine skips the TCP stack: local commits through the API from 64
//! concurrent clients went from about 29,000 to 38,000 a second with it
//! (`bench --only commit`). It is made after the token file and removed
//! when the daemon stops; a stale one refuses connections, and clients then
//! try the port. It is skipped (TCP only) where it cannot be made, e.g. a
//! data dir path longer than a socket address holds.
//!
//! # Endpoints
//! | method, path | answer |
//! |---|---|
//! | `GET /v1/status` | node identity, listen addresses, what is running |
//! | `GET /v1/peers` | connected peers and mDNS sightings ([`PeersSnapshot`]) |
//! | `GET /v1/events` | server-sent events: one `data:` line of JSON per [`NodeEvent`] |
//! | `POST /v1/stop` | stops the node gracefully (as SIGTERM does) |
//! | `POST /v1/command` | one [`crate::ops::Request`] (JSON); answers its JSON result |
//!
//! Errors are JSON `{"error": "..."}` with a matching status code; command
//! errors add `"kind"` ([`crate::ops::OpsError::kind`]).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tracing::{Instrument, debug, warn};

use crate::events::{EventBus, NodeEvent};
use crate::identity::write_private;
use crate::peers::{PeerTable, PeersSnapshot};
use crate::shutdown::Shutdown;

mod client;
pub use client::{ApiClient, ApiIo, ClientError};

/// File holding the API port.
pub const PORT_FILE: &str = "api.port";
/// File holding the bearer token (owner-only).
pub const TOKEN_FILE: &str = "api.token";
/// The API's Unix socket in the data dir (owner-only).
pub const SOCKET_FILE: &str = "api.sock";
/// How often an idle event stream sends a comment line, so clients and
/// proxies can tell a quiet stream from a dead one.
pub const EVENT_KEEPALIVE: Duration = Duration::from_secs(15);

type Body = BoxBody<Bytes, Infallible>;

/// Largest `POST /v1/command` body accepted.
pub const MAX_COMMAND_BODY: usize = 64 * 1024;

/// Produces the JSON of `GET /v1/status`; the daemon supplies it so the
/// status can grow (sync progress) without changing this module.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the API serves.
#[derive(Clone)]
pub struct ApiContext {
    /// The bearer token every request must carry.
    pub token: String,
    /// Status JSON.
    pub status: StatusFn,
    /// Peer table.
    pub peers: PeerTable,
    /// Event source for `/v1/events`.
    pub events: EventBus,
    /// Triggered by `POST /v1/stop`: the daemon then stops gracefully
    /// (absent in API-only tests).
    pub stop: Option<Shutdown>,
    /// The store and sync engine (absent in API-only tests).
    pub core: Option<crate::storage_actor::ActorHandle<crate::sync_core::SyncCore>>,
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext").finish_non_exhaustive()
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Binding 127.0.0.1 failed (unusual: no loopback, or no ports left).
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    /// The port or token file could not be written to the data dir.
    #[error("cannot write {file}: {reason}")]
    Files {
        /// File name.
        file: &'static str,
        /// Why.
        reason: String,
    },
}

/// A fresh random token (32 bytes, hex).
pub fn new_token() -> String {
    let mut t = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut t);
    t.iter().map(|b| format!("{b:02x}")).collect()
}

/// Binds 127.0.0.1:`port` (0 = any), writes the token and port files to
/// `data_dir`, and serves until shutdown. Returns the bound address.
///
/// # Errors
/// [`ApiError`].
pub async fn start(
    ctx: ApiContext,
    port: u16,
    data_dir: &Path,
    shutdown: &Shutdown,
) -> Result<SocketAddr, ApiError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(ApiError::Bind)?;
    let addr = listener.local_addr().map_err(ApiError::Bind)?;
    write_private(&data_dir.join(TOKEN_FILE), ctx.token.as_bytes()).map_err(|e| {
        ApiError::Files {
            file: TOKEN_FILE,
            reason: e.to_string(),
        }
    })?;
    std::fs::write(data_dir.join(PORT_FILE), addr.port().to_string()).map_err(|e| {
        ApiError::Files {
            file: PORT_FILE,
            reason: e.to_string(),
        }
    })?;
    #[cfg(unix)]
    if let Some(socket) = bind_socket(data_dir) {
        serve_listener(
            Listener::Socket(socket),
            &ctx,
            shutdown,
            tracing::info_span!("local_api", socket = SOCKET_FILE),
        );
    }
    serve_listener(
        Listener::Tcp(listener),
        &ctx,
        shutdown,
        tracing::info_span!("local_api", %addr),
    );
    Ok(addr)
}

/// Where the API takes connections: its port, or its socket in the data dir.
enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Socket(tokio::net::UnixListener),
}

impl Listener {
    /// Takes the next connection and starts serving it.
    async fn accept(&self, ctx: &ApiContext, sd: &Shutdown) -> std::io::Result<()> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                serve_connection(ctx, stream, sd, peer.to_string());
            }
            #[cfg(unix)]
            Listener::Socket(l) => {
                let (stream, _) = l.accept().await?;
                serve_connection(ctx, stream, sd, SOCKET_FILE.into());
            }
        }
        Ok(())
    }
}

/// Accepts connections on `listener` until the API stops.
fn serve_listener(listener: Listener, ctx: &ApiContext, shutdown: &Shutdown, span: tracing::Span) {
    let sd = shutdown.clone();
    let ctx = ctx.clone();
    shutdown.spawn(
        async move {
            loop {
                tokio::select! {
                    _ = sd.triggered() => break,
                    r = listener.accept(&ctx, &sd) => if let Err(e) = r {
                        warn!(error = %e, "local API accept failed");
                    },
                }
            }
        }
        .instrument(span),
    );
}

/// Serves HTTP/1 on one accepted connection (TCP or the socket) until it
/// ends or the API stops.
fn serve_connection<IO>(ctx: &ApiContext, io: IO, sd: &Shutdown, peer: String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ctx = ctx.clone();
    let conn_sd = sd.clone();
    sd.spawn(async move {
        let svc = service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc);
        tokio::select! {
            _ = conn_sd.triggered() => {}
            r = conn => if let Err(e) = r { debug!(%peer, error = %e, "local API connection ended"); }
        }
    });
}

/// Listens on `api.sock` in the data dir, owner-only (a stale one from a
/// daemon that crashed is replaced: the data dir's lock says no other
/// daemon runs here). `None`, with a warning, when it cannot be made.
#[cfg(unix)]
fn bind_socket(data_dir: &Path) -> Option<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(SOCKET_FILE);
    let _ = std::fs::remove_file(&path);
    let made = tokio::net::UnixListener::bind(&path).and_then(|l| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(l)
    });
    match made {
        Ok(l) => Some(l),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            warn!(path = %path.display(), error = %e, "the local API serves 127.0.0.1 only: no socket in the data dir");
            None
        }
    }
}

/// Compares in constant time so the token cannot be found byte by byte.
fn token_matches(header: Option<&header::HeaderValue>, token: &str) -> bool {
    let Some(given) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

async fn handle(ctx: &ApiContext, req: Request<Incoming>) -> Response<Body> {
    if !token_matches(req.headers().get(header::AUTHORIZATION), &ctx.token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    if req.method() == Method::POST && req.uri().path() == "/v1/command" {
        return command(ctx, req).await;
    }
    if req.method() == Method::POST && req.uri().path() == "/v1/stop" {
        return match &ctx.stop {
            Some(stop) => {
                stop.trigger();
                json(StatusCode::OK, &serde_json::json!({ "stopping": true }))
            }
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node cannot be stopped here",
            ),
        };
    }
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, or POST /v1/command",
        );
    }
    match req.uri().path() {
        "/v1/status" => json(StatusCode::OK, &(ctx.status)()),
        "/v1/peers" => json(StatusCode::OK, &ctx.peers.snapshot()),
        "/v1/events" => events(ctx.events.subscribe()),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// Runs one [`crate::ops::Request`] on the storage thread; a write is
/// announced to connected members by the core.
async fn command(ctx: &ApiContext, req: Request<Incoming>) -> Response<Body> {
    let Some(core) = ctx.core.clone() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "this node has no store");
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_COMMAND_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "the command is too large"),
    };
    let request = match crate::ops::Request::from_json(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a command: {e}")),
    };
    let result = if request.writes() {
        // Group commit: durable and answered together with the other writes
        // waiting on the storage thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        match core.send(move |c| c.command_deferred(request, tx)).await {
            Ok(()) => rx
                .await
                .map_err(|_| crate::storage_actor::ActorError::Stopped),
            Err(e) => Err(e),
        }
    } else {
        core.call(move |c| {
            c.write(|l| crate::ops::execute(l, request))
                .map(crate::ops::Answer::Json)
        })
        .await
    };
    match result {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(e)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({ "error": e.to_string(), "kind": e.kind() }),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// An SSE response fed by a broadcast receiver; a lagging client gets a
/// `lagged` event with how many events it missed.
fn events(rx: broadcast::Receiver<NodeEvent>) -> Response<Body> {
    let keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + EVENT_KEEPALIVE,
        EVENT_KEEPALIVE,
    );
    let first = Bytes::from_static(b": troupe events\n\n");
    let stream = futures::stream::once(async move { Ok(Frame::data(first)) }).chain(
        futures::stream::unfold((rx, keepalive), |(mut rx, mut keepalive)| async move {
            let chunk = tokio::select! {
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                ev = rx.recv() => match ev {
                    Ok(ev) => sse_data(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        sse_data(&serde_json::json!({ "type": "lagged", "missed": n }))
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok::<_, Infallible>(Frame::data(chunk)), (rx, keepalive)))
        }),
    );
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

fn sse_data<T: serde::Serialize>(v: &T) -> Bytes {
    let json = serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("data: {json}\n\n"))
}

/// The shape of `GET /v1/peers`, re-exported for clients.
pub type PeersResponse = PeersSnapshot;

#[cfg(test)]
mod tests;
