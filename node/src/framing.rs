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

/// Initial buffer for a payload; it grows as bytes arrive.
const READ_CHUNK: usize = 64 * 1024;

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
    // Grow with what actually arrives: a peer that announces 4 MiB and sends
    // nothing holds one chunk of memory, not the whole announced size.
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK));
    let got = (&mut *r).take(len as u64).read_to_end(&mut payload).await?;
    if got < len {
        return Err(FrameError::Truncated { got, expected: len });
    }
    Ok(Some(payload))
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
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    // The cap is far below u32::MAX, so the cast cannot truncate.
    let prefix = (payload.len() as u32).to_be_bytes();
    w.write_all(&prefix).await?;
    w.write_all(payload).await?;
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
