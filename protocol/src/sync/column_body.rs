//! A received bundle's body built straight from the batch columns its bytes
//! were rebuilt from, instead of parsing the rebuilt bytes a second time.
//!
//! Why: a receiver rebuilds each bundle's canonical bytes from the columns
//! (they are what is hashed, verified and stored), and then parsed those
//! bytes again with postcard to get the body. The columns already hold
//! every field in hand, cut at its boundaries; building the body from those
//! pieces skips the second pass through serde, which was about half of
//! the receiver's decoding work in a full sync.
//!
//! Equivalence: the body built here is the one postcard decodes from the
//! rebuilt bytes, or there is none and the caller parses the bytes as
//! before. Every number read here must be in its one shortest varint form
//! and every piece must be consumed exactly; anything else (an over-long
//! varint, an odd tag, a piece with bytes left over, invalid UTF-8) gives
//! `None`, so every error a peer can provoke still comes from the one
//! parser, word for word. Values other than text, and ops other than `Set`,
//! are parsed with postcard from their own piece: a piece that is exactly
//! one encoding decodes as it does inside the whole. Property tests here
//! (each kind of piece against postcard) and in `columnar` (whole batches,
//! damaged anywhere), and the `decode_columns` fuzz target, compare this
//! path with the parser.

use crate::bundle::{BundleBody, BundleKind};
use crate::hlc::Hlc;
use crate::ids::{ActorId, BundleHash, EntityId, OpId, WorkspaceId};
use crate::op::Op;
use crate::path::FieldPath;
use crate::value::Value;

/// A string as it sits in a column: its length's varint, then its bytes
/// (as many as the length says; the column reader checked that).
#[derive(Clone, Copy)]
pub(super) struct Str<'a> {
    pub(super) len: &'a [u8],
    pub(super) text: &'a [u8],
}

/// One op's pieces.
pub(super) enum OpPieces<'a> {
    /// A `Set`: its path's three strings, its value's and its pred's encodings.
    Set {
        etype: Str<'a>,
        eid: Str<'a>,
        field: Str<'a>,
        value: &'a [u8],
        pred: &'a [u8],
    },
    /// Any other op, whole.
    Other(&'a [u8]),
}

/// The fields of a body the decoder re-encodes itself (always canonical).
pub(super) struct Head {
    pub(super) workspace: WorkspaceId,
    pub(super) author: ActorId,
    pub(super) seq: u64,
    pub(super) prev_hash: Option<BundleHash>,
    pub(super) wall_ms: u64,
}

/// The pieces of one body that are copied from the columns as they came.
pub(super) struct Pieces<'a> {
    pub(super) counter: &'a [u8],
    pub(super) kind: &'a [u8],
    pub(super) summary: Str<'a>,
}

/// Path names already built in this batch, by role, to clone.
///
/// Why: a name is built by copying its bytes into an inline buffer and
/// then moving the buffer as three words; the moves wait for the byte
/// copy to land (the loads cannot take their bytes from the copy's
/// overlapping smaller stores), and that wait was 18 % of the receiving
/// network thread in a 1M-write sync. The ops of a bundle mostly share an
/// entity type and id, and a batch's ops use a few field names over and
/// over: a clone of a name built earlier moves words that landed long ago.
#[derive(Default)]
pub(super) struct Names {
    etype: Recent<2>,
    eid: Recent<2>,
    field: Recent<16>,
}

/// The last `N` names of one role, the newest at `next - 1`.
struct Recent<const N: usize> {
    names: [Option<crate::path::Name>; N],
    next: usize,
}

impl<const N: usize> Default for Recent<N> {
    fn default() -> Self {
        Recent {
            names: [const { None }; N],
            next: 0,
        }
    }
}

impl<const N: usize> Recent<N> {
    /// The name `s` holds: a clone of an earlier one with the same bytes,
    /// or a new one (then kept, in place of the oldest).
    fn get(&mut self, s: Str<'_>) -> Option<crate::path::Name> {
        if varint(s.len)? != s.text.len() as u64 {
            return None;
        }
        for i in 0..N {
            let at = (self.next + N - 1 - i) % N;
            match &self.names[at] {
                // The same bytes as a valid name are valid UTF-8.
                Some(n) if n.as_bytes() == s.text => return Some(n.clone()),
                Some(_) => {}
                None => break,
            }
        }
        let name = crate::path::Name::from(std::str::from_utf8(s.text).ok()?);
        self.names[self.next] = Some(name.clone());
        self.next = (self.next + 1) % N;
        Some(name)
    }
}

/// The body, or `None` where only the parser may answer (see the module doc).
pub(super) fn body(
    head: Head,
    p: &Pieces<'_>,
    ops: &[OpPieces<'_>],
    names: &mut Names,
) -> Option<BundleBody> {
    let counter = u32::try_from(varint(p.counter)?).ok()?;
    let mut built = Vec::with_capacity(ops.len());
    for op in ops {
        built.push(self::op(op, names)?);
    }
    Some(BundleBody {
        workspace: head.workspace,
        author: head.author,
        seq: head.seq,
        prev_hash: head.prev_hash,
        hlc: Hlc {
            wall_ms: head.wall_ms,
            counter,
        },
        kind: kind(p.kind)?,
        summary: text(varint(p.summary.len)?, p.summary.text)?.to_owned(),
        ops: built,
    })
}

/// A varint in its shortest form taking the whole piece.
fn varint(piece: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &b) in piece.iter().enumerate() {
        let bits = u64::from(b & 0x7f);
        if i > 9 || (i == 9 && bits > 1) {
            return None;
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            // Shortest: nothing follows, and no zero high group.
            return (i + 1 == piece.len() && (i == 0 || b != 0)).then_some(v);
        }
    }
    None
}

/// The varint at the start of `data` in its shortest form, and the rest.
fn take_varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let end = data.iter().take(10).position(|b| b & 0x80 == 0)?;
    let (piece, rest) = data.split_at(end + 1);
    Some((varint(piece)?, rest))
}

/// `bytes` as a string whose encoded length said `len`.
fn text(len: u64, bytes: &[u8]) -> Option<&str> {
    if len != bytes.len() as u64 {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

fn kind(piece: &[u8]) -> Option<BundleKind> {
    Some(match piece {
        [0] => BundleKind::UserEdit,
        [1] => BundleKind::JobOutput,
        [2] => BundleKind::Import,
        [3] => BundleKind::MergeResolution,
        [4, of @ ..] => BundleKind::Undo {
            of: BundleHash(of.try_into().ok()?),
        },
        [5, of @ ..] => BundleKind::Redo {
            of: BundleHash(of.try_into().ok()?),
        },
        _ => return None,
    })
}

/// A piece that is exactly one postcard encoding of `T`.
fn whole<'a, T: serde::Deserialize<'a>>(piece: &'a [u8]) -> Option<T> {
    match postcard::take_from_bytes(piece) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}

fn value(piece: &[u8]) -> Option<Value> {
    match piece.split_first() {
        // Text, the common case, by hand.
        Some((4, rest)) => {
            let (n, bytes) = take_varint(rest)?;
            text(n, bytes).map(|t| Value::Text(t.into()))
        }
        _ => whole(piece),
    }
}

fn pred(piece: &[u8]) -> Option<Vec<OpId>> {
    let (n, mut rest) = take_varint(piece)?;
    // The column reader capped the count; each entry takes 34 bytes at least.
    let mut out = Vec::with_capacity(usize::try_from(n).ok()?.min(rest.len() / 34));
    for _ in 0..n {
        let (author, after) = rest.split_first_chunk::<32>()?;
        let (seq, after) = take_varint(after)?;
        let (index, after) = take_varint(after)?;
        out.push(OpId {
            author: ActorId(*author),
            seq,
            index: u32::try_from(index).ok()?,
        });
        rest = after;
    }
    rest.is_empty().then_some(out)
}

fn op(op: &OpPieces<'_>, names: &mut Names) -> Option<Op> {
    match *op {
        OpPieces::Set {
            etype,
            eid,
            field,
            value,
            pred,
        } => Some(Op::Set {
            path: FieldPath {
                entity_type: names.etype.get(etype)?,
                entity_id: EntityId::decoded(names.eid.get(eid)?),
                field: names.field.get(field)?,
            },
            value: self::value(value)?,
            pred: self::pred(pred)?,
        }),
        OpPieces::Other(piece) => whole(piece),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::strategies::{arb_op, arb_op_id, arb_value};

    /// Damage to an encoding: some bytes changed, then cut short, then run on.
    type Damage = (Vec<(prop::sample::Index, u8)>, Option<usize>, Vec<u8>);

    fn any_damage() -> impl Strategy<Value = Damage> {
        (
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            prop::option::of(0usize..80),
            prop::collection::vec(any::<u8>(), 0..2),
        )
    }

    fn damaged(mut encoded: Vec<u8>, (bytes, cut, extra): &Damage) -> Vec<u8> {
        for (at, byte) in bytes {
            if !encoded.is_empty() {
                let i = at.index(encoded.len());
                encoded[i] = *byte;
            }
        }
        if let Some(n) = cut {
            encoded.truncate(*n);
        }
        encoded.extend_from_slice(extra);
        encoded
    }

    /// Pieces whose sizes came from a peer: postcard's own reading is the
    /// reference for each kind of piece read here.
    fn agrees<T: PartialEq + std::fmt::Debug + for<'a> serde::Deserialize<'a>>(
        here: Option<T>,
        piece: &[u8],
    ) -> Result<(), TestCaseError> {
        if here.is_some() {
            prop_assert_eq!(here, whole::<T>(piece));
        }
        Ok(())
    }

    /// `read` gives `v` back from its encoding, and from that encoding
    /// damaged, nothing or what postcard reads.
    fn reads_as_the_parser<T>(
        v: T,
        read: impl Fn(&[u8]) -> Option<T>,
        damage: &Damage,
    ) -> Result<(), TestCaseError>
    where
        T: serde::Serialize + PartialEq + std::fmt::Debug + for<'a> serde::Deserialize<'a>,
    {
        let enc = postcard::to_stdvec(&v).expect("encodes");
        prop_assert_eq!(read(&enc), Some(v));
        let piece = damaged(enc, damage);
        agrees(read(&piece), &piece)
    }

    proptest! {
        #[test]
        fn values_read_as_the_parser_reads_them(v in arb_value(), d in any_damage()) {
            reads_as_the_parser(v, value, &d)?;
        }

        #[test]
        fn preds_and_other_ops_read_as_the_parser_reads_them(
            p in prop::collection::vec(arb_op_id(), 0..4),
            o in arb_op(),
            d in any_damage(),
        ) {
            reads_as_the_parser(p, pred, &d)?;
            reads_as_the_parser(o, |b| op(&OpPieces::Other(b), &mut Names::default()), &d)?;
        }

        #[test]
        fn strings_and_kinds_read_as_the_parser_reads_them(
            text in prop::collection::vec(any::<u8>(), 0..6),
            len in prop::collection::vec(any::<u8>(), 1..3),
            kind in prop::collection::vec(any::<u8>(), 0..34),
        ) {
            let mut enc = len.clone();
            enc.extend_from_slice(&text);
            // Built new, then cloned from the names kept.
            let mut names = Recent::<2>::default();
            agrees(names.get(Str { len: &len, text: &text }), &enc)?;
            agrees(names.get(Str { len: &len, text: &text }), &enc)?;
            agrees(self::kind(&kind), &kind)?;
        }
    }

    #[test]
    fn only_shortest_varints_are_read_here() {
        assert_eq!(varint(&[0]), Some(0));
        assert_eq!(varint(&[0x7f]), Some(127));
        assert_eq!(varint(&[0x80, 0x01]), Some(128));
        // Over-long forms of 0 and 1, bytes left over, a cut-off varint.
        assert_eq!(varint(&[0x80, 0x00]), None);
        assert_eq!(varint(&[0x81, 0x00]), None);
        assert_eq!(varint(&[0x01, 0x01]), None);
        assert_eq!(varint(&[0x80]), None);
        assert_eq!(varint(&[]), None);
        // u64::MAX takes ten bytes, the last holding one bit; more overflows.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(varint(&max), Some(u64::MAX));
        max[9] = 0x02;
        assert_eq!(varint(&max), None);
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let enc = postcard::to_stdvec(&v).expect("encodes");
            assert_eq!(varint(&enc), Some(v), "{v}");
        }
    }
}
