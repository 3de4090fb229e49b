//! Length-delimited frames on libp2p streams.
//!
//! # Goals
//! - One frame = one encoded sync message, so the engine never sees partial bytes.
//! - Every length read from a peer is checked against [`MAX_FRAME_LEN`] *before*
//!   anything is allocated, so a hostile peer cannot make us reserve gigabytes.
//!
//! # Non-goals
//! - Encoding the payload: frames carry opaque bytes (postcard from the protocol crate).
//! - Compression or encryption: noise already encrypts the connection.
//!
//! # Wire format
//! ```text
//! +----------------------+------------------+
//! | len: u32 big-endian  | len payload bytes |
//! +----------------------+------------------+
//! ```
//! A zero-length frame is valid (an empty message). A stream that ends cleanly
//! between frames reads as `Ok(None)`; one that ends inside a frame is an error.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload a frame may carry: the protocol's own cap (4 MiB), so
/// the transport and the engine can never disagree about what fits. Sync
/// batches are capped at 1 MiB of bundles, so this leaves headroom without
/// letting a peer make us allocate without bound.
pub const MAX_FRAME_LEN: usize = troupe_protocol::sync::limits::MAX_FRAME;

// The length prefix is a u32; the cap must fit in it.
const _: () = assert!(MAX_FRAME_LEN <= u32::MAX as usize);

/// Bytes in the length prefix.
const PREFIX_LEN: usize = 4;

/// Most of a payload read before any of it has arrived: a blob chunk
/// frame (1 MiB and its header) is read into one buffer, without growing
/// it through copies, and a peer that announces the 4 MiB maximum and
/// then stalls holds at most this much.
const FIRST_READ: usize = troupe_protocol::sync::limits::BLOB_CHUNK + 4096;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced (or we tried to send) a frame above [`MAX_FRAME_LEN`].
    /// The stream is out of step afterwards: close it and log the peer.
    #[error("frame of {len} bytes exceeds the {max} byte cap")]
    TooLarge {
        /// The offending length.
        len: u64,
        /// The cap in force.
        max: usize,
    },
    /// The stream ended inside a frame (after `got` of `expected` bytes):
    /// the peer went away mid-message. Nothing from the frame is used.
    #[error("stream ended inside a frame after {got} of {expected} bytes")]
    Truncated {
        /// Bytes of the prefix or payload that arrived.
        got: usize,
        /// Bytes that were expected.
        expected: usize,
    },
    /// The underlying stream failed; the connection is probably gone.
    #[error("stream i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between frames.
///
/// # Errors
/// [`FrameError::TooLarge`] before allocating if the prefix exceeds the cap,
/// [`FrameError::Truncated`] if the stream ends mid-frame, [`FrameError::Io`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut reader = FrameReader::default();
    Ok(reader.next(r).await?.map(<[u8]>::to_vec))
}

/// Reads a stream's frames into one buffer it keeps between them.
///
/// A fresh zeroed buffer per frame cost a 1 MiB allocation, its zero fill
/// and its page faults for every blob chunk received, on the thread that
/// also decrypts and decodes. The buffer keeps what it was filled with, so
/// a frame no longer than an earlier one is read without clearing it first.
/// After a frame longer than one blob chunk (`FIRST_READ`) it shrinks
/// back, so a peer that sends one 4 MiB frame does not hold that much for
/// the stream's life.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Reads the next frame: its payload, valid until the next call.
    /// `Ok(None)` means the stream ended cleanly between frames.
    ///
    /// # Errors
    /// As [`read_frame`].
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<&[u8]>, FrameError> {
        if self.buf.len() > FIRST_READ {
            self.buf.truncate(FIRST_READ);
            self.buf.shrink_to(FIRST_READ);
        }
        let mut prefix = [0u8; PREFIX_LEN];
        let got = read_full(r, &mut prefix).await?;
        if got == 0 {
            return Ok(None);
        }
        if got < PREFIX_LEN {
            return Err(FrameError::Truncated {
                got,
                expected: PREFIX_LEN,
            });
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: MAX_FRAME_LEN,
            });
        }
        // The rest of a longer frame is read once the first part has arrived.
        let first = len.min(FIRST_READ);
        if self.buf.len() < first {
            self.buf.resize(first, 0);
        }
        let mut got = read_full(r, &mut self.buf[..first]).await?;
        if got == first && len > first {
            self.buf.resize(len, 0);
            got += read_full(r, &mut self.buf[got..len]).await?;
        }
        if got < len {
            return Err(FrameError::Truncated { got, expected: len });
        }
        Ok(Some(&self.buf[..len]))
    }
}

/// Writes one frame and flushes it, so a message is never left in a buffer
/// while the peer waits for it.
///
/// # Errors
/// [`FrameError::TooLarge`] (nothing is written) if `payload` exceeds the cap;
/// [`FrameError::Io`].
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> Result<(), FrameError> {
    write_frames(w, std::slice::from_ref(&payload), &mut Vec::new()).await
}

/// Payloads up to this size are copied next to their length prefix and
/// written together; a larger one is written from where it lies.
const GATHER: usize = 64 << 10;

/// Writes `payloads` as consecutive frames and flushes once. The length
/// prefixes and the small payloads are gathered into `scratch` and written
/// together, so a run of small messages (blob wants, chunks of small
/// assets) costs one transport write and one flush instead of two writes
/// and a flush each: the stream multiplexer frames, and the encryption
/// seals, every write and flush on its own.
///
/// # Errors
/// [`FrameError::TooLarge`] (nothing is written) if any payload exceeds the
/// cap; [`FrameError::Io`].
pub async fn write_frames<W: AsyncWrite + Unpin, P: AsRef<[u8]>>(
    w: &mut W,
    payloads: &[P],
    scratch: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if let Some(p) = payloads.iter().find(|p| p.as_ref().len() > MAX_FRAME_LEN) {
        return Err(FrameError::TooLarge {
            len: p.as_ref().len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    scratch.clear();
    for p in payloads {
        let p = p.as_ref();
        // The cap is far below u32::MAX, so the cast cannot truncate.
        scratch.extend_from_slice(&(p.len() as u32).to_be_bytes());
        if p.len() <= GATHER {
            scratch.extend_from_slice(p);
        } else {
            w.write_all(scratch).await?;
            scratch.clear();
            w.write_all(p).await?;
        }
    }
    if !scratch.is_empty() {
        w.write_all(scratch).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Fills `buf` unless the stream ends first; returns how many bytes arrived.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    fn encoded(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        block_on(async {
            for p in payloads {
                write_frame(&mut out, p).await.unwrap();
            }
        });
        out.into_inner()
    }

    #[test]
    fn frames_round_trip_in_order_and_end_cleanly() {
        let bytes = encoded(&[b"hello", b"", &[7u8; 1000]]);
        let mut r = Cursor::new(bytes);
        block_on(async {
            assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), b"hello");
            assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), b"");
            assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), vec![7u8; 1000]);
            assert!(read_frame(&mut r).await.unwrap().is_none());
        });
    }

    #[test]
    fn a_reader_kept_between_frames_reads_each_as_it_was_sent() {
        // Longer, shorter, empty, past the first read, then short again: no
        // frame shows bytes left over from an earlier one.
        let big = vec![5u8; FIRST_READ + 10];
        let payloads: Vec<&[u8]> = vec![&[1u8; 300], b"ab", b"", &big, b"xyz"];
        let mut r = Cursor::new(encoded(&payloads));
        let mut reader = FrameReader::default();
        block_on(async {
            for p in &payloads {
                assert_eq!(reader.next(&mut r).await.unwrap().unwrap(), *p);
            }
            assert!(reader.next(&mut r).await.unwrap().is_none());
        });
        // The 4 MiB-class buffer was given back after the long frame.
        assert!(reader.buf.capacity() <= FIRST_READ);
    }

    #[test]
    fn prefix_is_big_endian_u32() {
        assert_eq!(encoded(&[b"ab"]), vec![0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn oversize_prefix_is_refused_with_its_size_before_allocating() {
        let announced = (MAX_FRAME_LEN as u32) + 1;
        let mut r = Cursor::new(announced.to_be_bytes().to_vec());
        let err = block_on(read_frame(&mut r)).unwrap_err();
        match err {
            FrameError::TooLarge { len, max } => {
                assert_eq!(len, u64::from(announced));
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let mut r = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(matches!(
            block_on(read_frame(&mut r)),
            Err(FrameError::TooLarge { len, .. }) if len == u64::from(u32::MAX)
        ));
    }

    #[test]
    fn a_frame_at_the_cap_is_accepted() {
        let payload = vec![1u8; MAX_FRAME_LEN];
        let mut r = Cursor::new(encoded(&[&payload]));
        assert_eq!(
            block_on(read_frame(&mut r)).unwrap().unwrap().len(),
            MAX_FRAME_LEN
        );
    }

    #[test]
    fn oversize_write_is_refused_and_writes_nothing() {
        let payload = vec![0u8; MAX_FRAME_LEN + 1];
        let mut out = Cursor::new(Vec::new());
        let err = block_on(write_frame(&mut out, &payload)).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, .. } if len == (MAX_FRAME_LEN + 1) as u64)
        );
        assert!(out.into_inner().is_empty());
    }

    #[test]
    fn gathered_frames_are_the_same_bytes_as_frames_written_one_by_one() {
        // Small ones gathered, a large one written from where it lies, in order.
        let big = vec![9u8; GATHER + 1];
        let payloads: Vec<&[u8]> = vec![b"a", b"", &big, b"after", &[3u8; 100]];
        let mut out = Cursor::new(Vec::new());
        let mut scratch = Vec::new();
        block_on(write_frames(&mut out, &payloads, &mut scratch)).unwrap();
        assert_eq!(out.into_inner(), encoded(&payloads));
    }

    #[test]
    fn a_run_with_one_oversize_frame_writes_none_of_it() {
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        let payloads: Vec<&[u8]> = vec![b"fine", &big];
        let mut out = Cursor::new(Vec::new());
        let err = block_on(write_frames(&mut out, &payloads, &mut Vec::new())).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(out.into_inner().is_empty());
    }

    #[test]
    fn truncated_prefix_and_payload_are_errors_not_clean_ends() {
        let mut r = Cursor::new(vec![0, 0]);
        assert!(matches!(
            block_on(read_frame(&mut r)),
            Err(FrameError::Truncated {
                got: 2,
                expected: 4
            })
        ));
        let mut bytes = encoded(&[b"hello"]);
        bytes.truncate(bytes.len() - 2);
        let mut r = Cursor::new(bytes);
        assert!(matches!(
            block_on(read_frame(&mut r)),
            Err(FrameError::Truncated {
                got: 3,
                expected: 5
            })
        ));
    }
}
