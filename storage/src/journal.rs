//! The commit journal: what makes a group commit durable with one small,
//! sequential write instead of a flush of the store's B-tree pages.
//!
//! A deferred commit ([`crate::Store::commit_batch_deferred`],
//! [`crate::Store::commit_local_many_deferred`], …) is a redb transaction
//! that is not durable on its own. For a store opened from a path, the
//! commit also appends a record to this journal (in memory), and the
//! transaction writes the record's number into the `meta` table. A
//! [`crate::Store::flush`] then writes the waiting records to the journal
//! file and syncs it: one sequential append of a few kilobytes, where a redb
//! durable commit writes and syncs every page the commits dirtied (entity
//! rows and index leaves all over the file). Now and then (the journal
//! passed [`LIMIT`], or a deferred write that is not journaled is waiting)
//! the flush is a redb durable commit instead, a checkpoint, after which
//! the journal's records are written over from its start.
//!
//! The file grows in steps of zeros ahead of small flushes, so a group
//! commit's sync writes data only, without a file size to record (about
//! 40 % less per sync here). An older record a crash finds past the newer
//! ones has a number at or below the checkpoint's and is skipped; zeros end
//! the replay like a torn record.
//!
//! Where the file system takes them (Linux, not tmpfs), records are written
//! with direct, synchronous writes (`O_DIRECT | O_DSYNC`): one write of
//! whole 4 KiB blocks that returns once they are on the disk, with no page
//! cache to fill and write back (a group commit's flush here: p50 109–153
//! µs and 41–60 µs of CPU, against 123–188 µs and 52–77 µs written and
//! synced, in runs at different times). The block the last record ended in is written again with the
//! same bytes before the new ones, and zeros after them to the block's end;
//! a torn block write leaves each sector old or new, and the old bytes of
//! that block are the same in both, so no earlier record can be damaged
//! (a page written back by the kernel is as whole a block).
//!
//! After a crash, redb opens at its last durable commit. Every record with a
//! number above the one that commit holds is applied again, in order, each
//! exactly as it was first applied (same bundles, same mode, same source), so
//! the store ends where it was at the last flush. A record is written whole
//! and checked by a hash over its number and bytes; a torn or damaged tail
//! ends the replay there (nothing after it was acknowledged as durable,
//! since a flush returns only once the whole append is synced).
//!
//! The file starts with the store's id (kept in `meta`), so a journal left
//! beside a different store file is never applied to it: it is set aside.
//!
//! File: `MAGIC`, 16-byte store id, then records:
//! `payload length u32 LE | number u64 LE | blake3(number ‖ payload)[..16] | payload`,
//! payload: `groups u32 | per group: mode u8 (0 local, 1 remote, 2 remote as
//! received) | workspace [32] | source length u32 | source |` then, for
//! modes 0 and 1, `bundles u32 | per bundle: length u32 | bytes`, and for
//! mode 2 `payload length u32 | payload | picks u32 | per pick: u32 |
//! digest [32]` (a [`WireCopy`]: the batch as it crossed the wire, which
//! items of it were committed, and blake3 of their hashes).
//!
//! A received batch is kept as it arrived (mode 2) whenever the sync engine
//! hands its payload on: compressed and in columns it is about a fifteenth
//! of its bundles' bytes (a 1M-write sync journals about 5 MB instead of
//! 68 MB). Reading the record decodes it again with the wire's own decoder
//! and checks the digest, so the bundles applied again are the ones first
//! committed; a batch that fails that check is left out of the replay (the
//! peers send it again), never replaced by other bundles.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use troupe_protocol::sync::WireCopy;
use troupe_protocol::{Bundle, WorkspaceId};

/// Journal size past which the next flush is a checkpoint. It bounds the
/// replay after a crash (a few seconds at most) and the file's size. A
/// 1M-write sync to an empty peer journals its batches as they crossed the
/// wire (about 5 MB), so it makes no checkpoint; journaled as their own
/// bytes (68 MB, as before), it made two, 70–300 ms of its flushing.
pub(crate) const LIMIT: u64 = 32 << 20;

const MAGIC: &[u8; 8] = b"TRPJRNL1";
/// Group kind of a received batch kept as it arrived ([`WireCopy`]); 0 is
/// a local run and 1 received bundles kept as their own bytes.
const MODE_WIRE: u8 = 2;
const HEADER: u64 = 8 + 16;
const RECORD_HEAD: usize = 4 + 8 + 16;
/// No record is larger (a journal claiming more is damaged).
const MAX_RECORD: u32 = 1 << 30;
/// The journal file grows in steps of this many zero bytes ahead of the
/// records, for flushes smaller than [`PREALLOC_BELOW`] (a bulk sync's
/// flushes are large: writing zeros ahead of them would double their bytes).
const PREALLOC: u64 = 1 << 20;
const PREALLOC_BELOW: usize = 64 << 10;
/// Direct writes (see [`Journal::sync`]) cover whole blocks of this many
/// bytes, at offsets that are multiples of it: what every device and file
/// system that takes direct writes at all accepts.
const BLOCK: u64 = 4096;
/// Bytes of room for direct writes kept between flushes; a larger flush's
/// room is freed after it.
const KEEP_SCRATCH: usize = 1 << 20;

/// How a journaled group of bundles was committed (and is applied again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Signed here ([`crate::Store::commit_local_many_deferred`]).
    Local,
    /// Received, with the source recorded in quarantine entries.
    Remote(String),
}

/// One group of a record: bundles committed together for one workspace.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) mode: Mode,
    pub(crate) ws: WorkspaceId,
    pub(crate) bundles: Vec<Bundle>,
}

/// A record read back at open: its number and its groups.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) groups: Vec<Group>,
}

/// Path of the journal that belongs to the store file at `store`.
pub(crate) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    store.with_file_name(name)
}

/// The open journal of one store.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    store_id: [u8; 16],
    /// Opened on the first append (a store that only reads makes no file).
    file: Option<File>,
    /// Bytes of records (and header) in the file.
    len: u64,
    /// Bytes the file is known to hold, synced (records, then zeros or
    /// records an earlier checkpoint left behind): a flush that fits writes
    /// inside it, so its sync has no file size to record.
    allocated: u64,
    /// Records not yet written to the file.
    buf: Vec<u8>,
    /// The file again, opened for direct, synchronous writes (`O_DIRECT |
    /// O_DSYNC`): a flush is one write that returns once the records are
    /// on the disk, past the page cache. `None` where the file system
    /// refuses them (tmpfs) or off Linux: the flush writes and syncs.
    direct: Option<File>,
    /// The file's bytes from the block `len` falls in up to `len`: a
    /// direct write starts at that block and writes them again.
    tail: Vec<u8>,
    /// Where a direct write's blocks are put together (aligned in it).
    scratch: Vec<u8>,
    /// Number the next record gets.
    next: u64,
    /// A deferred write that is not journaled is waiting for a flush: the
    /// next flush must be a checkpoint.
    unjournaled: bool,
    /// A deferred commit was made since the last checkpoint (a clean close
    /// then needs one).
    since_checkpoint: bool,
    limit: u64,
}

impl Journal {
    /// Opens the journal beside a store whose id is `store_id` and whose
    /// last applied record is `applied`. Returns it with the records still to
    /// apply, in order. A journal of another store is renamed aside (`.foreign-<ms>`).
    pub(crate) fn open(
        path: PathBuf,
        store_id: [u8; 16],
        applied: u64,
    ) -> std::io::Result<(Journal, Vec<Record>)> {
        let mut pending = Vec::new();
        let mut last = applied;
        match File::open(&path) {
            Ok(f) => {
                let mut r = BufReader::new(f);
                let mut head = [0u8; HEADER as usize];
                let ours =
                    r.read_exact(&mut head).is_ok() && &head[..8] == MAGIC && head[8..] == store_id;
                if ours {
                    while let Some(rec) = read_record(&mut r)? {
                        if rec.seq <= applied {
                            continue;
                        }
                        if rec.seq != last + 1 {
                            // A gap: what follows was never acknowledged in order.
                            break;
                        }
                        last = rec.seq;
                        pending.push(rec);
                    }
                } else if std::fs::metadata(&path)?.len() > 0 {
                    let mut aside = path.clone().into_os_string();
                    aside.push(format!(".foreign-{}", crate::now_ms()));
                    std::fs::rename(&path, aside)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let j = Journal {
            path,
            store_id,
            file: None,
            len: 0,
            allocated: 0,
            buf: Vec::new(),
            direct: None,
            tail: Vec::new(),
            scratch: Vec::new(),
            next: last + 1,
            unjournaled: false,
            since_checkpoint: false,
            limit: LIMIT,
        };
        Ok((j, pending))
    }

    /// Number the next record will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next
    }

    /// Sets the size past which a flush is a checkpoint (tests).
    pub(crate) fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    /// Starts record `next_seq()` in the buffer; returns where it starts, for
    /// [`Journal::finish`] or [`Journal::cancel`].
    pub(crate) fn begin(&mut self, groups: u32) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0u8; RECORD_HEAD]);
        self.buf.extend_from_slice(&groups.to_le_bytes());
        at
    }

    /// Appends one group's head (then call [`Journal::bundle`] `count` times).
    pub(crate) fn group(&mut self, mode: &Mode, ws: &WorkspaceId, count: u32) {
        let (m, source) = match mode {
            Mode::Local => (0u8, ""),
            Mode::Remote(s) => (1u8, s.as_str()),
        };
        self.group_head(m, ws, source);
        self.buf.extend_from_slice(&count.to_le_bytes());
    }

    /// Appends a whole received group as the batch it arrived in: the
    /// payload, the picked items and their digest ([`WireCopy`]); reading
    /// the record decodes it back into the same bundles.
    pub(crate) fn wire_group(&mut self, source: &str, ws: &WorkspaceId, wire: &WireCopy) {
        self.group_head(MODE_WIRE, ws, source);
        self.sized(wire.payload());
        let picks = wire.picks();
        self.buf
            .extend_from_slice(&(picks.len() as u32).to_le_bytes());
        for p in picks {
            self.buf.extend_from_slice(&p.to_le_bytes());
        }
        self.buf.extend_from_slice(wire.digest());
    }

    /// Appends one bundle's bytes to the current group.
    pub(crate) fn bundle(&mut self, bytes: &[u8]) {
        self.sized(bytes);
    }

    /// What every group starts with: its kind, workspace and source.
    fn group_head(&mut self, kind: u8, ws: &WorkspaceId, source: &str) {
        self.buf.push(kind);
        self.buf.extend_from_slice(&ws.0);
        self.sized(source.as_bytes());
    }

    /// Appends `bytes` after their length (u32 LE).
    fn sized(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// Seals the record started at `at`: it now waits for the next flush.
    pub(crate) fn finish(&mut self, at: usize) {
        let payload_len = (self.buf.len() - at - RECORD_HEAD) as u32;
        let seq = self.next;
        let check = check(seq, &self.buf[at + RECORD_HEAD..]);
        let head = &mut self.buf[at..at + RECORD_HEAD];
        head[..4].copy_from_slice(&payload_len.to_le_bytes());
        head[4..12].copy_from_slice(&seq.to_le_bytes());
        head[12..].copy_from_slice(&check);
        self.next += 1;
        self.since_checkpoint = true;
    }

    /// Drops the record started at `at` (its transaction did not commit).
    pub(crate) fn cancel(&mut self, at: usize) {
        self.buf.truncate(at);
    }

    /// Notes a deferred write that the journal does not hold.
    pub(crate) fn unjournaled(&mut self) {
        self.unjournaled = true;
        self.since_checkpoint = true;
    }

    /// Whether a deferred commit was made since the last checkpoint.
    pub(crate) fn since_checkpoint(&self) -> bool {
        self.since_checkpoint
    }

    /// Whether the next flush must be a redb durable commit.
    pub(crate) fn wants_checkpoint(&self) -> bool {
        self.unjournaled || self.len + self.buf.len() as u64 > self.limit
    }

    /// Whether records wait to be written.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Creates the file ahead of the first flush (nothing when it is open):
    /// the header and [`PREALLOC`] bytes of zeros, synced, with its directory
    /// entry. A node's first flush then writes inside the file and syncs its
    /// data only; creating the file there cost 4–5 ms, a fifth of a
    /// 1,000-bundle catch-up. Records are still only ever appended by
    /// [`Journal::sync`]; zeros end a replay, so an empty prepared file
    /// replays nothing.
    pub(crate) fn prepare(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let mut f = self.create()?;
        write_zeros(&mut f, PREALLOC - HEADER)?;
        f.sync_data()?;
        // The new name must survive a crash along with what is later synced
        // into the file (on Unix a directory opens read-only and syncs).
        #[cfg(unix)]
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        self.allocated = PREALLOC;
        self.file = Some(f);
        Ok(())
    }

    /// Creates (or empties) the file and writes its header.
    fn create(&mut self) -> std::io::Result<File> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        let header = self.header();
        f.write_all(&header)?;
        self.len = HEADER;
        self.allocated = HEADER;
        self.tail = header;
        self.direct = open_direct(&self.path);
        Ok(f)
    }

    /// The file's first bytes.
    fn header(&self) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&self.store_id);
        h
    }

    /// Writes the waiting records and syncs the file: they are durable when
    /// this returns.
    ///
    /// Where the file takes direct writes, that is one synchronous write
    /// of the blocks the records fall in (the last block's earlier bytes
    /// written again, the rest of the last block zeros): measured here on
    /// 2 KiB records, p50 109–153 µs and 41–60 µs of CPU against 123–188
    /// µs and 52–77 µs for a write through the page cache and `fdatasync`.
    /// A file system that refuses it (`EINVAL`) gets the buffered write
    /// and sync from then on.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = match self.file.take() {
            Some(f) => f,
            None => self.create()?,
        };
        let file = self.file.insert(file);
        let end = self.len + self.buf.len() as u64;
        if let Some(direct) = &self.direct {
            match write_direct(
                file,
                direct,
                &mut self.scratch,
                &self.tail,
                &self.buf,
                self.len,
                self.allocated,
            ) {
                Ok((tail, allocated)) => {
                    self.tail = tail;
                    self.len = end;
                    self.allocated = allocated;
                    self.buf.clear();
                    return Ok(());
                }
                Err(e) if is_refused(&e) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        file.seek(SeekFrom::Start(self.len))?;
        // On failure, what may have reached the file lies past `len` and is
        // overwritten by the next attempt.
        file.write_all(&self.buf)?;
        let mut allocated = self.allocated.max(end);
        if let Some(room) = room_ahead(end, self.allocated, self.buf.len()) {
            write_zeros(file, room - end)?;
            allocated = room;
        }
        file.sync_data()?;
        self.len = end;
        self.allocated = allocated;
        self.buf.clear();
        Ok(())
    }

    /// After a redb durable commit holding every record: empties the
    /// journal. Its truncation need not be synced: records a crash brings
    /// back are at or below the number the store holds, and are skipped.
    pub(crate) fn checkpointed(&mut self) -> std::io::Result<()> {
        self.buf.clear();
        self.unjournaled = false;
        self.since_checkpoint = false;
        // The file keeps its size: new records overwrite the old ones from
        // the start, and an old record a crash finds after them carries a
        // number at or below the checkpoint's, so it is skipped.
        if self.file.is_some() {
            self.len = HEADER;
            self.tail = self.header();
        }
        Ok(())
    }

    /// At a clean close, after the last checkpoint: removes the file.
    pub(crate) fn remove(&mut self) {
        self.file = None;
        self.direct = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

fn check(seq: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Reads the next record; `None` at the end or at a torn or damaged record.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<Record>> {
    let mut head = [0u8; RECORD_HEAD];
    if !read_full(r, &mut head)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(head[4..12].try_into().unwrap_or_default());
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = Vec::new();
    if r.take(u64::from(len)).read_to_end(&mut payload)? != len as usize {
        return Ok(None);
    }
    if check(seq, &payload) != head[12..] {
        return Ok(None);
    }
    Ok(decode_groups(&payload).map(|groups| Record { seq, groups }))
}

/// Where the file's room ahead in zeros should end after a flush of
/// `records` bytes ending at `end`, if it needs more than `allocated`.
/// Small flushes (group commits, live edits, acknowledgements) get room
/// ahead: the next ones sync data only, without a size change (measured
/// here: 207 → 127 µs a sync). Zeros end a replay like a torn record does.
fn room_ahead(end: u64, allocated: u64, records: usize) -> Option<u64> {
    (end > allocated && records < PREALLOC_BELOW).then(|| end.next_multiple_of(PREALLOC))
}

/// One direct write of `records` after the `len` bytes the file holds,
/// whose last partial block is `tail`; returns the new tail and the bytes
/// the file now holds for sure. A small write past those first gets room
/// ahead in zeros through `file`, synced, as the buffered path makes it,
/// so the direct write changes no size.
fn write_direct(
    file: &mut File,
    direct: &File,
    scratch: &mut Vec<u8>,
    tail: &[u8],
    records: &[u8],
    len: u64,
    mut allocated: u64,
) -> std::io::Result<(Vec<u8>, u64)> {
    let end = len + records.len() as u64;
    if let Some(room) = room_ahead(end, allocated, records.len()) {
        file.seek(SeekFrom::Start(allocated))?;
        write_zeros(file, room - allocated)?;
        file.sync_data()?;
        allocated = room;
    }
    let start = len - tail.len() as u64;
    let span = (end - start).next_multiple_of(BLOCK) as usize;
    scratch.clear();
    scratch.resize(span + BLOCK as usize, 0);
    let at = scratch.as_ptr().align_offset(BLOCK as usize);
    let blocks = &mut scratch[at..at + span];
    blocks[..tail.len()].copy_from_slice(tail);
    blocks[tail.len()..tail.len() + records.len()].copy_from_slice(records);
    write_all_at(direct, blocks, start)?;
    let used = (end - start) as usize;
    let kept = blocks[used - used % BLOCK as usize..used].to_vec();
    if scratch.capacity() > KEEP_SCRATCH {
        // A bulk flush's room is not kept for the small ones after it.
        *scratch = Vec::new();
    }
    Ok((kept, allocated.max(start + span as u64)))
}

#[cfg(unix)]
fn write_all_at(f: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, bytes, at)
}

#[cfg(not(unix))]
fn write_all_at(_: &File, _: &[u8], _: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// The file opened for direct, synchronous writes, where that is possible.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> Option<File> {
    None
}

/// Whether a direct write failed because direct writes are refused here
/// (not because the disk failed).
fn is_refused(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if e.raw_os_error() == Some(libc::EINVAL) {
        return true;
    }
    e.kind() == std::io::ErrorKind::Unsupported
}

/// Writes `n` zero bytes at the file's position.
fn write_zeros(file: &mut File, n: u64) -> std::io::Result<()> {
    let zeros = [0u8; 64 << 10];
    let mut left = n;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..k])?;
        left -= k as u64;
    }
    Ok(())
}

/// `read_exact` that says `false` at a clean or torn end instead of failing.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn decode_groups(p: &[u8]) -> Option<Vec<Group>> {
    let mut c = Cursor(p);
    let n = c.u32()?;
    let mut groups = Vec::new();
    for _ in 0..n {
        let kind = c.take(1)?[0];
        if kind > MODE_WIRE {
            return None;
        }
        let ws = WorkspaceId(c.take(32)?.try_into().ok()?);
        let slen = c.u32()? as usize;
        let source = String::from_utf8(c.take(slen)?.to_vec()).ok()?;
        if kind == MODE_WIRE {
            let len = c.u32()? as usize;
            let payload = c.take(len)?.to_vec();
            let count = c.u32()? as usize;
            let picks = c
                .take(count.checked_mul(4)?)?
                .chunks_exact(4)
                .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
                .collect();
            let digest: [u8; 32] = c.take(32)?.try_into().ok()?;
            // A batch that does not give back the bundles first committed
            // (a decoder changed since) is left out, not the record: the
            // peers still hold it and send it again, while a later local
            // record here may be the only copy of an edit.
            let bundles = WireCopy::from_parts(payload, picks, digest)
                .bundles()
                .unwrap_or_default();
            groups.push(Group {
                mode: Mode::Remote(source),
                ws,
                bundles,
            });
            continue;
        }
        let mode = if kind == 0 {
            Mode::Local
        } else {
            Mode::Remote(source)
        };
        let count = c.u32()?;
        let mut bundles = Vec::new();
        for _ in 0..count {
            let len = c.u32()? as usize;
            bundles.push(Bundle::decode(c.take(len)?.to_vec()).ok()?);
        }
        groups.push(Group { mode, ws, bundles });
    }
    c.0.is_empty().then_some(groups)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::testing::{chain, test_workspace};

    fn bundles(n: u64) -> Vec<Bundle> {
        chain(1, n).1
    }

    /// A new journal for store `id` in a temporary directory, with `n`
    /// bundles to write into it (the directory lives as long as the guard).
    fn fresh(id: [u8; 16], n: u64) -> (tempfile::TempDir, PathBuf, Vec<Bundle>, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.journal");
        let (j, none) = Journal::open(path.clone(), id, 0).unwrap();
        assert!(none.is_empty());
        (dir, path, bundles(n), j)
    }

    fn append(j: &mut Journal, mode: Mode, bs: &[Bundle]) {
        let ws = test_workspace().workspace_id();
        let at = j.begin(1);
        j.group(&mode, &ws, bs.len() as u32);
        for b in bs {
            j.bundle(b.bytes());
        }
        j.finish(at);
    }

    #[test]
    fn synced_records_come_back_in_order_and_a_torn_tail_is_dropped() {
        let id = [7u8; 16];
        let (_dir, path, bs, mut j) = fresh(id, 5);
        append(&mut j, Mode::Local, &bs[..2]);
        append(&mut j, Mode::Remote("peer x".into()), &bs[2..4]);
        j.sync().unwrap();
        // A third record cut short, as a crash in the middle of a write leaves it.
        append(&mut j, Mode::Local, &bs[4..]);
        let torn = j.buf.len() / 2;
        j.buf.truncate(torn);
        j.sync().unwrap();
        drop(j);

        let (j, back) = Journal::open(path.clone(), id, 0).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].seq, 1);
        assert_eq!(back[0].groups[0].mode, Mode::Local);
        assert_eq!(back[0].groups[0].bundles, bs[..2].to_vec());
        assert_eq!(back[1].groups[0].mode, Mode::Remote("peer x".into()));
        assert_eq!(back[1].groups[0].bundles, bs[2..4].to_vec());
        assert_eq!(j.next_seq(), 3);
        // Records the store already holds are skipped.
        let (_, rest) = Journal::open(path.clone(), id, 1).unwrap();
        assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    }

    /// Each record's first group's bundles.
    fn first_groups(records: &[Record]) -> Vec<Vec<Bundle>> {
        records
            .iter()
            .map(|r| r.groups[0].bundles.clone())
            .collect()
    }

    /// Small and large flushes, across blocks and past the room made
    /// ahead, then a checkpoint and more: every record comes back, in
    /// order, whether the flushes were direct writes or buffered ones. On
    /// a disk that takes direct writes they are used throughout (none
    /// fell back).
    #[test]
    fn flushes_written_directly_or_through_the_page_cache_come_back_alike() {
        for direct in [true, false] {
            let id = [5u8; 16];
            let (_dir, path, bs, mut j) = fresh(id, 420);
            j.prepare().unwrap();
            let takes_direct = j.direct.is_some();
            if !direct {
                j.direct = None;
            }
            let mut flushed: Vec<Vec<Bundle>> = Vec::new();
            let mut i = 0;
            // 60 small flushes of 1–3 bundles (about 0.6–2 KiB each).
            for k in 0..60 {
                let n = 1 + k % 3;
                append(&mut j, Mode::Local, &bs[i..i + n]);
                flushed.push(bs[i..i + n].to_vec());
                i += n;
                j.sync().unwrap();
            }
            // One large flush (over 64 KiB: no room made ahead for it).
            append(&mut j, Mode::Remote("peer".into()), &bs[i..i + 250]);
            flushed.push(bs[i..i + 250].to_vec());
            i += 250;
            assert!(j.buf.len() > PREALLOC_BELOW);
            j.sync().unwrap();
            let (_, back) = Journal::open(path.clone(), id, 0).unwrap();
            assert_eq!(first_groups(&back), flushed, "direct {direct}");
            // After a checkpoint, new records overwrite the old from the start.
            let last = back.len() as u64;
            j.checkpointed().unwrap();
            let mut after = Vec::new();
            while i < bs.len() {
                let n = (bs.len() - i).min(5);
                append(&mut j, Mode::Local, &bs[i..i + n]);
                after.push(bs[i..i + n].to_vec());
                i += n;
                j.sync().unwrap();
            }
            assert_eq!(
                j.direct.is_some(),
                direct && takes_direct,
                "no direct write fell back"
            );
            drop(j);
            let (_, back) = Journal::open(path.clone(), id, last).unwrap();
            assert_eq!(first_groups(&back), after, "direct {direct}");
        }
    }

    #[test]
    fn records_written_over_a_checkpointed_journal_come_back_alone() {
        let id = [3u8; 16];
        let (_dir, path, bs, mut j) = fresh(id, 6);
        for b in &bs[..4] {
            append(&mut j, Mode::Local, std::slice::from_ref(b));
            j.sync().unwrap();
        }
        // Small flushes write zeros ahead: the file does not grow per flush.
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, PREALLOC);
        // The store made records 1–4 durable; two new ones overwrite them.
        j.checkpointed().unwrap();
        append(&mut j, Mode::Remote("p".into()), &bs[4..5]);
        append(&mut j, Mode::Local, &bs[5..]);
        j.sync().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        drop(j);
        // Records 3 and 4 still follow in the file; their numbers are at or
        // below the checkpoint's, so only the new two are applied.
        let (j, back) = Journal::open(path.clone(), id, 4).unwrap();
        assert_eq!(back.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(back[0].groups[0].bundles, bs[4..5].to_vec());
        assert_eq!(back[1].groups[0].bundles, bs[5..].to_vec());
        assert_eq!(j.next_seq(), 7);
    }

    #[test]
    fn a_prepared_journal_replays_nothing_until_records_are_synced_into_it() {
        let id = [5u8; 16];
        let (_dir, path, bs, mut j) = fresh(id, 2);
        j.prepare().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOC);
        // A crash before any flush: the prepared file holds no record.
        let (_, none) = Journal::open(path.clone(), id, 0).unwrap();
        assert!(none.is_empty());
        // Flushes write inside the prepared zeros.
        append(&mut j, Mode::Local, &bs[..1]);
        j.sync().unwrap();
        append(&mut j, Mode::Remote("p".into()), &bs[1..]);
        j.sync().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOC);
        j.prepare().unwrap();
        drop(j);
        let (_, back) = Journal::open(path.clone(), id, 0).unwrap();
        assert_eq!(back.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(back[0].groups[0].bundles, bs[..1].to_vec());
        assert_eq!(back[1].groups[0].bundles, bs[1..].to_vec());
    }

    #[test]
    fn a_damaged_record_ends_the_replay_and_a_foreign_journal_is_set_aside() {
        let (dir, path, bs, mut j) = fresh([1; 16], 3);
        for b in &bs {
            append(&mut j, Mode::Local, std::slice::from_ref(b));
        }
        j.sync().unwrap();
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER as usize + RECORD_HEAD + 4 + 1 + 32 + 4 + 4 + 4 + bs[0].bytes().len();
        bytes[second + RECORD_HEAD + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = Journal::open(path.clone(), [1; 16], 0).unwrap();
        assert_eq!(back.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);

        let (j, back) = Journal::open(path.clone(), [2; 16], 0).unwrap();
        assert!(back.is_empty());
        assert_eq!(j.next_seq(), 1);
        assert!(!path.exists(), "the other store's journal was moved aside");
        let aside = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(aside, 1);
    }
}
