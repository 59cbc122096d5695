//! What a WebSocket `auth` op grants: the account a token names and which of that account's
//! private channels the token may read.
//!
//! The feed does not know the API's scope names or bits; the API's authenticator maps a
//! verified token's scopes to [`ReadScopes`] with the same rule as its REST routes (API.md:
//! order reads need `orders:read` or `orders`, wallet reads `wallet:read` or `wallet`), so a
//! token is allowed on the WebSocket exactly what it is allowed on REST, and for as long:
//! a grant carries the token's expiry, after which its private subscriptions end (the
//! connection's once-a-second housekeeping) and a subscribe is refused until a new `auth`.

use engine::AccountId;

use crate::PrivateChannel;

/// The read scopes of a token, as far as the private channels are concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadScopes {
    /// Orders and fills (`orders:read` or `orders`).
    pub orders: bool,
    /// Wallet balances (`wallet:read` or `wallet`).
    pub wallet: bool,
}

/// A verified token: its account and what it may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub account: AccountId,
    pub scopes: ReadScopes,
    /// When the token stops being valid, Unix time in nanoseconds
    /// ([`engine::pipeline::unix_now_ns`]'s clock).
    pub expires_ns: i64,
}

/// Why an authenticator gave no [`Grant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthRefusal {
    /// The token is unknown or expired: the `auth` op's error is `UNAUTHORIZED`.
    #[error("invalid or expired token")]
    Invalid,
    /// The token could not be checked now (the server cannot read its tokens): it may be
    /// good, so the error is `SERVICE_UNAVAILABLE`, and the client keeps it and retries.
    #[error("the token could not be checked now")]
    Unavailable,
}

impl Grant {
    /// Whether the token has expired at `now_ns` (Unix time in nanoseconds).
    pub fn expired(&self, now_ns: i64) -> bool {
        now_ns >= self.expires_ns
    }

    /// Whether this token may subscribe to `channel` of its account.
    pub fn may_read(&self, channel: PrivateChannel) -> bool {
        match channel {
            PrivateChannel::Orders | PrivateChannel::Fills => self.scopes.orders,
            PrivateChannel::Wallet => self.scopes.wallet,
        }
    }
}

impl PrivateChannel {
    /// The scopes of which a token needs one to read this channel (API.md's names).
    pub fn read_scopes(self) -> &'static str {
        match self {
            PrivateChannel::Orders | PrivateChannel::Fills => "orders:read or orders",
            PrivateChannel::Wallet => "wallet:read or wallet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_private_channel_needs_its_own_read_scope() {
        let grant = |orders, wallet| Grant {
            account: AccountId(1),
            scopes: ReadScopes { orders, wallet },
            expires_ns: i64::MAX,
        };
        let all = [
            PrivateChannel::Orders,
            PrivateChannel::Fills,
            PrivateChannel::Wallet,
        ];
        let readable = |g: Grant| {
            all.into_iter()
                .filter(|&c| g.may_read(c))
                .collect::<Vec<_>>()
        };
        assert!(readable(grant(false, false)).is_empty());
        assert_eq!(
            readable(grant(true, false)),
            [PrivateChannel::Orders, PrivateChannel::Fills]
        );
        assert_eq!(readable(grant(false, true)), [PrivateChannel::Wallet]);
        assert_eq!(readable(grant(true, true)), all);
    }

    #[test]
    fn a_grant_expires_at_its_tokens_expiry() {
        let g = Grant {
            account: AccountId(1),
            scopes: ReadScopes::default(),
            expires_ns: 1_000,
        };
        assert!(!g.expired(999));
        assert!(g.expired(1_000));
        assert!(
            engine::pipeline::unix_now_ns() > 1_700_000_000_000_000_000,
            "the clock reads Unix time"
        );
    }
}
