//! A client's own order id: validated text, held behind one pointer.
//!
//! Why a pointer: the id is up to 64 bytes, and it rode inline in every `PlaceOrder`, which
//! made `Command` 112 bytes, nearly two cache lines per command, for a field the matching engine
//! never reads (idempotency is the API's job, before sequencing). Boxed, an order without
//! a client id (`NONE`, no allocation) or with one costs 8 bytes in the command, and the
//! command stream the engine reads shrinks to one line per command (measured in
//! `bourse bench engine`: see the commit that made this change). The allocation happens in
//! the API when a request carries a client id, never in the matching loop, which only moves
//! commands by reference.

use serde::{Deserialize, Serialize};

/// Longest client order id, as API.md allows.
pub const CLIENT_ID_MAX_LEN: usize = 64;

/// 1 to 64 characters of `[A-Za-z0-9_-]`. The empty value means "none" (bench input has no
/// client ids).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientOrderId(Option<Box<Text>>);

/// The validated characters (never empty).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Text {
    len: u8,
    bytes: [u8; CLIENT_ID_MAX_LEN],
}

/// Why a string is not a client order id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    #[error("clientId must be 1 to 64 characters")]
    Length,
    #[error("clientId may only contain A-Z, a-z, 0-9, '_' and '-'")]
    Character,
}

impl ClientOrderId {
    /// No client id.
    pub const NONE: ClientOrderId = ClientOrderId(None);

    /// Validates and stores `s`.
    pub fn parse(s: &str) -> Result<Self, ClientIdError> {
        let raw = s.as_bytes();
        if raw.is_empty() || raw.len() > CLIENT_ID_MAX_LEN {
            return Err(ClientIdError::Length);
        }
        if !raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        {
            return Err(ClientIdError::Character);
        }
        let mut bytes = [0u8; CLIENT_ID_MAX_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(ClientOrderId(Some(Box::new(Text {
            len: raw.len() as u8,
            bytes,
        }))))
    }

    /// The id as text (empty for [`ClientOrderId::NONE`]).
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `parse`, and `NONE` is empty).
        match &self.0 {
            None => "",
            Some(t) => std::str::from_utf8(&t.bytes[..usize::from(t.len)]).unwrap_or(""),
        }
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl Default for ClientOrderId {
    fn default() -> Self {
        Self::NONE
    }
}

impl std::fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientOrderId({:?})", self.as_str())
    }
}

impl Serialize for ClientOrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ClientOrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text: String = Deserialize::deserialize(d)?;
        if text.is_empty() {
            return Ok(ClientOrderId::NONE);
        }
        ClientOrderId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_costs_one_pointer_and_round_trips() {
        assert_eq!(std::mem::size_of::<ClientOrderId>(), 8);
        let id = ClientOrderId::parse("abc_DEF-1").unwrap();
        assert_eq!(id.as_str(), "abc_DEF-1");
        assert!(!id.is_none() && ClientOrderId::NONE.is_none());
        assert_eq!(ClientOrderId::NONE.as_str(), "");
        assert_eq!(ClientOrderId::parse(""), Err(ClientIdError::Length));
        assert_eq!(
            ClientOrderId::parse(&"a".repeat(65)),
            Err(ClientIdError::Length)
        );
        assert_eq!(ClientOrderId::parse("a b"), Err(ClientIdError::Character));
        let bytes = postcard::to_stdvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<ClientOrderId>(&bytes).unwrap(), id);
    }
}
