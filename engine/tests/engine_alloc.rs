//! A warmed book matches without allocating: adds, cancels and crossing orders at new and
//! existing price levels, with the events `Vec` reused. A counting global allocator proves it.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use engine::{
    AccountId, Amount, ClientOrderId, Command, CurrencyId, CurrencySpec, Engine, EngineLimits,
    MarketSize, OrderId, OrderKind, PairId, PairSpec, PairStatus, PlaceOrder, Price, RequestId,
    RequestSpec, SelfTradePrevention, Side, TimeInForce,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PAIR: PairId = PairId(0);

fn place(id: u64, account: u32, side: Side, kind: OrderKind) -> Command {
    Command::Place(PlaceOrder {
        id: OrderId(id),
        account: AccountId(account),
        pair: PAIR,
        side,
        kind,
        stp: SelfTradePrevention::ExpireMaker,
        client_id: ClientOrderId::NONE,
    })
}

fn limit(price: u64, lots: u64, tif: TimeInForce) -> OrderKind {
    OrderKind::Limit {
        price: Price(price),
        amount: Amount(lots),
        tif,
        post_only: false,
    }
}

/// A deterministic stream: adds around 10 000 over 200 levels each side, cancels of earlier
/// adds, crossing limits and market orders sweeping levels, all accounts 1..=8.
fn stream(from_id: u64, n: u64) -> Vec<Command> {
    let mut x = 0x2545_F491_4F6C_DD1Du64 ^ from_id;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = Vec::new();
    for i in 0..n {
        let id = from_id + i;
        let r = next();
        let account = 1 + (r % 8) as u32;
        let side = if r >> 8 & 1 == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let off = 1 + (r >> 16) % 200;
        let price = match side {
            Side::Buy => 10_000 - off,
            Side::Sell => 10_000 + off,
        };
        v.push(match (r >> 32) % 10 {
            0..=4 => place(
                id,
                account,
                side,
                limit(price, 1 + (r >> 40) % 50, TimeInForce::Gtc),
            ),
            5..=7 => Command::Cancel {
                account: AccountId(account),
                order: OrderId(id.saturating_sub(1 + (r >> 40) % 500)),
            },
            8 => {
                let through = (r >> 40) % 30;
                let p = match side {
                    Side::Buy => 10_000 + through,
                    Side::Sell => 10_000 - through,
                };
                place(
                    id,
                    account,
                    side,
                    limit(p, 1 + (r >> 48) % 300, TimeInForce::Gtc),
                )
            }
            _ => place(
                id,
                account,
                side,
                OrderKind::Market {
                    size: MarketSize::Base(Amount(1 + (r >> 40) % 200)),
                },
            ),
        });
    }
    v
}

#[test]
#[cfg_attr(
    feature = "verify",
    ignore = "under `verify` every command is followed by a full invariant check, which walks the \
              books (quadratic over this test's millions of commands) and may allocate"
)]
fn steady_state_matching_allocates_nothing() {
    let mut e = Engine::new(EngineLimits {
        reserve_orders_per_book: 200_000,
        ..EngineLimits::default()
    });
    let mut out = Vec::with_capacity(1 << 16);
    let mut setup = vec![
        Command::AddCurrency(Box::new(CurrencySpec {
            code: "B".into(),
            display_name: "B".into(),
            decimals: 0,
        })),
        Command::AddCurrency(Box::new(CurrencySpec {
            code: "Q".into(),
            display_name: "Q".into(),
            decimals: 0,
        })),
        Command::AddPair(PairSpec {
            base: CurrencyId(0),
            quote: CurrencyId(1),
            price_decimals: 0,
            amount_decimals: 0,
            min_amount: Amount(1),
            maker_fee_ppm: 1_000,
            taker_fee_ppm: 2_000,
            status: PairStatus::Active,
        }),
    ];
    for a in 1..=8u32 {
        for c in 0..2u16 {
            setup.push(Command::DepositCredited(Box::new(RequestSpec {
                request: RequestId(u64::from(a) * 2 + u64::from(c)),
                account: AccountId(a),
                currency: CurrencyId(c),
                amount: 1 << 50,
                external_id: String::new(),
                destination: String::new(),
            })));
        }
    }
    for c in &setup {
        e.apply(c, &mut out);
    }
    // Warm: every level the stream uses, the arenas, the id table, the events Vec.
    for c in stream(1, 200_000) {
        out.clear();
        e.apply(&c, &mut out);
    }
    e.check_invariants().unwrap();
    let measured = stream(1_000_000, 200_000);
    let (mut trades, mut cancels) = (0usize, 0usize);
    // The counter itself works.
    COUNTING.store(true, Ordering::SeqCst);
    drop(std::hint::black_box(Box::new(7u64)));
    assert_eq!(ALLOCATIONS.swap(0, Ordering::SeqCst), 1);
    for c in &measured {
        out.clear();
        e.apply(c, &mut out);
        // Counting what happened must not allocate either.
        for ev in &out {
            match ev {
                engine::Event::Trade(_) => trades += 1,
                engine::Event::Done {
                    reason: engine::DoneReason::Cancelled,
                    ..
                } => cancels += 1,
                _ => {}
            }
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    e.check_invariants().unwrap();
    assert_eq!(allocations, 0, "allocations during steady-state matching");
    assert!(trades > 10_000, "the stream must match: {trades} trades");
    assert!(cancels > 1_000, "the stream must cancel: {cancels} cancels");
}
