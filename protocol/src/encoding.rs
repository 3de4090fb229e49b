//! Canonical encoding: postcard, with a hard size cap checked before parsing
//! and trailing bytes refused.
//!
//! postcard is compact (varints, no field names) and deterministic for a given
//! value, which is what the bundle hash needs. Decoding allocates at most in
//! proportion to the input, and the input is capped before any parsing starts.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::DecodeError;

/// `#[serde(with = "crate::encoding::byte_buf")]` for large `Vec<u8>`
/// fields: the same postcard encoding as a plain `Vec<u8>` (varint length,
/// then the bytes), copied in one piece instead of one element at a time.
pub(crate) mod byte_buf {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Bounded by the input: each element consumes at least one byte.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }
}

/// Encodes a value canonically.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing into a Vec fails only for types postcard cannot represent
    // (maps with non-serde keys etc.), which none of ours are.
    postcard::to_stdvec(value).expect("protocol types always encode")
}

/// Encodes a value canonically after the bytes already in `out`, with one
/// copy of each byte string (postcard's own vector output grows as it goes).
pub fn encode_into<T: Serialize>(value: &T, out: Vec<u8>) -> Vec<u8> {
    postcard::serialize_with_flavor(value, Appending(out)).expect("protocol types always encode")
}

/// postcard output appended to a vector the caller sized.
struct Appending(Vec<u8>);

impl postcard::ser_flavors::Flavor for Appending {
    type Output = Vec<u8>;

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }

    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes exactly one value from `bytes`, refusing inputs above `max` bytes and
/// any trailing bytes.
///
/// # Errors
/// [`DecodeError::TooLarge`] before parsing; [`DecodeError::Malformed`] on a bad encoding.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// Fuzzing entry points: each decodes arbitrary bytes, and where that succeeds,
/// re-encodes and checks the round trip. Fuzz targets are one line calling these.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    use crate::bundle::Bundle;

    /// Arbitrary bytes → bundle decode and verification never panic; a bundle that
    /// decodes re-encodes to bytes that decode to the same bundle.
    pub fn decode_bundle(data: &[u8]) {
        if let Ok(b) = Bundle::decode(data.to_vec()) {
            let again = Bundle::decode(b.bytes().to_vec()).expect("re-decodes");
            assert_eq!(again.body(), b.body());
            assert_eq!(again.hash(), b.hash());
            let reencoded = super::encode(b.body());
            let body2: crate::bundle::BundleBody =
                super::decode(&reencoded, crate::limits::MAX_BUNDLE_BYTES)
                    .expect("body round trip");
            assert_eq!(&body2, b.body());
            let _ = b.check_signature();
            let body = b.body();
            assert_eq!(
                Bundle::claimed_slot(data),
                Some((body.workspace, body.author, body.seq))
            );
        } else {
            let _ = Bundle::claimed_slot(data);
        }
    }

    /// Arbitrary bytes → a batch's column layout decodes without panicking or
    /// allocating past its caps; what decodes lays out again and comes back
    /// the same.
    pub fn decode_columns(data: &[u8]) {
        crate::sync::columnar::check_built_bodies(data);
        if let Ok(items) = crate::sync::columnar::decode(data) {
            let refs: Vec<(bool, &[u8])> = items.iter().map(|(e, b)| (*e, b.as_slice())).collect();
            let again = crate::sync::columnar::decode(&crate::sync::columnar::encode(&refs))
                .expect("re-encoded columns decode");
            assert_eq!(again, items);
        }
    }

    /// Arbitrary bytes → sync message decode never panics; a message that
    /// decodes re-encodes to a frame that decodes to the same message.
    pub fn decode_message(data: &[u8]) {
        use crate::sync::message::Message;
        if let Ok(m) = Message::from_frame(data) {
            let again = Message::from_frame(&m.to_frame()).expect("re-encoded frame decodes");
            assert_eq!(again, m);
        }
    }
}
