//! Shared helpers for the pipeline tests: a seeded command stream, a recording listener and
//! a blocking submit.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use engine::pipeline::{OutputListener, Pipeline, Processed, SubmitError};
use engine::{
    AccountId, Amount, ClientOrderId, Command, CurrencyId, CurrencySpec, Engine, Event, MarketSize,
    OrderId, OrderKind, PairId, PairSpec, PairStatus, PlaceOrder, Price, RequestId, RequestSpec,
    SelfTradePrevention, Side, TimeInForce,
};
use parking_lot::Mutex;

/// xorshift64*: enough randomness for command streams, reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Two currencies (BTC 8 decimals, SEK 2) and two pairs on them (second one added later
/// by the stream, to exercise run-time pairs).
pub fn setup() -> Vec<Command> {
    vec![
        Command::AddCurrency(Box::new(CurrencySpec {
            code: "BTC".into(),
            display_name: "Bitcoin".into(),
            decimals: 8,
        })),
        Command::AddCurrency(Box::new(CurrencySpec {
            code: "SEK".into(),
            display_name: "Swedish krona".into(),
            decimals: 2,
        })),
        Command::AddPair(pair_spec(CurrencyId(0), CurrencyId(1))),
    ]
}

pub fn pair_spec(base: CurrencyId, quote: CurrencyId) -> PairSpec {
    PairSpec {
        base,
        quote,
        price_decimals: 2,
        amount_decimals: 4,
        min_amount: Amount(1),
        maker_fee_ppm: 1000,
        taker_fee_ppm: 2000,
        status: PairStatus::Active,
    }
}

/// A seeded stream of deposits, withdrawals, orders of every kind and cancels.
#[derive(Debug)]
pub struct Stream {
    rng: Rng,
    next_order: u64,
    next_request: u64,
    accounts: u32,
    pending_requests: Vec<u64>,
    pub pairs: u16,
}

impl Stream {
    pub fn new(seed: u64) -> Self {
        Stream {
            rng: Rng::new(seed),
            next_order: 1,
            next_request: 1,
            accounts: 20,
            pending_requests: Vec::new(),
            pairs: 1,
        }
    }

    fn request(&mut self, account: u32, currency: u16, amount: u64) -> RequestSpec {
        let id = self.next_request;
        self.next_request += 1;
        RequestSpec {
            request: RequestId(id),
            account: AccountId(account),
            currency: CurrencyId(currency),
            amount,
            external_id: format!("ext-{id}"),
            destination: String::new(),
        }
    }

    pub fn next_command(&mut self) -> Command {
        let r = self.rng.below(100);
        let account = 1 + self.rng.below(u64::from(self.accounts)) as u32;
        if r < 8 {
            let currency = self.rng.below(2) as u16;
            let amount = if currency == 0 {
                1 + self.rng.below(500_000_000)
            } else {
                1 + self.rng.below(50_000_000)
            };
            return Command::DepositCredited(Box::new(self.request(account, currency, amount)));
        }
        if r < 10 {
            let currency = self.rng.below(2) as u16;
            let amount = 1 + self.rng.below(100_000);
            let spec = self.request(account, currency, amount);
            self.pending_requests.push(spec.request.0);
            return if self.rng.below(2) == 0 {
                Command::WithdrawalRequested(Box::new(spec))
            } else {
                Command::DepositRequested(Box::new(spec))
            };
        }
        if r < 12 && !self.pending_requests.is_empty() {
            let i = self.rng.below(self.pending_requests.len() as u64) as usize;
            let request = RequestId(self.pending_requests.swap_remove(i));
            return if self.rng.below(2) == 0 {
                Command::ApproveRequest { request }
            } else {
                Command::RejectRequest {
                    request,
                    reason: "test".into(),
                }
            };
        }
        if r == 12 && self.pairs == 1 {
            self.pairs = 2;
            // SEK_BTC: SEK has 2 decimals, so amounts in 0.01 and prices in 1e-8 BTC.
            return Command::AddPair(PairSpec {
                amount_decimals: 2,
                price_decimals: 8,
                ..pair_spec(CurrencyId(1), CurrencyId(0))
            });
        }
        if r < 25 && self.next_order > 1 {
            let order = OrderId(1 + self.rng.below(self.next_order - 1));
            return Command::Cancel {
                account: AccountId(account),
                order,
            };
        }
        if r == 25 {
            return Command::CancelAll {
                account: AccountId(account),
                pair: (self.rng.below(2) == 0).then_some(PairId(0)),
            };
        }
        let id = OrderId(self.next_order);
        self.next_order += 1;
        let side = if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let pair = PairId(self.rng.below(u64::from(self.pairs)) as u16);
        let kind = if r < 85 {
            let tif = match self.rng.below(10) {
                0 => TimeInForce::Ioc,
                1 => TimeInForce::Fok,
                _ => TimeInForce::Gtc,
            };
            OrderKind::Limit {
                price: Price(9_900 + self.rng.below(200)),
                amount: Amount(1 + self.rng.below(5_000)),
                tif,
                post_only: self.rng.below(8) == 0,
            }
        } else {
            let size = if self.rng.below(2) == 0 {
                MarketSize::Base(Amount(1 + self.rng.below(3_000)))
            } else {
                MarketSize::Quote(1 + self.rng.below(50_000))
            };
            OrderKind::Market { size }
        };
        let stp = match self.rng.below(4) {
            0 => SelfTradePrevention::ExpireTaker,
            1 => SelfTradePrevention::ExpireMaker,
            2 => SelfTradePrevention::ExpireBoth,
            _ => SelfTradePrevention::None,
        };
        Command::Place(PlaceOrder {
            id,
            account: AccountId(account),
            pair,
            side,
            kind,
            stp,
            client_id: ClientOrderId::parse(&format!("c{}", id.0)).expect("valid"),
        })
    }
}

/// One delivered command.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub seq: u64,
    pub timestamp_ns: i64,
    pub command: Command,
    pub events: Vec<Event>,
}

impl Seen {
    pub fn of(p: &Processed<'_>) -> Self {
        Seen {
            seq: p.seq,
            timestamp_ns: p.timestamp_ns,
            command: p.command.clone(),
            events: p.events.to_vec(),
        }
    }
}

/// Records every batch and the order of calls; `applied` is what it claims to have.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// `("batch", first seq)` / `("recovered", last seq)` / `("reply", seq)` in call order.
    pub log: Arc<Mutex<Vec<(&'static str, u64)>>>,
    pub applied: u64,
}

impl Recorder {
    pub fn needing_all() -> Self {
        Recorder::default()
    }
    pub fn needing_nothing() -> Self {
        Recorder {
            applied: u64::MAX,
            ..Recorder::default()
        }
    }
}

impl OutputListener for Recorder {
    fn applied_seq(&self) -> u64 {
        self.applied
    }
    fn on_recovered(&mut self, _engine: &Engine, last_seq: u64) {
        self.log.lock().push(("recovered", last_seq));
    }
    fn on_batch(&mut self, batch: &[Processed<'_>]) {
        let mut seen = self.seen.lock();
        let mut log = self.log.lock();
        for p in batch {
            log.push(("batch", p.seq));
            seen.push(Seen::of(p));
        }
    }
}

/// Submits and waits for the reply (retrying while busy).
pub fn submit_wait(p: &Pipeline, command: Command) -> Seen {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut cmd = Some(command);
    loop {
        let tx = tx.clone();
        let c = cmd.take().expect("command");
        let keep = c.clone();
        match p.submit(
            c,
            Box::new(move |processed: &Processed<'_>| {
                let _ = tx.send(Seen::of(processed));
            }),
        ) {
            Ok(()) => break,
            Err(SubmitError::Busy) => {
                cmd = Some(keep);
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => panic!("submit failed: {e}"),
        }
    }
    rx.recv_timeout(Duration::from_secs(30)).expect("reply")
}

/// What a client could ask: every balance and every resting order, canonically.
/// Balances `(account, currency, available, held)` and resting orders as text.
pub type Answers = (Vec<(AccountId, CurrencyId, u64, u64)>, Vec<String>);

pub fn query_answers(e: &Engine) -> Answers {
    let balances = e
        .ledger()
        .non_zero()
        .map(|(a, c, b)| (a, c, b.available, b.held))
        .collect();
    let mut orders = Vec::new();
    for o in 1..100_000u64 {
        if let Some((pair, r)) = e.resting_order(OrderId(o)) {
            orders.push(format!(
                "{pair}:{}:{}:{:?}:{}:{}:{}",
                r.id, r.account, r.side, r.price, r.remaining, r.held
            ));
        }
    }
    (balances, orders)
}
