//! A stranger on the venue's network (a device in no workspace the node
//! holds) connects and sends batches before any handshake. The node must
//! not decode them: a batch of a few hundred KiB on the wire can decode to
//! hundreds of MiB of bundles (zstd, then a few plain bytes an op), so a
//! node that decoded first and asked about membership after could be made
//! to run out of memory by anyone on the LAN.

use std::time::Duration;

use futures::AsyncReadExt;
use troupe_node::framing::write_frames;
use troupe_node::peers::PeerTable;
use troupe_node::{EventBus, Identity, Shutdown, swarm};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::AuthorTip;
use troupe_protocol::draft::Draft;
use troupe_protocol::hlc::Hlc;
use troupe_protocol::limits::MAX_OPS_PER_BUNDLE;
use troupe_protocol::sync::limits::{MAX_BATCH_BUNDLES, MAX_BATCH_PLAIN, MAX_FRAME};
use troupe_protocol::sync::message::{Message, column_layout, decode_batch, encode_batch};
use troupe_protocol::{FieldPath, Value, WorkspaceId};
use troupe_tests::{Node, peak_rss_kib};

/// Frames the stranger sends.
const FRAMES: u64 = 4;
/// How much the node's peak memory may grow while it reads them: the
/// frames themselves and the connection's buffers, not their bundles.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// A valid batch that is small on the wire and large decoded: copies of
/// one signed bundle of [`MAX_OPS_PER_BUNDLE`] one-letter fields, as many
/// as fit under the plain cap. Returns it with its bundle count and the
/// bundles' bytes once decompressed.
fn batch_bomb() -> (Vec<u8>, usize, usize) {
    let ws = WorkspaceId(rand::random());
    let mut d = Draft::new(ws, BundleKind::UserEdit, "fields");
    for i in 0..MAX_OPS_PER_BUNDLE {
        let path = FieldPath::new("t", "e", &format!("f{i}")).expect("valid path");
        d.set(path, Value::Text("x".into()), vec![]);
    }
    let key = troupe_protocol::testing::key(9);
    let hlc = Hlc {
        wall_ms: 1_000,
        counter: 0,
    };
    let b = d.sign(&key, &AuthorTip::default(), hlc).expect("signs");
    let one = column_layout(&[(false, b.bytes())]).len();
    let copies = (MAX_BATCH_PLAIN * 9 / 10 / one).clamp(1, MAX_BATCH_BUNDLES);
    let items: Vec<(bool, &[u8])> = std::iter::repeat_n((false, b.bytes()), copies).collect();
    // Compressed as a sender would not bother to: a window that spans the
    // copies, so each after the first costs a few bytes.
    let mut zstd = zstd::bulk::Compressor::new(3).expect("zstd context");
    zstd.set_parameter(zstd::stream::raw::CParameter::WindowLog(24))
        .expect("window");
    zstd.set_parameter(zstd::stream::raw::CParameter::EnableLongDistanceMatching(
        true,
    ))
    .expect("long matches");
    let packed = zstd.compress(&column_layout(&items)).expect("compresses");
    // The column layout's mark, then the compressed columns.
    let data = [&[encode_batch([b.bytes()])[0]], packed.as_slice()].concat();
    let items = decode_batch(&data).expect("the bomb is a valid batch");
    assert_eq!(items.len(), copies, "every copy decodes");
    let bytes = items.iter().map(|(_, b)| b.len()).sum();
    (data, copies, bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strangers_batches_are_refused_without_being_decoded() -> anyhow::Result<()> {
    let args: Vec<String> = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]
        .map(str::to_owned)
        .to_vec();
    let a = Node::start("a", None, &args)?;
    let status = a.ready().await?;
    let addr: libp2p::Multiaddr = format!(
        "{}/p2p/{}",
        status["listen_addrs"][0].as_str().unwrap_or_default(),
        status["peer_id"].as_str().unwrap_or_default()
    )
    .parse()?;

    let (data, copies, bytes) = batch_bomb();
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|batch_id| {
            Message::Batch {
                workspace: WorkspaceId(rand::random()),
                batch_id,
                data: data.clone(),
            }
            .to_frame()
        })
        .collect();
    assert!(frames[0].len() <= MAX_FRAME, "a frame the node reads");
    assert!(
        bytes > 20 * frames[0].len(),
        "the batch decodes to far more than it sends: {copies} bundles, {bytes} bytes from a {}-byte frame",
        frames[0].len()
    );

    let before = peak_rss_kib(a.pid());
    let shutdown = Shutdown::new();
    let loopback: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let (net, _inbound) = swarm::start(
        &Identity::from_secret(rand::random()),
        &[loopback],
        PeerTable::new(),
        EventBus::new(),
        &shutdown,
    )?;
    let peer = net.dial(addr).await?;
    let mut stream = net.open_stream(peer).await?;
    // The node may close the connection before it has read them all.
    let _ = write_frames(&mut stream, &frames, &mut Vec::new()).await;
    // It never writes on the stream the stranger opened: the read ends
    // when the node closes the connection.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the node closes the stranger's connection");
    let grew = peak_rss_kib(a.pid()).saturating_sub(before);
    assert!(
        grew < MAX_GROWTH_KIB,
        "the node's peak memory grew by {grew} KiB reading {FRAMES} frames of {} bytes from a stranger\nlog:\n{}",
        frames[0].len(),
        a.log()
    );
    // And it goes on answering.
    a.ready().await?;
    shutdown.trigger();
    Ok(())
}

/// Connections one address may hold in their handshake
/// (`troupe_node::admission::Limits::default`).
const PENDING_PER_ADDRESS: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_holding_connections_open_gets_only_a_few_and_loses_them() -> anyhow::Result<()>
{
    assert_eq!(
        troupe_node::admission::Limits::default().pending_per_address,
        PENDING_PER_ADDRESS
    );
    let args: Vec<String> = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]
        .map(str::to_owned)
        .to_vec();
    let a = Node::start("a", None, &args)?;
    let status = a.ready().await?;
    let a_addr = status["listen_addrs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let a_peer = status["peer_id"].as_str().unwrap_or_default().to_owned();
    let port: u16 = a_addr.rsplit('/').next().unwrap_or_default().parse()?;

    // A stranger at another address opens connections and never says a word.
    let mut held = Vec::new();
    for _ in 0..30 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse()?)?;
        held.push(socket.connect(([127, 0, 0, 1], port).into()).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = still_open(&mut held).await;
    assert_eq!(
        open,
        PENDING_PER_ADDRESS,
        "the node keeps {PENDING_PER_ADDRESS} of the stranger's 30 silent connections and closes the rest\nlog:\n{}",
        a.log()
    );
    // The operator is told once, not 22 times, and where they came from.
    let reports = a
        .log()
        .lines()
        .filter(|l| l.contains("refused an inbound connection from 127.0.0.2"))
        .count();
    assert_eq!(reports, 1, "one warning for the refusals:\n{}", a.log());

    // Meanwhile a device at another address connects as usual.
    let b = Node::start(
        "b",
        None,
        &[
            args.clone(),
            vec!["--peer".into(), format!("{a_addr}/p2p/{a_peer}")],
        ]
        .concat(),
    )?;
    let b_peer = b.ready().await?["peer_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    troupe_tests::wait_for("a to list b", Duration::from_secs(30), || async {
        let peers = a.connected_peers().await.map_err(|e| vec![e.to_string()])?;
        if peers.contains(&b_peer) {
            Ok(())
        } else {
            Err(peers)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog a:\n{}\nlog b:\n{}", a.log(), b.log()))?;

    // And the silent connections lose their slots once the handshake
    // timeout passes.
    tokio::time::sleep(troupe_node::swarm::HANDSHAKE_TIMEOUT + Duration::from_secs(2)).await;
    assert_eq!(
        still_open(&mut held).await,
        0,
        "silent connections outlive the handshake timeout"
    );
    Ok(())
}

/// How many of `conns` the other side has not closed: each is read for a
/// moment, and one that ends or fails was closed.
async fn still_open(conns: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt as _;
    let mut open = 0;
    for c in conns.iter_mut() {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(20), c.read(&mut buf)).await {
            Err(_) => open += 1,
            Ok(Ok(n)) if n > 0 => open += 1,
            Ok(_) => {}
        }
    }
    open
}
