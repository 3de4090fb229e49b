use super::*;
use crate::events::NodeEvent;

async fn serve() -> (ApiClient, EventBus, Shutdown, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let events = EventBus::new();
    let ctx = ApiContext {
        core: None,
        stop: None,
        token: new_token(),
        status: Arc::new(|| serde_json::json!({ "ok": true })),
        peers: PeerTable::new(),
        events: events.clone(),
    };
    let shutdown = Shutdown::new();
    start(ctx, 0, dir.path(), &shutdown).await.unwrap();
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
        serde_json::json!({ "connected": [], "discovered": [] })
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
