//! Start-up (recovery, default markets, admin bootstrap), serving and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engine::pipeline::{OutputListener, Pipeline, PipelineConfig};
use engine::{Command, CurrencySpec, Event};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::{self, ALL_SCOPES};
use crate::config::Config;
use crate::listener::HistoryListener;
use crate::server_error::ServerError;
use crate::state::{AppState, ReadModel, Shared};
use crate::store::{self, Store};
use crate::store_damage;

/// How much longer than a connection's close grace the shutdown waits for the WebSocket
/// connections to end (their tasks need a moment to be scheduled after the grace).
const WS_CLOSE_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// Recovers the engine, opens the store and prepares the state (markets and admin included).
///
/// A history store found damaged during the start itself (the replay's writes or the admin
/// bootstrap's reads reach a bad page that opening it did not) leaves the rebuild marker
/// ([`store_damage`]) and fails that start, which is then made once more: the second sets
/// the store aside and rebuilds it from the journal. Such a store used to fail every start
/// ("history store: the history store has stopped") until its file was removed by hand.
pub async fn start(config: Config) -> Result<AppState, ServerError> {
    let marker = store_damage::marker_path(&store::db_path(&config.data_dir));
    // Only a marker this attempt left calls for another: one that was there before is
    // taken by this attempt's store opening, or this attempt failed before that for a
    // reason a second one would meet again.
    let marked_before = marker.exists();
    match start_once(config.clone()).await {
        Err(e) if !marked_before && marker.exists() => {
            tracing::warn!(
                error = %e,
                "the history store was found damaged while starting: starting again, which \
                 sets it aside and rebuilds it from the journal"
            );
            start_once(config).await
        }
        other => other,
    }
}

async fn start_once(config: Config) -> Result<AppState, ServerError> {
    config.validate()?;
    let (memory, iterations) = (config.argon2_memory_kib, config.argon2_iterations);
    let pending = config.argon2_max_pending as usize;
    let secrets =
        tokio::task::spawn_blocking(move || auth::ClientSecrets::new(memory, iterations, pending))
            .await??;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let data_dir_lock = lock_data_dir(&config.data_dir)?;
    let db = store::db_path(&config.data_dir);
    let model = Arc::new(ReadModel::default());
    let feed = feed::Feed::open(config.ws.feed_config()?, &config.data_dir)?;
    let publisher_feed = feed.clone();
    let listening_feed = feed.clone();
    let announcing_feed = feed.clone();
    let publisher = crate::state::PrivatePublisher {
        listening: Arc::new(move || listening_feed.connections() > 0),
        publish: Arc::new(move |account, channel, data| {
            if let Some(ch) = feed::PrivateChannel::parse(channel) {
                publisher_feed.publish_private(account, ch, data);
            }
        }),
        announce: Arc::new(move || announcing_feed.wake_private()),
    };
    let check = config.history_check_on_start;
    let (history, model) = open_history(&db, model, publisher, check)?;
    // The journal replays into the history store whatever it has not applied: all of it
    // when the store is new or was lost, which takes a while on a large journal.
    tracing::info!(
        history_applied_seq = history.applied_seq(),
        market_data_applied_seq = feed.applied_seq(),
        "recovering: the journal replays what the engine's snapshot, the history store and \
         the market data store have not applied"
    );
    let mut pcfg = PipelineConfig::new(&config.data_dir);
    pcfg.durability = config.durability.into();
    pcfg.ring_capacity = config.ring_capacity;
    let listeners: Vec<Box<dyn OutputListener>> = vec![Box::new(history), feed.listener()];
    // What the recovered engine holds of the outcome-deciding settings the start may have
    // to journal (the bound on resting orders, the matching rules).
    let (pipeline, (held_bound, held_rules)) = tokio::task::spawn_blocking(move || {
        let p = Pipeline::start(pcfg, Box::new(listeners))?;
        let held = p.query(|e| (e.limits().max_orders_per_book, e.rules_version()))?;
        Ok::<_, ServerError>((p, held))
    })
    .await??;
    // What recovery did, for the operator: the snapshot it started from, the records it
    // replayed, and above all what it repaired or passed over (a torn tail cut after a
    // crash, snapshots it could not use), which used to be known to the pipeline only.
    let report = pipeline.recovery_report();
    tracing::info!(last_seq = pipeline.last_seq(), report = %report, "engine recovered");
    if report.truncated_file.is_some() || !report.snapshots_rejected.is_empty() {
        tracing::warn!(
            truncated_bytes = report.truncated_bytes,
            snapshots_skipped = report.snapshots_rejected.len(),
            "recovery repaired the data dir: a torn journal tail (never acknowledged) was cut \
             or a snapshot was skipped; see the report above"
        );
    }
    let rate =
        crate::rate_limit::RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst);
    let state = Arc::new(Shared {
        pipeline: RwLock::new(Some(pipeline)),
        model: model.clone(),
        store: Store::open(
            &db,
            4,
            std::time::Duration::from_millis(config.history_query_timeout_ms),
            model.clone(),
        )?,
        tokens: Default::default(),
        secrets,
        client_ids: Arc::default(),
        external_ids: Arc::default(),
        request_lock: tokio::sync::Mutex::new(()),
        metrics: Default::default(),
        rate,
        feed_router: Mutex::new(Some((feed.router(), feed::openapi()))),
        feed: feed.clone(),
        shutting_down: AtomicBool::new(false),
        data_dir_lock: Mutex::new(Some(data_dir_lock)),
        config,
    });
    let weak = Arc::downgrade(&state);
    feed.set_authenticator(Arc::new(move |token: &str| {
        // A server that is gone cannot check the token, which may be good.
        let state = weak.upgrade().ok_or(feed::AuthRefusal::Unavailable)?;
        Ok(auth::verify_token(&state, token)?.feed_grant())
    }));
    // A WebSocket `auth` spends its address's budget, as a call of the token endpoint does.
    let weak = Arc::downgrade(&state);
    feed.set_auth_gate(Arc::new(move |ip| match weak.upgrade() {
        Some(state) => state.rate.check(crate::rate_limit::RateKey::peer(ip)),
        None => Ok(()),
    }));
    if let Err(e) = prepare(&state, held_bound, held_rules).await {
        // The pipeline stops before another start may take the data dir.
        if let Err(stop) = stop_pipeline(&state).await {
            tracing::warn!(error = %stop, "stopping the pipeline after a failed start");
        }
        return Err(e);
    }
    Ok(state)
}

/// The start's journaled set-up: the settings' markets, the outcome-deciding settings and
/// the admin.
async fn prepare(state: &AppState, held_bound: usize, held_rules: u32) -> Result<(), ServerError> {
    bootstrap_markets(state).await?;
    // The bound on resting orders and the matching rules decide outcomes, so they change
    // only through the journal, never by a setting read at start: a replay meets every
    // order under the bound and the rules its live run met. The configured bound is
    // journaled when the engine holds another; the rules move to the newest this build
    // knows (every data dir starts at the genesis rules, a fresh one included).
    let max = state.config.max_orders_per_book;
    if held_bound != max as usize {
        journal_at_start(state, Command::SetMaxOrdersPerBook { max }, |e| {
            matches!(e, Event::MaxOrdersPerBookSet { .. })
        })
        .await?;
        tracing::info!(from = held_bound, to = max, "max_orders_per_book changed");
    }
    let version = engine::RULES_VERSION_CURRENT;
    if held_rules < version {
        journal_at_start(state, Command::SetRulesVersion { version }, |e| {
            matches!(e, Event::RulesVersionSet { .. })
        })
        .await?;
        tracing::info!(
            from = held_rules,
            to = version,
            "matching rules version changed"
        );
    }
    bootstrap_admin(state).await?;
    Ok(())
}

/// Opens the history store, or, when it is damaged, sets its files aside
/// (`history.sqlite.damaged-<unix seconds>`, with its `-wal` and `-shm`; [`feed::damaged_store::set_aside`]
/// keeps only the newest [`feed::damaged_store::SET_ASIDE_KEPT`] copies) and starts a new
/// one, which recovery then fills from the journal: the store holds nothing the journal
/// does not (tokens aside: clients sign in again). Damaged means: the server that ran last
/// found it so and left the rebuild marker ([`feed::damaged_store::take_marker`]), SQLite finds it
/// so on opening (not a database, or corrupt), or, with `check` (the setting
/// `history_check_on_start`), `PRAGMA quick_check` does. The start used to stop at "history
/// store: file is not a database", naming neither the file nor the remedy. Returns the
/// listener and the read model it loaded (a new one after a damaged store, so nothing read
/// from it is kept).
fn open_history(
    db: &std::path::Path,
    model: Arc<ReadModel>,
    publisher: crate::state::PrivatePublisher,
    check: bool,
) -> Result<(HistoryListener, Arc<ReadModel>), ServerError> {
    let named = |source| ServerError::HistoryStore {
        path: db.to_path_buf(),
        source,
    };
    let data_dir = |source| ServerError::DataDir {
        path: db.to_path_buf(),
        source,
    };
    let set_aside = |why: &dyn std::fmt::Display| {
        feed::damaged_store::set_aside_logged(db, "history store", why)
            .map(drop)
            .map_err(data_dir)
    };
    // A store the marker set aside is new: nothing to check.
    let rebuilt = feed::damaged_store::take_marker_logged(db, "history store").map_err(data_dir)?;
    if !rebuilt && check && db.exists() {
        let started = std::time::Instant::now();
        match store_damage::quick_check(db) {
            Ok(None) => tracing::info!(
                file = %db.display(),
                took_ms = started.elapsed().as_millis() as u64,
                "history store checked (PRAGMA quick_check): ok"
            ),
            Ok(Some(problem)) => set_aside(&format!("PRAGMA quick_check: {problem}"))?,
            Err(e) if store::is_damaged(&e) => set_aside(&e)?,
            Err(e) => return Err(named(e)),
        }
    }
    match HistoryListener::open(db, model.clone(), Some(publisher.clone())) {
        Ok(history) => Ok((history, model)),
        Err(e) if store::is_damaged(&e) => {
            set_aside(&e)?;
            let model = Arc::new(ReadModel::default());
            let history =
                HistoryListener::open(db, model.clone(), Some(publisher)).map_err(named)?;
            Ok((history, model))
        }
        Err(e) => Err(named(e)),
    }
}

/// The name of the lock file in the data dir.
pub const LOCK_FILE: &str = "lock";

/// Takes the data dir for this process: an exclusive lock on its `lock` file, held until the
/// pipeline has stopped ([`stop_pipeline`]) or the process ends (the kernel releases it,
/// `kill -9` included). A second server on the same dir would append to the same journal
/// under the same sequence numbers, and the next start would refuse the journal as corrupt.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        Err(source) => return Err(ServerError::DataDir { path, source }),
    };
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::DataDirInUse {
            dir: dir.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(ServerError::DataDir { path, source }),
    }
}

async fn bootstrap_markets(state: &AppState) -> Result<(), ServerError> {
    if !state.model.markets.read().currencies().is_empty() {
        return Ok(());
    }
    for command in market_commands(&state.config)? {
        let what = match &command {
            Command::AddCurrency(c) => format!("currency {}", c.code),
            _ => "pair".to_string(),
        };
        let done = state
            .submit(command)
            .await
            .map_err(|e| ServerError::Setup {
                what: format!("adding {what}"),
                reason: e.0.detail,
            })?;
        if let Some(Event::ConfigRefused { reason }) = done.events.first() {
            return Err(ServerError::Setup {
                what,
                reason: format!("refused: {reason:?}"),
            });
        }
    }
    Ok(())
}

/// The commands creating the settings' markets, every one checked first on a scratch engine:
/// one the engine would refuse stops the start before anything is journaled, so the data dir
/// stays empty and the next start, with the file fixed, creates them all (a data dir holding
/// some currencies counts as set up, and would never get the rest).
fn market_commands(config: &Config) -> Result<Vec<Command>, ServerError> {
    let mut scratch = engine::Engine::new(engine::EngineLimits {
        reserve_orders_per_book: 0,
        ..Default::default()
    });
    let mut commands = Vec::new();
    let mut check = |scratch: &mut engine::Engine, command: Command, what: String| {
        let mut events = Vec::new();
        scratch.apply(&command, &mut events);
        if let Some(Event::ConfigRefused { reason }) = events.first() {
            return Err(ServerError::MarketRefused {
                what,
                reason: format!("refused: {reason:?}"),
            });
        }
        commands.push(command);
        Ok(())
    };
    for c in &config.currencies {
        let command = Command::AddCurrency(Box::new(CurrencySpec {
            code: c.code.clone(),
            display_name: c.display_name.clone(),
            decimals: c.decimals,
        }));
        check(&mut scratch, command, format!("currency {}", c.code))?;
    }
    let markets = engine::markets::Markets::from_engine(&scratch);
    for p in &config.pairs {
        let what = format!("pair {}_{}", p.base, p.quote);
        let spec = p.spec(&markets).map_err(|e| ServerError::MarketRefused {
            what: what.clone(),
            reason: e.0.detail,
        })?;
        check(&mut scratch, Command::AddPair(spec), what)?;
    }
    Ok(commands)
}

/// Submits a setting command at start and checks that the engine took it (its first event
/// `taken`); a refusal stops the start.
async fn journal_at_start(
    state: &AppState,
    command: Command,
    taken: fn(&Event) -> bool,
) -> Result<(), ServerError> {
    let what = format!("{command:?}");
    let done = state
        .submit(command)
        .await
        .map_err(|e| ServerError::Setup {
            what: what.clone(),
            reason: e.0.detail,
        })?;
    match done.events.first() {
        Some(e) if taken(e) => Ok(()),
        other => Err(ServerError::Setup {
            what,
            reason: format!("refused: {other:?}"),
        }),
    }
}

async fn bootstrap_admin(state: &AppState) -> Result<(), ServerError> {
    let id = state.config.admin_client_id.clone();
    let secret = state.config.admin_client_secret.clone();
    if let (Some(id), Some(secret)) = (id, secret) {
        let existing: Option<(u32, String, u8)> = state.store.read(|c| {
            use rusqlite::OptionalExtension;
            c.query_row(
                "SELECT user_id, secret_hash, scopes FROM clients WHERE client_id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })?;
        let account = match existing {
            Some((user, phc, scopes)) => {
                let (check, st) = (secret.clone(), state.clone());
                let same =
                    tokio::task::spawn_blocking(move || st.secrets.verify(&check, Some(&phc)))
                        .await?;
                if same && scopes == ALL_SCOPES {
                    return Ok(());
                }
                Some(user)
            }
            None => None,
        };
        crate::routes::users::create_user(
            state,
            "admin",
            Some(&id),
            Some(&secret),
            ALL_SCOPES,
            account,
        )
        .await
        .map_err(admin_not_created)?;
        return Ok(());
    }
    let admins: i64 = state.store.read(|c| {
        c.query_row(
            "SELECT COUNT(*) FROM clients WHERE scopes & ?1 != 0",
            [auth::ADMIN],
            |r| r.get(0),
        )
    })?;
    if admins == 0 {
        let created =
            crate::routes::users::create_user(state, "admin", None, None, ALL_SCOPES, None)
                .await
                .map_err(admin_not_created)?;
        println!(
            "bourse: created the admin client (shown once)\n  BOURSE_ADMIN_CLIENT_ID={}\n  BOURSE_ADMIN_CLIENT_SECRET={}",
            created.client_id, created.client_secret
        );
    }
    Ok(())
}

fn admin_not_created(e: crate::error::ApiError) -> ServerError {
    ServerError::Setup {
        what: "creating the admin".into(),
        reason: e.0.detail,
    }
}

/// Serves until `shutdown` resolves, then drains: HTTP requests finish, WebSocket
/// connections are closed with 1001 (Going Away), and the pipeline stops (final snapshot).
/// The drain is bounded ([`serve_with`]).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(state, listener, shutdown, std::future::pending()).await
}

/// [`serve`], with a bound on the drain and a way to cut it short.
///
/// The connections are waited for at most the WebSocket close grace plus a second
/// ([`WS_CLOSE_SLACK`]) from the stop, HTTP and WebSocket alike, and not at all once `hurry`
/// completes (`bourse serve`: a second SIGTERM or Ctrl-C); then the pipeline stops as usual
/// (every accepted command finishes, a final snapshot). Without the bound one client
/// holding a request half sent kept the process up for the whole header or body timeout
/// (30 s by default, the usual grace before a SIGKILL), and a second signal did nothing.
/// A request still running when the wait ends is cut off with its connection; one that
/// reached the engine is finished by the pipeline's stop, so what was acknowledged is
/// durable either way.
pub async fn serve_with(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    hurry: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let app = crate::routes::app(state.clone());
    let st = state.clone();
    let limits = crate::connections::ConnLimits::of(&state.config);
    let (stopped_tx, stopped_rx) = oneshot::channel::<tokio::time::Instant>();
    let refused = state.metrics.refused.clone();
    let serving = crate::connections::serve(listener, app, limits, refused, async move {
        shutdown.await;
        let _ = stopped_tx.send(tokio::time::Instant::now());
        st.shutting_down.store(true, Ordering::Release);
        // Upgraded connections are not requests the HTTP drain waits for: close them now,
        // alongside it.
        st.feed.close_connections();
    });
    // Each connection's close handshake is bounded by its close grace.
    let grace = state.feed.config().close_grace + WS_CLOSE_SLACK;
    let deadline = async move {
        match stopped_rx.await {
            Ok(at) => at + grace,
            // The accept loop ended without a stop (it cannot): no deadline.
            Err(_) => std::future::pending().await,
        }
    };
    let mut deadline = std::pin::pin!(deadline);
    let mut hurry = std::pin::pin!(hurry);
    let mut serving = std::pin::pin!(serving);
    // The drain ends when the connections have, when the grace is over, or in a hurry.
    let mut until: Option<tokio::time::Instant> = None;
    let hurried = loop {
        tokio::select! {
            () = &mut serving => break false,
            at = &mut deadline, if until.is_none() => until = Some(at),
            () = async { tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)).await }, if until.is_some() => {
                tracing::warn!(
                    "HTTP connections still open {grace:?} after the stop; stopping without them"
                );
                break false;
            }
            () = &mut hurry => {
                tracing::warn!("asked again to stop: not waiting for connections any more");
                break true;
            }
        }
    };
    let left = until.map_or(grace, |at| {
        at.saturating_duration_since(tokio::time::Instant::now())
    });
    if !hurried && !state.feed.connections_closed(left).await {
        tracing::warn!("WebSocket connections still open after {grace:?}; stopping anyway");
    }
    stop_pipeline(&state).await
}

/// Stops the pipeline: every accepted command finishes, a snapshot is written.
pub async fn stop_pipeline(state: &AppState) -> Result<(), ServerError> {
    let pipeline = state.pipeline.write().take();
    if let Some(p) = pipeline {
        // Dropping the listener (in the blocking task) lets the history store thread finish.
        tokio::task::spawn_blocking(move || p.shutdown().map(drop)).await??;
    }
    // The journal is closed: another process may take the data dir.
    drop(state.data_dir_lock.lock().take());
    Ok(())
}

/// A server running in this process (tests).
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Graceful stop: drains, stops the pipeline.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join.await?
    }
}

/// Starts a server on `config.bind` (port 0 for any) in this process.
pub async fn spawn(config: Config) -> Result<Running, ServerError> {
    let bind = |source| ServerError::Bind {
        addr: config.bind,
        source,
    };
    let listener = TcpListener::bind(config.bind).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let state = start(config).await?;
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(serve(state.clone(), listener, async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        state,
        stop: Some(tx),
        join,
    })
}

/// SIGTERM or Ctrl-C (logs that the drain begins).
pub async fn shutdown_signal() {
    stop_signal().await;
    tracing::info!("shutting down: draining connections");
}

/// The next SIGTERM or Ctrl-C. A signal that cannot be listened for never arrives (it
/// used to count as arrived at once: a stop at start, and a loop of them for a caller
/// waiting for the next one).
pub async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
