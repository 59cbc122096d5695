//! Shared helpers for the black-box tests: the real server in-process on 127.0.0.1:0 with
//! a temporary data directory, and a small JSON-over-HTTP client.

use std::path::{Path, PathBuf};

pub mod ws;

pub use reqwest::StatusCode;
pub use serde_json::{Value, json};

pub const ADMIN_ID: &str = "test-admin";
pub const ADMIN_SECRET: &str = "test-admin-secret";

/// Settings for tests: cheap argon2, no rate limit, admin credentials known.
pub fn test_config(dir: &Path) -> api::Config {
    api::Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        rate_limit_per_sec: 0,
        admin_client_id: Some(ADMIN_ID.into()),
        admin_client_secret: Some(ADMIN_SECRET.into()),
        ..Default::default()
    }
}

/// A running server and a client for it.
#[derive(Debug)]
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    running: Option<api::server::Running>,
    _tmp: Option<tempfile::TempDir>,
}

/// A registered account with a token holding every user scope.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub client_id: String,
    pub secret: String,
    pub token: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_with(test_config(&dir)).await;
        s._tmp = Some(tmp);
        s
    }

    pub async fn start_with(config: api::Config) -> TestServer {
        let dir = config.data_dir.clone();
        let running = api::server::spawn(config).await.expect("server starts");
        TestServer {
            base: format!("http://{}", running.addr),
            // No pooled keep-alive: the bad-input battery makes the server close connections
            // (413, malformed requests), and reusing one it just closed races into a broken pipe.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            dir,
            running: Some(running),
            _tmp: None,
        }
    }

    /// Stops gracefully and starts again on the same data directory.
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// Stops gracefully, runs `between` on the data directory, starts again on it.
    pub async fn restart_with(mut self, between: impl FnOnce(&Path)) -> TestServer {
        let tmp = self._tmp.take();
        let dir = self.dir.clone();
        self.running
            .take()
            .expect("running")
            .stop()
            .await
            .expect("stops");
        between(&dir);
        let mut s = Self::start_with(test_config(&dir)).await;
        s._tmp = tmp;
        s
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("stops");
        }
    }

    /// Stops and returns how the stop went (a server whose pipeline failed reports it).
    pub async fn stop_result(mut self) -> Result<(), api::server_error::ServerError> {
        match self.running.take() {
            Some(r) => r.stop().await,
            None => Ok(()),
        }
    }

    /// The running server's state (its feed, to start the WebSocket drain on its own).
    pub fn state(&self) -> &api::AppState {
        &self.running.as_ref().expect("running").state
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.http.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut r = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn patch(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut r = self.http.patch(self.url(path)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.http.delete(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    /// Raw request with a body and content type.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.url(path)).body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        self.send(r).await
    }

    pub async fn token(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.send(self.http.post(self.url("/v1/oauth2/token")).form(&form))
            .await
    }

    pub async fn admin_token(&self) -> String {
        let (s, v) = self
            .token(
                ADMIN_ID,
                ADMIN_SECRET,
                Some("admin orders wallet transactions:read"),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().expect("token").to_string()
    }

    pub async fn register(&self, name: &str) -> User {
        let (s, v) = self.post("/v1/users", None, &json!({ "name": name })).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let client_id = v["clientId"].as_str().expect("clientId").to_string();
        let secret = v["clientSecret"].as_str().expect("secret").to_string();
        let (s, t) = self.token(&client_id, &secret, None).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        User {
            id: v["userId"].as_str().expect("userId").to_string(),
            client_id,
            secret,
            token: t["access_token"].as_str().expect("token").to_string(),
        }
    }

    /// Credits `amount` of `currency` to `user` through the back office.
    pub async fn fund(&self, admin: &str, user: &User, currency: &str, amount: &str) {
        let ext = format!("fund-{}-{}-{}", user.id, currency, rand_suffix());
        let (s, v) = self
            .post(
                "/v1/admin/deposits",
                Some(admin),
                &json!({"userId": user.id, "currency": currency, "amount": amount, "externalId": ext}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        // A completed credit's 201 is what the user then reads.
        self.assert_request_reads_back(user, &v).await;
    }

    pub async fn order(&self, user: &User, body: Value) -> (StatusCode, Value) {
        self.post("/v1/orders", Some(&user.token), &body).await
    }

    pub async fn limit(
        &self,
        user: &User,
        pair: &str,
        side: &str,
        amount: &str,
        price: &str,
        client_id: &str,
    ) -> Value {
        let (s, v) = self
            .order(
                user,
                json!({"pair": pair, "side": side, "type": "limit", "amount": amount, "price": price, "clientId": client_id}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// The audit, asserted ok.
    pub async fn assert_audit_ok(&self, admin: &str) {
        let (s, v) = self.get("/v1/admin/audit", Some(admin)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["ok"], json!(true), "{v}");
    }

    /// Every currency: the account's transactions sum to its wallet total.
    pub async fn assert_transactions_match_wallet(&self, user: &User) {
        let (_, w) = self.get("/v1/wallet", Some(&user.token)).await;
        for b in w["balances"].as_array().expect("balances") {
            let cur = b["currency"].as_str().expect("currency");
            let (_, txs) = self
                .get(
                    &format!("/v1/transactions?currency={cur}&limit=1000"),
                    Some(&user.token),
                )
                .await;
            let sum: i128 = txs["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|t| minor(t["delta"]["amount"].as_str().expect("amount")))
                .sum();
            assert_eq!(
                sum,
                minor(b["total"].as_str().expect("total")),
                "{cur}: transactions {txs} vs wallet {b}"
            );
        }
    }
}

/// A decimal string as an integer of its own minor units (digits without the point).
pub fn minor(s: &str) -> i128 {
    let neg = s.starts_with('-');
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let v: i128 = digits.parse().expect("digits");
    if neg { -v } else { v }
}

/// Calls `f` again while it answers 409 (a request with the same idempotency key still in
/// flight), for up to five seconds; the last answer.
pub async fn retry_while_conflict<F, Fut>(mut f: F) -> (StatusCode, Value)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, v) = f().await;
        if status != StatusCode::CONFLICT || std::time::Instant::now() > deadline {
            return (status, v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl TestServer {
    /// Posts a form to the token endpoint.
    pub async fn send_form(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        self.send(self.http.post(self.url("/v1/oauth2/token")).form(form))
            .await
    }

    /// A GET returning text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let res = self.http.get(self.url(path)).send().await.expect("request");
        let st = res.status();
        (st, res.text().await.expect("body"))
    }

    /// Writes `POST path` with a JSON body on a new connection and closes it at once, without
    /// reading the reply: a client that hangs up mid-request. The server drops the handler
    /// when it sees the connection close, which is before the reply unless the command was
    /// processed faster than the close arrived.
    pub async fn post_and_hang_up(&self, path: &str, token: &str, body: &Value) {
        use tokio::io::AsyncWriteExt;
        let addr = self.base.trim_start_matches("http://");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        drop(tcp);
    }
}

/// Requests that must answer one status, returning the body: the status is asserted with
/// the body in the message.
impl TestServer {
    /// A GET that must answer 200 OK.
    pub async fn get_ok(&self, path: &str, token: Option<&str>) -> Value {
        let (s, v) = self.get(path, token).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    /// Everything an account can read of itself (wallet, orders, fills, deposit and
    /// withdrawal requests, transactions), each read a 200: two calls compare equal when
    /// nothing of the account changed in between.
    pub async fn account_state(&self, u: &User) -> Vec<Value> {
        let mut out = Vec::new();
        for path in [
            "/v1/wallet",
            "/v1/orders?limit=1000",
            "/v1/fills?limit=1000",
            "/v1/wallet/deposits?limit=1000",
            "/v1/wallet/withdrawals?limit=1000",
            "/v1/transactions?limit=1000",
        ] {
            out.push(self.get_ok(path, Some(&u.token)).await);
        }
        out
    }

    /// A POST that must answer `status`.
    pub async fn post_expect(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
        status: StatusCode,
    ) -> Value {
        let (s, v) = self.post(path, token, body).await;
        assert_eq!(s, status, "POST {path} {body}: {v}");
        v
    }

    /// The user's own deposit request, created (201).
    pub async fn request_deposit(
        &self,
        user: &User,
        currency: &str,
        amount: &str,
        external_id: &str,
    ) -> Value {
        let body = json!({"currency": currency, "amount": amount, "externalId": external_id});
        let token = Some(user.token.as_str());
        let created = self
            .post_expect("/v1/wallet/deposits", token, &body, StatusCode::CREATED)
            .await;
        self.assert_request_reads_back(user, &created).await;
        created
    }

    /// The reply to a new request (built from the engine's outcome) is what the history
    /// store then holds.
    pub async fn assert_request_reads_back(&self, user: &User, created: &Value) {
        let id = created["id"].as_str().expect("request id");
        let stored = self
            .get_ok(&format!("/v1/wallet/requests/{id}"), Some(&user.token))
            .await;
        assert_eq!(&stored, created, "the 201 and the stored request differ");
    }

    /// The user's own withdrawal request, created (201).
    pub async fn request_withdrawal(
        &self,
        user: &User,
        currency: &str,
        amount: &str,
        external_id: &str,
        destination: &str,
    ) -> Value {
        let body = json!({"currency": currency, "amount": amount, "externalId": external_id,
                          "destination": destination});
        let token = Some(user.token.as_str());
        let created = self
            .post_expect("/v1/wallet/withdrawals", token, &body, StatusCode::CREATED)
            .await;
        self.assert_request_reads_back(user, &created).await;
        created
    }

    /// The back office approves a pending request (200); the request.
    pub async fn approve(&self, admin: &str, id: &str) -> Value {
        let path = format!("/v1/admin/requests/{id}/approve");
        self.post_expect(&path, Some(admin), &json!({}), StatusCode::OK)
            .await
    }

    /// The back office rejects a pending request (200); the request.
    pub async fn reject(&self, admin: &str, id: &str, reason: &str) -> Value {
        let path = format!("/v1/admin/requests/{id}/reject");
        self.post_expect(
            &path,
            Some(admin),
            &json!({ "reason": reason }),
            StatusCode::OK,
        )
        .await
    }

    /// The user cancels one of its orders (200); the order.
    pub async fn cancel(&self, user: &User, id: &str) -> Value {
        let (s, v) = self
            .delete(&format!("/v1/orders/{id}"), Some(&user.token))
            .await;
        assert_eq!(s, StatusCode::OK, "cancel {id}: {v}");
        v
    }

    /// The back office sets a pair's status (200); the pair.
    pub async fn set_pair_status(&self, admin: &str, pair: &str, status: &str) -> Value {
        let path = format!("/v1/admin/pairs/{pair}");
        let (s, v) = self
            .patch(&path, Some(admin), &json!({ "status": status }))
            .await;
        assert_eq!(s, StatusCode::OK, "{path} {status}: {v}");
        v
    }
}

/// An object's `id` (a string).
pub fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_else(|| panic!("id in {v}"))
}

/// A JSON object's member names.
pub fn keys_of(v: &Value) -> std::collections::BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}
