//! Market data derivation: the state the engine thread maintains from processed batches and
//! that the REST routes and WebSocket subscriptions read.
//!
//! Everything is integers until a message or a view is built. Times come from
//! `Processed::timestamp_ns` (the sequencer's batch time). Each outgoing message is encoded
//! once per channel and appended as shared bytes to the channel's ring ([`crate::bus`]);
//! a channel nobody listens to is not encoded at all. Subscribers are woken once per batch. Messages are sent while the state's
//! write lock is held, so a subscriber that takes a book snapshot and subscribes under the
//! read lock sees exactly the updates after its snapshot.
//!
//! Book changes are merged: a pair's changes go out as one update (one book seq, the absolute
//! amount of each level that differs from what was last published) at most every
//! `book_interval`, because API.md asks for a gap-free seq and absolute amounts, not for one
//! message per command, and one message per command was two thirds of the fan-out at high
//! trade rates. The book seq thus counts published updates; the REST book and snapshots
//! publish what is pending first, so they are always at a published seq.

use std::collections::{BTreeSet, VecDeque};

use engine::markets::{Markets, PairEntry};
use engine::pipeline::Processed;
use engine::units::format_units;
use engine::{Command, Engine, Event, PairId, Side};
use serde::Serialize;
use std::sync::Arc;

use crate::bus::{Bus, Cursor};

use crate::candles::{Candle, Interval, Series};
use crate::l2::L2;
use crate::store::{Loaded, StoredBook, StoredTrade};
use crate::views::{
    BookData, BookMsg, BookView, CandleView, DataMsg, TickerView, TradeView, rfc3339_ms,
};
use crate::window::Window;

/// Most recent trades kept per pair (the REST maximum).
pub const RECENT_TRADES: usize = 1000;

pub use crate::bus::Published;

/// A public channel: its name, sender and counter.
#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub bus: Arc<Bus>,
    pub seq: u64,
    /// The latest message (tickers: sent to a new subscriber at once).
    pub last: Option<Published>,
}

impl Channel {
    fn new(name: String, capacity: usize) -> Channel {
        Channel {
            name,
            bus: Bus::new(capacity),
            seq: 0,
            last: None,
        }
    }

    fn live(&self) -> bool {
        self.bus.receiver_count() > 0
    }

    /// Bumps seq, encodes (only if someone listens or `keep`), sends.
    fn publish<T: Serialize>(&mut self, data: &T, keep: bool) {
        self.seq += 1;
        if !keep && !self.live() {
            return;
        }
        let msg = DataMsg {
            channel: &self.name,
            seq: self.seq,
            data,
        };
        let Ok(text) = serde_json::to_string(&msg) else {
            return;
        };
        if keep {
            let p = Published::new(self.seq, &text);
            self.last = Some(p.clone());
            self.bus.push(p);
        } else {
            self.bus.push_text(self.seq, &text);
        }
    }
}

/// The channels of one pair.
#[derive(Debug)]
pub struct PairChannels {
    pub ticker: Channel,
    pub trades: Channel,
    pub book: Channel,
    pub candles: Vec<Channel>,
    /// The last full book snapshot made ([`State::book_subscribe`]), handed again to every
    /// subscriber while the book's seq has not moved: a reconnecting crowd (or slow
    /// consumers resynced together) costs one serialization of the book, not one each, and
    /// the connections share its bytes.
    book_snapshot: parking_lot::Mutex<Option<Published>>,
}

/// A recent trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradeRec {
    pub id: u64,
    pub ts_ns: i64,
    pub price: u64,
    pub lots: u64,
    pub quote: u64,
    pub taker: Side,
}

/// Everything derived for one pair.
#[derive(Debug, Default)]
pub struct PairState {
    pub window: Window,
    /// Newest first.
    pub recent: VecDeque<TradeRec>,
    pub last_price: Option<u64>,
    /// The published L2 book; its `seq` is the book channel's and the REST book's sequence:
    /// one per published update (a batch's changes are merged), not the engine's.
    pub book: L2,
    /// The book seq and pending state as last handed to the store.
    pub stored_book: Option<(u64, bool)>,
    /// Replayed commands (before `recover`) that changed this book: the live run published
    /// at most one update for each (a flush needs a change), so the seq after recovery
    /// passes every seq the live run may have published after the stored one.
    pub replay_changes: u64,
    /// The engine's book seq of the last `LevelChanged` seen (one per command; checked for
    /// jumps only).
    pub engine_book_seq: u64,
    pub candles: Vec<Series>,
    /// Time of the last change (batch time).
    pub updated_ns: i64,
    pub channels: Option<PairChannels>,
}

impl PairState {
    fn new() -> PairState {
        PairState {
            candles: vec![Series::default(); Interval::ALL.len()],
            ..PairState::default()
        }
    }
}

/// Settings the derivation needs.
#[derive(Clone, Copy, Debug)]
pub struct DeriveConfig {
    pub channel_capacity: usize,
    pub candles_retained: usize,
    /// Book changes are merged into one update per pair at most this often (zero: one
    /// update per batch). See [`State::flush_book`].
    pub book_interval: std::time::Duration,
}

/// The whole derived market state.
#[derive(Debug)]
pub struct State {
    pub cfg: DeriveConfig,
    pub markets: Markets,
    pub pairs: Vec<PairState>,
    /// After `on_recovered`: markets and books are known, messages flow.
    pub recovered: bool,
    pub applied_seq: u64,
    pub last_ts_ns: i64,
    /// The window horizon's clock (batch time, advanced by wall time on quiet markets).
    pub clock_ns: i64,
    /// Levels changed since the last published book update: pair, side, price, and the
    /// amount as last published (the first record of a level; later ones are duplicates).
    book_touched: Vec<(PairId, Side, u64, u64)>,
    /// Pairs whose book changed in the current batch, with their top of book before it.
    book_tops: Vec<(PairId, Top)>,
    /// When book changes were last published.
    book_flushed_at: Option<std::time::Instant>,
}

/// Top of book: best bid and best ask (price, amount).
type Top = (Option<(u64, u64)>, Option<(u64, u64)>);

/// `book_touched` is compacted (one record per level) when it grows past this.
const TOUCHED_COMPACT: usize = 4096;

/// What one batch produced for the store.
#[derive(Debug, Default)]
pub struct BatchOutput {
    pub trades: Vec<StoredTrade>,
    pub candles: Vec<(u16, Interval, Candle)>,
    pub last_seq: u64,
    /// The newest batch time applied ([`State::last_ts_ns`]): stored with `last_seq`, so
    /// the book's and tickers' `timestamp` do not step back to the newest trade's time
    /// after a restart when batches without trades came after it.
    pub last_ts_ns: i64,
    /// Book seqs (or pending states) that changed since the last batch stored.
    pub books: Vec<StoredBook>,
    /// This batch left book changes waiting to be published (`book_interval`) where there
    /// were none: they are to be flushed once it has passed.
    pub book_pending: bool,
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

impl State {
    pub fn new(cfg: DeriveConfig) -> State {
        State {
            cfg,
            markets: Markets::default(),
            pairs: Vec::new(),
            recovered: false,
            applied_seq: 0,
            last_ts_ns: 0,
            clock_ns: 0,
            book_touched: Vec::new(),
            book_tops: Vec::new(),
            book_flushed_at: None,
        }
    }

    fn pair_mut(&mut self, id: PairId) -> &mut PairState {
        let i = id.0 as usize;
        while self.pairs.len() <= i {
            self.pairs.push(PairState::new());
        }
        &mut self.pairs[i]
    }

    /// Puts stored trades and candles back.
    pub fn load(&mut self, loaded: &Loaded) {
        self.applied_seq = loaded.applied_seq;
        let retain = self.cfg.candles_retained;
        // The newest batch time stored, which is later than the newest trade's when
        // batches without trades followed it: the window is the 24 h before it (before the
        // newest trade, a trade that had left the window came back into the tickers).
        let newest = loaded.trades.iter().map(|t| t.ts_ns).max().unwrap_or(0);
        self.last_ts_ns = newest.max(loaded.last_ts_ns);
        self.clock_ns = self.last_ts_ns;
        let horizon = self.last_ts_ns.saturating_sub(crate::window::DAY_NS);
        for t in &loaded.trades {
            let ps = self.pair_mut(PairId(t.pair));
            if t.ts_ns > horizon {
                ps.window.push(t.ts_ns, t.price, t.lots, t.quote);
            }
            ps.recent.push_front(TradeRec {
                id: t.id,
                ts_ns: t.ts_ns,
                price: t.price,
                lots: t.lots,
                quote: t.quote,
                taker: if t.taker_buy { Side::Buy } else { Side::Sell },
            });
            ps.recent.truncate(RECENT_TRADES);
            ps.last_price = Some(t.price);
            ps.updated_ns = t.ts_ns;
        }
        for (pair, iv, c) in &loaded.candles {
            self.pair_mut(PairId(*pair)).candles[iv.index()].load(*c, retain);
        }
        for b in &loaded.books {
            self.pair_mut(PairId(b.pair)).stored_book = Some((b.seq, b.pending));
        }
    }

    fn ensure_channels(&mut self, id: PairId) {
        let Some(entry) = self.markets.pair(id) else {
            return;
        };
        let sym = entry.symbol.clone();
        let cap = self.cfg.channel_capacity;
        let ps = self.pair_mut(id);
        if ps.channels.is_some() {
            return;
        }
        ps.channels = Some(PairChannels {
            ticker: Channel::new(format!("ticker:{sym}"), 16),
            trades: Channel::new(format!("trades:{sym}"), cap),
            book: Channel::new(format!("book:{sym}"), cap),
            candles: Interval::ALL
                .iter()
                .map(|iv| Channel::new(format!("candles:{}:{sym}", iv.as_str()), cap))
                .collect(),
            book_snapshot: parking_lot::Mutex::new(None),
        });
        // The ticker channel always holds a current ticker, so that a subscriber gets one at
        // once even on a quiet market or right after a restart.
        self.publish_ticker(id);
    }

    /// After recovery: markets and books from the engine as it stands at `last_seq`.
    pub fn recover(&mut self, engine: &Engine, _last_seq: u64) {
        self.markets = Markets::from_engine(engine);
        let ids: Vec<PairId> = self.markets.pairs().iter().map(|p| p.id).collect();
        for id in ids {
            let mut l2 = L2::default();
            if let Some(book) = engine.book(id) {
                for side in [Side::Buy, Side::Sell] {
                    book.for_each_level(side, |lv| {
                        l2.set(side, lv.price.0, lv.total.0);
                        true
                    });
                }
            }
            let engine_seq = engine.book_seq(id);
            let ps = self.pair_mut(id);
            // A seq names one book state, across restarts too: the stored seq if the book is
            // still the one it named, else past every seq the live run may have published
            // after it: a flush may have published seq + 1 before a crash, and each replayed
            // command that changed the book may have been one more update (the store writes
            // behind the pipeline, so after a crash it can be many updates behind). Without
            // a stored seq (a new store), the engine's: it counts every command that changed
            // the book, which is at least as many as there were updates.
            l2.seq = match ps.stored_book {
                Some((seq, pending)) => seq + u64::from(pending) + ps.replay_changes,
                None => engine_seq,
            };
            ps.engine_book_seq = engine_seq;
            ps.replay_changes = 0;
            ps.book = l2;
            self.ensure_channels(id);
        }
        self.recovered = true;
    }

    /// Advances the 24 h horizon to `now_ns` if that is later (quiet markets): trades that
    /// leave the window change the ticker, which goes out to the ticker channels.
    pub fn advance_clock(&mut self, now_ns: i64) {
        if now_ns <= self.clock_ns {
            return;
        }
        self.clock_ns = now_ns;
        let mut changed = BTreeSet::new();
        self.expire_windows(&mut changed);
        if self.recovered && !changed.is_empty() {
            for i in changed {
                self.publish_ticker(PairId(i));
            }
            self.wake_subscribers();
        }
    }

    /// Moves every pair's 24 h window to the clock, adding the pairs whose trades left it to
    /// `changed`. Every pair, not only those that traded: a batch moves the clock for all of
    /// them, and on a busy market the wall clock never does it (`Feed::touch_clock` waits
    /// for a second without batches), so a pair whose batches carry no trades of its own
    /// would otherwise keep a day-old trade in its ticker.
    fn expire_windows(&mut self, changed: &mut BTreeSet<u16>) {
        let now_ns = self.clock_ns;
        for (i, ps) in self.pairs.iter_mut().enumerate() {
            let before = ps.window.len();
            ps.window.expire(now_ns);
            if ps.window.len() != before
                && let Ok(i) = u16::try_from(i)
            {
                changed.insert(i);
            }
        }
    }

    /// Applies one batch; sends the messages; returns what to store.
    pub fn apply(&mut self, batch: &[Processed<'_>]) -> BatchOutput {
        let mut out = BatchOutput::default();
        let was_pending = self.book_pending();
        let mut ticker_touched: BTreeSet<u16> = BTreeSet::new();
        let mut candle_touched: BTreeSet<(u16, usize, i64)> = BTreeSet::new();
        let mut changes: Vec<(PairId, Side, u64, u64, u64)> = Vec::new();
        for p in batch {
            if p.seq <= self.applied_seq {
                continue;
            }
            let ts = p.timestamp_ns;
            self.last_ts_ns = self.last_ts_ns.max(ts);
            if ts > self.clock_ns {
                self.clock_ns = ts;
            }
            let clock = self.clock_ns;
            changes.clear();
            for ev in p.events {
                match ev {
                    Event::Trade(t) => {
                        let retain = self.cfg.candles_retained;
                        let recovered = self.recovered;
                        let ps = self.pair_mut(t.pair);
                        let quote = t.buyer_paid;
                        ps.window.expire(clock);
                        ps.window.push(ts, t.price.0, t.amount.0, quote);
                        let rec = TradeRec {
                            id: t.id.0,
                            ts_ns: ts,
                            price: t.price.0,
                            lots: t.amount.0,
                            quote,
                            taker: t.taker_side,
                        };
                        ps.recent.push_front(rec);
                        ps.recent.truncate(RECENT_TRADES);
                        ps.last_price = Some(t.price.0);
                        ps.updated_ns = ts;
                        let ts_ms = ts.div_euclid(1_000_000);
                        for iv in Interval::ALL {
                            let c = ps.candles[iv.index()]
                                .add(iv, ts_ms, t.price.0, t.amount.0, quote, retain);
                            candle_touched.insert((t.pair.0, iv.index(), c.open_ms));
                        }
                        ticker_touched.insert(t.pair.0);
                        out.trades.push(StoredTrade {
                            id: t.id.0,
                            pair: t.pair.0,
                            ts_ns: ts,
                            price: t.price.0,
                            lots: t.amount.0,
                            quote,
                            taker_buy: t.taker_side == Side::Buy,
                        });
                        if recovered {
                            self.publish_trade(t.pair, &rec);
                        }
                    }
                    Event::LevelChanged {
                        pair,
                        side,
                        price,
                        amount,
                        book_seq,
                    } => changes.push((*pair, *side, price.0, amount.0, *book_seq)),
                    Event::PairAdded { .. } => {}
                    _ => {}
                }
            }
            if !self.recovered {
                // Once per pair whose book this command changed (a cancel-all may touch
                // several pairs).
                let mut pairs: Vec<PairId> = changes.iter().map(|c| c.0).collect();
                pairs.sort_unstable_by_key(|p| p.0);
                pairs.dedup();
                for pair in pairs {
                    self.pair_mut(pair).replay_changes += 1;
                }
            }
            if self.recovered {
                if !changes.is_empty() {
                    self.record_level_changes(&changes);
                }
                self.markets.apply(p);
                if let Command::AddPair(_) = p.command {
                    for ev in p.events {
                        if let Event::PairAdded { pair } = ev {
                            self.ensure_channels(*pair);
                        }
                    }
                }
            }
            out.last_seq = p.seq;
            self.applied_seq = p.seq;
        }
        self.expire_windows(&mut ticker_touched);
        for (pair, iv, open) in &candle_touched {
            let ps = &self.pairs[*pair as usize];
            if let Some(c) = ps.candles[*iv].get(*open) {
                out.candles.push((*pair, Interval::ALL[*iv], *c));
            }
        }
        if self.recovered {
            self.tops_to_tickers(&mut ticker_touched);
            let interval = self.cfg.book_interval;
            let due =
                interval.is_zero() || self.book_flushed_at.is_none_or(|t| t.elapsed() >= interval);
            if due {
                self.flush_book();
            }
            out.book_pending = !was_pending && self.book_pending();
            self.books_to_store(&mut out.books);
            for (pair, iv, open) in candle_touched {
                self.publish_candle(PairId(pair), iv, open);
            }
            for pair in ticker_touched {
                self.publish_ticker(PairId(pair));
            }
            self.wake_subscribers();
        }
        out.last_ts_ns = self.last_ts_ns;
        out
    }

    /// Wakes the subscribers of every channel that got messages (once per batch).
    pub fn wake_subscribers(&self) {
        for ch in self.pairs.iter().filter_map(|p| p.channels.as_ref()) {
            ch.ticker.bus.wake();
            ch.trades.bus.wake();
            ch.book.bus.wake();
            for c in &ch.candles {
                c.bus.wake();
            }
        }
    }

    /// Applies one command's level changes to the L2 books, remembering for each level its
    /// amount as last published and for each pair its top of book before the batch.
    fn record_level_changes(&mut self, changes: &[(PairId, Side, u64, u64, u64)]) {
        for &(pair, side, price, amount, engine_seq) in changes {
            let ps = self.pair_mut(pair);
            if engine_seq != ps.engine_book_seq && engine_seq != ps.engine_book_seq + 1 {
                tracing::warn!(
                    pair = pair.0,
                    have = ps.engine_book_seq,
                    got = engine_seq,
                    "engine book seq jump"
                );
            }
            ps.engine_book_seq = engine_seq;
            let top = (ps.book.best_bid(), ps.book.best_ask());
            let before = match side {
                Side::Buy => ps.book.bids.get(&price),
                Side::Sell => ps.book.asks.get(&price),
            }
            .copied()
            .unwrap_or(0);
            ps.book.set(side, price, amount);
            if !self.book_tops.iter().any(|(p, _)| *p == pair) {
                self.book_tops.push((pair, top));
            }
            self.book_touched.push((pair, side, price, before));
        }
        if self.book_touched.len() > TOUCHED_COMPACT {
            compact(&mut self.book_touched);
        }
    }

    /// Marks the ticker of every pair whose top of book moved in this batch.
    fn tops_to_tickers(&mut self, ticker_touched: &mut BTreeSet<u16>) {
        let tops = std::mem::take(&mut self.book_tops);
        for &(pair, top_before) in &tops {
            let ps = self.pair_mut(pair);
            if (ps.book.best_bid(), ps.book.best_ask()) != top_before {
                ticker_touched.insert(pair.0);
            }
        }
        self.book_tops = tops;
        self.book_tops.clear();
    }

    /// The pairs whose book seq or pending state differs from what the store holds.
    fn books_to_store(&mut self, out: &mut Vec<StoredBook>) {
        for (i, ps) in self.pairs.iter_mut().enumerate() {
            if ps.channels.is_none() {
                continue;
            }
            let Ok(pair) = u16::try_from(i) else {
                continue;
            };
            let pending = self.book_touched.iter().any(|t| t.0.0 == pair);
            let now = (ps.book.seq, pending);
            if ps.stored_book != Some(now) {
                ps.stored_book = Some(now);
                out.push(StoredBook {
                    pair,
                    seq: now.0,
                    pending,
                });
            }
        }
    }

    /// Book changes recorded and not yet published.
    pub fn book_pending(&self) -> bool {
        !self.book_touched.is_empty()
    }

    /// Publishes the book changes recorded since the last update: per pair whose levels
    /// changed, one `update` with the absolute amount of each level that differs from what
    /// was last published (`"0"` removes it), the next book seq, and the checksum of the
    /// book after it. A level that changed and came back is not sent; a pair whose book came
    /// back unchanged gets no update and keeps its seq (a seq names one book state). The
    /// book seq therefore counts published updates, and the REST book (which flushes first)
    /// is always at a published seq. The caller wakes the subscribers.
    pub fn flush_book(&mut self) {
        self.book_flushed_at = Some(std::time::Instant::now());
        if self.book_touched.is_empty() {
            return;
        }
        let ts = self.last_ts_ns;
        let mut touched = std::mem::take(&mut self.book_touched);
        compact(&mut touched);
        let mut i = 0;
        while i < touched.len() {
            let pair = touched[i].0;
            let mut j = i;
            while j < touched.len() && touched[j].0 == pair {
                j += 1;
            }
            let group = &touched[i..j];
            i = j;
            let Some(entry) = self.markets.pair(pair).cloned() else {
                continue;
            };
            let (pd, ad) = (entry.spec.price_decimals, entry.spec.amount_decimals);
            let ps = self.pair_mut(pair);
            let now = |side: Side, price: u64| {
                match side {
                    Side::Buy => ps.book.bids.get(&price),
                    Side::Sell => ps.book.asks.get(&price),
                }
                .copied()
                .unwrap_or(0)
            };
            if group.iter().all(|&(_, s, p, before)| now(s, p) == before) {
                continue;
            }
            let mut data = BookData {
                bids: Vec::new(),
                asks: Vec::new(),
            };
            let live = ps.channels.as_ref().is_some_and(|ch| ch.book.live());
            if live {
                for &(_, side, price, before) in group {
                    let amount = now(side, price);
                    if amount == before {
                        continue;
                    }
                    // API.md: `"0"` removes a level (literally, like the ticker's "0").
                    let lv = [
                        format_units(u128::from(price), pd),
                        if amount == 0 {
                            "0".to_string()
                        } else {
                            format_units(u128::from(amount), ad)
                        },
                    ];
                    match side {
                        Side::Buy => data.bids.push(lv),
                        Side::Sell => data.asks.push(lv),
                    }
                }
                // Best first, like a snapshot: bids were gathered by rising price.
                data.bids.reverse();
            }
            ps.book.seq += 1;
            ps.updated_ns = ps.updated_ns.max(ts);
            let seq = ps.book.seq;
            let Some(ch) = ps.channels.as_mut() else {
                continue;
            };
            ch.book.seq = seq;
            if !live {
                continue;
            }
            let msg = BookMsg {
                channel: &ch.book.name,
                kind: "update",
                seq,
                checksum: ps.book.checksum(pd, ad),
                data,
            };
            if let Ok(text) = serde_json::to_string(&msg) {
                ch.book.bus.push_text(seq, &text);
            }
        }
        touched.clear();
        self.book_touched = touched;
    }

    fn publish_trade(&mut self, pair: PairId, rec: &TradeRec) {
        let Some(entry) = self.markets.pair(pair) else {
            return;
        };
        let ps = &mut self.pairs[pair.0 as usize];
        let Some(ch) = ps.channels.as_mut() else {
            return;
        };
        if !ch.trades.live() {
            ch.trades.seq += 1;
            return;
        }
        let view = trade_view(entry, rec);
        ch.trades.publish(&view, false);
    }

    fn publish_candle(&mut self, pair: PairId, iv: usize, open: i64) {
        let Some(entry) = self.markets.pair(pair) else {
            return;
        };
        let ps = &mut self.pairs[pair.0 as usize];
        let Some(c) = ps.candles[iv].get(open).copied() else {
            return;
        };
        let Some(ch) = ps.channels.as_mut() else {
            return;
        };
        let ch = &mut ch.candles[iv];
        if !ch.live() {
            ch.seq += 1;
            return;
        }
        ch.publish(&candle_view(entry, &c), false);
    }

    fn publish_ticker(&mut self, pair: PairId) {
        let Some(view) = self.ticker(pair) else {
            return;
        };
        if let Some(ch) = self.pairs[pair.0 as usize].channels.as_mut() {
            ch.ticker.publish(&view, true);
        }
    }

    /// The ticker of a pair.
    pub fn ticker(&self, pair: PairId) -> Option<TickerView> {
        let entry = self.markets.pair(pair)?;
        let empty = PairState::default();
        let ps = self.pairs.get(pair.0 as usize).unwrap_or(&empty);
        let (pd, ad, qd) = (
            entry.spec.price_decimals,
            entry.spec.amount_decimals,
            entry.quote_decimals,
        );
        let price = |p: u64| format_units(u128::from(p), pd);
        let amount = |a: u64| format_units(u128::from(a), ad);
        let bid = ps.book.best_bid();
        let ask = ps.book.best_ask();
        Some(TickerView {
            pair: entry.symbol.clone(),
            timestamp: rfc3339_ms(ps.updated_ns.max(self.last_ts_ns)),
            last_price: ps.last_price.map(price),
            best_bid: bid.map(|b| price(b.0)),
            best_bid_amount: bid.map(|b| amount(b.1)),
            best_ask: ask.map(|a| price(a.0)),
            best_ask_amount: ask.map(|a| amount(a.1)),
            high: ps.window.high().map(price),
            low: ps.window.low().map(price),
            // API.md: "0" when no trade is in the window (fixed decimals otherwise).
            base_volume: if ps.window.is_empty() {
                "0".to_string()
            } else {
                format_units(ps.window.base_lots(), ad)
            },
            quote_volume: if ps.window.is_empty() {
                "0".to_string()
            } else {
                format_units(ps.window.quote_minor(), qd)
            },
        })
    }

    /// When the pending book changes are due (`book_interval` after the last update).
    pub fn book_flush_due(&self) -> Option<std::time::Instant> {
        Some(self.book_flushed_at? + self.cfg.book_interval)
    }

    /// The REST book. Call with no book changes pending (`Feed` flushes them first), so
    /// that `sequence` names exactly these levels.
    pub fn book_view(&self, pair: PairId, depth: usize) -> Option<BookView> {
        let entry = self.markets.pair(pair)?;
        let ps = self.pairs.get(pair.0 as usize)?;
        let (pd, ad) = (entry.spec.price_decimals, entry.spec.amount_decimals);
        Some(BookView {
            pair: entry.symbol.clone(),
            sequence: ps.book.seq,
            timestamp: rfc3339_ms(self.last_ts_ns),
            bids: ps.book.levels(Side::Buy, depth, pd, ad),
            asks: ps.book.levels(Side::Sell, depth, pd, ad),
        })
    }

    /// A full book snapshot message and a receiver for the updates after it. Call with no
    /// book changes pending (`Feed` flushes them first).
    pub fn book_subscribe(&self, pair: PairId) -> Option<(Published, Cursor)> {
        let entry = self.markets.pair(pair)?;
        let ps = self.pairs.get(pair.0 as usize)?;
        let ch = ps.channels.as_ref()?;
        let mut cached = ch.book_snapshot.lock();
        let snap = match cached.as_ref() {
            // Every change of the book moves its seq, so the same seq is the same book.
            Some(snap) if snap.seq == ps.book.seq => snap.clone(),
            _ => {
                let (pd, ad) = (entry.spec.price_decimals, entry.spec.amount_decimals);
                let msg = BookMsg {
                    channel: &ch.book.name,
                    kind: "snapshot",
                    seq: ps.book.seq,
                    checksum: ps.book.checksum(pd, ad),
                    data: BookData {
                        bids: ps.book.levels(Side::Buy, usize::MAX, pd, ad),
                        asks: ps.book.levels(Side::Sell, usize::MAX, pd, ad),
                    },
                };
                let snap = Published::new(ps.book.seq, &serde_json::to_string(&msg).ok()?);
                *cached = Some(snap.clone());
                snap
            }
        };
        Some((snap, ch.book.bus.subscribe()))
    }

    /// Recent trades, newest first.
    pub fn trades(&self, pair: PairId, limit: usize) -> Option<Vec<TradeView>> {
        let entry = self.markets.pair(pair)?;
        let Some(ps) = self.pairs.get(pair.0 as usize) else {
            return Some(Vec::new());
        };
        Some(
            ps.recent
                .iter()
                .take(limit)
                .map(|r| trade_view(entry, r))
                .collect(),
        )
    }

    /// Candles in memory with `start <= open < end`, oldest first (the first `limit` from
    /// `start` when only `start` is given, else the last `limit` before `end`), with the
    /// pair's entry and the open time before which the store may hold candles that memory
    /// no longer does ([`Series::dropped_before`]).
    pub fn candles(
        &self,
        pair: PairId,
        iv: Interval,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: usize,
    ) -> Option<(PairEntry, Vec<Candle>, Option<i64>)> {
        let entry = self.markets.pair(pair)?.clone();
        let Some(ps) = self.pairs.get(pair.0 as usize) else {
            return Some((entry, Vec::new(), None));
        };
        let series = &ps.candles[iv.index()];
        let list = series.query(
            start_ms.unwrap_or(i64::MIN),
            end_ms.unwrap_or(i64::MAX),
            limit,
            start_ms.is_some() && end_ms.is_none(),
        );
        Some((
            entry,
            list,
            series.dropped_before(self.cfg.candles_retained),
        ))
    }
}

/// One record per level (pair, side, price), keeping the first (the amount as published),
/// ordered by pair, then bids before asks, then rising price.
fn compact(touched: &mut Vec<(PairId, Side, u64, u64)>) {
    // Stable: the first record of a level stays first.
    touched.sort_by_key(|&(pair, side, price, _)| (pair.0, side == Side::Sell, price));
    touched.dedup_by_key(|&mut (pair, side, price, _)| (pair.0, side == Side::Sell, price));
}

pub fn trade_view(entry: &PairEntry, r: &TradeRec) -> TradeView {
    TradeView {
        id: r.id.to_string(),
        price: format_units(u128::from(r.price), entry.spec.price_decimals),
        amount: format_units(u128::from(r.lots), entry.spec.amount_decimals),
        side: side_str(r.taker),
        timestamp: rfc3339_ms(r.ts_ns),
    }
}

pub fn candle_view(entry: &PairEntry, c: &Candle) -> CandleView {
    let pd = entry.spec.price_decimals;
    let price = |p: u64| format_units(u128::from(p), pd);
    CandleView {
        open_time: rfc3339_ms(c.open_ms.saturating_mul(1_000_000)),
        open: price(c.open),
        high: price(c.high),
        low: price(c.low),
        close: price(c.close),
        base_volume: format_units(c.base_lots, entry.spec.amount_decimals),
        quote_volume: format_units(c.quote_minor, entry.quote_decimals),
        trades: c.trades,
    }
}

#[cfg(test)]
mod tests {
    use engine::{
        AccountId, Amount, CurrencyId, CurrencySpec, Engine, EngineLimits, OrderId, PairSpec,
        PairStatus, PlaceOrder, Price, RequestId, RequestSpec,
    };

    use super::*;

    fn place(id: u64, account: u32, side: Side) -> Command {
        place_at(id, account, side, 100_000, 3)
    }

    fn place_at(id: u64, account: u32, side: Side, price: u64, lots: u64) -> Command {
        Command::Place(PlaceOrder::limit(
            OrderId(id),
            AccountId(account),
            PairId(0),
            side,
            Price(price),
            Amount(lots),
        ))
    }

    /// An engine with BTC_SEK and two funded accounts, and a recovered state on it.
    fn market(book_interval: std::time::Duration) -> (Engine, State, u64) {
        let mut engine = Engine::new(EngineLimits::default());
        let mut ev = Vec::new();
        let mut setup = vec![
            Command::AddCurrency(Box::new(CurrencySpec {
                code: "BTC".into(),
                display_name: "BTC".into(),
                decimals: 8,
            })),
            Command::AddCurrency(Box::new(CurrencySpec {
                code: "SEK".into(),
                display_name: "SEK".into(),
                decimals: 2,
            })),
            Command::AddPair(PairSpec {
                base: CurrencyId(0),
                quote: CurrencyId(1),
                price_decimals: 2,
                amount_decimals: 4,
                min_amount: Amount(1),
                maker_fee_ppm: 0,
                taker_fee_ppm: 0,
                status: PairStatus::Active,
            }),
        ];
        for a in 1..=2u32 {
            for c in 0..2u16 {
                setup.push(Command::DepositCredited(Box::new(RequestSpec {
                    request: RequestId(u64::from(a) * 10 + u64::from(c)),
                    account: AccountId(a),
                    currency: CurrencyId(c),
                    amount: 1_000_000_000_000,
                    external_id: format!("d{a}{c}"),
                    destination: String::new(),
                })));
            }
        }
        for c in &setup {
            ev.clear();
            engine.apply(c, &mut ev);
        }
        let mut st = State::new(DeriveConfig {
            channel_capacity: 64,
            candles_retained: 100,
            book_interval,
        });
        st.recover(&engine, setup.len() as u64);
        (engine, st, setup.len() as u64)
    }

    /// Applies `cmds` to the engine and hands them to the state as one batch.
    fn batch(engine: &mut Engine, st: &mut State, seq: &mut u64, cmds: &[Command]) -> BatchOutput {
        let mut events = Vec::new();
        for c in cmds {
            let mut ev = Vec::new();
            engine.apply(c, &mut ev);
            events.push(ev);
        }
        let views: Vec<Processed<'_>> = cmds
            .iter()
            .zip(&events)
            .map(|(c, ev)| {
                *seq += 1;
                Processed {
                    seq: *seq,
                    timestamp_ns: 1_700_000_000_000_000_000,
                    command: c,
                    events: ev,
                }
            })
            .collect();
        st.apply(&views)
    }

    /// Subscribers at the same book seq share one snapshot (one serialization, one buffer);
    /// a book change makes the next subscriber's snapshot anew, at the new seq.
    #[test]
    fn subscribers_at_one_seq_share_one_snapshot() {
        let (mut engine, mut st, mut seq) = market(std::time::Duration::ZERO);
        batch(&mut engine, &mut st, &mut seq, &[place(1, 1, Side::Buy)]);
        let (a, _) = st.book_subscribe(PairId(0)).expect("a snapshot");
        let (b, _) = st.book_subscribe(PairId(0)).expect("a snapshot");
        assert_eq!(a.seq, b.seq);
        assert_eq!(a.frame().as_ptr(), b.frame().as_ptr(), "one buffer");
        batch(&mut engine, &mut st, &mut seq, &[place(2, 1, Side::Buy)]);
        st.flush_book();
        let (c, _) = st.book_subscribe(PairId(0)).expect("a snapshot");
        assert_eq!(c.seq, a.seq + 1);
        assert_ne!(c.text(), a.text(), "the book changed: {}", c.text());
        assert!(c.text().contains(r#"["1000.00","0.0006"]"#), "{}", c.text());
    }

    /// One batch of several commands is one book update: one seq, the absolute amount of
    /// each level that differs from before the batch (a level that came and went is not
    /// sent), the checksum of the book after it; a batch that leaves the book as it was
    /// publishes nothing and keeps the seq.
    #[test]
    fn a_batch_is_one_merged_book_update() {
        let (mut engine, mut st, mut seq) = market(std::time::Duration::ZERO);
        let mut cursor = st.pairs[0].channels.as_ref().unwrap().book.bus.subscribe();
        let seq0 = st.pairs[0].book.seq;
        batch(
            &mut engine,
            &mut st,
            &mut seq,
            &[
                place_at(1, 1, Side::Sell, 100_100, 3),
                place_at(2, 1, Side::Sell, 100_100, 2),
                place_at(3, 2, Side::Buy, 99_900, 4),
                place_at(4, 1, Side::Sell, 100_200, 1),
                Command::Cancel {
                    account: AccountId(1),
                    order: OrderId(4),
                },
            ],
        );
        let mut got = Vec::new();
        cursor.recv_into(&mut got, 100).unwrap();
        assert_eq!(got.len(), 1, "one update for the batch");
        let v: serde_json::Value = serde_json::from_str(got[0].text()).unwrap();
        assert_eq!(v["type"], "update");
        assert_eq!(v["seq"], seq0 + 1);
        assert_eq!(st.pairs[0].book.seq, seq0 + 1);
        assert_eq!(
            v["data"]["asks"],
            serde_json::json!([["1001.00", "0.0005"]]),
            "1002.00 came and went: not sent"
        );
        assert_eq!(v["data"]["bids"], serde_json::json!([["999.00", "0.0004"]]));
        assert_eq!(v["checksum"], st.pairs[0].book.checksum(2, 4));
        // Back to the same book: nothing to publish, the seq stays.
        batch(
            &mut engine,
            &mut st,
            &mut seq,
            &[
                place_at(6, 2, Side::Buy, 100_100, 1),
                place_at(7, 1, Side::Sell, 100_100, 1),
            ],
        );
        got.clear();
        cursor.recv_into(&mut got, 100).unwrap();
        assert!(got.is_empty(), "{:?}", got.first().map(Published::text));
        assert_eq!(st.pairs[0].book.seq, seq0 + 1);
    }

    /// With `book_interval`, changes of later batches wait and go out merged, in one update,
    /// when flushed (the flusher thread, a REST read or a book subscription does that).
    #[test]
    fn changes_wait_for_the_book_interval() {
        let (mut engine, mut st, mut seq) = market(std::time::Duration::from_secs(3600));
        let mut cursor = st.pairs[0].channels.as_ref().unwrap().book.bus.subscribe();
        let seq0 = st.pairs[0].book.seq;
        let mut got = Vec::new();
        // The first batch goes out at once (nothing published for an interval).
        batch(
            &mut engine,
            &mut st,
            &mut seq,
            &[place_at(1, 1, Side::Sell, 100_100, 3)],
        );
        cursor.recv_into(&mut got, 100).unwrap();
        assert_eq!(got.len(), 1);
        let out = batch(
            &mut engine,
            &mut st,
            &mut seq,
            &[place_at(2, 1, Side::Sell, 100_100, 2)],
        );
        assert!(out.book_pending, "the flusher is to be woken");
        let out = batch(
            &mut engine,
            &mut st,
            &mut seq,
            &[place_at(3, 2, Side::Buy, 99_900, 4)],
        );
        assert!(!out.book_pending, "already pending: no second wake-up");
        got.clear();
        cursor.recv_into(&mut got, 100).unwrap();
        assert!(got.is_empty());
        assert!(st.book_pending());
        assert_eq!(st.pairs[0].book.seq, seq0 + 1);
        st.flush_book();
        cursor.recv_into(&mut got, 100).unwrap();
        assert_eq!(got.len(), 1);
        let v: serde_json::Value = serde_json::from_str(got[0].text()).unwrap();
        assert_eq!(v["seq"], seq0 + 2);
        assert_eq!(
            v["data"]["asks"],
            serde_json::json!([["1001.00", "0.0005"]])
        );
        assert_eq!(v["data"]["bids"], serde_json::json!([["999.00", "0.0004"]]));
        assert!(!st.book_pending());
        assert_eq!(st.book_view(PairId(0), 10).unwrap().sequence, seq0 + 2);
    }

    /// A trade leaves the ticker's 24 h window with the clock alone (no batch), the
    /// WebSocket ticker says so, and empty-window volumes are exactly "0".
    #[test]
    fn ticker_expires_without_batches() {
        let (mut engine, mut st, _) = market(std::time::Duration::ZERO);
        let mut ev = Vec::new();
        let t0 = 1_700_000_000_000_000_000i64;
        assert_eq!(st.ticker(PairId(0)).unwrap().base_volume, "0");
        let mut cursor = st.pairs[0]
            .channels
            .as_ref()
            .unwrap()
            .ticker
            .bus
            .subscribe();
        for (i, c) in [place(1, 1, Side::Sell), place(2, 2, Side::Buy)]
            .iter()
            .enumerate()
        {
            ev.clear();
            engine.apply(c, &mut ev);
            let p = Processed {
                seq: 100 + i as u64,
                timestamp_ns: t0,
                command: c,
                events: &ev,
            };
            st.apply(std::slice::from_ref(&p));
        }
        let t = st.ticker(PairId(0)).unwrap();
        assert_eq!(t.base_volume, "0.0003");
        assert_eq!(t.high.as_deref(), Some("1000.00"));
        cursor.latest();
        // Not yet 24 h: nothing changes, nothing is published.
        st.advance_clock(t0 + crate::window::DAY_NS - 1);
        assert!(cursor.latest().is_none());
        st.advance_clock(t0 + crate::window::DAY_NS);
        let msg = cursor.latest().expect("ticker published on expiry");
        let v: serde_json::Value = serde_json::from_str(msg.text()).unwrap();
        assert_eq!(v["data"]["baseVolume"], "0");
        assert_eq!(v["data"]["quoteVolume"], "0");
        assert_eq!(v["data"]["high"], serde_json::Value::Null);
        assert_eq!(v["data"]["lastPrice"], "1000.00");
    }

    /// After a crash the store's book seq lags what the live run published (it is written
    /// behind the pipeline): recovery puts the seq past every update the replayed commands
    /// may have published, so it never goes back and never names a second book. It went
    /// back to stored + 1 however many updates the replay stood for.
    #[test]
    fn recovery_puts_the_book_seq_past_every_replayed_update() {
        let (mut engine, _, _) = market(std::time::Duration::ZERO);
        let mut st = State::new(DeriveConfig {
            channel_capacity: 64,
            candles_retained: 100,
            book_interval: std::time::Duration::ZERO,
        });
        st.load(&Loaded {
            books: vec![StoredBook {
                pair: 0,
                seq: 5,
                pending: false,
            }],
            ..Loaded::default()
        });
        // Replayed (before recovery): three commands that each changed the book, which
        // the live run may have published as seqs 6, 7 and 8.
        for (i, c) in [
            place_at(1, 1, Side::Sell, 100_100, 1),
            place_at(2, 1, Side::Sell, 100_200, 1),
            place_at(3, 2, Side::Buy, 99_000, 1),
        ]
        .iter()
        .enumerate()
        {
            let mut ev = Vec::new();
            engine.apply(c, &mut ev);
            let p = Processed {
                seq: 100 + i as u64,
                timestamp_ns: 1_700_000_000_000_000_000,
                command: c,
                events: &ev,
            };
            st.apply(std::slice::from_ref(&p));
        }
        st.recover(&engine, 102);
        assert_eq!(st.pairs[0].book.seq, 8);
    }

    /// A busy market moves the clock with its batches, so the wall clock never has to: a
    /// trade must still leave the 24 h window when the batches after it carry no trade of
    /// its pair (orders that rest, cancels, other pairs' trades). It stayed in the ticker's
    /// volumes, high and low for as long as any batch came at least once a second.
    #[test]
    fn ticker_expires_while_batches_without_trades_come() {
        let (mut engine, mut st, _) = market(std::time::Duration::ZERO);
        let t0 = 1_700_000_000_000_000_000i64;
        let mut cursor = st.pairs[0]
            .channels
            .as_ref()
            .unwrap()
            .ticker
            .bus
            .subscribe();
        let cmds = [
            (t0, place(1, 1, Side::Sell)),
            (t0, place(2, 2, Side::Buy)),
            // A day and a millisecond later: an order that rests, no trade.
            (
                t0 + crate::window::DAY_NS + 1_000_000,
                place_at(3, 1, Side::Sell, 100_500, 1),
            ),
        ];
        for (i, (ts, c)) in cmds.iter().enumerate() {
            let mut ev = Vec::new();
            engine.apply(c, &mut ev);
            let p = Processed {
                seq: 100 + i as u64,
                timestamp_ns: *ts,
                command: c,
                events: &ev,
            };
            st.apply(std::slice::from_ref(&p));
        }
        let t = st.ticker(PairId(0)).unwrap();
        assert_eq!(t.base_volume, "0", "{t:?}");
        assert_eq!(t.quote_volume, "0", "{t:?}");
        assert_eq!(t.high, None, "{t:?}");
        assert_eq!(t.low, None, "{t:?}");
        assert_eq!(t.last_price.as_deref(), Some("1000.00"));
        let msg = cursor.latest().expect("a ticker message");
        let v: serde_json::Value = serde_json::from_str(msg.text()).unwrap();
        assert_eq!(v["data"]["baseVolume"], "0", "{v}");
        assert_eq!(v["data"]["bestAsk"], "1005.00", "{v}");
    }
}
