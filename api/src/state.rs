//! Shared state: the pipeline handle, the read models the history listener maintains, the
//! id counters and the idempotency reservations.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::markets::Markets;
use engine::pipeline::Processed;
use engine::{Balance, Command, Event};
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::oneshot;

use crate::auth::TokenCache;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::used_keys::UsedKeys;
use engine::pipeline::{Pipeline, SubmitError};

/// Per-currency reconciliation figures the listener follows.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditFig {
    pub deposits: u64,
    pub withdrawals: u64,
    pub fees: u64,
}

/// A private message for the feed: account, channel (`orders`, `fills`, `wallet`), data.
#[derive(Clone)]
pub struct PrivatePublisher {
    /// Whether anyone could be listening (a WebSocket is open): if not, no message is built.
    pub listening: Arc<dyn Fn() -> bool + Send + Sync>,
    pub publish: Arc<dyn Fn(engine::AccountId, &'static str, serde_json::Value) + Send + Sync>,
    /// Announces what `publish` queued: called once after each batch's messages, so the
    /// subscribers are woken once per batch and a ring holds a whole batch for them.
    pub announce: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for PrivatePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivatePublisher")
    }
}

/// What the history listener keeps in memory for the handlers.
#[derive(Default)]
pub struct ReadModel {
    pub markets: RwLock<Markets>,
    pub balances: RwLock<HashMap<(u32, u16), Balance>>,
    pub audit: Mutex<HashMap<u16, AuditFig>>,
    pub next_order_id: AtomicU64,
    pub next_request_id: AtomicU64,
    /// The next account id to register (set on recovery from the rebuilt users table and
    /// the ledger, so ids stay unique after the history store is rebuilt).
    pub next_account_id: AtomicU64,
    pub last_seq: AtomicU64,
    pub recovered: AtomicBool,
    pub orders_total: AtomicU64,
    pub trades_total: AtomicU64,
    /// [`client_key`] of every stored order's `(account, clientId)`: a miss means the key is
    /// new without asking SQLite (a hit, or a hash collision, is settled by the store).
    /// About 16 bytes per order ever placed, loaded at start.
    pub client_ids: UsedKeys,
    /// The same for every stored deposit or withdrawal request's `(account, externalId)`
    /// ([`client_key`] of them): a new externalId is reserved without waiting for SQLite.
    pub external_ids: UsedKeys,
    /// Open orders per account, for `max_open_orders_per_account` ([`crate::open_counts`]).
    pub open_counts: Arc<crate::open_counts::OpenCounts>,
    /// The last sequence the history store has committed ([`ReadModel::wait_stored`]).
    stored_seq: Mutex<u64>,
    stored_cv: Condvar,
    store_failed: AtomicBool,
    /// SQLite said the store's file is damaged ([`ReadModel::damage_store`]).
    store_damaged: AtomicBool,
    /// Why the store thread should stop lingering and commit what it has
    /// ([`ReadModel::linger`]).
    store_wanted: Mutex<StoreWanted>,
    store_wanted_cv: Condvar,
    /// Orders just cancelled by `DELETE /v1/orders/{id}`, final, for its reply: (seq, order).
    cancelled: Mutex<HashMap<u64, (u64, crate::model::OrderRec)>>,
}

/// What asks a lingering history store thread to commit now.
#[derive(Debug, Default)]
struct StoreWanted {
    /// A full commit's worth is queued ([`ReadModel::want_store`]); taken by the linger it
    /// ends.
    now: bool,
    /// The highest sequence a reader waits for ([`ReadModel::wait_stored`]). It stays until
    /// the store holds it, so every commit short of it is made at once: a request that a
    /// flag would carry could be taken by one commit while the reader has not yet seen that
    /// commit fall short, and the next commit would linger its full time for it.
    reader_seq: u64,
}

/// How long a read waits for the history store to catch up before it fails.
const STORE_WAIT: Duration = Duration::from_secs(10);
/// Cancelled orders kept for replies that never came to take them.
const CANCELLED_MAX: usize = 10_000;

/// The key of an order's `(account, clientId)` in [`ReadModel::client_ids`], and of a
/// request's `(account, externalId)` in [`ReadModel::external_ids`].
pub fn client_key(account: u32, client_id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    account.hash(&mut h);
    client_id.hash(&mut h);
    h.finish()
}

/// Whether `(account, key)` may be in a used-keys index ([`ReadModel::client_ids`],
/// [`ReadModel::external_ids`]): false means surely new, true is settled by the store (a hit
/// may be a hash collision).
pub fn may_be_used(ids: &UsedKeys, account: u32, key: &str) -> bool {
    ids.contains(client_key(account, key))
}

impl ReadModel {
    /// The history store thread committed everything up to `seq`.
    pub fn set_stored(&self, seq: u64) {
        let mut s = self.stored_seq.lock();
        *s = (*s).max(seq);
        self.stored_cv.notify_all();
    }

    /// Whether the history store thread stopped on an error ([`ReadModel::fail_store`]):
    /// from then on it commits nothing, so history reads are refused and `/ready` fails
    /// until a restart rebuilds the store from the journal.
    pub fn store_failed(&self) -> bool {
        self.store_failed.load(Ordering::Acquire)
    }

    /// The history store thread stopped on an error.
    pub fn fail_store(&self) {
        self.store_failed.store(true, Ordering::Release);
        let _s = self.stored_seq.lock();
        self.stored_cv.notify_all();
    }

    /// Whether SQLite said the history store's file is damaged, on the writer or on a read
    /// ([`crate::store_damage`]); the store is then stopped too ([`ReadModel::store_failed`]).
    pub fn store_damaged(&self) -> bool {
        self.store_damaged.load(Ordering::Acquire)
    }

    /// The history store's file is damaged: the store stops ([`ReadModel::fail_store`]: the
    /// writer commits nothing more, reads are refused). True the first time only, so the
    /// damage is logged and marked once ([`crate::store_damage::report`]).
    pub fn damage_store(&self) -> bool {
        let first = !self.store_damaged.swap(true, Ordering::AcqRel);
        self.fail_store();
        first
    }

    /// Store thread: waits until `deadline` or until the store is wanted (a reader waits for
    /// a sequence not stored yet, or a full commit is queued), whichever comes first; true
    /// if it is wanted.
    pub fn linger(&self, deadline: Instant) -> bool {
        let mut wanted = self.store_wanted.lock();
        loop {
            if std::mem::take(&mut wanted.now) || wanted.reader_seq > *self.stored_seq.lock() {
                return true;
            }
            if self
                .store_wanted_cv
                .wait_until(&mut wanted, deadline)
                .timed_out()
            {
                return std::mem::take(&mut wanted.now);
            }
        }
    }

    /// Tells a lingering store thread to commit now.
    pub(crate) fn want_store(&self) {
        self.store_wanted.lock().now = true;
        self.store_wanted_cv.notify_one();
    }

    /// Tells the store thread that a reader waits for `seq`: it commits without lingering
    /// until it holds `seq`.
    fn want_stored(&self, seq: u64) {
        let mut wanted = self.store_wanted.lock();
        wanted.reader_seq = wanted.reader_seq.max(seq);
        self.store_wanted_cv.notify_one();
    }

    /// Whether the history store already holds every sequence up to `seq` (no waiting).
    pub fn is_stored(&self, seq: u64) -> bool {
        *self.stored_seq.lock() >= seq
    }

    /// Blocks until the history store holds every sequence up to `seq`; false if it failed
    /// or did not catch up in time. Cheap when it already has (the usual case).
    pub fn wait_stored(&self, seq: u64) -> bool {
        let deadline = Instant::now() + STORE_WAIT;
        if self.is_stored(seq) {
            return true;
        }
        // Not under `stored_seq`: the store thread's linger takes `store_wanted`, then
        // `stored_seq`.
        self.want_stored(seq);
        let mut s = self.stored_seq.lock();
        while *s < seq {
            if self.store_failed.load(Ordering::Acquire) {
                return false;
            }
            if self.stored_cv.wait_until(&mut s, deadline).timed_out() {
                return *s >= seq;
            }
        }
        true
    }

    pub fn stash_cancelled(&self, seq: u64, order: crate::model::OrderRec) {
        let mut m = self.cancelled.lock();
        if m.len() >= CANCELLED_MAX {
            let floor = seq.saturating_sub(CANCELLED_MAX as u64);
            m.retain(|_, (s, _)| *s > floor);
        }
        m.insert(order.id, (seq, order));
    }

    pub fn take_cancelled(&self, order: u64) -> Option<crate::model::OrderRec> {
        self.cancelled.lock().remove(&order).map(|(_, o)| o)
    }
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel").finish_non_exhaustive()
    }
}

/// A command's outcome, owned.
#[derive(Clone, Debug)]
pub struct Committed {
    pub seq: u64,
    pub ts_ns: i64,
    pub events: Vec<Event>,
}

impl Committed {
    fn from(p: &Processed<'_>) -> Self {
        Committed {
            seq: p.seq,
            ts_ns: p.timestamp_ns,
            events: p.events.to_vec(),
        }
    }
}

const SHARDS: usize = 64;
/// Store lookups of a reservation made without the shard lock before one is made with it.
const UNLOCKED_LOOKUPS: u32 = 2;

/// In-flight idempotency reservations, sharded by account. A key is reserved under its
/// shard lock before the command is submitted, and released once the pipeline has processed
/// the command: the [`Reservation`] rides in the command's reply, which drops it after the
/// listeners ran and before the handler hears the outcome ([`Shared::submit_reserved`]). By
/// then the used-keys index holds the key if the command used it, and a refused command's
/// key is free for a retry. The release does not depend on the handler: a client that hangs
/// up drops the handler's future, not the reply. Looked up by account then key, so a check
/// allocates nothing (a reservation allocates its key once).
///
/// A key that may be in the store is looked up there with the shard lock released: the
/// lookup waits for the history store to catch up (tens of milliseconds under load), and
/// other requests of the shard's accounts, and the releases of finished ones, must not wait
/// behind it on a lock that blocks their worker thread. A release never waits for the shard
/// lock at all (it runs on the pipeline's engine thread): when the lock is taken, it is
/// deferred to the lock's next holder, which applies it before reading the shard.
#[derive(Debug)]
pub struct Reservations {
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    shard: Mutex<Shard>,
    /// Releases made while `shard` was locked, for its next holder to apply.
    deferred: Mutex<Vec<(u32, Arc<str>)>>,
    any_deferred: AtomicBool,
}

#[derive(Debug, Default)]
struct Shard {
    keys: HashMap<u32, HashMap<Arc<str>, u64>>,
    /// Counts releases: a reserve that looked in the store without the lock starts over when
    /// a reservation of the shard was released meanwhile (its key may be in the store now,
    /// after the look).
    releases: u64,
}

impl Shard {
    fn reserved(&self, account: u32, key: &str) -> Option<u64> {
        self.keys
            .get(&account)
            .and_then(|keys| keys.get(key))
            .copied()
    }

    fn reserve(&mut self, account: u32, key: &Arc<str>, id: u64) {
        self.keys
            .entry(account)
            .or_default()
            .insert(key.clone(), id);
    }

    fn release(&mut self, account: u32, key: &str) {
        self.releases += 1;
        if let Some(keys) = self.keys.get_mut(&account) {
            keys.remove(key);
            if keys.is_empty() {
                self.keys.remove(&account);
            }
        }
    }
}

impl Slot {
    /// The shard, locked, with the releases deferred meanwhile applied.
    fn lock(&self) -> parking_lot::MutexGuard<'_, Shard> {
        let mut shard = self.shard.lock();
        self.apply_deferred(&mut shard);
        shard
    }

    fn apply_deferred(&self, shard: &mut Shard) {
        // A load first: the flag's cache line is only written when there is work.
        if self.any_deferred.load(Ordering::Acquire)
            && self.any_deferred.swap(false, Ordering::AcqRel)
        {
            for (account, key) in self.deferred.lock().drain(..) {
                shard.release(account, &key);
            }
        }
    }
}

impl Default for Reservations {
    fn default() -> Self {
        Reservations {
            slots: (0..SHARDS).map(|_| Slot::default()).collect(),
        }
    }
}

/// A reserved key, released when dropped. Handed to [`Shared::submit_reserved`], it is
/// dropped by the command's reply once the pipeline has processed the command (or with the
/// command if it was never queued); dropped earlier, it releases at once.
#[derive(Debug)]
#[must_use = "dropping a reservation releases its key"]
pub struct Reservation {
    set: Arc<Reservations>,
    account: u32,
    key: Arc<str>,
    id: u64,
    /// The order's place under the account's bound of open orders, given up with the key:
    /// once the listeners have counted the order open (or it was never queued).
    open_slot: Option<crate::open_counts::OpenSlot>,
}

impl Reservation {
    /// The id reserved with the key.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The same reservation, holding `slot` until it is released.
    pub fn holding(mut self, slot: crate::open_counts::OpenSlot) -> Reservation {
        self.open_slot = Some(slot);
        self
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.set.release(self.account, &self.key);
    }
}

impl Reservations {
    /// Reserves `key` for `account` with the id `fresh()` returns, unless it is in flight or
    /// the store holds it: then `Err(existing id)`.
    ///
    /// `may_be_stored` (asked under the shard lock, must be cheap) says whether the store has
    /// to be asked (a hash index of used keys: a hit may be a collision); `stored` (asked
    /// without the lock, may be asked more than once) finds the key's id there. A request
    /// with the same key that was reserved, committed and released while `stored` looked is
    /// caught by the release count: the reserve starts over, and the new look waits for the
    /// store to hold that commit. After [`UNLOCKED_LOOKUPS`] such rounds the last look holds
    /// the lock (a busy shard releases all the time; a repeat key is rare).
    pub fn reserve(
        self: &Arc<Self>,
        account: u32,
        key: &str,
        may_be_stored: impl Fn() -> bool,
        stored: impl Fn() -> ApiResult<Option<u64>>,
        fresh: impl FnOnce() -> u64,
    ) -> ApiResult<Result<Reservation, u64>> {
        let slot = &self.slots[account as usize % SHARDS];
        let mut shard = slot.lock();
        let mut tries = 0;
        loop {
            if let Some(id) = shard.reserved(account, key) {
                return Ok(Err(id));
            }
            if !may_be_stored() {
                break;
            }
            tries += 1;
            if tries > UNLOCKED_LOOKUPS {
                // The shard keeps releasing (a busy account): look with the lock held, as
                // nothing can then be released in between (releases meanwhile are deferred).
                if let Some(id) = stored()? {
                    return Ok(Err(id));
                }
                break;
            }
            let releases = shard.releases;
            drop(shard);
            if let Some(id) = stored()? {
                return Ok(Err(id));
            }
            shard = slot.lock();
            if shard.releases == releases {
                if let Some(id) = shard.reserved(account, key) {
                    return Ok(Err(id));
                }
                break;
            }
        }
        let id = fresh();
        let key: Arc<str> = Arc::from(key);
        shard.reserve(account, &key, id);
        Ok(Ok(Reservation {
            set: self.clone(),
            account,
            key,
            id,
            open_slot: None,
        }))
    }

    /// Releases `key` of `account` without waiting: applied now if the shard lock is free,
    /// else by the lock's next holder (before it reads the shard).
    fn release(&self, account: u32, key: &Arc<str>) {
        let slot = &self.slots[account as usize % SHARDS];
        if let Some(mut shard) = slot.shard.try_lock() {
            slot.apply_deferred(&mut shard);
            shard.release(account, key);
        } else {
            slot.deferred.lock().push((account, key.clone()));
            slot.any_deferred.store(true, Ordering::Release);
        }
    }
}

/// Everything a handler needs.
pub struct Shared {
    pub config: Config,
    pub pipeline: RwLock<Option<Pipeline>>,
    pub model: Arc<ReadModel>,
    pub store: Store,
    pub tokens: TokenCache,
    /// Hashes and verifies client secrets (argon2).
    pub secrets: crate::auth::ClientSecrets,
    pub client_ids: Arc<Reservations>,
    pub external_ids: Arc<Reservations>,
    /// Request ids must reach the engine in increasing order: assign and submit under this.
    /// Async: a holder may wait for the history store (the externalId check), and the
    /// requests queued behind it must yield their worker, not block it.
    pub request_lock: tokio::sync::Mutex<()>,
    pub metrics: Metrics,
    pub rate: crate::rate_limit::RateLimiter,
    pub feed_router: Mutex<Option<(axum::Router, utoipa::openapi::OpenApi)>>,
    /// The market data feed: its WebSocket connections are closed on shutdown.
    pub feed: feed::Feed,
    pub shutting_down: AtomicBool,
    /// The data dir's lock file, held while the pipeline runs (`server::lock_data_dir`).
    pub data_dir_lock: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

pub type AppState = Arc<Shared>;

/// What a client is told once the pipeline has failed (a journal write or sync error, a
/// crashed pipeline thread): nothing more is acknowledged until the operator restarts the
/// server. No file or system error reaches the client; the log has them.
pub const ENGINE_FAILED: &str = "the engine has stopped after a storage failure and accepts \
     no commands until the server is restarted; nothing was done";

impl Shared {
    /// Whether the engine has stopped for good after a storage failure.
    pub fn engine_failed(&self) -> bool {
        self.pipeline
            .read()
            .as_ref()
            .is_some_and(|p| p.has_failed())
    }

    /// The error of a command whose reply was dropped unrun: the pipeline failed with it
    /// queued or in the group whose write failed (its outcome is unknown to this process;
    /// the journal decides it at the next start), or it stopped.
    fn reply_lost(&self) -> ApiError {
        if self.engine_failed() {
            ApiError::unavailable(
                "the engine stopped after a storage failure before this request's outcome \
                 was known: once the service is back, look it up (by clientId or externalId) \
                 before sending it again",
            )
        } else {
            ApiError::unavailable("the engine stopped")
        }
    }

    /// Submits `command` and waits until it is durable and applied by every listener.
    pub async fn submit(&self, command: Command) -> ApiResult<Committed> {
        let rx = self.submit_start(command)?;
        rx.await.map_err(|_| self.reply_lost())
    }

    /// [`Shared::submit`] of a command that uses the idempotency key `reservation` holds: the
    /// key is released once the pipeline has processed the command, whether or not anyone
    /// still waits for the outcome.
    pub async fn submit_reserved(
        &self,
        command: Command,
        reservation: Reservation,
    ) -> ApiResult<Committed> {
        let rx = self.submit_start_reserved(command, reservation)?;
        rx.await.map_err(|_| self.reply_lost())
    }

    /// Submits without waiting (the caller awaits the receiver).
    pub fn submit_start(&self, command: Command) -> ApiResult<oneshot::Receiver<Committed>> {
        self.submit_start_with(command, None)
    }

    /// [`Shared::submit_start`] releasing `reservation` once the command is processed (at
    /// once if it could not be queued).
    pub fn submit_start_reserved(
        &self,
        command: Command,
        reservation: Reservation,
    ) -> ApiResult<oneshot::Receiver<Committed>> {
        self.submit_start_with(command, Some(reservation))
    }

    fn submit_start_with(
        &self,
        command: Command,
        reservation: Option<Reservation>,
    ) -> ApiResult<oneshot::Receiver<Committed>> {
        let (tx, rx) = oneshot::channel();
        let guard = self.pipeline.read();
        let Some(pipeline) = guard.as_ref() else {
            return Err(ApiError::unavailable("the engine is not running"));
        };
        // The reply runs on the engine thread after the listeners (the used-keys indexes hold
        // the key if the command used it). A reply dropped unrun (a full ring, a stopped
        // pipeline) releases the reservation too.
        pipeline
            .submit(
                command,
                Box::new(move |p: &Processed<'_>| {
                    // Released before the outcome is sent: a retry after the reply finds
                    // the key free or used, never still reserved.
                    drop(reservation);
                    let _ = tx.send(Committed::from(p));
                }),
            )
            .map_err(|e| match e {
                // The ring of this pair is full: nothing was queued, so a retry is safe.
                SubmitError::Busy => ApiError::retry_shortly("the engine is busy, retry later"),
                // A failed pipeline never comes back without a restart: "stopping" made
                // it sound like a shutdown in progress.
                SubmitError::Stopped if pipeline.has_failed() => {
                    ApiError::unavailable(ENGINE_FAILED)
                }
                SubmitError::Stopped => ApiError::unavailable("the engine is stopping"),
            })?;
        Ok(rx)
    }

    pub fn next_order_id(&self) -> u64 {
        self.model.next_order_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_account_id(&self) -> u64 {
        self.model.next_account_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_request_id(&self) -> u64 {
        self.model.next_request_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::{ReadModel, Reservations, SHARDS};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    /// A reader's request stays until the store holds its sequence: a commit that falls
    /// short of it does not make the next one linger (with a flag taken by the first
    /// commit, the second lingered its full time unless the reader asked again in time).
    #[test]
    fn a_waiting_reader_keeps_every_commit_short_of_it_from_lingering() {
        let m = ReadModel::default();
        let patient = || Instant::now() + Duration::from_secs(2);
        m.want_stored(10);
        let t = Instant::now();
        assert!(m.linger(patient()), "the request ends the linger");
        m.set_stored(5);
        assert!(m.linger(patient()), "and the next, short of it");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        m.set_stored(10);
        let t = Instant::now();
        assert!(!m.linger(Instant::now() + Duration::from_millis(50)));
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "held: nobody waits any more"
        );
        // A full commit queued ends one linger only.
        m.want_store();
        assert!(m.linger(patient()));
        assert!(!m.linger(Instant::now() + Duration::from_millis(10)));
    }

    /// B looks its key up in the store without the lock; meanwhile A reserves the same key,
    /// commits it and releases it. B's look (from before A's commit) found nothing: the
    /// release makes B look again, and B gets A's id instead of booking the key twice.
    #[test]
    fn a_key_released_during_an_unlocked_lookup_is_looked_up_again() {
        let r = Arc::new(Reservations::default());
        let stored = parking_lot::Mutex::new(None);
        let looks = AtomicU32::new(0);
        let b = r.reserve(
            1,
            "k",
            || true,
            || {
                if looks.fetch_add(1, SeqCst) == 0 {
                    let a = r.reserve(1, "k", || false, || Ok(None), || 7).expect("a");
                    let a = a.expect("a reserves");
                    assert_eq!(a.id(), 7);
                    *stored.lock() = Some(7);
                    drop(a);
                    return Ok(None);
                }
                Ok(*stored.lock())
            },
            || 99,
        );
        assert_eq!(b.expect("b").map(|r| r.id()), Err(7));
        assert_eq!(looks.load(SeqCst), 2);
    }

    /// A shard that keeps releasing gets two looks without the lock, then one with it.
    #[test]
    fn a_busy_shard_ends_with_a_locked_lookup() {
        let r = Arc::new(Reservations::default());
        let looks = AtomicU32::new(0);
        let got = r.reserve(
            1,
            "k",
            || true,
            || {
                // The first two looks run unlocked: another key of the shard is released.
                if looks.fetch_add(1, SeqCst) < 2 {
                    r.release(1, &Arc::from("other"));
                }
                Ok(None)
            },
            || 5,
        );
        let got = got.expect("reserve").expect("reserved");
        assert_eq!(got.id(), 5);
        assert_eq!(looks.load(SeqCst), 3);
        // Reserved now: a repeat is in flight.
        let again = r.reserve(1, "k", || false, || Ok(None), || 6);
        assert_eq!(again.expect("again").map(|r| r.id()), Err(5));
        // Dropping the reservation releases the key.
        drop(got);
        let after = r.reserve(1, "k", || false, || Ok(None), || 7);
        assert_eq!(after.expect("after").map(|r| r.id()), Ok(7));
    }

    /// A release (on the pipeline's engine thread) never waits for the shard lock, which a
    /// reserve may hold across a store lookup: it is deferred, and the lock's next holder
    /// applies it before it reads the shard.
    #[test]
    fn a_release_never_waits_for_the_shard_lock() {
        let r = Arc::new(Reservations::default());
        let a = r
            .reserve(1, "k", || false, || Ok(None), || 7)
            .expect("a")
            .expect("reserved");
        // Account 1 + SHARDS shares the shard of account 1.
        let other = 1 + SHARDS as u32;
        let (looking_tx, looking_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let r = r.clone();
            std::thread::spawn(move || {
                // A reserve whose store lookup holds the shard lock until told to finish.
                r.reserve(
                    other,
                    "x",
                    || true,
                    || {
                        looking_tx.send(()).expect("send");
                        done_rx.recv().expect("recv");
                        Ok(None)
                    },
                    || 8,
                )
                .expect("reserve")
                .map(|r| r.id())
            })
        };
        // The holder's first two looks are unlocked (and end at once); the third is locked.
        for _ in 0..2 {
            looking_rx.recv().expect("look");
            r.release(other, &Arc::from("bump"));
            done_tx.send(()).expect("go on");
        }
        looking_rx.recv().expect("locked look");
        let (released_tx, released_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(a);
            released_tx.send(()).expect("send");
        });
        released_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the release waited for the shard lock");
        done_tx.send(()).expect("finish");
        assert_eq!(holder.join().expect("holder"), Ok(8));
        // The deferred release is applied by the next holder: the key is free again.
        let again = r.reserve(1, "k", || false, || Ok(None), || 9);
        assert_eq!(again.expect("again").map(|r| r.id()), Ok(9));
    }
}
