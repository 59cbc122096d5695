//! Registration and the OAuth2 client-credentials token endpoint (RFC 6749 section 4.4).

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use engine::{AccountId, AccountRegistration, Command, Event};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self, ADMIN, USER_SCOPES};
use crate::config::Registration;
use crate::error::{ApiError, ApiResult};
use crate::extract::AppJson;
use crate::model::now_ns;
use crate::state::AppState;

#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub name: String,
}

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub user_id: String,
    pub client_id: String,
    pub client_secret: String,
}

/// Creates a user and a client holding `scopes`; returns the secret once.
///
/// The account is journaled ([`Command::RegisterAccount`], with the secret's argon2 hash):
/// this returns only once the command is durable and the history store holds the user and
/// the client, and a history store rebuilt from the journal has them again. `account`
/// re-registers an existing account (new credentials for the same client id).
pub async fn create_user(
    state: &AppState,
    name: &str,
    client_id: Option<&str>,
    secret: Option<&str>,
    scopes: u8,
    account: Option<u32>,
) -> ApiResult<UserCreated> {
    // A stopped history store may have stopped before the start read the highest account
    // id from it (`listener::on_recovered`): a new id could then be an existing account's.
    // Its accounts could not sign in anyway until the restart rebuilds it. Refused before
    // the secret is hashed, which would be wasted.
    if account.is_none() && state.model.store_failed() {
        return Err(ApiError::unavailable(
            "registration is unavailable until the server restarts (the history store has stopped)",
        ));
    }
    let client_id = client_id
        .map(str::to_string)
        .unwrap_or_else(auth::random_client_id);
    let secret = secret
        .map(str::to_string)
        .unwrap_or_else(auth::random_token);
    let hash = {
        let secret = secret.clone();
        auth::argon2(state, move |secrets| secrets.hash(&secret)).await?
    };
    let account = match account {
        Some(a) => a,
        None => u32::try_from(state.next_account_id())
            .map_err(|_| ApiError::unavailable("no more accounts can be registered"))?,
    };
    let committed = state
        .submit(Command::RegisterAccount(Box::new(AccountRegistration {
            account: AccountId(account),
            name: name.to_string(),
            client_id: client_id.clone(),
            secret_hash: hash,
            scopes,
        })))
        .await?;
    if !matches!(
        committed.events.first(),
        Some(Event::AccountRegistered { .. })
    ) {
        return Err(ApiError::unavailable("no more accounts can be registered"));
    }
    Ok(UserCreated {
        user_id: account.to_string(),
        client_id,
        client_secret: secret,
    })
}

/// Registers an account.
#[utoipa::path(post, path = "/v1/users", tag = "auth", request_body = UserCreate,
    responses((status = 201, body = UserCreated), (status = 400), (status = 401), (status = 403)))]
pub async fn users_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    lookup: Option<Extension<auth::TokenLookup>>,
    // Read after the admin check: a caller who may not register gets its 401 or 403
    // whatever it sent.
    body: Result<AppJson<UserCreate>, ApiError>,
) -> ApiResult<(StatusCode, Json<UserCreated>)> {
    if state.config.registration == Registration::Admin {
        let token = auth::bearer_in(&headers)
            .ok_or_else(|| ApiError::unauthorized("registration is restricted to admins"))?;
        let info = auth::verify_request(&state, lookup.as_ref().map(|l| &l.0), token)?;
        if info.scopes & ADMIN == 0 {
            return Err(ApiError::forbidden("registration is restricted to admins"));
        }
    }
    let AppJson(body) = body?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "name must be 1 to 100 characters, none of them a control character",
        ));
    }
    let created = create_user(&state, name, None, None, USER_SCOPES, None).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"bourse\""),
        );
    }
    r
}

#[derive(Serialize, ToSchema, Debug)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

/// Issues a bearer token for client credentials.
#[utoipa::path(post, path = "/v1/oauth2/token", tag = "auth",
    request_body(content_type = "application/x-www-form-urlencoded", content = String),
    responses((status = 200, body = TokenResponse), (status = 400), (status = 401)))]
pub async fn oauth_token(State(state): State<AppState>, req: Request) -> Response {
    let form_ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| rest.trim().to_string())
        });
    let bytes = match crate::extract::body_bytes(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if !form_ct {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed form body",
        );
    };
    let mut fields: HashMap<String, String> = HashMap::new();
    for (k, v) in form {
        if fields.insert(k, v).is_some() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "repeated parameter",
            );
        }
    }
    match fields.get("grant_type").map(String::as_str) {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
    }
    // RFC 6749 section 2.3: a client uses one authentication method per request.
    if basic.is_some() && fields.contains_key("client_secret") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "use HTTP Basic or client_secret in the form, not both",
        );
    }
    let creds = match basic {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            }),
        None => match (fields.get("client_id"), fields.get("client_secret")) {
            (Some(a), Some(b)) => Some((a.clone(), b.clone())),
            _ => None,
        },
    };
    let Some((client_id, secret)) = creds else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let found = state.store.read(|c| {
        c.query_row(
            "SELECT user_id, secret_hash, scopes FROM clients WHERE client_id = ?1",
            [&client_id],
            |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u8>(2)?,
                ))
            },
        )
        .optional()
    });
    // A store that cannot be read is the server's trouble, not the client's credentials:
    // it was answered `invalid_client`, and clients took their secret for wrong.
    let found = match found {
        Ok(found) => found,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    // One argon2 verification whether or not the client exists (against a dummy hash when
    // it does not), so the answer's timing does not tell which client ids exist.
    let (user, phc, client_scopes) = match found {
        Some((user, phc, scopes)) => (user, Some(phc), scopes),
        None => (0, None, 0),
    };
    let ok = match auth::argon2(&state, move |secrets| {
        secrets.verify(&secret, phc.as_deref())
    })
    .await
    {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    if !ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let scopes = match fields
        .get("scope")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => client_scopes & !ADMIN,
        Some(s) => match auth::parse_scopes(s) {
            Some(bits) if bits & !client_scopes == 0 && bits != 0 => bits,
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "unknown scope or a scope the client does not hold",
                );
            }
        },
    };
    let token = auth::random_token();
    let hash = auth::token_hash(&token);
    let ttl = state.config.token_ttl_secs;
    let expires_ns = now_ns().saturating_add((ttl as i64).saturating_mul(1_000_000_000));
    // Expired tokens go as new ones come (through the expiry index, a few rows at a time):
    // without it every token ever issued stayed in the table.
    let stored = state.store.read_now(|c| {
        c.execute(
            "INSERT INTO tokens VALUES (?1, ?2, ?3, ?4)",
            params![hash.as_slice(), user, scopes, expires_ns],
        )?;
        c.execute("DELETE FROM tokens WHERE expires_ns <= ?1", [now_ns()])
    });
    // A damaged store is a 503 that says so ([`crate::store::Store::read_now`]).
    if let Err(e) = stored {
        return ApiError::from(e).into_response();
    }
    state.tokens.put(
        hash,
        auth::TokenInfo {
            account: user,
            scopes,
            expires_ns,
        },
    );
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: auth::scopes_str(scopes),
        }),
    )
        .into_response()
}
