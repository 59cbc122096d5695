//! Authentication: client secrets (argon2), bearer tokens (random 256-bit, stored as a
//! SHA-256 hash), scopes, and the [`Auth`] extractor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine as _;
use engine::AccountId;
use parking_lot::RwLock;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;
use crate::error::ApiError;
use crate::state::AppState;

pub const ORDERS: u8 = 1;
pub const ORDERS_READ: u8 = 2;
pub const WALLET: u8 = 4;
pub const WALLET_READ: u8 = 8;
pub const TRANSACTIONS_READ: u8 = 16;
pub const ADMIN: u8 = 32;
/// What a registered client holds.
pub const USER_SCOPES: u8 = ORDERS | ORDERS_READ | WALLET | WALLET_READ | TRANSACTIONS_READ;
pub const ALL_SCOPES: u8 = USER_SCOPES | ADMIN;

const NAMES: [(u8, &str); 6] = [
    (ORDERS, "orders"),
    (ORDERS_READ, "orders:read"),
    (WALLET, "wallet"),
    (WALLET_READ, "wallet:read"),
    (TRANSACTIONS_READ, "transactions:read"),
    (ADMIN, "admin"),
];

/// Parses a space-separated scope list; `None` for an unknown scope.
pub fn parse_scopes(s: &str) -> Option<u8> {
    let mut bits = 0;
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        bits |= NAMES.iter().find(|(_, n)| *n == word)?.0;
    }
    Some(bits)
}

pub fn scopes_str(bits: u8) -> String {
    NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A random 256-bit value, base64url without padding.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A random client id.
pub fn random_client_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The argon2 costs of client secrets (one lane), or why argon2 refuses them.
pub fn argon2_params(memory_kib: u32, iterations: u32) -> Result<Params, ConfigError> {
    Params::new(memory_kib, iterations, 1, None).map_err(|e| ConfigError::Argon2 {
        memory_kib,
        iterations,
        reason: e.to_string(),
    })
}

/// Client secrets: argon2id hashes at the configured costs, and a verification that costs
/// one argon2 run whether or not the client exists.
///
/// An unknown client id's secret is verified against a dummy hash made once at start-up
/// with the same costs (of a random secret nobody knows), so "unknown client" takes as
/// long as "wrong secret" and the token endpoint's timing does not tell which client ids
/// exist. (Verifying against an empty string, as before, failed at once.)
///
/// Argon2 runs go through [`argon2`]: at most one per CPU at once, and at most
/// `argon2_max_pending` admitted (running or waiting), past which a call is a 503. Each run
/// takes `argon2_memory_kib` of memory and a CPU for tens of milliseconds, and the token
/// endpoint runs one for any client id, made up or not: unbounded, a burst of token requests
/// (4,000 from one address fit the default rate limit) ran them all at once on tokio's
/// blocking pool, up to 512 threads, 19 MiB each, and starved every other request of CPU.
#[derive(Debug)]
pub struct ClientSecrets {
    argon: Argon2<'static>,
    dummy_phc: String,
    /// Argon2 verifications run (`bourse_auth_secret_verifications_total`).
    verifications: AtomicU64,
    /// One permit per argon2 run at once.
    running: std::sync::Arc<tokio::sync::Semaphore>,
    /// Runs admitted (running or waiting for `running`), at most `max_pending`.
    admitted: AtomicUsize,
    max_pending: usize,
}

impl ClientSecrets {
    /// Checks the costs and makes the dummy hash (one argon2 run: call it off the async
    /// workers).
    pub fn new(memory_kib: u32, iterations: u32, max_pending: usize) -> Result<Self, ConfigError> {
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            argon2_params(memory_kib, iterations)?,
        );
        let mut secrets = ClientSecrets {
            argon,
            dummy_phc: String::new(),
            verifications: AtomicU64::new(0),
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
            admitted: AtomicUsize::new(0),
            max_pending,
        };
        secrets.dummy_phc = secrets.hash(&random_token());
        Ok(secrets)
    }

    /// The argon2id PHC string of `secret`, with a random salt.
    pub fn hash(&self, secret: &str) -> String {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
        self.argon
            .hash_password(secret.as_bytes(), &salt)
            .expect("the costs were checked in ClientSecrets::new")
            .to_string()
    }

    /// Whether `secret` is the one whose PHC string is `stored`; `stored` is `None` for
    /// an unknown client, which is verified against the dummy all the same and refused.
    /// Argon2's comparison is constant-time.
    pub fn verify(&self, secret: &str, stored: Option<&str>) -> bool {
        let phc = stored.unwrap_or(&self.dummy_phc);
        let matches = self.verify_phc(secret, phc);
        matches && stored.is_some()
    }

    fn verify_phc(&self, secret: &str, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        // The hash's own costs and salt apply (a secret stored under older settings
        // still verifies).
        self.argon.verify_password(secret.as_bytes(), &hash).is_ok()
    }

    /// Argon2 verifications run so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

/// Runs `work` (an argon2 hash or verification) off the async workers, within the bounds of
/// [`ClientSecrets`]: it waits for one of the per-CPU permits, and when `argon2_max_pending`
/// runs are already admitted it does not run at all: a 503 with `Retry-After: 1`.
pub async fn argon2<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&ClientSecrets) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let secrets = &state.secrets;
    if secrets.admitted.fetch_add(1, Ordering::AcqRel) >= secrets.max_pending {
        secrets.admitted.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::retry_shortly(
            "too many sign-ins at once; retry shortly",
        ));
    }
    // Admitted, and then holding its CPU permit, until the argon2 run ends: both go into
    // the blocking task, which runs to its end even when the client hangs up and its
    // request's future is dropped (a run released at the hang-up would let a client that
    // sends and closes start any number of runs at once).
    struct Admitted(AppState);
    impl Drop for Admitted {
        fn drop(&mut self) {
            self.0.secrets.admitted.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let admitted = Admitted(state.clone());
    let permit = secrets
        .running
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || {
        let (admitted, _permit) = (admitted, permit);
        work(&admitted.0.secrets)
    })
    .await
    .map_err(|_| ApiError::internal())
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A verified token.
#[derive(Clone, Copy, Debug)]
pub struct TokenInfo {
    pub account: u32,
    pub scopes: u8,
    pub expires_ns: i64,
}

/// Verified tokens, so a request does not hit SQLite.
///
/// Tokens, unlike accounts and clients, are not journaled: they are short-lived
/// (`token_ttl_secs`) and live only here and in the history store's `tokens` table. A
/// history store rebuilt from the journal has none; clients just ask for a new token with
/// their (journaled) credentials.
#[derive(Debug, Default)]
pub struct TokenCache {
    map: RwLock<HashMap<[u8; 32], TokenInfo>>,
}

const CACHE_MAX: usize = 100_000;

impl TokenCache {
    pub fn get(&self, hash: &[u8; 32]) -> Option<TokenInfo> {
        self.map.read().get(hash).copied()
    }
    pub fn put(&self, hash: [u8; 32], info: TokenInfo) {
        let mut m = self.map.write();
        if m.len() >= CACHE_MAX {
            let now = crate::model::now_ns();
            m.retain(|_, t| t.valid_at(now));
            if m.len() >= CACHE_MAX {
                // Still full of live tokens: the half that expires soonest goes (they are
                // looked up in the store again when used), not every token at once.
                let mut expiries: Vec<i64> = m.values().map(|t| t.expires_ns).collect();
                let mid = expiries.len() / 2;
                let (_, &mut median, _) = expiries.select_nth_unstable(mid);
                m.retain(|_, t| t.expires_ns > median);
            }
        }
        m.insert(hash, info);
    }
}

impl TokenInfo {
    /// Whether the token is still valid at `now_ns` (Unix time, [`crate::model::now_ns`]).
    pub fn valid_at(&self, now_ns: i64) -> bool {
        self.expires_ns > now_ns
    }

    /// What this token may read on the WebSocket: the same scopes as the REST reads of
    /// orders and fills (`orders:read` or `orders`) and of the wallet (`wallet:read` or
    /// `wallet`).
    pub fn feed_grant(&self) -> feed::Grant {
        feed::Grant {
            account: AccountId(self.account),
            scopes: feed::ReadScopes {
                orders: self.scopes & (ORDERS | ORDERS_READ) != 0,
                wallet: self.scopes & (WALLET | WALLET_READ) != 0,
            },
            expires_ns: self.expires_ns,
        }
    }
}

/// A bearer token's hash and what the token cache held for it, found once per request.
///
/// With the rate limit on, the edge middleware ([`crate::middleware::edge`]) must hash the
/// token to find whose budget a request spends; it leaves this in the request's extensions
/// so the [`Auth`] extractor starts from it instead of hashing the token and asking the
/// cache again. It holds what the cache had, expired or not: the extractor applies
/// [`TokenInfo::valid_at`] at its own time, and looks a token the cache did not have up in
/// the store, as it does without it. The edge made it from the same request's
/// `Authorization` header, which nothing after it rewrites.
#[derive(Clone, Copy, Debug)]
pub struct TokenLookup {
    hash: [u8; 32],
    cached: Option<TokenInfo>,
}

impl TokenLookup {
    /// Hashes `token` and asks the cache (never the store).
    pub fn find(state: &AppState, token: &str) -> TokenLookup {
        let hash = token_hash(token);
        TokenLookup {
            hash,
            cached: state.tokens.get(&hash),
        }
    }

    /// The token if the cache held it and it has not expired (never asks the store).
    pub fn cached_valid(&self) -> Option<TokenInfo> {
        self.cached
            .filter(|info| info.valid_at(crate::model::now_ns()))
    }

    /// What [`verify_token`] answers for this token: the cached entry, else the store's.
    pub fn verify(&self, state: &AppState) -> Result<TokenInfo, TokenError> {
        verify_hashed(state, &self.hash, self.cached)
    }
}

/// Why a bearer token was not accepted: it is not valid, or it could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Unknown or expired: a 401, and the client signs in again.
    #[error("invalid or expired token")]
    Invalid,
    /// Not in the cache, and the history store could not be asked (stopped, damaged, or any
    /// other SQLite error): the token may well be good, so this is a 503, not a 401 that
    /// would have the client throw it away.
    #[error("the token could not be checked: {0}")]
    Unchecked(#[source] rusqlite::Error),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        use crate::store::{STORE_DAMAGED, STORE_FAILED, unavailable_reason};
        match e {
            TokenError::Invalid => ApiError::unauthorized("invalid or expired token"),
            // As for the other reads of a stopped store: what it is and the remedy, never
            // SQLite's words or the file's path. The stop or the damage was logged where it
            // was found, any other error in `verify_hashed`.
            TokenError::Unchecked(e) => match unavailable_reason(&e) {
                Some(why) if why == STORE_DAMAGED => ApiError::unavailable(
                    "the token could not be checked (the history store is damaged); the \
                     operator has to restart the server, which rebuilds it",
                ),
                Some(why) if why == STORE_FAILED => ApiError::unavailable(
                    "the token could not be checked (the history store has stopped); the \
                     operator has to restart the server",
                ),
                _ => ApiError::unavailable(
                    "the token could not be checked (the history store did not answer); \
                     retry later",
                ),
            },
        }
    }
}

impl From<TokenError> for feed::AuthRefusal {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid => feed::AuthRefusal::Invalid,
            TokenError::Unchecked(_) => feed::AuthRefusal::Unavailable,
        }
    }
}

/// Looks a bearer token up (cache, then the store).
pub fn verify_token(state: &AppState, token: &str) -> Result<TokenInfo, TokenError> {
    TokenLookup::find(state, token).verify(state)
}

/// Looks a request's bearer `token` up, starting from the edge's lookup when the rate limit
/// made one (`lookup`, from the request's extensions): the token is hashed once.
pub fn verify_request(
    state: &AppState,
    lookup: Option<&TokenLookup>,
    token: &str,
) -> Result<TokenInfo, TokenError> {
    match lookup {
        Some(lookup) => lookup.verify(state),
        None => verify_token(state, token),
    }
}

/// The token whose hash is `hash`, not expired: `cached` (what the cache holds for it) or,
/// when the cache had nothing, the store's entry, which is then cached. A store that cannot
/// be read is [`TokenError::Unchecked`], not a token unknown.
fn verify_hashed(
    state: &AppState,
    hash: &[u8; 32],
    cached: Option<TokenInfo>,
) -> Result<TokenInfo, TokenError> {
    let now = crate::model::now_ns();
    let info = match cached {
        Some(info) => info,
        None => {
            let found = state
                .store
                .read_now(|c| {
                    use rusqlite::OptionalExtension;
                    c.query_row(
                        "SELECT hash, user_id, scopes, expires_ns FROM tokens WHERE hash = ?1",
                        [hash.as_slice()],
                        |r| {
                            Ok((
                                r.get::<_, Vec<u8>>(0)?,
                                TokenInfo {
                                    account: r.get(1)?,
                                    scopes: r.get(2)?,
                                    expires_ns: r.get(3)?,
                                },
                            ))
                        },
                    )
                    .optional()
                })
                .map_err(|e| {
                    if crate::store::unavailable_reason(&e).is_none() {
                        crate::store::log_store_error("token lookup: history store error", &e);
                    }
                    TokenError::Unchecked(e)
                })?;
            let Some((stored, info)) = found else {
                return Err(TokenError::Invalid);
            };
            if !ct_eq(&stored, hash) {
                return Err(TokenError::Invalid);
            }
            state.tokens.put(*hash, info);
            info
        }
    };
    if info.valid_at(now) {
        Ok(info)
    } else {
        Err(TokenError::Invalid)
    }
}

/// The caller, authenticated by `Authorization: Bearer TOKEN`.
#[derive(Clone, Copy, Debug)]
pub struct Auth {
    pub account: AccountId,
    pub scopes: u8,
}

impl Auth {
    /// Requires one of `any` scopes: 403 otherwise.
    pub fn require(&self, any: u8) -> Result<(), ApiError> {
        if self.scopes & any != 0 {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "the token lacks the scope for this call",
            ))
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case).
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

/// [`bearer`] of a header map.
pub fn bearer_in(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?;
    let v = v.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized("missing or malformed bearer token"));
        };
        // Unknown or expired: 401; not in the cache and the store unreadable: 503.
        let info = verify_request(state, parts.extensions.get::<TokenLookup>(), token)?;
        Ok(Auth {
            account: AccountId(info.account),
            scopes: info.scopes,
        })
    }
}

/// The caller, holding one of the scopes `ANY` (a bit set of [`ORDERS`], [`WALLET`], ...).
///
/// An extractor, so the scope is checked before the body or the query is read: a token
/// without the scope gets its 403 whatever it sent (API.md), and learns nothing of what the
/// call would have validated.
#[derive(Clone, Copy, Debug)]
pub struct Scoped<const ANY: u8>(pub Auth);

impl<const ANY: u8> FromRequestParts<AppState> for Scoped<ANY> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = Auth::from_request_parts(parts, state).await?;
        auth.require(ANY)?;
        Ok(Scoped(auth))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn a_full_token_cache_drops_the_soonest_to_expire_half_not_everything() {
        let cache = TokenCache::default();
        let later = crate::model::now_ns() + 3_600_000_000_000;
        let key = |i: usize| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k
        };
        let info = |i: usize| TokenInfo {
            account: 1,
            scopes: 0,
            expires_ns: later + i as i64,
        };
        for i in 0..CACHE_MAX {
            cache.put(key(i), info(i));
        }
        assert_eq!(cache.map.read().len(), CACHE_MAX);
        cache.put(key(CACHE_MAX), info(CACHE_MAX));
        assert!(
            (CACHE_MAX / 2 - 1..=CACHE_MAX / 2 + 1).contains(&cache.map.read().len()),
            "{} tokens kept",
            cache.map.read().len()
        );
        assert!(
            cache.get(&key(CACHE_MAX - 1)).is_some(),
            "the latest to expire stay"
        );
        assert!(cache.get(&key(CACHE_MAX)).is_some(), "the new one is in");
        assert!(cache.get(&key(0)).is_none(), "the soonest to expire went");
    }

    /// The token endpoint answers an unknown client id only after a real argon2
    /// verification, like a wrong secret: once it verified against "", which fails without
    /// running argon2 at all.
    #[test]
    fn an_unknown_client_costs_one_argon2_verification() {
        let s = ClientSecrets::new(64, 1, 64).expect("valid costs");
        assert!(!s.verify("a guess", None));
        assert_eq!(s.verifications(), 1, "the unknown client ran argon2");
        let stored = s.hash("right");
        assert!(s.verify("right", Some(&stored)));
        assert!(!s.verify("wrong", Some(&stored)));
        assert_eq!(s.verifications(), 3);
        // The dummy costs what a real hash costs.
        let dummy = PasswordHash::new(&s.dummy_phc).expect("a PHC string");
        let real = PasswordHash::new(&stored).expect("a PHC string");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(dummy.params.get_decimal("m"), Some(64));
        assert_eq!(dummy.params.get_decimal("t"), Some(1));
        // Not even the dummy's own secret (unknown anyway) lets an unknown client in.
        assert!(!s.verify("", None));
    }

    /// A started state on `dir`: cheap argon2, the rate limit on (so the edge looks tokens up).
    async fn started(dir: &std::path::Path) -> AppState {
        crate::server::start(crate::Config {
            data_dir: dir.to_path_buf(),
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..Default::default()
        })
        .await
        .expect("starts")
    }

    fn request_parts(token: &str, lookup: Option<TokenLookup>) -> Parts {
        let (mut parts, ()) = axum::http::Request::builder()
            .header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .expect("a request")
            .into_parts();
        if let Some(lookup) = lookup {
            parts.extensions.insert(lookup);
        }
        parts
    }

    async fn auth_of(state: &AppState, mut parts: Parts) -> Result<(u32, u8), StatusCode> {
        Auth::from_request_parts(&mut parts, state)
            .await
            .map(|a| (a.account.0, a.scopes))
            .map_err(|e| e.0.status)
    }

    /// The extractor starts from the edge's lookup: a token known only to the lookup (in
    /// neither the cache nor the store) authenticates, so it was not hashed and looked up
    /// again. Expiry still applies to what the edge found, and a token the edge's cache
    /// lookup missed is looked up in the store as without the lookup.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_extractor_uses_the_edge_lookup_and_still_checks_expiry() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = started(tmp.path()).await;
        let now = crate::model::now_ns();
        let live = TokenInfo {
            account: 7,
            scopes: ORDERS,
            expires_ns: now + 3_600_000_000_000,
        };
        let edge_only = TokenLookup {
            hash: token_hash("edge-only"),
            cached: Some(live),
        };
        assert_eq!(
            auth_of(&state, request_parts("edge-only", Some(edge_only))).await,
            Ok((7, ORDERS))
        );
        assert_eq!(
            auth_of(&state, request_parts("edge-only", None)).await,
            Err(StatusCode::UNAUTHORIZED),
            "unknown without the lookup"
        );

        let expired = TokenLookup {
            cached: Some(TokenInfo {
                expires_ns: now - 1,
                ..live
            }),
            ..edge_only
        };
        assert_eq!(
            auth_of(&state, request_parts("edge-only", Some(expired))).await,
            Err(StatusCode::UNAUTHORIZED),
            "an expired token the edge found cached"
        );

        // The edge's cache missed; the store has the token: found there, then cached.
        let hash = token_hash("in-store");
        state
            .store
            .read_now(|c| {
                c.execute(
                    "INSERT INTO tokens VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![hash.as_slice(), 9, WALLET, live.expires_ns],
                )
            })
            .expect("token stored");
        let missed = TokenLookup { hash, cached: None };
        assert!(missed.cached_valid().is_none());
        assert_eq!(
            auth_of(&state, request_parts("in-store", Some(missed))).await,
            Ok((9, WALLET))
        );
        assert!(state.tokens.get(&hash).is_some(), "cached after the store");
        crate::server::stop_pipeline(&state).await.expect("stops");
    }

    /// Through the real edge middleware, rate limit on: it leaves its lookup for the
    /// extractor (the route sees it), a cached token authenticates, an expired cached
    /// token is a 401 like a made-up one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_edge_leaves_its_lookup_and_an_expired_cached_token_is_a_401() {
        use axum::Extension;
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let tmp = tempfile::tempdir().expect("tempdir");
        let state = started(tmp.path()).await;
        assert!(state.rate.enabled());
        let now = crate::model::now_ns();
        let info = |expires_ns| TokenInfo {
            account: 5,
            scopes: ORDERS_READ,
            expires_ns,
        };
        state
            .tokens
            .put(token_hash("fresh"), info(now + 3_600_000_000_000));
        state.tokens.put(token_hash("stale"), info(now - 1));
        let app = axum::Router::new()
            .route(
                "/probe",
                axum::routing::get(
                    |lookup: Option<Extension<TokenLookup>>, auth: Auth| async move {
                        assert!(lookup.is_some(), "the edge left its lookup");
                        auth.account.0.to_string()
                    },
                ),
            )
            .with_state(state.clone())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::middleware::edge,
            ));
        let call = |token: &str| {
            let request = Request::get("/probe")
                .header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("a request");
            app.clone().oneshot(request)
        };
        let ok = call("fresh").await.expect("infallible");
        assert_eq!(ok.status(), StatusCode::OK);
        let body = axum::body::to_bytes(ok.into_body(), 64)
            .await
            .expect("body");
        assert_eq!(&body[..], b"5");
        for token in ["stale", "made-up"] {
            let res = call(token).await.expect("infallible");
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{token}");
        }
        crate::server::stop_pipeline(&state).await.expect("stops");
    }

    /// A token the cache does not hold, when the store cannot be read (here its tokens table
    /// is gone, any SQLite error): a 503, not a 401 that has the client throw a good token
    /// away. A token the cache holds still authenticates; what a stopped or damaged store
    /// says is told, in words with no SQLite in them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_lookup_the_store_cannot_answer_is_a_503_not_a_401() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = started(tmp.path()).await;
        let live = TokenInfo {
            account: 3,
            scopes: ORDERS,
            expires_ns: crate::model::now_ns() + 3_600_000_000_000,
        };
        state.tokens.put(token_hash("cached"), live);
        state
            .store
            .read_now(|c| c.execute_batch("DROP TABLE tokens"))
            .expect("tokens table dropped");
        assert!(matches!(
            verify_token(&state, "not-cached"),
            Err(TokenError::Unchecked(_))
        ));
        assert_eq!(
            auth_of(&state, request_parts("not-cached", None)).await,
            Err(StatusCode::SERVICE_UNAVAILABLE)
        );
        let missed = TokenLookup::find(&state, "not-cached");
        assert_eq!(
            auth_of(&state, request_parts("not-cached", Some(missed))).await,
            Err(StatusCode::SERVICE_UNAVAILABLE),
            "with the edge's lookup"
        );
        assert_eq!(
            auth_of(&state, request_parts("cached", None)).await,
            Ok((3, ORDERS))
        );
        assert_eq!(
            verify_token(&state, "not-cached")
                .map_err(feed::AuthRefusal::from)
                .err(),
            Some(feed::AuthRefusal::Unavailable),
            "what the WebSocket's authenticator answers"
        );
        crate::server::stop_pipeline(&state).await.expect("stops");

        let refused = |why: &str| {
            ApiError::from(TokenError::Unchecked(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(why.into()),
            )))
            .0
        };
        for (why, says) in [
            (crate::store::STORE_DAMAGED, "damaged"),
            (crate::store::STORE_FAILED, "stopped"),
            ("disk I/O error", "did not answer"),
        ] {
            let p = refused(why);
            assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE, "{why}");
            assert_eq!(p.code, "SERVICE_UNAVAILABLE", "{why}");
            assert!(p.detail.contains(says), "{why}: {}", p.detail);
            assert!(!p.detail.contains("I/O"), "{}", p.detail);
        }
        let p = ApiError::from(TokenError::Invalid).0;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn costs_argon2_refuses_are_errors() {
        assert!(ClientSecrets::new(4, 1, 64).is_err());
        assert!(ClientSecrets::new(64, 0, 64).is_err());
    }
}
