//! Journal record framing.
//!
//! ```text
//! [len u32 LE][seq u64 LE][crc32 u32 LE over seq bytes + payload][payload: len bytes]
//! payload = postcard((timestamp_ns: i64, command: Command))
//! ```
//! The length comes first so a reader can skip or detect a short record; the checksum
//! covers the sequence number too, so a record copied to the wrong place is caught.

use crate::command::Command;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;

/// Largest payload accepted when reading (a corrupt length must not allocate gigabytes).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Appends one framed record to `out`.
pub fn encode_into(out: &mut Vec<u8>, seq: u64, timestamp_ns: i64, command: &Command) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let taken = std::mem::take(out);
    *out = postcard::to_extend(&(timestamp_ns, command), taken)
        .expect("encoding a command to memory cannot fail");
    let payload_len = out.len() - start - HEADER_LEN;
    assert!(payload_len <= MAX_PAYLOAD, "command too large to journal");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&out[start + HEADER_LEN..]);
    let crc = crc.finalize();
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 12].copy_from_slice(&seq.to_le_bytes());
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
}

/// One record as read back (payload not yet decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
    /// Bytes the record took in the file (header + payload).
    pub len: usize,
}

/// Why the bytes at an offset are not a whole, valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes than the header or the stated length: a write cut short.
    Short,
    /// A length over [`MAX_PAYLOAD`].
    Length,
    /// The checksum does not match.
    Checksum,
}

/// Parses the record at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<RawRecord<'_>, Bad> {
    if buf.len() < HEADER_LEN {
        return Err(Bad::Short);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(Bad::Length);
    }
    if buf.len() < HEADER_LEN + len {
        return Err(Bad::Short);
    }
    let seq_bytes: [u8; 8] = buf[4..12].try_into().expect("8 bytes");
    let stored = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq_bytes);
    crc.update(payload);
    if crc.finalize() != stored {
        return Err(Bad::Checksum);
    }
    Ok(RawRecord {
        seq: u64::from_le_bytes(seq_bytes),
        payload,
        len: HEADER_LEN + len,
    })
}

/// Decodes a payload into its timestamp and command.
pub fn decode_payload(payload: &[u8]) -> Result<(i64, Command), postcard::Error> {
    postcard::from_bytes(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RequestId;

    #[test]
    fn round_trip_and_damage() {
        let cmd = Command::ApproveRequest {
            request: RequestId(42),
        };
        let mut buf = vec![9u8; 3];
        encode_into(&mut buf, 7, 1234, &cmd);
        let rec = parse(&buf[3..]).unwrap();
        assert_eq!(rec.seq, 7);
        assert_eq!(rec.len, buf.len() - 3);
        assert_eq!(decode_payload(rec.payload).unwrap(), (1234, cmd));
        assert_eq!(parse(&buf[3..buf.len() - 1]), Err(Bad::Short));
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(parse(&bad[3..]), Err(Bad::Checksum));
    }
}
