//! A small REST client of the public API, over loopback HTTP.
//!
//! The simulated traders use the same endpoints a visitor's bot would: register, token,
//! deposit, place, cancel, list. Nothing here reaches into the server's internals, so the demo
//! also exercises the real request path (auth, validation, durability, matching).

use std::sync::Arc;

use parking_lot::RwLock;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// Credentials of a registered account, as `POST /v1/users` returns them.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub user_id: String,
    pub client_id: String,
    pub client_secret: String,
}

/// A pair as listed by `GET /v1/pairs` (the fields the simulator needs).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairInfo {
    pub pair: String,
    pub base: String,
    pub quote: String,
    pub price_decimals: u8,
    pub amount_decimals: u8,
    pub min_amount: String,
    pub status: String,
}

/// A currency as listed by `GET /v1/currencies`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrencyInfo {
    pub currency: String,
    pub minor_amount_decimals: u8,
}

/// The part of an Order the simulator reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub id: String,
    pub side: String,
    pub price: Option<String>,
    pub status: String,
}

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

#[derive(Deserialize)]
struct Problem {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Why a call failed: the server said no (with its machine code), or the call never completed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("HTTP {status}: {code}")]
    Status { status: u16, code: String },
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
}

impl CallError {
    /// The problem's `code`, or `""` for transport errors.
    pub fn code(&self) -> &str {
        match self {
            CallError::Status { code, .. } => code,
            CallError::Transport(_) => "",
        }
    }
}

/// One account's view of the API. Cheap to clone (shared connection pool and token).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    auth: Arc<RwLock<Option<(Credentials, String)>>>,
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8080`), not logged in.
    pub fn new(base: &str) -> Client {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        Client {
            http,
            base: base.trim_end_matches('/').into(),
            auth: Arc::new(RwLock::new(None)),
        }
    }

    /// The same connection pool, logged out (for another account).
    pub fn another(&self) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            auth: Arc::new(RwLock::new(None)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn check(res: reqwest::Response) -> Result<reqwest::Response, CallError> {
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let body = res.bytes().await.unwrap_or_default();
        let code = serde_json::from_slice::<Problem>(&body)
            .ok()
            .and_then(|p| p.code.or(p.error))
            .unwrap_or_default();
        Err(CallError::Status { status, code })
    }

    /// `POST /v1/users`.
    pub async fn register(&self, name: &str) -> Result<Credentials, CallError> {
        let res = self
            .http
            .post(self.url("/v1/users"))
            .json(&json!({ "name": name }))
            .send()
            .await?;
        Ok(Self::check(res).await?.json().await?)
    }

    /// `POST /v1/oauth2/token` with the client credentials; keeps the token for later calls.
    pub async fn login(&self, creds: &Credentials) -> Result<(), CallError> {
        let res = self
            .http
            .post(self.url("/v1/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={}&client_secret={}",
                creds.client_id, creds.client_secret
            ))
            .send()
            .await?;
        let token: Token = Self::check(res).await?.json().await?;
        *self.auth.write() = Some((creds.clone(), token.access_token));
        Ok(())
    }

    fn token(&self) -> String {
        self.auth
            .read()
            .as_ref()
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    }

    /// Sends an authenticated request, logging in again once if the token has expired.
    async fn authed(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let res = make(&self.http).bearer_auth(self.token()).send().await?;
        if res.status() == StatusCode::UNAUTHORIZED {
            let creds = self.auth.read().as_ref().map(|(c, _)| c.clone());
            if let Some(creds) = creds {
                self.login(&creds).await?;
                let res = make(&self.http).bearer_auth(self.token()).send().await?;
                return Self::check(res).await;
            }
        }
        Self::check(res).await
    }

    /// `GET /v1/pairs`.
    pub async fn pairs(&self) -> Result<Vec<PairInfo>, CallError> {
        let res = self.http.get(self.url("/v1/pairs")).send().await?;
        Ok(Self::check(res).await?.json().await?)
    }

    /// `GET /v1/currencies`.
    pub async fn currencies(&self) -> Result<Vec<CurrencyInfo>, CallError> {
        let res = self.http.get(self.url("/v1/currencies")).send().await?;
        Ok(Self::check(res).await?.json().await?)
    }

    /// `POST /v1/wallet/deposits`; returns the request's status (`completed` with auto-approval).
    pub async fn deposit(
        &self,
        currency: &str,
        amount: &str,
        external_id: &str,
    ) -> Result<String, CallError> {
        let body = json!({ "currency": currency, "amount": amount, "externalId": external_id });
        let url = self.url("/v1/wallet/deposits");
        let res = self.authed(|h| h.post(&url).json(&body)).await?;
        let v: serde_json::Value = res.json().await?;
        Ok(v["status"].as_str().unwrap_or_default().to_string())
    }

    /// `POST /v1/orders` with a prepared body.
    pub async fn place(&self, order: &serde_json::Value) -> Result<OrderView, CallError> {
        let url = self.url("/v1/orders");
        Ok(self
            .authed(|h| h.post(&url).json(order))
            .await?
            .json()
            .await?)
    }

    /// `DELETE /v1/orders/{id}`.
    pub async fn cancel(&self, id: &str) -> Result<OrderView, CallError> {
        let url = self.url(&format!("/v1/orders/{id}"));
        Ok(self.authed(|h| h.delete(&url)).await?.json().await?)
    }

    /// `GET /v1/orders?pair=..&status=open`: the account's open orders on a pair.
    pub async fn open_orders(&self, pair: &str) -> Result<Vec<OrderView>, CallError> {
        let url = self.url(&format!("/v1/orders?pair={pair}&status=open&limit=1000"));
        let page: Page<OrderView> = self.authed(|h| h.get(&url)).await?.json().await?;
        Ok(page.data)
    }
}
