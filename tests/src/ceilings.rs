//! The yardsticks the asset figures are read against, measured on the same
//! machine by the same bench run:
//! - the node's transport alone ([`transfer`]): one stream over the same
//!   TCP + noise + yamux stack the node builds ([`troupe_node::swarm::start`]),
//!   between two processes on 127.0.0.1, carrying bytes that nothing reads
//!   from or writes to a store. The receiving side is a child process
//!   started as `<exe> <SINK_ARG>`, so the two sides share no runtime, as
//!   two nodes do not;
//! - the disk alone ([`disk_write`]): the same bytes written to a new file
//!   in the bench's directory and synced (`fdatasync`), as a received asset
//!   must be before it is announced;
//! - the disk's flush ([`flush_latency`]): one 4 KiB write into room the
//!   file already has, then synced; or written directly (`O_DIRECT |
//!   O_DSYNC`), as a group commit's journal record is where the file
//!   system allows it.
//!   A client that waits for its durable answer before its next write pays
//!   at least one flush a commit, so `n` such clients make at most
//!   `n / flush` commits a second, however cheap the rest is.
//!
//! An asset transfer cannot beat the lower of the first two; how far below
//! it the asset figure lands is what the store and the protocol cost.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{AsyncReadExt, AsyncWriteExt};
use troupe_node::peers::PeerTable;
use troupe_node::{EventBus, Identity, Shutdown, swarm};

/// The argument that makes a benchmark executable run [`sink`].
pub const SINK_ARG: &str = "--wire-sink";

/// Bytes per write on the sending side (a large asset chunk's size order).
const WRITE: usize = 256 * 1024;

/// What one transfer measured.
#[derive(Debug, Clone, Copy)]
pub struct WireRun {
    /// From the first byte written to the receiver's last byte read.
    pub took: Duration,
    /// CPU the receiving process used through the whole run (its start,
    /// the connection and the bytes), in seconds.
    pub receiver_cpu_s: f64,
}

/// The node's transport with a fresh key, listening on a free loopback port.
fn transport(shutdown: &Shutdown) -> anyhow::Result<(troupe_node::NetworkHandle, swarm::Inbound)> {
    let loopback: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let id = Identity::from_secret(rand::random());
    Ok(swarm::start(
        &id,
        &[loopback],
        PeerTable::new(),
        EventBus::new(),
        shutdown,
    )?)
}

/// The receiving side: listens on 127.0.0.1, prints `<address> <peer id>`,
/// reads one inbound stream to its end, prints `<bytes> <seconds from the
/// first byte to the last>` and returns.
///
/// # Errors
/// When the transport cannot start or the stream fails.
pub async fn sink() -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let (net, mut inbound) = transport(&shutdown)?;
    let addrs = net.wait_listening().await?;
    let addr = addrs.first().context("the sink listens on no address")?;
    println!("{addr} {}", net.local_peer());
    let (_, mut stream) = inbound.recv().await.context("no stream arrived")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = stream.read(&mut buf).await?;
    let first = Instant::now();
    let mut n = got;
    while got > 0 {
        got = stream.read(&mut buf).await?;
        n += got;
    }
    println!("{n} {}", first.elapsed().as_secs_f64());
    shutdown.trigger();
    Ok(())
}

/// Sends `bytes` over one stream to a [`sink`] started from `exe`.
///
/// # Errors
/// When the sink cannot be started or reached, or reports another count.
pub async fn transfer(exe: &std::path::Path, bytes: usize) -> anyhow::Result<WireRun> {
    let mut child = Command::new(exe)
        .arg(SINK_ARG)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().context("the sink's stdout")?);
    let result = async {
        let mut line = String::new();
        tokio::task::block_in_place(|| out.read_line(&mut line))?;
        let addr: libp2p::Multiaddr = line
            .split_whitespace()
            .next()
            .context("the sink printed no address")?
            .parse()?;
        let shutdown = Shutdown::new();
        let (net, _inbound) = transport(&shutdown)?;
        let peer = net.dial(addr).await?;
        let mut stream = net.open_stream(peer).await?;
        let chunk = vec![0x5au8; WRITE];
        let mut left = bytes;
        while left > 0 {
            let k = left.min(WRITE);
            stream.write_all(&chunk[..k]).await?;
            left -= k;
        }
        stream.close().await?;
        line.clear();
        // The sink's report comes once it has read the last byte.
        tokio::task::block_in_place(|| out.read_line(&mut line))?;
        let receiver_cpu_s = crate::cpu_secs(pid);
        shutdown.trigger();
        let mut f = line.split_whitespace();
        let n: usize = f.next().context("the sink reported nothing")?.parse()?;
        let secs: f64 = f.next().context("the sink reported no time")?.parse()?;
        if n != bytes {
            bail!("the sink read {n} bytes of {bytes}");
        }
        Ok(WireRun {
            took: Duration::from_secs_f64(secs),
            receiver_cpu_s,
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Writes `bytes` to a new file in `dir` in 1 MiB writes and syncs it;
/// returns the time from the first write to the end of the sync. The file
/// is removed after.
///
/// # Errors
/// When the file cannot be written or synced.
pub fn disk_write(dir: &std::path::Path, bytes: usize) -> std::io::Result<Duration> {
    let path = dir.join("disk-ceiling");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(block.len());
        file.write_all(&block[..k])?;
        left -= k;
    }
    file.sync_data()?;
    let took = t.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(took)
}

/// Times `count` flushes of a file in `dir`: each writes 4 KiB into room the
/// file already has (1 MiB of zeros, synced first, as the commit journal
/// grows ahead of its records) and syncs its data, or, with `direct`,
/// writes them through a handle opened `O_DIRECT | O_DSYNC`, one write
/// that returns once they are on the disk (as the journal writes its
/// records where the file system allows it). Returns each flush's time, in
/// order. The file is removed after.
///
/// # Errors
/// When the file cannot be written or synced, or with `direct` where the
/// file system refuses direct writes.
pub fn flush_latency(
    dir: &std::path::Path,
    count: usize,
    direct: bool,
) -> std::io::Result<Vec<Duration>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const ROOM: usize = 1 << 20;
    const RECORD: usize = 4096;
    let path = dir.join("flush-ceiling");
    let file = std::fs::File::create(&path)?;
    file.write_all_at(&vec![0u8; ROOM], 0)?;
    file.sync_all()?;
    let direct = direct
        .then(|| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                .open(&path)
        })
        .transpose()?;
    // A direct write's memory is aligned to the block as well.
    let buf = vec![0x5au8; 2 * RECORD];
    let at = buf.as_ptr().align_offset(RECORD);
    let record = &buf[at..at + RECORD];
    let mut each = Vec::with_capacity(count);
    for i in 0..count {
        let at = (i * RECORD % ROOM) as u64;
        let t = Instant::now();
        match &direct {
            Some(d) => d.write_all_at(record, at)?,
            None => {
                file.write_all_at(record, at)?;
                file.sync_data()?;
            }
        }
        each.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(each)
}
