//! Addresses are dialled again until they answer, and remembered across
//! restarts: a `--peer` that is down when the node starts is connected once it
//! comes up, and after a restart without `--peer` the node reconnects from
//! `known_peers.json`. Pins the path venue networks without multicast rely on.

use std::time::Duration;

use troupe_tests::{Node, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

async fn wait_connected(node: &Node, other: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{} to list {other}", node.name),
        DEADLINE,
        || async {
            let peers = node
                .connected_peers()
                .await
                .map_err(|e| vec![e.to_string()])?;
            if peers.iter().any(|p| p == other) {
                Ok(())
            } else {
                Err(peers)
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog of {}:\n{}", node.name, node.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_starts_later_is_reached_and_remembered() -> anyhow::Result<()> {
    // A port nothing listens on yet; A will take it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let a_addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let loopback = [
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];

    let b = Node::start(
        "b",
        None,
        &[&loopback[..], &["--peer".to_owned(), a_addr.clone()]].concat(),
    )?;
    b.ready().await?;
    wait_for("b's first dial to fail", DEADLINE, || async {
        if b.log().contains("dial failed") {
            Ok(())
        } else {
            Err("no failed dial yet")
        }
    })
    .await?;

    let a = Node::start(
        "a",
        None,
        &[
            "--no-mdns".to_owned(),
            "--listen".to_owned(),
            a_addr.clone(),
        ],
    )?;
    let a_peer = a.ready().await?["peer_id"].as_str().unwrap().to_owned();
    wait_connected(&b, &a_peer).await?;

    // Restart B with no --peer, on the same data dir: it dials A from memory.
    assert!(b.stop().await?.success());
    let data_dir = b.data_dir.clone();
    let b2 = Node::start_in("b again", None, &data_dir, &loopback)?;
    b2.ready().await?;
    wait_connected(&b2, &a_peer).await?;
    assert!(b2.stop().await?.success());
    assert!(a.stop().await?.success());
    drop(b);
    Ok(())
}
