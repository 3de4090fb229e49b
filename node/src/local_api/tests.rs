use super::*;
use crate::events::NodeEvent;

/// An API-only context (no store) whose status is `{"ok": true}`.
fn context(events: &EventBus) -> ApiContext {
    ApiContext {
        core: None,
        stop: None,
        token: new_token(),
        status: Arc::new(|| serde_json::json!({ "ok": true })),
        peers: PeerTable::new(),
        events: events.clone(),
    }
}

/// `client` reaches the API and gets its status.
async fn answers_status(client: &ApiClient) {
    assert_eq!(
        client.get("/v1/status").await.unwrap(),
        serde_json::json!({ "ok": true })
    );
}

async fn serve() -> (ApiClient, EventBus, Shutdown, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let events = EventBus::new();
    let shutdown = Shutdown::new();
    start(context(&events), 0, dir.path(), &shutdown)
        .await
        .unwrap();
    let client = ApiClient::detect(dir.path())
        .await
        .expect("daemon detected");
    (client, events, shutdown, dir)
}

#[tokio::test]
async fn requests_without_the_right_token_get_401() {
    let (client, _events, shutdown, dir) = serve().await;
    let (status, _) = client.get_raw("/v1/status", false).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong = ApiClient::new(client.port, new_token());
    let (status, _) = wrong.get_raw("/v1/peers", true).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = client.get_raw("/v1/status", true).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], br#"{"ok":true}"#);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(shutdown.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn peers_and_unknown_paths_answer_json() {
    let (client, _events, shutdown, _dir) = serve().await;
    let peers = client.get("/v1/peers").await.unwrap();
    assert_eq!(
        peers,
        serde_json::json!({ "connected": [], "discovered": [], "other_version": [] })
    );
    assert!(matches!(
        client.get("/v1/nope").await,
        Err(ClientError::Status {
            status: StatusCode::NOT_FOUND,
            ..
        })
    ));
    assert!(shutdown.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn the_event_stream_delivers_published_events() {
    let (client, events, shutdown, _dir) = serve().await;
    let mut rx = client.events().await.unwrap();
    // The server subscribes when the request arrives; publish until the first
    // event shows up (bounded by the deadline, not a sleep).
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            events.publish(NodeEvent::Listening { addr: "x".into() });
            tokio::select! {
                v = rx.recv() => return v,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .expect("an event within the deadline")
    .unwrap();
    assert_eq!(got, serde_json::json!({ "type": "listening", "addr": "x" }));
    assert!(shutdown.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_stale_port_file_is_not_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join(PORT_FILE), port.to_string()).unwrap();
    std::fs::write(dir.path().join(TOKEN_FILE), "00").unwrap();
    assert!(ApiClient::from_data_dir(dir.path()).is_some());
    assert!(ApiClient::detect(dir.path()).await.is_none());
}

/// One raw HTTP/1.1 request on the data dir's socket; the status line.
#[cfg(unix)]
async fn raw_on_socket(dir: &Path, token: Option<&str>) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::UnixStream::connect(dir.join(SOCKET_FILE))
        .await
        .unwrap();
    let mut stream = tokio::io::BufStream::new(stream);
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET /v1/status HTTP/1.1\r\nhost: x\r\n{auth}\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    line.trim_end().to_owned()
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dirs_socket_serves_the_same_api_to_its_owner_with_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let (client, _events, shutdown, dir) = serve().await;
    assert!(client.uses_socket(), "the client prefers the socket");
    let mode = std::fs::metadata(dir.path().join(SOCKET_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
    assert_eq!(
        raw_on_socket(dir.path(), Some(token.trim())).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        raw_on_socket(dir.path(), None).await,
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        raw_on_socket(dir.path(), Some(&new_token())).await,
        "HTTP/1.1 401 Unauthorized"
    );
    // The port serves the same.
    let tcp = ApiClient::new(client.port, token.trim().to_owned());
    assert!(!tcp.uses_socket());
    answers_status(&tcp).await;
    assert!(shutdown.shutdown(Duration::from_secs(5)).await);
}

#[cfg(unix)]
#[tokio::test]
async fn a_socket_nobody_listens_on_sends_the_client_to_the_port() {
    let (_client, _events, shutdown, dir) = serve().await;
    // What a crashed daemon leaves: the file, with no listener behind it.
    let path = dir.path().join(SOCKET_FILE);
    std::fs::remove_file(&path).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(tokio::net::UnixStream::connect(&path).await.is_err());
    let client = ApiClient::detect(dir.path())
        .await
        .expect("found on the port");
    assert!(client.uses_socket());
    answers_status(&client).await;
    assert!(shutdown.shutdown(Duration::from_secs(5)).await);
}

#[cfg(unix)]
#[tokio::test]
async fn a_data_dir_too_deep_for_a_socket_is_served_on_the_port_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Socket addresses hold about 108 bytes of path.
    let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    let shutdown = Shutdown::new();
    start(context(&EventBus::new()), 0, &deep, &shutdown)
        .await
        .unwrap();
    assert!(!deep.join(SOCKET_FILE).exists());
    let client = ApiClient::detect(&deep).await.expect("served on the port");
    assert!(!client.uses_socket());
    answers_status(&client).await;
    assert!(shutdown.shutdown(Duration::from_secs(5)).await);
}
