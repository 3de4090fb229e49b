//! The client the CLI (and the tests) use to talk to a running daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{PORT_FILE, SOCKET_FILE, TOKEN_FILE};

/// How long one request may take before the daemon counts as unresponsive.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No daemon answers on the port named in the data dir (not started, or
    /// it exited). Start it with `troupe up`.
    #[error("no daemon is answering on 127.0.0.1:{port}: {reason}")]
    Unreachable {
        /// The port tried.
        port: u16,
        /// Why.
        reason: String,
    },
    /// The daemon answered with an error status.
    #[error("the daemon answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// Its error text.
        message: String,
        /// The error kind for command errors (`OpsError::kind`), else empty.
        kind: String,
    },
    /// The answer was not the JSON we expected (a different program on that port?).
    #[error("the daemon's answer was not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// An answer's JSON, or the daemon's error (`{"error", "kind"}`) as a
/// [`ClientError::Status`].
fn answer(status: StatusCode, body: &[u8]) -> Result<serde_json::Value, ClientError> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(ClientError::Status {
            status,
            message: value["error"].as_str().unwrap_or("").to_owned(),
            kind: value["kind"].as_str().unwrap_or("").to_owned(),
        })
    }
}

/// A byte stream to a daemon's API: its socket or its TCP port
/// ([`ApiClient::stream`]).
pub trait ApiIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ApiIo for T {}

/// HTTP/1 over `io`, its connection driven by a task of its own; the error
/// in words.
async fn handshake(
    io: Box<dyn ApiIo>,
) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>), String> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

/// Where a daemon listens and the token to show it.
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The daemon's socket in its data dir, tried before the port (Unix).
    socket: Option<PathBuf>,
    token: String,
}

impl ApiClient {
    /// A client for a known port and token (TCP only).
    pub fn new(port: u16, token: String) -> Self {
        ApiClient {
            port,
            socket: None,
            token,
        }
    }

    /// Reads the port and token files in `data_dir`, without contacting anyone.
    /// `None` if either is missing or unreadable. Where the data dir has the
    /// daemon's socket, requests go through it (the port when it refuses).
    pub fn from_data_dir(data_dir: &Path) -> Option<Self> {
        let port = std::fs::read_to_string(data_dir.join(PORT_FILE)).ok()?;
        let token = std::fs::read_to_string(data_dir.join(TOKEN_FILE)).ok()?;
        let socket = data_dir.join(SOCKET_FILE);
        Some(ApiClient {
            port: port.trim().parse().ok()?,
            socket: (cfg!(unix) && socket.exists()).then_some(socket),
            token: token.trim().to_owned(),
        })
    }

    /// Whether requests try the daemon's socket first (tests).
    pub fn uses_socket(&self) -> bool {
        self.socket.is_some()
    }

    /// The bearer token every request carries (for clients that write
    /// their own HTTP on [`ApiClient::stream`]).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A byte stream to the daemon: its socket if it answers there, else
    /// 127.0.0.1:`port` (with Nagle's delay off).
    ///
    /// # Errors
    /// When neither answers.
    pub async fn stream(&self) -> std::io::Result<Box<dyn ApiIo>> {
        #[cfg(unix)]
        if let Some(path) = &self.socket
            && let Ok(unix) = tokio::net::UnixStream::connect(path).await
        {
            return Ok(Box::new(unix));
        }
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        Ok(Box::new(tcp))
    }

    /// An HTTP/1 connection to the daemon ([`ApiClient::stream`]). The
    /// connection's task ends when the sender is dropped (or is aborted
    /// through the handle).
    async fn connect(&self) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>), ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            port: self.port,
            reason,
        };
        let io = self
            .stream()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        handshake(io).await.map_err(unreachable)
    }

    /// The running daemon for `data_dir`, if one answers an authenticated
    /// `GET /v1/status`; `None` when there is none (stale files included).
    pub async fn detect(data_dir: &Path) -> Option<Self> {
        let client = Self::from_data_dir(data_dir)?;
        client.get("/v1/status").await.ok().map(|_| client)
    }

    /// `GET path` and parse the JSON answer.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let (status, body) = self.request_raw(path, true, None).await?;
        answer(status, &body)
    }

    /// `GET path`, with or without the token, returning status and body
    /// bytes as they came (for tests of the auth rule and for raw output).
    ///
    /// # Errors
    /// [`ClientError::Unreachable`].
    pub async fn get_raw(
        &self,
        path: &str,
        with_token: bool,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.request_raw(path, with_token, None).await
    }

    /// `POST path` with a JSON body and parse the JSON answer.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        let (status, body) = self.request_raw(path, true, Some(bytes)).await?;
        answer(status, &body)
    }

    async fn request_raw(
        &self,
        path: &str,
        with_token: bool,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            port: self.port,
            reason,
        };
        let fut = async {
            let (mut send, conn) = self.connect().await?;
            let mut req = match body {
                Some(_) => Request::post(path),
                None => Request::get(path),
            }
            .header(header::HOST, "127.0.0.1");
            if with_token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
            }
            let req = req
                .body(Full::new(body.unwrap_or_default()))
                .map_err(|e| unreachable(e.to_string()))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            conn.abort();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }

    /// Opens `GET /v1/events` and returns the parsed JSON of each `data:` line
    /// through a channel, until the stream ends or the receiver is dropped.
    ///
    /// # Errors
    /// [`ClientError`] if the stream cannot be opened.
    pub async fn events(
        &self,
    ) -> Result<tokio::sync::mpsc::Receiver<serde_json::Value>, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            port: self.port,
            reason,
        };
        let (mut send, _conn) = self.connect().await?;
        let req = Request::get("/v1/events")
            .header(header::HOST, "127.0.0.1")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(ClientError::Status {
                status: resp.status(),
                message: String::new(),
                kind: String::new(),
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut body = resp.into_body();
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    for line in event.lines() {
                        if let Some(json) = line.strip_prefix("data: ")
                            && let Ok(v) = serde_json::from_str(json)
                            && tx.send(v).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}
