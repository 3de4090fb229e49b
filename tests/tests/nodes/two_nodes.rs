//! Two `troupe up` processes on loopback with `--no-mdns`: B dials A by
//! address, both list the other as connected through the local API, and the
//! listed actor id is the peer's key (identity = actor key). Pins the
//! explicit-dial path that works where venue Wi-Fi blocks multicast, and the
//! local API's event stream reporting the connection as it happens.

use std::time::Duration;

use troupe_tests::{Node, wait_for};

const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

fn loopback_args(extra: &[String]) -> Vec<String> {
    let mut a = vec![
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];
    a.extend_from_slice(extra);
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_loopback_connect_by_address_and_list_each_other() -> anyhow::Result<()> {
    let a = Node::start("a", None, &loopback_args(&[]))?;
    let a_status = a.ready().await?;
    let a_peer = a_status["peer_id"].as_str().unwrap().to_owned();
    let a_addr = a_status["listen_addrs"][0].as_str().unwrap().to_owned();
    assert!(a_addr.starts_with("/ip4/127.0.0.1/tcp/"), "{a_addr}");
    assert_eq!(a_status["mdns"]["enabled"], false);
    // A's event stream, opened from this process through A's API files.
    let api = troupe_node::local_api::ApiClient::detect(&a.data_dir)
        .await
        .expect("a's local API answers");
    assert!(api.uses_socket(), "clients go through the API's socket");
    let mut events = api.events().await?;

    let b = Node::start(
        "b",
        None,
        &loopback_args(&["--peer".into(), format!("{a_addr}/p2p/{a_peer}")]),
    )?;
    let b_status = b.ready().await?;
    let b_peer = b_status["peer_id"].as_str().unwrap().to_owned();

    let connected = tokio::time::timeout(CONNECT_DEADLINE, async {
        while let Some(ev) = events.recv().await {
            if ev["type"] == "peer_connected" && ev["peer_id"] == b_peer.as_str() {
                return Some(ev);
            }
        }
        None
    })
    .await?
    .expect("the event stream stays open");
    assert_eq!(connected["actor_id"], b_status["actor_id"]);

    for (node, other) in [(&a, &b_peer), (&b, &a_peer)] {
        wait_for(
            &format!("{} to list {other}", node.name),
            CONNECT_DEADLINE,
            || async {
                let peers = node
                    .connected_peers()
                    .await
                    .map_err(|e| vec![e.to_string()])?;
                if peers.contains(other) {
                    Ok(())
                } else {
                    Err(peers)
                }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nlog a:\n{}\nlog b:\n{}", a.log(), b.log()))?;
    }

    let a_view = a.cli_json(&["peers"]).await?;
    let b_entry = &a_view["connected"][0];
    assert_eq!(
        b_entry["actor_id"], b_status["actor_id"],
        "the peer id carries the actor key"
    );
    assert!(
        a_view["discovered"].as_array().unwrap().is_empty(),
        "no mDNS with --no-mdns"
    );
    assert!(
        a_status["sync"].is_object(),
        "the status reports the sync engine: {a_status}"
    );

    // B remembered A's address for the next start.
    let known = std::fs::read_to_string(b.data_dir.join("known_peers.json"))?;
    assert!(known.contains(&a_peer), "{known}");

    assert!(b.stop().await?.success());
    wait_for("a to see b leave", CONNECT_DEADLINE, || async {
        let peers = a.connected_peers().await.map_err(|e| vec![e.to_string()])?;
        if peers.contains(&b_peer) {
            Err(peers)
        } else {
            Ok(())
        }
    })
    .await?;
    assert!(a.stop().await?.success());
    assert!(
        !a.data_dir.join("api.port").exists(),
        "the port file is removed on a clean stop"
    );
    assert!(
        !a.data_dir.join("api.sock").exists(),
        "so is the API's socket"
    );
    Ok(())
}
