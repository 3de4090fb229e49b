//! A device left on another version of Troupe: it connects (the transport
//! is the same) but does not speak this node's sync protocol, so nothing
//! syncs with it. A crew with one device on an old version must be told
//! which one and what to do, once, and the node must not reconnect to it
//! every few seconds only to find the same thing.

use std::time::Duration;

use libp2p::StreamProtocol;
use troupe_node::dialer::OTHER_VERSION_RETRY;
use troupe_node::peers::PeerTable;
use troupe_node::swarm::{self, ConnectionEvent};
use troupe_node::{EventBus, Identity, Shutdown};
use troupe_tests::Node;

/// What a later version's sync protocol could be called.
const NEXT_VERSION: StreamProtocol = StreamProtocol::new("/troupe/sync/2");
/// How long the test watches for redials after the first connection. The
/// dialler rechecks a target every 2 s and redials after 1 s, so a node
/// that redialled as usual would connect two or three more times.
const WATCH: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread")]
async fn a_device_on_another_version_is_named_once_and_not_redialled_every_few_seconds()
-> anyhow::Result<()> {
    assert!(WATCH < OTHER_VERSION_RETRY);
    // The other device's address, dialled by the node before it is up (so
    // that the node's event stream is open when they first meet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let other_addr: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse()?;
    let other_id = Identity::from_secret(rand::random());
    let other_peer = other_id.peer_id().to_string();

    let a = Node::start(
        "a",
        None,
        &[
            "--no-mdns".to_owned(),
            "--listen".to_owned(),
            "/ip4/127.0.0.1/tcp/0".to_owned(),
            "--peer".to_owned(),
            format!("{other_addr}/p2p/{other_peer}"),
        ],
    )?;
    a.ready().await?;
    let api = troupe_node::local_api::ApiClient::detect(&a.data_dir)
        .await
        .expect("a's local API answers");
    let mut events = api.events().await?;

    // The other device: this node's transport, a later sync protocol.
    let shutdown = Shutdown::new();
    let (other, _inbound) = swarm::start_speaking(
        NEXT_VERSION,
        &other_id,
        std::slice::from_ref(&other_addr),
        PeerTable::new(),
        EventBus::new(),
        &shutdown,
    )?;
    let mut connections = other.connection_events();

    // The node says so on its event stream, for apps...
    let told = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.recv().await {
            if ev["type"] == "peer_other_version" {
                return Some(ev);
            }
        }
        None
    })
    .await?
    .expect("the event stream stays open");
    assert_eq!(told["peer_id"], other_peer.as_str(), "{told}");
    let first = tokio::time::timeout(Duration::from_secs(5), connections.recv()).await??;
    assert!(matches!(first, ConnectionEvent::Up(_)), "{first:?}");

    // ...lists it as on another version, with where it was...
    let peers = a.cli_json(&["peers"]).await?;
    let listed = peers["other_version"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["peer_id"] == other_peer.as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(
        listed["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with(&other_addr.to_string())),
        "{peers}"
    );

    // ...counts it in the status, beside the protocol this node speaks...
    let status = a.cli_json(&["status"]).await?;
    assert_eq!(status["other_version_peers"], 1, "{status}");
    assert_eq!(status["sync_protocol"], "/troupe/sync/1", "{status}");

    // ...and says so in words, under `troupe status` and `troupe peers`.
    let said = a.cli_words(&["status"]).await?;
    assert!(
        said.contains("(sync protocol /troupe/sync/1)")
            && said.contains("Other versions: 1 peer(s) run another version of Troupe"),
        "{said}"
    );
    let said = a.cli_words(&["peers"]).await?;
    assert!(
        said.contains("1 on another version of Troupe") && said.contains(&other_peer),
        "{said}"
    );

    // It does not reconnect while the retry waits.
    let mut ups = 0;
    let _ = tokio::time::timeout(WATCH, async {
        while let Ok(ev) = connections.recv().await {
            if matches!(ev, ConnectionEvent::Up(_)) {
                ups += 1;
            }
        }
    })
    .await;
    assert_eq!(
        ups,
        0,
        "the node reconnected {ups} times to a device it knew could not sync\nlog:\n{}",
        a.log()
    );

    // The log tells the operator once, naming the device and what to do.
    let log = a.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("runs another version of Troupe"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{log}");
    assert!(
        warnings[0].contains(&other_peer) && warnings[0].contains("Update both devices"),
        "{}",
        warnings[0]
    );
    shutdown.trigger();
    Ok(())
}
