//! The encrypted byte stream after the handshake: AES-256-GCM records,
//! sealed and opened in place.
//!
//! A record on the wire is `[u32 big-endian length][ciphertext][16-byte
//! tag]`, where the length counts the ciphertext and the tag and is
//! authenticated as the record's associated data. Each direction has its
//! own key and a nonce counting records from zero (four zero bytes, then
//! the count as a big-endian u64), so a record cut out, repeated or moved
//! fails its tag.
//!
//! Writes gather into one buffer that already has room for the length in
//! front; a flush, or [`MAX_PLAINTEXT`] bytes, seals it there and sends it.
//! Reads fill one buffer straight from the socket (several records a call
//! when they are there), open each record where it lies, and copy its
//! plaintext out: one copy each way besides the kernel's.
//!
//! Everything read is the peer's: a length above [`MAX_PLAINTEXT`] plus
//! the tag, a tag that does not verify, or a connection closed inside a
//! record is an error, and the channel stays failed after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Most plaintext bytes in one record. Larger records cost fewer tags,
/// nonces and socket calls; this one holds four 64 KiB yamux frames.
pub const MAX_PLAINTEXT: usize = 256 * 1024;

/// The length in front of each record.
const HEADER: usize = 4;

/// The authentication tag after each record.
const TAG: usize = 16;

/// Bytes the read buffer holds: two whole records, so a read can take one
/// record's rest and the next one's start in one call.
const READ_BUFFER: usize = 2 * (HEADER + MAX_PLAINTEXT + TAG);

/// The byte stream over an authenticated connection.
pub struct Channel<C> {
    io: C,
    send: Direction,
    receive: Direction,
    /// `[length][plaintext being gathered]`, or a sealed record being sent.
    out: Vec<u8>,
    /// How much of a sealed `out` the socket has taken; `None` while
    /// `out` is still gathering plaintext.
    sending: Option<usize>,
    /// Bytes read from the socket: `inb[start..end]` are records not yet
    /// opened.
    inb: Box<[u8]>,
    start: usize,
    end: usize,
    /// Opened plaintext not yet handed on: `inb[plain..plain_end]`, in
    /// front of `start`.
    plain: usize,
    plain_end: usize,
    /// A read error that ended the channel, repeated to every later read.
    failed: Option<io::ErrorKind>,
}

impl<C> std::fmt::Debug for Channel<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("secure::Channel")
            .field("sent_records", &self.send.count)
            .field("received_records", &self.receive.count)
            .finish_non_exhaustive()
    }
}

/// One direction's key and record count.
struct Direction {
    key: LessSafeKey,
    count: u64,
}

impl Direction {
    fn new(key: &[u8; 32]) -> Direction {
        // A 32-byte key is always a valid AES-256 key.
        let key = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!());
        Direction {
            key: LessSafeKey::new(key),
            count: 0,
        }
    }

    /// The next record's nonce; the count never repeats.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&self.count.to_be_bytes());
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| io::Error::other("record counter exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

impl<C> Channel<C> {
    /// The channel over `io`, with the keys a handshake agreed.
    pub(crate) fn new(io: C, send_key: &[u8; 32], receive_key: &[u8; 32]) -> Channel<C> {
        let mut out = Vec::with_capacity(HEADER + MAX_PLAINTEXT + TAG);
        out.resize(HEADER, 0);
        Channel {
            io,
            send: Direction::new(send_key),
            receive: Direction::new(receive_key),
            out,
            sending: None,
            inb: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            plain: 0,
            plain_end: 0,
            failed: None,
        }
    }

    /// The socket beneath (tests read what was sent).
    #[cfg(any(fuzzing, test))]
    pub(crate) fn into_inner(self) -> C {
        self.io
    }

    /// The socket beneath, borrowed (tests).
    #[cfg(any(fuzzing, test))]
    pub(crate) fn inner(&self) -> &C {
        &self.io
    }

    /// Seals the gathered plaintext in place, if there is any.
    fn seal(&mut self) -> io::Result<()> {
        if self.sending.is_some() || self.out.len() == HEADER {
            return Ok(());
        }
        let len = u32::try_from(self.out.len() - HEADER + TAG)
            .map_err(|_| io::Error::other("record too long"))?;
        let header = len.to_be_bytes();
        self.out[..HEADER].copy_from_slice(&header);
        let nonce = self.send.next_nonce()?;
        let tag = self
            .send
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.out[HEADER..])
            .map_err(|_| io::Error::other("cannot seal a record"))?;
        self.out.extend_from_slice(tag.as_ref());
        self.sending = Some(0);
        Ok(())
    }

    /// The bytes the record at `inb[start..]` takes on the wire, once its
    /// length has arrived.
    fn record_len(&self) -> io::Result<Option<usize>> {
        let Some(header) = self.inb[self.start..self.end].first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if !(TAG..=MAX_PLAINTEXT + TAG).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record's length is out of bounds",
            ));
        }
        Ok(Some(HEADER + len))
    }

    /// Opens the record at `inb[start..]` in place if all of it has
    /// arrived; its plaintext is then `inb[plain..plain_end]`.
    fn open(&mut self) -> io::Result<bool> {
        let Some(len) = self.record_len()? else {
            return Ok(false);
        };
        if self.end - self.start < len {
            return Ok(false);
        }
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&self.inb[self.start..self.start + HEADER]);
        let body = self.start + HEADER;
        let record_end = self.start + len;
        let nonce = self.receive.next_nonce()?;
        let plain = self
            .receive
            .key
            .open_in_place(nonce, Aad::from(header), &mut self.inb[body..record_end])
            .map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a record failed authentication")
            })?
            .len();
        self.plain = body;
        self.plain_end = body + plain;
        self.start = record_end;
        Ok(true)
    }

    /// Moves the unread bytes to the front when the record they begin would
    /// not fit behind them.
    fn make_room(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            return Ok(());
        }
        let need = self.record_len()?.unwrap_or(HEADER);
        if self.start + need > self.inb.len() {
            self.inb.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        Ok(())
    }
}

impl<C: AsyncWrite + Unpin> Channel<C> {
    /// Sends the sealed record, if one is waiting.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(sent) = self.sending {
            if sent == self.out.len() {
                self.out.truncate(HEADER);
                self.sending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sending = Some(sent + n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Channel<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        let room = HEADER + MAX_PLAINTEXT - this.out.len();
        let n = room.min(buf.len());
        this.out.extend_from_slice(&buf[..n]);
        if this.out.len() == HEADER + MAX_PLAINTEXT {
            this.seal()?;
            // Start sending now; what the socket does not take yet goes
            // with the next write or flush.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        this.seal()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl<C: AsyncRead + Unpin> Channel<C> {
    fn read_inner(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if self.plain < self.plain_end {
                let n = buf.len().min(self.plain_end - self.plain);
                buf[..n].copy_from_slice(&self.inb[self.plain..self.plain + n]);
                self.plain += n;
                return Poll::Ready(Ok(n));
            }
            if self.open()? {
                // Its plaintext (none, for an empty record) is served above.
                continue;
            }
            self.make_room()?;
            let end = self.end;
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.inb[end..]))?;
            if n == 0 {
                if self.start == self.end {
                    return Poll::Ready(Ok(0));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed inside a record",
                )));
            }
            self.end += n;
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Channel<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(kind) = this.failed {
            return Poll::Ready(Err(io::Error::new(kind, "the channel failed earlier")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let got = ready!(this.read_inner(cx, buf));
        if let Err(e) = &got {
            this.failed = Some(e.kind());
        }
        Poll::Ready(got)
    }
}
