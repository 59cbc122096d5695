//! Shared fixture for the engine's integration tests: a BTC_SEK market, funded accounts and
//! one-line helpers that run a command, check every invariant and return its events.

#![allow(dead_code)]

use engine::{
    AccountId, Amount, Balance, ClientOrderId, Command, CurrencyId, CurrencySpec, Engine,
    EngineLimits, Event, MarketSize, OrderId, OrderKind, PairId, PairSpec, PairStatus, PlaceOrder,
    Price, RejectReason, RequestId, RequestSpec, SelfTradePrevention, Side, TimeInForce,
};

pub const BTC: CurrencyId = CurrencyId(0);
pub const SEK: CurrencyId = CurrencyId(1);
pub const BTC_SEK: PairId = PairId(0);
pub const ALICE: AccountId = AccountId(1);
pub const BOB: AccountId = AccountId(2);
pub const CAROL: AccountId = AccountId(3);
pub const FEES: AccountId = AccountId::FEES;

/// Maker 0.1 %, taker 0.2 %, as API.md's example pair.
pub const MAKER_PPM: u32 = 1_000;
pub const TAKER_PPM: u32 = 2_000;

/// One SEK in minor units (öre) and one BTC in minor units (satoshi, also the lot).
pub const SEK_1: u64 = 100;
pub const BTC_1: u64 = 100_000_000;

/// Price ticks for a whole SEK price (2 price decimals).
pub const fn sek(whole: u64) -> Price {
    Price(whole * 100)
}

pub fn currency(code: &str, decimals: u8) -> CurrencySpec {
    CurrencySpec {
        code: code.into(),
        display_name: code.into(),
        decimals,
    }
}

pub fn btc_sek_spec() -> PairSpec {
    PairSpec {
        base: BTC,
        quote: SEK,
        price_decimals: 2,
        amount_decimals: 8,
        min_amount: Amount(10_000),
        maker_fee_ppm: MAKER_PPM,
        taker_fee_ppm: TAKER_PPM,
        status: PairStatus::Active,
    }
}

/// An order as a builder: defaults GTC, not post-only, expireTaker, no client id.
#[derive(Clone, Copy, Debug)]
pub struct Order(pub OrderFields);

/// [`PlaceOrder`] without its client id (which is not `Copy`), so tests can keep using an
/// order after placing it.
#[derive(Clone, Copy, Debug)]
pub struct OrderFields {
    pub id: OrderId,
    pub account: AccountId,
    pub pair: PairId,
    pub side: Side,
    pub kind: OrderKind,
    pub stp: SelfTradePrevention,
}

impl Order {
    /// The command's form.
    pub fn place_order(&self) -> PlaceOrder {
        let o = self.0;
        PlaceOrder {
            id: o.id,
            account: o.account,
            pair: o.pair,
            side: o.side,
            kind: o.kind,
            stp: o.stp,
            client_id: ClientOrderId::NONE,
        }
    }
}

impl Order {
    pub fn tif(mut self, tif: TimeInForce) -> Self {
        if let OrderKind::Limit { tif: t, .. } = &mut self.0.kind {
            *t = tif;
        }
        self
    }
    pub fn post_only(mut self) -> Self {
        if let OrderKind::Limit { post_only, .. } = &mut self.0.kind {
            *post_only = true;
        }
        self
    }
    pub fn stp(mut self, stp: SelfTradePrevention) -> Self {
        self.0.stp = stp;
        self
    }
    pub fn id(mut self, id: u64) -> Self {
        self.0.id = OrderId(id);
        self
    }
    pub fn pair(mut self, pair: PairId) -> Self {
        self.0.pair = pair;
        self
    }
}

/// The engine plus id counters.
pub struct Fx {
    pub e: Engine,
    out: Vec<Event>,
    next_order: u64,
    next_request: u64,
}

impl Fx {
    /// An engine with BTC, SEK and the BTC_SEK pair, no money yet.
    pub fn new() -> Fx {
        Fx::with_limits(EngineLimits::default())
    }

    pub fn with_limits(limits: EngineLimits) -> Fx {
        let mut fx = Fx {
            e: Engine::new(limits),
            out: Vec::new(),
            next_order: 0,
            next_request: 0,
        };
        fx.cmd(Command::AddCurrency(Box::new(currency("BTC", 8))));
        fx.cmd(Command::AddCurrency(Box::new(currency("SEK", 2))));
        fx.cmd(Command::AddPair(btc_sek_spec()));
        fx
    }

    /// Applies one command, checks every invariant, returns the command's events.
    pub fn cmd(&mut self, c: Command) -> Vec<Event> {
        self.out.clear();
        self.e.apply(&c, &mut self.out);
        if let Err(err) = self.e.check_invariants() {
            panic!("invariant broken after {c:?}: {err}");
        }
        assert!(
            self.e.audit().iter().all(|a| a.ok()),
            "{:?}",
            self.e.audit()
        );
        self.out.clone()
    }

    pub fn next_request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    pub fn request(
        &mut self,
        account: AccountId,
        currency: CurrencyId,
        amount: u64,
    ) -> RequestSpec {
        RequestSpec {
            request: self.next_request(),
            account,
            currency,
            amount,
            external_id: format!("x{}", self.next_request),
            destination: String::new(),
        }
    }

    /// Credits at once (back-office deposit).
    pub fn fund(&mut self, account: AccountId, currency: CurrencyId, amount: u64) {
        let spec = self.request(account, currency, amount);
        self.cmd(Command::DepositCredited(Box::new(spec)));
    }

    pub fn bal(&self, account: AccountId, currency: CurrencyId) -> (u64, u64) {
        let Balance { available, held } = self.e.balance(account, currency);
        (available, held)
    }

    pub fn balance_event(&self, account: AccountId, currency: CurrencyId) -> Event {
        let (available, held) = self.bal(account, currency);
        Event::Balance {
            account,
            currency,
            available,
            held,
        }
    }

    fn new_order(&mut self, account: AccountId, side: Side, kind: OrderKind) -> Order {
        self.next_order += 1;
        Order(OrderFields {
            id: OrderId(self.next_order),
            account,
            pair: BTC_SEK,
            side,
            kind,
            stp: SelfTradePrevention::ExpireTaker,
        })
    }

    /// A GTC limit order (not yet placed).
    pub fn limit(&mut self, account: AccountId, side: Side, price: Price, lots: u64) -> Order {
        self.new_order(
            account,
            side,
            OrderKind::Limit {
                price,
                amount: Amount(lots),
                tif: TimeInForce::Gtc,
                post_only: false,
            },
        )
    }

    pub fn market_base(&mut self, account: AccountId, side: Side, lots: u64) -> Order {
        self.new_order(
            account,
            side,
            OrderKind::Market {
                size: MarketSize::Base(Amount(lots)),
            },
        )
    }

    pub fn market_quote(&mut self, account: AccountId, side: Side, quote_minor: u64) -> Order {
        self.new_order(
            account,
            side,
            OrderKind::Market {
                size: MarketSize::Quote(quote_minor),
            },
        )
    }

    pub fn place(&mut self, o: Order) -> Vec<Event> {
        self.cmd(Command::Place(o.place_order()))
    }

    /// Places `o` and checks that it is refused for `reason` and changes nothing.
    pub fn refuses(&mut self, o: Order, reason: RejectReason) {
        let before = self.e.state_hash();
        let account = o.0.account;
        assert_eq!(
            self.place(o),
            vec![Event::Rejected {
                order: o.0.id,
                account,
                reason
            }]
        );
        assert_eq!(
            self.e.state_hash(),
            before,
            "a refused order changes nothing"
        );
    }

    /// Places and returns the order id.
    pub fn rest(&mut self, account: AccountId, side: Side, price: Price, lots: u64) -> OrderId {
        let o = self.limit(account, side, price, lots);
        let ev = self.place(o);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Rested { order, .. } if *order == o.0.id)),
            "{ev:?}"
        );
        o.0.id
    }

    pub fn cancel(&mut self, account: AccountId, order: OrderId) -> Vec<Event> {
        self.cmd(Command::Cancel { account, order })
    }

    /// Every resting order (FIFO per level, best first) and every non-zero balance: what
    /// a rejected or killed order must leave exactly as it was.
    pub fn market_state(&self) -> MarketState {
        let book = self.e.book(BTC_SEK).expect("pair exists");
        let mut orders = Vec::new();
        for side in [Side::Buy, Side::Sell] {
            book.for_each_level(side, |l| {
                book.for_each_order_at(side, l.price, |o| orders.push((o.id, o.remaining, o.held)));
                true
            });
        }
        (orders, self.e.ledger().non_zero().collect())
    }

    /// Sum of a currency over every account including fees: deposits minus withdrawals.
    pub fn supply(&self, currency: CurrencyId) -> u128 {
        self.e.ledger().totals(currency)
    }
}

/// Only the trades among `events`.
pub fn trades(events: &[Event]) -> Vec<engine::Trade> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Trade(t) => Some(*t),
            _ => None,
        })
        .collect()
}

/// Resting orders (id, remaining, held) and non-zero balances.
pub type MarketState = (
    Vec<(OrderId, u64, u64)>,
    Vec<(AccountId, CurrencyId, Balance)>,
);
