//! Decoding a frame before it reaches the engine, on whatever thread the
//! driver reads it on.
//!
//! The engine runs on the store's one thread, so everything it does there
//! waits for that thread. Turning a frame into a message, and a batch into
//! its bundles (decompress, restore elided `prev_hash`es, parse, hash), needs
//! nothing of the engine's state, so a driver can do it where the frame
//! arrives ([`PreparedFrame::prepare`]) and hand the result in with
//! [`crate::sync::Input::Prepared`]. [`crate::sync::Input::Frame`] does the
//! same inside the engine: both paths decode with the same code, in the same
//! order, and the engine judges the result exactly as before (nothing here
//! is trusted: verification, blame and refusals all stay in the engine).

use crate::bundle::Bundle;
use crate::error::VerifyError;
use crate::ids::BundleHash;

use super::message::{BatchCodec, Message, restore_prev_hash};

/// A batch's items once decoded: each a bundle, or why it is not one and
/// its bytes (for quarantine). `Err` when the batch itself does not decode.
pub(crate) type BatchItems = Result<Vec<Result<Bundle, (VerifyError, Vec<u8>)>>, String>;

/// One received frame, decoded; see the module doc.
#[derive(Debug, Clone)]
pub struct PreparedFrame {
    pub(crate) msg: Result<Message, String>,
    /// For a [`Message::Batch`]: its items, and its payload as it arrived
    /// (moved out of the message), which a journal may keep instead of the
    /// items' bytes (see [`crate::sync::WireCopy`]).
    pub(crate) batch: Option<(BatchItems, Vec<u8>)>,
}

impl PreparedFrame {
    /// Decodes `bytes` as the engine would. `codec` only carries reusable
    /// decompression state; any codec decodes any batch.
    pub fn prepare(bytes: &[u8], codec: &mut BatchCodec) -> PreparedFrame {
        let mut msg = Message::from_frame(bytes).map_err(|e| e.to_string());
        let batch = match &mut msg {
            Ok(Message::Batch { data, .. }) => {
                let items = batch_items(codec, data);
                Some((items, std::mem::take(data)))
            }
            _ => None,
        };
        PreparedFrame { msg, batch }
    }
}

/// A batch payload's bundles, in order.
pub(crate) fn batch_items(codec: &mut BatchCodec, data: &[u8]) -> BatchItems {
    let raw = codec.decode(data).map_err(|e| e.to_string())?;
    let mut items = Vec::with_capacity(raw.len());
    // Hash of the previous item, which an elided `prev_hash` names.
    let mut last: Option<BundleHash> = None;
    for (elided, bytes) in raw {
        let bytes = match (elided, &last) {
            (true, Some(prev)) => restore_prev_hash(&bytes, prev).unwrap_or(bytes),
            _ => bytes,
        };
        let item = Bundle::decode_or_return(bytes);
        last = item.as_ref().ok().map(Bundle::hash);
        items.push(item);
    }
    Ok(items)
}
