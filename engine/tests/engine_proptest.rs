//! Property tests: random command streams (several accounts, two pairs, every order type,
//! cancels, cancel-all, deposits and withdrawals, halts, book size bounds, matching rules
//! versions) run through the engine and through the naive reference model in
//! `engine_model`. After every command: identical events,
//! identical books and balances, the engine's invariants, and conservation of money.
//! Also determinism: the same stream twice, and a snapshot round trip mid-stream.

mod engine_model;

use engine::{
    AccountId, Amount, ClientOrderId, Command, CurrencyId, CurrencySpec, Engine, EngineLimits,
    MarketSize, OrderId, OrderKind, PairId, PairSpec, PairStatus, PlaceOrder, Price, RequestId,
    RequestSpec, SelfTradePrevention, Side, TimeInForce, state,
};
use engine_model::Model;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const ACCOUNTS: u32 = 4;
const CURRENCIES: u16 = 3;

#[derive(Clone, Debug)]
enum Op {
    Limit {
        pair: u16,
        acct: u32,
        buy: bool,
        price: u64,
        lots: u64,
        tif: u8,
        post_only: bool,
        stp: u8,
    },
    MarketBase {
        pair: u16,
        acct: u32,
        buy: bool,
        lots: u64,
        stp: u8,
    },
    MarketQuote {
        pair: u16,
        acct: u32,
        buy: bool,
        quote: u64,
        stp: u8,
    },
    /// Cancel the k-th resting order (oldest first) by its owner.
    CancelOwn(usize),
    /// Cancel any id by any account (mostly unknown, final or someone else's).
    CancelAny {
        acct: u32,
        id: u64,
    },
    CancelAll {
        acct: u32,
        pair: Option<u16>,
    },
    /// Place an order reusing the id of the k-th resting order.
    DuplicateId(usize),
    Deposit {
        acct: u32,
        cur: u16,
        amount: u64,
        credited: bool,
    },
    Withdraw {
        acct: u32,
        cur: u16,
        amount: u64,
    },
    /// Approve or reject the k-th pending request (or an unknown one when none).
    Decide {
        k: usize,
        approve: bool,
    },
    Status {
        pair: u16,
        halted: bool,
    },
    /// Set the most resting orders per book (0 is refused; small bounds make books full).
    BookLimit(u32),
    /// Move the matching rules version (0 and 4 are unknown; an older one is a downgrade).
    RulesVersion(u32),
}

fn stp(n: u8) -> SelfTradePrevention {
    match n % 4 {
        0 => SelfTradePrevention::ExpireTaker,
        1 => SelfTradePrevention::ExpireMaker,
        2 => SelfTradePrevention::ExpireBoth,
        _ => SelfTradePrevention::None,
    }
}

fn op() -> impl Strategy<Value = Op> {
    let pair = prop_oneof![4 => Just(0u16), 1 => Just(1u16)];
    let acct = 1..=ACCOUNTS;
    prop_oneof![
        12 => (pair.clone(), acct.clone(), any::<bool>(), 1u64..=14, 1u64..=25, 0u8..6, prop::bool::weighted(0.1), any::<u8>())
            .prop_map(|(pair, acct, buy, price, lots, tif, post_only, stp)| Op::Limit { pair, acct, buy, price, lots, tif, post_only, stp }),
        2 => (pair.clone(), acct.clone(), any::<bool>(), 0u64..=30, any::<u8>())
            .prop_map(|(pair, acct, buy, lots, stp)| Op::MarketBase { pair, acct, buy, lots, stp }),
        2 => (pair.clone(), acct.clone(), any::<bool>(), 0u64..=400, any::<u8>())
            .prop_map(|(pair, acct, buy, quote, stp)| Op::MarketQuote { pair, acct, buy, quote, stp }),
        4 => any::<usize>().prop_map(Op::CancelOwn),
        1 => (acct.clone(), 0u64..60).prop_map(|(acct, id)| Op::CancelAny { acct, id }),
        1 => (acct.clone(), prop::option::of(0u16..3)).prop_map(|(acct, pair)| Op::CancelAll { acct, pair }),
        1 => any::<usize>().prop_map(Op::DuplicateId),
        1 => (acct.clone(), 0u16..=CURRENCIES, 0u64..3000, any::<bool>())
            .prop_map(|(acct, cur, amount, credited)| Op::Deposit { acct, cur, amount, credited }),
        1 => (acct, 0u16..CURRENCIES, 0u64..3000).prop_map(|(acct, cur, amount)| Op::Withdraw { acct, cur, amount }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(k, approve)| Op::Decide { k, approve }),
        1 => (0u16..3, prop::bool::weighted(0.7)).prop_map(|(pair, halted)| Op::Status { pair, halted: !halted }),
        1 => prop_oneof![0u32..12, Just(10_000_000u32)].prop_map(Op::BookLimit),
        1 => (0u32..=6).prop_map(Op::RulesVersion),
    ]
}

/// Fee rates (maker, taker) per pair, and the opening balance per account and currency.
#[derive(Clone, Debug)]
struct Setup {
    fees: [(u32, u32); 2],
    funds: Vec<u64>,
}

fn setup() -> impl Strategy<Value = Setup> {
    let rate = prop_oneof![
        Just(0u32),
        Just(1_000),
        Just(2_500),
        Just(250_000),
        Just(1_000_000)
    ];
    let fund = prop_oneof![Just(0u64), 1u64..40, 200u64..5_000, 10_000u64..200_000];
    (
        [(rate.clone(), rate.clone()), (rate.clone(), rate)],
        prop::collection::vec(fund, (ACCOUNTS * u32::from(CURRENCIES)) as usize),
    )
        .prop_map(|(fees, funds)| Setup { fees, funds })
}

/// Turns ops into commands, with ids assigned in order and lookups in the model.
struct Driver {
    next_order: u64,
    next_request: u64,
}

impl Driver {
    fn setup_commands(&mut self, s: &Setup) -> Vec<Command> {
        let cur = |code: &str, decimals| {
            Command::AddCurrency(Box::new(CurrencySpec {
                code: code.into(),
                display_name: code.into(),
                decimals,
            }))
        };
        let mut v = vec![cur("AAA", 3), cur("BBB", 2), cur("QQQ", 2)];
        // A_Q: a tick is 0.01 Q, a lot 0.1 A = 100 minor: values in 0.001 Q, so rounding.
        v.push(Command::AddPair(PairSpec {
            base: CurrencyId(0),
            quote: CurrencyId(2),
            price_decimals: 2,
            amount_decimals: 1,
            min_amount: Amount(1),
            maker_fee_ppm: s.fees[0].0,
            taker_fee_ppm: s.fees[0].1,
            status: PairStatus::Active,
        }));
        // B_Q: a tick is 0.1 Q, a lot one minor B, values in 0.001 Q; minimum 2 lots.
        v.push(Command::AddPair(PairSpec {
            base: CurrencyId(1),
            quote: CurrencyId(2),
            price_decimals: 1,
            amount_decimals: 2,
            min_amount: Amount(2),
            maker_fee_ppm: s.fees[1].0,
            taker_fee_ppm: s.fees[1].1,
            status: PairStatus::Active,
        }));
        for (i, amount) in s.funds.iter().enumerate() {
            let acct = i as u32 / u32::from(CURRENCIES) + 1;
            let cur = (i as u32 % u32::from(CURRENCIES)) as u16;
            if *amount > 0 {
                v.push(Command::DepositCredited(Box::new(
                    self.request(acct, cur, *amount),
                )));
            }
        }
        v
    }

    fn request(&mut self, acct: u32, cur: u16, amount: u64) -> RequestSpec {
        self.next_request += 1;
        RequestSpec {
            request: RequestId(self.next_request),
            account: AccountId(acct),
            currency: CurrencyId(cur),
            amount,
            external_id: String::new(),
            destination: String::new(),
        }
    }

    fn place(&mut self, pair: u16, acct: u32, buy: bool, kind: OrderKind, stp_mode: u8) -> Command {
        self.next_order += 1;
        Command::Place(PlaceOrder {
            id: OrderId(self.next_order),
            account: AccountId(acct),
            pair: PairId(pair),
            side: if buy { Side::Buy } else { Side::Sell },
            kind,
            stp: stp(stp_mode),
            client_id: ClientOrderId::NONE,
        })
    }

    fn command(&mut self, op: &Op, model: &Model) -> Command {
        match *op {
            Op::Limit {
                pair,
                acct,
                buy,
                price,
                lots,
                tif,
                post_only,
                stp,
            } => {
                let tif = match tif {
                    0..=3 => TimeInForce::Gtc,
                    4 => TimeInForce::Ioc,
                    _ => TimeInForce::Fok,
                };
                // Pair 1 quotes around ten times the price of pair 0.
                let price = if pair == 1 { price * 7 } else { price };
                let kind = OrderKind::Limit {
                    price: Price(price),
                    amount: Amount(lots),
                    tif,
                    post_only,
                };
                self.place(pair, acct, buy, kind, stp)
            }
            Op::MarketBase {
                pair,
                acct,
                buy,
                lots,
                stp,
            } => {
                let kind = OrderKind::Market {
                    size: MarketSize::Base(Amount(lots)),
                };
                self.place(pair, acct, buy, kind, stp)
            }
            Op::MarketQuote {
                pair,
                acct,
                buy,
                quote,
                stp,
            } => {
                let kind = OrderKind::Market {
                    size: MarketSize::Quote(quote),
                };
                self.place(pair, acct, buy, kind, stp)
            }
            Op::CancelOwn(k) => {
                let resting = model.resting();
                if resting.is_empty() {
                    return Command::Cancel {
                        account: AccountId(1),
                        order: OrderId(self.next_order + 1),
                    };
                }
                let (order, account) = resting[k % resting.len()];
                Command::Cancel { account, order }
            }
            Op::CancelAny { acct, id } => Command::Cancel {
                account: AccountId(acct),
                order: OrderId(id),
            },
            Op::CancelAll { acct, pair } => Command::CancelAll {
                account: AccountId(acct),
                pair: pair.map(PairId),
            },
            Op::DuplicateId(k) => {
                let resting = model.resting();
                let mut c = self.place(
                    0,
                    1,
                    true,
                    OrderKind::Limit {
                        price: Price(1),
                        amount: Amount(1),
                        tif: TimeInForce::Gtc,
                        post_only: false,
                    },
                    0,
                );
                if let (Command::Place(p), false) = (&mut c, resting.is_empty()) {
                    p.id = resting[k % resting.len()].0;
                }
                c
            }
            Op::Deposit {
                acct,
                cur,
                amount,
                credited,
            } => {
                let spec = self.request(acct, cur, amount);
                if credited {
                    Command::DepositCredited(Box::new(spec))
                } else {
                    Command::DepositRequested(Box::new(spec))
                }
            }
            Op::Withdraw { acct, cur, amount } => {
                Command::WithdrawalRequested(Box::new(self.request(acct, cur, amount)))
            }
            Op::Decide { k, approve } => {
                let pending = model.pending_requests();
                let request = if pending.is_empty() {
                    RequestId(1)
                } else {
                    pending[k % pending.len()]
                };
                if approve {
                    Command::ApproveRequest { request }
                } else {
                    Command::RejectRequest {
                        request,
                        reason: "no".into(),
                    }
                }
            }
            Op::Status { pair, halted } => Command::SetPairStatus {
                pair: PairId(pair),
                status: if halted {
                    PairStatus::Halted
                } else {
                    PairStatus::Active
                },
            },
            Op::BookLimit(max) => Command::SetMaxOrdersPerBook { max },
            Op::RulesVersion(version) => Command::SetRulesVersion { version },
        }
    }
}

/// The engine's books in the model's shape.
fn engine_book(e: &Engine, pair: PairId) -> Vec<(OrderId, AccountId, Side, Price, u64, u64)> {
    let book = e.book(pair).expect("pair");
    let mut v = Vec::new();
    for side in [Side::Buy, Side::Sell] {
        book.for_each_level(side, |l| {
            book.for_each_order_at(side, l.price, |o| {
                v.push((o.id, o.account, o.side, o.price, o.remaining, o.held))
            });
            true
        });
    }
    v
}

fn compare(e: &Engine, m: &Model, step: usize, c: &Command) -> Result<(), TestCaseError> {
    if let Err(err) = e.check_invariants() {
        return Err(TestCaseError::fail(format!("step {step} {c:?}: {err}")));
    }
    prop_assert!(
        e.audit().iter().all(|a| a.ok()),
        "audit after {c:?}: {:?}",
        e.audit()
    );
    prop_assert!(m.conserved(), "model lost money after {c:?}");
    for a in 0..=ACCOUNTS {
        for cur in 0..CURRENCIES {
            let (a, cur) = (AccountId(a), CurrencyId(cur));
            let b = e.balance(a, cur);
            prop_assert_eq!(
                (b.available, b.held),
                m.balance(a, cur),
                "balance {} {} after {:?}",
                a,
                cur,
                c
            );
        }
    }
    for p in 0..m.pair_count() {
        let p = PairId(p as u16);
        let model_book: Vec<_> = m
            .book(p)
            .into_iter()
            .map(|o| (o.id, o.account, o.side, o.price, o.remaining, o.held))
            .collect();
        prop_assert_eq!(engine_book(e, p), model_book, "book {} after {:?}", p, c);
        prop_assert_eq!(e.book_seq(p), m.book_seq(p));
    }
    Ok(())
}

fn run_against_model(s: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut e = Engine::new(EngineLimits::default());
    let mut m = Model::new();
    let mut d = Driver {
        next_order: 0,
        next_request: 0,
    };
    let mut out = Vec::new();
    let mut commands = d.setup_commands(s);
    let setup_len = commands.len();
    for (step, op) in std::iter::repeat_n(None, setup_len)
        .chain(ops.iter().map(Some))
        .enumerate()
    {
        let c = match op {
            None => commands[step].clone(),
            Some(op) => d.command(op, &m),
        };
        out.clear();
        e.apply(&c, &mut out);
        let expected = m.apply(&c);
        prop_assert_eq!(&out, &expected, "events of step {} {:?}", step, c);
        compare(&e, &m, step, &c)?;
        if op.is_some() {
            commands.push(c);
        }
    }
    Ok(())
}

/// Runs a stream, returning the events hash and the state hash; snapshots at `cut` and
/// continues on the restored engine, which must behave identically.
fn run_hashed(commands: &[Command], cut: usize) -> (u64, u64) {
    let mut e = Engine::new(EngineLimits::default());
    let mut out = Vec::new();
    let mut events_hash = 0xcbf2_9ce4_8422_2325u64;
    let mut restored: Option<Engine> = None;
    let mut restored_out = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        if i == cut {
            let bytes = state::encode(&e);
            let r = state::decode(&bytes, EngineLimits::default()).expect("decodes");
            assert_eq!(r.state_hash(), e.state_hash(), "snapshot round trip");
            assert_eq!(state::encode(&r), bytes, "canonical encoding");
            restored = Some(r);
        }
        out.clear();
        e.apply(c, &mut out);
        if let Some(r) = restored.as_mut() {
            restored_out.clear();
            r.apply(c, &mut restored_out);
            assert_eq!(out, restored_out, "restored engine diverged at {c:?}");
        }
        let bytes = postcard::to_stdvec(&out).expect("events encode");
        events_hash = state::fnv1a(&[events_hash.to_le_bytes().as_slice(), &bytes].concat());
    }
    if let Some(r) = restored {
        assert_eq!(
            r.state_hash(),
            e.state_hash(),
            "restored engine ends in the same state"
        );
    }
    (events_hash, e.state_hash())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_shrink_iters: 20_000,
        // Integration tests have no lib.rs for `SourceParallel`: name the file (cwd is engine/).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/engine_proptest.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_reference_model(s in setup(), ops in prop::collection::vec(op(), 1..160)) {
        run_against_model(&s, &ops)?;
    }

    #[test]
    fn same_stream_same_events_and_state(s in setup(), ops in prop::collection::vec(op(), 1..160), cut in any::<prop::sample::Index>()) {
        // Build the command stream once (ids depend on the model's view).
        let mut m = Model::new();
        let mut d = Driver { next_order: 0, next_request: 0 };
        let mut commands = d.setup_commands(&s);
        for c in &commands {
            m.apply(c);
        }
        for op in &ops {
            let c = d.command(op, &m);
            m.apply(&c);
            commands.push(c);
        }
        let cut = cut.index(commands.len());
        let first = run_hashed(&commands, cut);
        let second = run_hashed(&commands, commands.len() - 1 - cut / 2);
        prop_assert_eq!(first, second);
    }
}
