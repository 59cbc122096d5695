//! A client's own order id, kept inline (no heap) so commands stay allocation-free.

use serde::{Deserialize, Serialize};

/// Longest client order id, as API.md allows.
pub const CLIENT_ID_MAX_LEN: usize = 64;

/// 1 to 64 characters of `[A-Za-z0-9_-]`, stored inline. The empty value means "none"
/// (bench input has no client ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientOrderId {
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
    pub const NONE: ClientOrderId = ClientOrderId {
        len: 0,
        bytes: [0; CLIENT_ID_MAX_LEN],
    };

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
        Ok(ClientOrderId {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The id as text (empty for [`ClientOrderId::NONE`]).
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `parse`, and `NONE` is empty).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    pub fn is_none(&self) -> bool {
        self.len == 0
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
