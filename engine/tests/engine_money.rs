//! Unit tests of the money rules (API.md "Money"): rounding, fees, holds, rounding top-ups,
//! deposits and withdrawals, and the operator commands (currencies, pairs, halts).

mod engine_common;

use engine::{
    Amount, Command, CurrencyId, DoneReason, Event, OrderId, PairId, PairStatus, Price,
    RejectReason, RequestId, RequestStatus, Side, TimeInForce,
};
use engine_common::*;

#[test]
fn buyer_rounds_up_seller_rounds_down_remainder_and_fees_to_the_fee_account() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    // 0.00012345 BTC at 310438.36 SEK = 38.3236... SEK.
    fx.rest(ALICE, Side::Sell, Price(31_043_836), 12_345);
    let o = fx.limit(BOB, Side::Buy, Price(31_043_836), 12_345);
    let ev = fx.place(o);
    let t = trades(&ev)[0];
    assert_eq!((t.buyer_paid, t.seller_received), (3833, 3832));
    // Taker (buyer) fee on 12345 sat at 0.2 % = 24.69 -> 25 sat; maker (seller) fee on
    // 38.32 SEK at 0.1 % = 0.03832 -> 0.04 SEK.
    assert_eq!((t.buyer_fee, t.seller_fee), (25, 4));
    assert_eq!(fx.bal(BOB, SEK), (100_000 - 3833, 0));
    assert_eq!(fx.bal(BOB, BTC), (12_345 - 25, 0));
    assert_eq!(fx.bal(ALICE, SEK), (3832 - 4, 0));
    assert_eq!(fx.bal(ALICE, BTC), (BTC_1 - 12_345, 0));
    assert_eq!(fx.bal(FEES, BTC), (25, 0));
    assert_eq!(
        fx.bal(FEES, SEK),
        (4 + 1, 0),
        "fee plus the rounding remainder"
    );
    assert_eq!(fx.supply(SEK), 100_000);
    assert_eq!(fx.supply(BTC), u128::from(BTC_1));
}

#[test]
fn taker_seller_pays_the_taker_rate_maker_buyer_the_maker_rate() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(BOB, Side::Buy, sek(100), 10_000_000);
    let o = fx.market_base(ALICE, Side::Sell, 10_000_000);
    let t = trades(&fx.place(o))[0];
    assert_eq!(t.buyer_fee, 10_000, "maker buyer: 0.1 % of 0.1 BTC");
    assert_eq!(t.seller_fee, 2, "taker seller: 0.2 % of 10.00 SEK");
}

#[test]
fn a_fill_at_a_better_price_releases_the_difference() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(90), 10_000_000);
    // Buy 0.2 at 100: holds 20.00, pays 9.00 for 0.1, keeps 10.00 for the 0.1 left.
    let o = fx.limit(BOB, Side::Buy, sek(100), 20_000_000);
    fx.place(o);
    assert_eq!(fx.bal(BOB, SEK), (100_000 - 900 - 1000, 1000));
    assert_eq!(fx.e.resting_order(o.0.id).unwrap().1.held, 1000);
    fx.cancel(BOB, o.0.id);
    assert_eq!(fx.bal(BOB, SEK), (100_000 - 900, 0));
}

/// A resting buy keeps `ceil(limit x remaining)`: a fill whose own rounding needs one minor
/// unit more than the hold takes it from available.
#[test]
fn per_trade_rounding_tops_up_the_hold_from_available() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 11);
    fx.fund(ALICE, BTC, BTC_1);
    // 0.0003 BTC at 333.33: ceil(9.9999 öre) = 10 held.
    let bid = fx.rest(BOB, Side::Buy, Price(33_333), 30_000);
    assert_eq!(fx.bal(BOB, SEK), (1, 10));
    let o = fx
        .limit(ALICE, Side::Sell, Price(33_333), 10_000)
        .tif(TimeInForce::Ioc);
    let t = trades(&fx.place(o))[0];
    // Pays ceil(3.3333) = 4, must keep ceil(6.6666) = 7: 11 > 10, one öre from available.
    assert_eq!(t.buyer_paid, 4);
    assert_eq!(fx.bal(BOB, SEK), (0, 7));
    assert_eq!(fx.e.resting_order(bid).unwrap().1.held, 7);
}

/// Rules versions 1 and 2: a resting buy that cannot pay a fill's rounding unit expires.
#[test]
fn before_version_3_a_maker_that_cannot_pay_its_rounding_expires_instead_of_trading() {
    let mut fx = Fx::new();
    fx.cmd(Command::SetRulesVersion { version: 2 });
    fx.fund(BOB, SEK, 10);
    fx.fund(ALICE, BTC, BTC_1);
    let bid = fx.rest(BOB, Side::Buy, Price(33_333), 30_000);
    let o = fx
        .limit(ALICE, Side::Sell, Price(33_333), 10_000)
        .tif(TimeInForce::Ioc);
    let ev = fx.place(o);
    assert_eq!(
        ev,
        vec![
            Event::Accepted {
                order: o.0.id,
                account: ALICE,
                pair: BTC_SEK,
                side: Side::Sell,
                held: 10_000
            },
            fx_bal(ALICE, BTC, BTC_1 - 10_000, 10_000),
            fx_bal(BOB, SEK, 10, 0),
            Event::Done {
                order: bid,
                account: BOB,
                pair: BTC_SEK,
                reason: DoneReason::InsufficientFunds
            },
            Event::LevelChanged {
                pair: BTC_SEK,
                side: Side::Buy,
                price: Price(33_333),
                amount: Amount(0),
                book_seq: 2
            },
            fx_bal(ALICE, BTC, BTC_1, 0),
            Event::Done {
                order: o.0.id,
                account: ALICE,
                pair: BTC_SEK,
                reason: DoneReason::ImmediateOrCancel
            },
        ]
    );
}

/// Rules versions 1 and 2: a taker buy that cannot pay a fill's rounding unit stops there.
#[test]
fn before_version_3_a_taker_buy_that_cannot_pay_its_rounding_expires() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 11);
    fx.fund(ALICE, BTC, BTC_1);
    fx.rest(ALICE, Side::Sell, Price(33_333), 10_000);
    fx.rest(ALICE, Side::Sell, Price(33_333), 10_000);
    fx.rest(ALICE, Side::Sell, Price(33_333), 10_000);
    // Holds 10 for 0.0003 (1 left available). The first 0.0001 costs 4 and leaves 7 to
    // keep: the spare unit tops it up. The second costs 4 and would leave 4 to keep: 8 > 7.
    let o = fx.limit(BOB, Side::Buy, Price(33_333), 30_000);
    let ev = fx.place(o);
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(
        ev.last(),
        Some(&Event::Done {
            order: o.0.id,
            account: BOB,
            pair: BTC_SEK,
            reason: DoneReason::InsufficientFunds
        })
    );
    assert_eq!(fx.bal(BOB, SEK), (7, 0));
}

/// Version 3: a resting buy that committed its whole balance (its hold is exactly
/// `ceil(limit x amount)`, nothing available) trades every fill. The one that its rounding
/// would take a unit past the hold pays the value rounded down, what the seller receives,
/// and the fee account forgoes that rounding remainder; money is conserved.
#[test]
fn from_version_3_a_fully_held_maker_fills_waiving_the_rounding_unit_it_cannot_pay() {
    let mut fx = bob_with_sek_at_version(3, 10);
    let supply = fx.supply(SEK);
    // 0.0003 BTC at 333.33: ceil(9.9999 öre) = 10 held, nothing available.
    let bid = fx.rest(BOB, Side::Buy, Price(33_333), 30_000);
    assert_eq!(fx.bal(BOB, SEK), (0, 10));
    // Each 0.0001 is worth 3.3333 öre. Fill 1: paying 4 would leave 6 for the 7 to keep,
    // so it pays 3. Fill 2: from 7 held, 4 to keep: pays 3 again.
    let mut seller_fees = 0;
    for held_after in [7, 4] {
        let o = fx
            .limit(ALICE, Side::Sell, Price(33_333), 10_000)
            .tif(TimeInForce::Ioc);
        let t = trades(&fx.place(o))[0];
        assert_eq!((t.buyer_paid, t.seller_received), (3, 3));
        assert_eq!(fx.e.resting_order(bid).unwrap().1.held, held_after);
        // The fee account got the seller's fee and no rounding remainder.
        seller_fees += t.seller_fee;
        assert_eq!(fx.bal(FEES, SEK).0, seller_fees);
    }
    // The last 0.0001 costs ceil(3.3333) = 4 out of the 4 held: the order is filled, and
    // over its three fills it paid 10, exactly what it held.
    let o = fx
        .limit(ALICE, Side::Sell, Price(33_333), 10_000)
        .tif(TimeInForce::Ioc);
    let ev = fx.place(o);
    assert_eq!(trades(&ev)[0].buyer_paid, 4);
    assert!(ev.contains(&Event::Done {
        order: bid,
        account: BOB,
        pair: BTC_SEK,
        reason: DoneReason::Filled
    }));
    assert!(fx.e.resting_order(bid).is_none());
    assert_eq!(fx.bal(BOB, SEK), (0, 0));
    // Three maker fees of 0.1 % on 10,000 sat.
    assert_eq!(fx.bal(BOB, BTC), (30_000 - 3 * 10, 0));
    assert_eq!(fx.supply(SEK), supply, "no öre created or lost");
    fx.e.check_invariants().unwrap();
}

/// Version 3: a taker buy holding exactly `ceil(limit x amount)` fills across several
/// makers even when the fills' rounding adds up past its hold.
#[test]
fn from_version_3_a_fully_held_taker_buy_fills_across_makers() {
    let mut fx = bob_with_sek_at_version(3, 10);
    let supply = fx.supply(SEK);
    for _ in 0..3 {
        fx.rest(ALICE, Side::Sell, Price(33_333), 10_000);
    }
    let o = fx.limit(BOB, Side::Buy, Price(33_333), 30_000);
    let ev = fx.place(o);
    let paid: Vec<u64> = trades(&ev).iter().map(|t| t.buyer_paid).collect();
    assert_eq!(
        paid,
        vec![3, 3, 4],
        "the first two waive the unit, the last is covered"
    );
    assert_eq!(
        ev.last(),
        Some(&Event::Done {
            order: o.0.id,
            account: BOB,
            pair: BTC_SEK,
            reason: DoneReason::Filled
        })
    );
    assert_eq!(fx.bal(BOB, SEK), (0, 0));
    assert_eq!(fx.supply(SEK), supply);
    fx.e.check_invariants().unwrap();
}

/// Version 3: with a unit available, the fill is paid rounded up as before (the waiver is
/// only for what neither the hold nor available covers).
#[test]
fn from_version_3_an_available_unit_still_pays_the_rounding() {
    let mut fx = bob_with_sek_at_version(3, 11);
    let bid = fx.rest(BOB, Side::Buy, Price(33_333), 30_000);
    let o = fx
        .limit(ALICE, Side::Sell, Price(33_333), 10_000)
        .tif(TimeInForce::Ioc);
    let t = trades(&fx.place(o))[0];
    assert_eq!((t.buyer_paid, t.seller_received), (4, 3));
    assert_eq!(fx.bal(BOB, SEK), (0, 7));
    assert_eq!(fx.e.resting_order(bid).unwrap().1.held, 7);
}

/// Version 3: a FOK sell against a fully held bid whose fill needs the waiver fills (before,
/// the dry walk refused it while an IOC of the same order filled).
#[test]
fn from_version_3_a_fok_sell_fills_against_a_fully_held_bid() {
    for (version, fills) in [(2, false), (3, true)] {
        let mut fx = bob_with_sek_at_version(version, 10);
        fx.rest(BOB, Side::Buy, Price(33_333), 30_000);
        let o = fx
            .limit(ALICE, Side::Sell, Price(33_333), 10_000)
            .tif(TimeInForce::Fok);
        let ev = fx.place(o);
        assert_eq!(trades(&ev).len(), usize::from(fills), "version {version}");
        let reason = if fills {
            DoneReason::Filled
        } else {
            DoneReason::FillOrKill
        };
        assert!(
            ev.contains(&Event::Done {
                order: o.0.id,
                account: ALICE,
                pair: BTC_SEK,
                reason
            }),
            "version {version}: {ev:?}"
        );
    }
}

/// An engine at matching rules `version` where bob has `sek` öre and alice one bitcoin.
fn bob_with_sek_at_version(version: u32, sek: u64) -> Fx {
    let mut fx = Fx::new();
    fx.cmd(Command::SetRulesVersion { version });
    fx.fund(BOB, SEK, sek);
    fx.fund(ALICE, BTC, BTC_1);
    fx
}

fn fx_bal(account: engine::AccountId, currency: CurrencyId, available: u64, held: u64) -> Event {
    Event::Balance {
        account,
        currency,
        available,
        held,
    }
}

fn updated(request: RequestId, account: engine::AccountId, status: RequestStatus) -> Event {
    Event::RequestUpdated {
        request,
        account,
        status,
    }
}

#[test]
fn deposit_request_moves_no_money_until_approved() {
    let mut fx = Fx::new();
    let spec = fx.request(ALICE, SEK, 500);
    let id = spec.request;
    assert_eq!(
        fx.cmd(Command::DepositRequested(Box::new(spec))),
        vec![updated(id, ALICE, RequestStatus::Pending)]
    );
    assert_eq!(fx.bal(ALICE, SEK), (0, 0));
    assert_eq!(
        fx.cmd(Command::ApproveRequest { request: id }),
        vec![
            fx_bal(ALICE, SEK, 500, 0),
            updated(id, ALICE, RequestStatus::Completed)
        ]
    );
    assert_eq!(fx.e.audit()[SEK.0 as usize].deposits, 500);
    // Already decided.
    assert_eq!(
        fx.cmd(Command::RejectRequest {
            request: id,
            reason: "late".into()
        }),
        vec![Event::RequestRefused {
            request: id,
            reason: RejectReason::RequestNotPending
        }]
    );
}

#[test]
fn rejected_deposit_credits_nothing() {
    let mut fx = Fx::new();
    let spec = fx.request(ALICE, SEK, 500);
    let id = spec.request;
    fx.cmd(Command::DepositRequested(Box::new(spec)));
    assert_eq!(
        fx.cmd(Command::RejectRequest {
            request: id,
            reason: "no".into()
        }),
        vec![updated(id, ALICE, RequestStatus::Rejected)]
    );
    assert_eq!(fx.bal(ALICE, SEK), (0, 0));
    assert_eq!(fx.e.audit()[SEK.0 as usize].deposits, 0);
}

#[test]
fn credited_deposit_is_completed_at_once() {
    let mut fx = Fx::new();
    let spec = fx.request(ALICE, BTC, 7);
    let id = spec.request;
    assert_eq!(
        fx.cmd(Command::DepositCredited(Box::new(spec))),
        vec![
            fx_bal(ALICE, BTC, 7, 0),
            updated(id, ALICE, RequestStatus::Completed)
        ]
    );
}

#[test]
fn withdrawal_holds_then_approve_removes_or_reject_returns() {
    let mut fx = Fx::new();
    fx.fund(ALICE, SEK, 1000);
    let spec = fx.request(ALICE, SEK, 300);
    let w1 = spec.request;
    assert_eq!(
        fx.cmd(Command::WithdrawalRequested(Box::new(spec))),
        vec![
            fx_bal(ALICE, SEK, 700, 300),
            updated(w1, ALICE, RequestStatus::Pending)
        ]
    );
    // Held money cannot be spent by an order.
    let o = fx.limit(ALICE, Side::Buy, sek(100), 8_000_000);
    assert!(matches!(
        fx.place(o)[0],
        Event::Rejected {
            reason: RejectReason::InsufficientFunds,
            ..
        }
    ));
    assert_eq!(
        fx.cmd(Command::ApproveRequest { request: w1 }),
        vec![
            fx_bal(ALICE, SEK, 700, 0),
            updated(w1, ALICE, RequestStatus::Completed)
        ]
    );
    let audit = fx.e.audit()[SEK.0 as usize];
    assert_eq!((audit.deposits, audit.withdrawals), (1000, 300));
    let spec = fx.request(ALICE, SEK, 200);
    let w2 = spec.request;
    fx.cmd(Command::WithdrawalRequested(Box::new(spec)));
    assert_eq!(
        fx.cmd(Command::RejectRequest {
            request: w2,
            reason: "no".into()
        }),
        vec![
            fx_bal(ALICE, SEK, 700, 0),
            updated(w2, ALICE, RequestStatus::Rejected)
        ]
    );
}

#[test]
fn request_refusals() {
    let mut fx = Fx::new();
    fx.fund(ALICE, SEK, 100);
    let refused = |fx: &mut Fx, c: Command, request, reason| {
        assert_eq!(fx.cmd(c), vec![Event::RequestRefused { request, reason }]);
    };
    let spec = fx.request(ALICE, SEK, 101);
    let id = spec.request;
    refused(
        &mut fx,
        Command::WithdrawalRequested(Box::new(spec)),
        id,
        RejectReason::InsufficientFunds,
    );
    let spec = fx.request(ALICE, CurrencyId(9), 1);
    let id = spec.request;
    refused(
        &mut fx,
        Command::DepositRequested(Box::new(spec)),
        id,
        RejectReason::UnknownCurrency,
    );
    let spec = fx.request(ALICE, SEK, 0);
    let id = spec.request;
    refused(
        &mut fx,
        Command::DepositCredited(Box::new(spec)),
        id,
        RejectReason::InvalidAmount,
    );
    let mut spec = fx.request(ALICE, SEK, 1);
    spec.request = RequestId(1);
    refused(
        &mut fx,
        Command::DepositCredited(Box::new(spec)),
        RequestId(1),
        RejectReason::DuplicateRequestId,
    );
    let spec = fx.request(FEES, SEK, 1);
    let id = spec.request;
    refused(
        &mut fx,
        Command::DepositCredited(Box::new(spec)),
        id,
        RejectReason::InvalidSpec,
    );
    let spec = fx.request(ALICE, SEK, 1 << 62);
    let id = spec.request;
    refused(
        &mut fx,
        Command::DepositCredited(Box::new(spec)),
        id,
        RejectReason::AmountOverflow,
    );
    refused(
        &mut fx,
        Command::ApproveRequest {
            request: RequestId(77),
        },
        RequestId(77),
        RejectReason::RequestNotPending,
    );
    assert_eq!(fx.bal(ALICE, SEK), (100, 0));
}

#[test]
fn add_currency_and_pair_and_their_refusals() {
    let mut fx = Fx::new();
    assert_eq!(
        fx.cmd(Command::AddCurrency(Box::new(currency("ETH", 18)))),
        vec![Event::CurrencyAdded {
            currency: CurrencyId(2)
        }]
    );
    let refused = |reason| vec![Event::ConfigRefused { reason }];
    assert_eq!(
        fx.cmd(Command::AddCurrency(Box::new(currency("ETH", 8)))),
        refused(RejectReason::DuplicateCurrency)
    );
    assert_eq!(
        fx.cmd(Command::AddCurrency(Box::new(currency("XXX", 19)))),
        refused(RejectReason::InvalidSpec)
    );
    let mut eth_btc = btc_sek_spec();
    eth_btc.base = CurrencyId(2);
    eth_btc.quote = BTC;
    eth_btc.price_decimals = 5;
    eth_btc.amount_decimals = 4;
    eth_btc.min_amount = Amount(1);
    assert_eq!(
        fx.cmd(Command::AddPair(eth_btc.clone())),
        vec![Event::PairAdded { pair: PairId(1) }]
    );
    assert_eq!(
        fx.e.pair_scale(PairId(1)).unwrap().base_minor_per_lot,
        100_000_000_000_000
    );
    assert_eq!(
        fx.e.pair_scale(PairId(1)).unwrap().value_per_quote_minor,
        10
    );
    assert_eq!(
        fx.cmd(Command::AddPair(eth_btc.clone())),
        refused(RejectReason::DuplicatePair)
    );
    let mut bad = eth_btc.clone();
    bad.quote = CurrencyId(9);
    assert_eq!(
        fx.cmd(Command::AddPair(bad)),
        refused(RejectReason::UnknownCurrency)
    );
    let mut bad = eth_btc.clone();
    bad.quote = bad.base;
    assert_eq!(
        fx.cmd(Command::AddPair(bad)),
        refused(RejectReason::InvalidSpec)
    );
    let mut bad = eth_btc;
    bad.base = SEK;
    bad.price_decimals = 0;
    bad.amount_decimals = 0;
    // SEK has 2 decimals: a value grid of 1 BTC-satoshi... is fine; too coarse is refused.
    bad.quote = BTC;
    assert_eq!(
        fx.cmd(Command::AddPair(bad)),
        refused(RejectReason::InvalidSpec)
    );
    // The new pair trades at once.
    let spec = fx.request(ALICE, CurrencyId(2), 10u64.pow(18));
    fx.cmd(Command::DepositCredited(Box::new(spec)));
    let o = fx.limit(ALICE, Side::Sell, Price(5_000), 1).pair(PairId(1));
    assert!(matches!(fx.place(o)[2], Event::Rested { .. }));
}

#[test]
fn a_halted_pair_refuses_orders_but_cancels_still_work() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 1000 * SEK_1);
    let bid = fx.rest(BOB, Side::Buy, sek(100), 10_000_000);
    assert_eq!(
        fx.cmd(Command::SetPairStatus {
            pair: BTC_SEK,
            status: PairStatus::Halted
        }),
        vec![Event::PairStatusChanged {
            pair: BTC_SEK,
            status: PairStatus::Halted
        }]
    );
    let o = fx.limit(BOB, Side::Buy, sek(100), 10_000_000);
    assert_eq!(
        fx.place(o),
        vec![Event::Rejected {
            order: o.0.id,
            account: BOB,
            reason: RejectReason::PairHalted
        }]
    );
    assert!(matches!(
        fx.cancel(BOB, bid)[1],
        Event::Done {
            reason: DoneReason::Cancelled,
            ..
        }
    ));
    fx.cmd(Command::SetPairStatus {
        pair: BTC_SEK,
        status: PairStatus::Active,
    });
    let o = fx.limit(BOB, Side::Buy, sek(100), 10_000_000);
    assert!(matches!(fx.place(o)[0], Event::Accepted { .. }));
    assert_eq!(
        fx.cmd(Command::SetPairStatus {
            pair: PairId(5),
            status: PairStatus::Halted
        }),
        vec![Event::ConfigRefused {
            reason: RejectReason::UnknownPair
        }]
    );
    let _ = OrderId(0);
}

/// Regression: request ids come from the API's counter before sequencing, so two concurrent
/// requests may reach the engine in the opposite order of their ids; the lower one was
/// refused as a duplicate (a spurious 503). Now only an id used before is.
#[test]
fn request_ids_may_arrive_out_of_order_but_are_used_once() {
    let mut fx = Fx::new();
    let first = fx.request(ALICE, SEK, 100);
    let second = fx.request(ALICE, SEK, 200);
    let completed = |ev: &[Event]| {
        matches!(
            ev.last(),
            Some(Event::RequestUpdated {
                status: engine::RequestStatus::Completed,
                ..
            })
        )
    };
    let ev = fx.cmd(Command::DepositCredited(Box::new(second.clone())));
    assert!(completed(&ev), "{ev:?}");
    let ev = fx.cmd(Command::DepositCredited(Box::new(first.clone())));
    assert!(completed(&ev), "{ev:?}");
    for spec in [first, second] {
        let id = spec.request;
        assert_eq!(
            fx.cmd(Command::DepositCredited(Box::new(spec))),
            vec![Event::RequestRefused {
                request: id,
                reason: RejectReason::DuplicateRequestId
            }]
        );
    }
    assert_eq!(fx.bal(ALICE, SEK), (300, 0));
    let restored = engine::state::decode(&engine::state::encode(&fx.e), fx.e.limits()).unwrap();
    assert_eq!(restored.state_hash(), fx.e.state_hash());
}

/// A market sell's quote amount in value units passes `u128` on a pair of 8 price and 12
/// amount decimals over a quote without decimals. Before matching rules version 4 the budget
/// wrapped, as the builds of those rules did in release, so their journals replay the same:
/// the order sold a sliver (0.003662539256 of its 1 WEI). From version 4 it saturates and
/// the order sells all it holds.
#[test]
fn a_market_budget_past_u128_wraps_before_rules_version_4_and_saturates_from_it() {
    const JPY: CurrencyId = CurrencyId(2);
    const WEI: CurrencyId = CurrencyId(3);
    const WEI_JPY: PairId = PairId(1);
    for (version, sold) in [(3, 3_662_539_256u64), (4, 1_000_000_000_000)] {
        let mut fx = Fx::new();
        fx.cmd(Command::SetRulesVersion { version });
        fx.cmd(Command::AddCurrency(Box::new(currency("JPY", 0))));
        fx.cmd(Command::AddCurrency(Box::new(currency("WEI", 18))));
        fx.cmd(Command::AddPair(engine::PairSpec {
            base: WEI,
            quote: JPY,
            price_decimals: 8,
            amount_decimals: 12,
            min_amount: Amount(1),
            maker_fee_ppm: 0,
            taker_fee_ppm: 0,
            status: PairStatus::Active,
        }));
        fx.fund(ALICE, WEI, 10u64.pow(18));
        fx.fund(BOB, JPY, 200);
        // 1.05 WEI at 100 JPY.
        let bid = fx
            .limit(BOB, Side::Buy, Price(100 * 10u64.pow(8)), 1_050_000_000_000)
            .pair(WEI_JPY);
        fx.place(bid);
        let sell = fx
            .market_quote(ALICE, Side::Sell, 3_402_823_669_209_384_635)
            .pair(WEI_JPY);
        let ev = fx.place(sell);
        let lots: u64 = trades(&ev).iter().map(|t| t.amount.0).sum();
        assert_eq!(lots, sold, "version {version}: {ev:?}");
    }
}

/// A market buy by quote amount that spends all of it on the last order of the book: before
/// matching rules version 5 it ended `NoLiquidity`, from version 5 it is filled.
#[test]
fn a_spent_quote_budget_is_filled_from_rules_version_5() {
    for (version, reason) in [(4, DoneReason::NoLiquidity), (5, DoneReason::Filled)] {
        let mut fx = bob_with_sek_at_version(version, 10 * SEK_1);
        // The whole book: 0.1 BTC at 100 SEK, 10.00 SEK.
        fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
        let buy = fx.market_quote(BOB, Side::Buy, 10 * SEK_1);
        let ev = fx.place(buy);
        assert_eq!(trades(&ev).len(), 1, "version {version}: {ev:?}");
        assert!(
            ev.contains(&Event::Done {
                order: buy.0.id,
                account: BOB,
                pair: BTC_SEK,
                reason
            }),
            "version {version}: {ev:?}"
        );
    }
}
