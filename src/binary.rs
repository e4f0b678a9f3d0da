//! The compact binary encoding of log entries and Raft frames: postcard.
//!
//! JSON was the one encoding of everything on the write path, and writing
//! and reading it (escaping, base64 for binary values, field names in every
//! record) was a visible share of a replica's CPU. postcard is serde-based,
//! so the types that already derive serde need no code of ours, and its wire
//! format is documented and stable in 1.x (a record written by this build is
//! read the same by a later one): varint integers, length-prefixed byte
//! strings, enum variants as their index, struct fields in declaration order,
//! no field names.
//!
//! What follows from that, for anyone changing a type that travels:
//! - Field and variant order is the format. Add variants and fields only at
//!   the end, and only where the reader is versioned (a proposal's `format`,
//!   the frame encoding agreed in the handshake, a log record's tag byte).
//! - A binary decoder cannot ask what comes next: no `deserialize_any`, so no
//!   `untagged` or `flatten`, and `skip_serializing_if` would shift every
//!   field after it. Types with custom serde branch on `is_human_readable()`
//!   (`command::Bytes`: raw bytes in binary, text or base64 in JSON).
//! - Only the hello of a Raft connection, snapshot headers and the small
//!   bookkeeping records stay JSON: they are rare, and readable by a person.
//!
//! Reading is strict: bytes left over after the value are an error, so a
//! damaged record or frame is not taken for a shorter valid one.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes could not be read as the value expected. (postcard keeps no
/// text of a type's own refusal, such as a proposal's ops that are not
/// JSON: those read as "Serde Deserialization Error".)
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("malformed binary encoding: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("{0} bytes are left over after the value")]
    TrailingBytes(usize),
}

/// Appends the binary encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: Vec<u8>) -> Vec<u8> {
    // postcard fails only on what it cannot encode (a sequence of unknown
    // length, `deserialize_any`-only types), never on data: our types have none.
    postcard::to_extend(value, out).expect("the types that travel encode in postcard")
}

/// The binary encoding of `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    encode_into(value, Vec::new())
}

/// The value `bytes` encode, all of them.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BinaryError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    match rest.len() {
        0 => Ok(value),
        left => Err(BinaryError::TrailingBytes(left)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_or_missing_bytes_are_an_error() {
        let mut encoded = encode(&(7u32, "abc".to_string()));
        assert_eq!(decode::<(u32, String)>(&encoded).unwrap().1, "abc");
        encoded.push(0);
        assert!(matches!(
            decode::<(u32, String)>(&encoded),
            Err(BinaryError::TrailingBytes(1))
        ));
        assert!(decode::<(u32, String)>(&encoded[..3]).is_err());
        assert!(decode::<(u32, String)>(&[]).is_err());
    }
}
