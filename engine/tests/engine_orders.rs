//! Unit tests of order handling: every order type, time in force, post-only, market sizing,
//! self-trade prevention, cancels, and the exact events and balances each produces.

mod engine_common;

use engine::{
    Amount, Command, DoneReason, Event, MarketSize, OrderId, OrderKind, PairId, Price,
    RejectReason, SelfTradePrevention, Side, TimeInForce, Trade, TradeId,
};
use engine_common::*;

fn bal(
    account: engine::AccountId,
    currency: engine::CurrencyId,
    available: u64,
    held: u64,
) -> Event {
    Event::Balance {
        account,
        currency,
        available,
        held,
    }
}

fn level(side: Side, price: Price, amount: u64, book_seq: u64) -> Event {
    Event::LevelChanged {
        pair: BTC_SEK,
        side,
        price,
        amount: Amount(amount),
        book_seq,
    }
}

fn done(order: OrderId, account: engine::AccountId, reason: DoneReason) -> Event {
    Event::Done {
        order,
        account,
        pair: BTC_SEK,
        reason,
    }
}

fn accepted(order: OrderId, account: engine::AccountId, side: Side, held: u64) -> Event {
    Event::Accepted {
        order,
        account,
        pair: BTC_SEK,
        side,
        held,
    }
}

#[test]
fn gtc_limit_rests_and_holds() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    let o = fx.limit(ALICE, Side::Sell, sek(100), BTC_1 / 2);
    let ev = fx.place(o);
    assert_eq!(
        ev,
        vec![
            accepted(o.0.id, ALICE, Side::Sell, BTC_1 / 2),
            bal(ALICE, BTC, BTC_1 / 2, BTC_1 / 2),
            Event::Rested {
                order: o.0.id,
                remaining: Amount(BTC_1 / 2)
            },
            level(Side::Sell, sek(100), BTC_1 / 2, 1),
        ]
    );
    assert_eq!(fx.e.book_seq(BTC_SEK), 1);
    let book = fx.e.book(BTC_SEK).unwrap();
    assert_eq!(book.best(Side::Sell), Some((sek(100), Amount(BTC_1 / 2))));
    assert_eq!(book.best(Side::Buy), None);
}

#[test]
fn crossing_limit_trades_at_the_makers_price_and_releases_the_difference() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    let ask = fx.rest(ALICE, Side::Sell, sek(100), BTC_1 / 2);
    let o = fx.limit(BOB, Side::Buy, sek(101), BTC_1 / 2);
    let ev = fx.place(o);
    // Held at the limit: 50.50 SEK; paid at the maker's price: 50.00 SEK.
    assert_eq!(
        ev,
        vec![
            accepted(o.0.id, BOB, Side::Buy, 5050),
            bal(BOB, SEK, 100_000 - 5050, 5050),
            Event::Trade(Trade {
                id: TradeId(1),
                pair: BTC_SEK,
                price: sek(100),
                amount: Amount(BTC_1 / 2),
                taker_side: Side::Buy,
                maker_order: ask,
                taker_order: o.0.id,
                maker_account: ALICE,
                taker_account: BOB,
                buyer_paid: 5000,
                seller_received: 5000,
                base_received: BTC_1 / 2,
                buyer_fee: 100_000, // 0.2 % of 0.5 BTC, taker rate, in BTC
                seller_fee: 5,      // 0.1 % of 50.00 SEK, maker rate, in SEK
            }),
            done(ask, ALICE, DoneReason::Filled),
            bal(BOB, SEK, 95_000, 0),
            bal(BOB, BTC, BTC_1 / 2 - 100_000, 0),
            bal(ALICE, BTC, BTC_1 / 2, 0),
            bal(ALICE, SEK, 4995, 0),
            level(Side::Sell, sek(100), 0, 2),
            done(o.0.id, BOB, DoneReason::Filled),
        ]
    );
    assert_eq!(fx.bal(FEES, BTC), (100_000, 0));
    assert_eq!(fx.bal(FEES, SEK), (5, 0));
    assert!(fx.e.book(BTC_SEK).unwrap().is_empty());
}

#[test]
fn price_time_priority_sweeps_levels_best_first_and_fifo_within_a_level() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(CAROL, BTC, BTC_1);
    fx.fund(BOB, SEK, 10_000 * SEK_1);
    let a1 = fx.rest(ALICE, Side::Sell, sek(101), 10_000_000);
    let c1 = fx.rest(CAROL, Side::Sell, sek(100), 10_000_000);
    let a2 = fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    let far = fx.rest(CAROL, Side::Sell, sek(105), 10_000_000);
    let o = fx.limit(BOB, Side::Buy, sek(102), 25_000_000);
    let ev = fx.place(o);
    let t = trades(&ev);
    let seen: Vec<_> = t
        .iter()
        .map(|t| (t.maker_order, t.price, t.amount.0))
        .collect();
    assert_eq!(
        seen,
        vec![
            (c1, sek(100), 10_000_000),
            (a2, sek(100), 10_000_000),
            (a1, sek(101), 5_000_000)
        ]
    );
    // Each level reported once, after the taker left it, all with the command's book_seq.
    let levels: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, Event::LevelChanged { .. }))
        .copied()
        .collect();
    let seq = fx.e.book_seq(BTC_SEK);
    assert_eq!(
        levels,
        vec![
            level(Side::Sell, sek(100), 0, seq),
            level(Side::Sell, sek(101), 5_000_000, seq)
        ]
    );
    assert_eq!(ev.last(), Some(&done(o.0.id, BOB, DoneReason::Filled)));
    assert!(fx.e.resting_order(far).is_some());
    assert_eq!(fx.e.resting_order(a1).unwrap().1.remaining, 5_000_000);
}

#[test]
fn partial_fill_rests_the_remainder_with_its_hold_at_the_limit() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    let o = fx.limit(BOB, Side::Buy, sek(101), 30_000_000);
    let ev = fx.place(o);
    // 30.30 held; 10.00 paid; 20.20 stays held for the 0.2 BTC left at 101.
    assert_eq!(ev[0], accepted(o.0.id, BOB, Side::Buy, 3030));
    let n = ev.len();
    assert_eq!(
        ev[n - 3..],
        [
            level(Side::Sell, sek(100), 0, 2),
            Event::Rested {
                order: o.0.id,
                remaining: Amount(20_000_000)
            },
            level(Side::Buy, sek(101), 20_000_000, 2),
        ]
    );
    assert_eq!(fx.bal(BOB, SEK), (100_000 - 1000 - 2020, 2020));
    assert_eq!(fx.e.resting_order(o.0.id).unwrap().1.held, 2020);
}

#[test]
fn ioc_trades_what_crosses_and_expires_the_rest() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    let o = fx
        .limit(BOB, Side::Buy, sek(100), 30_000_000)
        .tif(TimeInForce::Ioc);
    let ev = fx.place(o);
    assert_eq!(trades(&ev).len(), 1);
    let n = ev.len();
    assert_eq!(
        ev[n - 3..],
        [
            level(Side::Sell, sek(100), 0, 2),
            bal(BOB, SEK, 99_000, 0),
            done(o.0.id, BOB, DoneReason::ImmediateOrCancel),
        ]
    );
    assert!(fx.e.book(BTC_SEK).unwrap().is_empty());
}

#[test]
fn ioc_without_liquidity_expires_untouched() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 1000 * SEK_1);
    let o = fx
        .limit(BOB, Side::Buy, sek(100), 10_000_000)
        .tif(TimeInForce::Ioc);
    assert_eq!(
        fx.place(o),
        vec![
            accepted(o.0.id, BOB, Side::Buy, 1000),
            bal(BOB, SEK, 99_000, 1000),
            bal(BOB, SEK, 100_000, 0),
            done(o.0.id, BOB, DoneReason::ImmediateOrCancel),
        ]
    );
    assert_eq!(fx.e.book_seq(BTC_SEK), 0);
}

#[test]
fn fok_that_cannot_fill_leaves_no_partial_trade_behind() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    fx.rest(ALICE, Side::Sell, sek(101), 10_000_000);
    fx.rest(ALICE, Side::Sell, sek(110), 10_000_000);
    let before = fx.market_state();
    let seq = fx.e.book_seq(BTC_SEK);
    // 0.3 BTC wanted up to 105: only 0.2 crosses.
    let o = fx
        .limit(BOB, Side::Buy, sek(105), 30_000_000)
        .tif(TimeInForce::Fok);
    assert_eq!(
        fx.place(o),
        vec![
            accepted(o.0.id, BOB, Side::Buy, 3150),
            bal(BOB, SEK, 100_000 - 3150, 3150),
            bal(BOB, SEK, 100_000, 0),
            done(o.0.id, BOB, DoneReason::FillOrKill),
        ]
    );
    assert_eq!(fx.market_state(), before, "a killed FOK changes nothing");
    assert_eq!(fx.e.book_seq(BTC_SEK), seq);
    assert_eq!(fx.e.next_trade_id(), TradeId(1));
}

#[test]
fn fok_that_can_fill_fills_completely_across_levels() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    fx.rest(ALICE, Side::Sell, sek(101), 10_000_000);
    let o = fx
        .limit(BOB, Side::Buy, sek(101), 20_000_000)
        .tif(TimeInForce::Fok);
    let ev = fx.place(o);
    assert_eq!(
        trades(&ev).iter().map(|t| t.amount.0).sum::<u64>(),
        20_000_000
    );
    assert_eq!(ev.last(), Some(&done(o.0.id, BOB, DoneReason::Filled)));
    assert_eq!(fx.bal(BOB, SEK), (100_000 - 1000 - 1010, 0));
}

#[test]
fn fok_blocked_by_own_order_under_expire_taker_is_killed() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(ALICE, SEK, 1000 * SEK_1);
    fx.fund(CAROL, BTC, BTC_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    fx.rest(CAROL, Side::Sell, sek(100), 10_000_000);
    let before = fx.market_state();
    let o = fx
        .limit(ALICE, Side::Buy, sek(100), 20_000_000)
        .tif(TimeInForce::Fok);
    let ev = fx.place(o);
    assert_eq!(
        ev.last(),
        Some(&done(o.0.id, ALICE, DoneReason::FillOrKill))
    );
    assert_eq!(fx.market_state(), before);
}

#[test]
fn post_only_that_would_take_is_rejected_and_changes_nothing() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    let before = fx.e.state_hash();
    let o = fx.limit(BOB, Side::Buy, sek(100), 10_000_000).post_only();
    assert_eq!(
        fx.place(o),
        vec![Event::Rejected {
            order: o.0.id,
            account: BOB,
            reason: RejectReason::PostOnlyWouldTake
        }]
    );
    assert_eq!(fx.e.state_hash(), before);
    // Below the ask it makes.
    let o = fx.limit(BOB, Side::Buy, sek(99), 10_000_000).post_only();
    let ev = fx.place(o);
    assert!(matches!(ev[2], Event::Rested { .. }), "{ev:?}");
}

#[test]
fn market_buy_by_base_holds_everything_available_and_releases_the_unused() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    fx.rest(ALICE, Side::Sell, sek(110), 10_000_000);
    let o = fx.market_base(BOB, Side::Buy, 15_000_000);
    let ev = fx.place(o);
    assert_eq!(ev[0], accepted(o.0.id, BOB, Side::Buy, 100_000));
    let t = trades(&ev);
    assert_eq!(
        t.iter()
            .map(|t| (t.price, t.amount.0, t.buyer_paid))
            .collect::<Vec<_>>(),
        vec![(sek(100), 10_000_000, 1000), (sek(110), 5_000_000, 550)]
    );
    let n = ev.len();
    assert_eq!(
        ev[n - 2..],
        [
            bal(BOB, SEK, 100_000 - 1550, 0),
            done(o.0.id, BOB, DoneReason::Filled)
        ]
    );
}

#[test]
fn market_buy_by_base_without_enough_liquidity_expires() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    let o = fx.market_base(BOB, Side::Buy, 50_000_000);
    let ev = fx.place(o);
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(ev.last(), Some(&done(o.0.id, BOB, DoneReason::NoLiquidity)));
    assert_eq!(fx.bal(BOB, SEK), (99_000, 0));
}

#[test]
fn market_buy_by_base_stops_when_funds_run_out() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 15 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    fx.rest(ALICE, Side::Sell, sek(110), 10_000_000);
    let o = fx.market_base(BOB, Side::Buy, 20_000_000);
    let ev = fx.place(o);
    let t = trades(&ev);
    // 10.00 for the first 0.1, then 5.00 buys floor(500 / 110 * 10^6) lots at 110.
    assert_eq!(t[1].amount.0, 4_545_454);
    assert_eq!(t[1].buyer_paid, 500);
    assert_eq!(
        ev.last(),
        Some(&done(o.0.id, BOB, DoneReason::InsufficientFunds))
    );
    assert_eq!(fx.bal(BOB, SEK), (0, 0));
}

#[test]
fn market_buy_by_quote_spends_at_most_its_amount() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    fx.rest(ALICE, Side::Sell, sek(110), 10_000_000);
    let o = fx.market_quote(BOB, Side::Buy, 1500);
    let ev = fx.place(o);
    assert_eq!(ev[0], accepted(o.0.id, BOB, Side::Buy, 1500));
    let t = trades(&ev);
    assert_eq!(
        t.iter()
            .map(|t| (t.amount.0, t.buyer_paid))
            .collect::<Vec<_>>(),
        vec![(10_000_000, 1000), (4_545_454, 500)]
    );
    assert_eq!(ev.last(), Some(&done(o.0.id, BOB, DoneReason::Filled)));
    assert_eq!(fx.bal(BOB, SEK), (100_000 - 1500, 0));
}

#[test]
fn market_buy_by_quote_more_than_available_is_rejected() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 10 * SEK_1);
    let o = fx.market_quote(BOB, Side::Buy, 1001);
    assert_eq!(
        fx.place(o),
        vec![Event::Rejected {
            order: o.0.id,
            account: BOB,
            reason: RejectReason::InsufficientFunds
        }]
    );
}

#[test]
fn market_sell_by_base_and_by_quote() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(BOB, Side::Buy, sek(100), 10_000_000);
    fx.rest(BOB, Side::Buy, sek(90), 10_000_000);
    // By base: 0.15 BTC, sweeping 100 then 90.
    let o = fx.market_base(ALICE, Side::Sell, 15_000_000);
    let ev = fx.place(o);
    assert_eq!(ev[0], accepted(o.0.id, ALICE, Side::Sell, 15_000_000));
    let t = trades(&ev);
    assert_eq!(
        t.iter().map(|t| (t.price, t.amount.0)).collect::<Vec<_>>(),
        vec![(sek(100), 10_000_000), (sek(90), 5_000_000)]
    );
    assert_eq!(ev.last(), Some(&done(o.0.id, ALICE, DoneReason::Filled)));
    // By quote: sells until the trades are worth 2.70 SEK at 90.
    let o = fx.market_quote(ALICE, Side::Sell, 270);
    let ev = fx.place(o);
    // Holds every whole lot available: 0.85 BTC.
    assert_eq!(ev[0], accepted(o.0.id, ALICE, Side::Sell, 85_000_000));
    let t = trades(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].amount.0, t[0].seller_received), (3_000_000, 270));
    assert_eq!(ev.last(), Some(&done(o.0.id, ALICE, DoneReason::Filled)));
    assert_eq!(fx.bal(ALICE, BTC), (BTC_1 - 18_000_000, 0));
}

/// Regression: a market sell by quote that ran out of base used to report `Filled`.
#[test]
fn market_sell_by_quote_that_runs_out_of_base_expires() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, 1_000_000);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(BOB, Side::Buy, sek(100), 10_000_000);
    let o = fx.market_quote(ALICE, Side::Sell, 500);
    let ev = fx.place(o);
    let t = trades(&ev);
    assert_eq!((t[0].amount.0, t[0].seller_received), (1_000_000, 100));
    assert_eq!(
        ev.last(),
        Some(&done(o.0.id, ALICE, DoneReason::InsufficientFunds))
    );
}

#[test]
fn market_order_without_liquidity_expires_and_releases() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    let o = fx.market_base(ALICE, Side::Sell, 10_000_000);
    assert_eq!(
        fx.place(o),
        vec![
            accepted(o.0.id, ALICE, Side::Sell, 10_000_000),
            bal(ALICE, BTC, BTC_1 - 10_000_000, 10_000_000),
            bal(ALICE, BTC, BTC_1, 0),
            done(o.0.id, ALICE, DoneReason::NoLiquidity),
        ]
    );
}

fn stp_book() -> (Fx, OrderId, OrderId) {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(ALICE, SEK, 1000 * SEK_1);
    fx.fund(BOB, BTC, BTC_1);
    let own = fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    let other = fx.rest(BOB, Side::Sell, sek(101), 10_000_000);
    (fx, own, other)
}

#[test]
fn stp_expire_taker_keeps_the_maker_and_reports_no_level_change() {
    let (mut fx, own, _) = stp_book();
    let seq = fx.e.book_seq(BTC_SEK);
    let o = fx.limit(ALICE, Side::Buy, sek(102), 20_000_000);
    let ev = fx.place(o);
    // Regression: the level the taker stopped at used to be reported although unchanged.
    assert_eq!(
        ev,
        vec![
            accepted(o.0.id, ALICE, Side::Buy, 2040),
            bal(ALICE, SEK, 100_000 - 2040, 2040),
            bal(ALICE, SEK, 100_000, 0),
            done(o.0.id, ALICE, DoneReason::SelfTradePrevention),
        ]
    );
    assert_eq!(fx.e.book_seq(BTC_SEK), seq);
    assert!(fx.e.resting_order(own).is_some());
}

#[test]
fn stp_expire_maker_removes_own_orders_and_keeps_matching() {
    let (mut fx, own, other) = stp_book();
    let o = fx
        .limit(ALICE, Side::Buy, sek(102), 20_000_000)
        .stp(SelfTradePrevention::ExpireMaker);
    let ev = fx.place(o);
    assert_eq!(
        ev[2..4],
        [
            bal(ALICE, BTC, BTC_1, 0),
            done(own, ALICE, DoneReason::SelfTradePrevention)
        ]
    );
    let t = trades(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].maker_order, t[0].price), (other, sek(101)));
    assert!(ev.contains(&level(Side::Sell, sek(100), 0, fx.e.book_seq(BTC_SEK))));
    assert!(matches!(
        ev[ev.len() - 2],
        Event::Rested {
            remaining: Amount(10_000_000),
            ..
        }
    ));
    assert!(fx.e.resting_order(own).is_none());
}

#[test]
fn stp_expire_both_removes_the_maker_and_the_taker() {
    let (mut fx, own, other) = stp_book();
    let o = fx
        .limit(ALICE, Side::Buy, sek(102), 20_000_000)
        .stp(SelfTradePrevention::ExpireBoth);
    let ev = fx.place(o);
    let seq = fx.e.book_seq(BTC_SEK);
    assert_eq!(
        ev[2..],
        [
            bal(ALICE, BTC, BTC_1, 0),
            done(own, ALICE, DoneReason::SelfTradePrevention),
            level(Side::Sell, sek(100), 0, seq),
            bal(ALICE, SEK, 100_000, 0),
            done(o.0.id, ALICE, DoneReason::SelfTradePrevention),
        ]
    );
    assert!(fx.e.resting_order(other).is_some());
    assert!(trades(&ev).is_empty());
}

#[test]
fn stp_none_trades_with_itself_and_pays_fees() {
    let (mut fx, own, other) = stp_book();
    let o = fx
        .limit(ALICE, Side::Buy, sek(101), 20_000_000)
        .stp(SelfTradePrevention::None);
    let ev = fx.place(o);
    let t = trades(&ev);
    assert_eq!(
        t.iter().map(|t| t.maker_order).collect::<Vec<_>>(),
        vec![own, other]
    );
    assert_eq!(t[0].buyer(), ALICE);
    assert_eq!(t[0].seller(), ALICE);
    // Self-trade: Alice paid 10.00 and received 10.00 minus 0.01 fee; 0.1 BTC came back minus fee.
    assert_eq!((t[0].buyer_fee, t[0].seller_fee), (20_000, 1));
    assert_eq!(ev.last(), Some(&done(o.0.id, ALICE, DoneReason::Filled)));
}

#[test]
fn cancel_releases_the_hold_and_reports_the_level() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 1000 * SEK_1);
    let id = fx.rest(BOB, Side::Buy, sek(100), 10_000_000);
    let id2 = fx.rest(BOB, Side::Buy, sek(100), 20_000_000);
    assert_eq!(
        fx.cancel(BOB, id),
        vec![
            bal(BOB, SEK, 100_000 - 2000, 2000),
            done(id, BOB, DoneReason::Cancelled),
            level(Side::Buy, sek(100), 20_000_000, 3),
        ]
    );
    // A second cancel of the same order, an unknown order, another account's order.
    for (account, order) in [(BOB, id), (BOB, OrderId(999)), (ALICE, id2)] {
        assert_eq!(
            fx.cancel(account, order),
            vec![Event::CancelRejected {
                order,
                account,
                reason: RejectReason::OrderNotOpen
            }]
        );
    }
    assert!(fx.e.resting_order(id2).is_some());
}

#[test]
fn cancel_of_a_filled_order_is_a_reject_event() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    let ask = fx.rest(ALICE, Side::Sell, sek(100), 10_000_000);
    let o = fx.market_base(BOB, Side::Buy, 10_000_000);
    fx.place(o);
    assert_eq!(
        fx.cancel(ALICE, ask),
        vec![Event::CancelRejected {
            order: ask,
            account: ALICE,
            reason: RejectReason::OrderNotOpen
        }]
    );
}

#[test]
fn cancel_all_cancels_only_that_accounts_orders_in_id_order() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(ALICE, SEK, 1000 * SEK_1);
    fx.fund(BOB, BTC, BTC_1);
    let a1 = fx.rest(ALICE, Side::Sell, sek(110), 10_000_000);
    let b1 = fx.rest(BOB, Side::Sell, sek(110), 10_000_000);
    let a2 = fx.rest(ALICE, Side::Buy, sek(90), 10_000_000);
    let ev = fx.cmd(Command::CancelAll {
        account: ALICE,
        pair: Some(BTC_SEK),
    });
    let cancelled: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Done { order, reason, .. } => {
                assert_eq!(*reason, DoneReason::Cancelled);
                Some(*order)
            }
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![a1, a2]);
    assert!(ev.contains(&level(Side::Sell, sek(110), 10_000_000, 4)));
    assert!(ev.contains(&level(Side::Buy, sek(90), 0, 4)));
    assert!(fx.e.resting_order(b1).is_some());
    assert_eq!(fx.bal(ALICE, BTC), (BTC_1, 0));
    assert_eq!(fx.bal(ALICE, SEK), (100_000, 0));
    // Nothing left: no events. An unknown pair: no events.
    assert!(
        fx.cmd(Command::CancelAll {
            account: ALICE,
            pair: None
        })
        .is_empty()
    );
    assert!(
        fx.cmd(Command::CancelAll {
            account: BOB,
            pair: Some(PairId(7))
        })
        .is_empty()
    );
}

#[test]
fn rejects_follow_precedence_and_change_nothing() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 10 * SEK_1);
    let resting = fx.rest(BOB, Side::Buy, sek(1), 10_000_000);
    let before = fx.e.state_hash();
    let reject = |fx: &mut Fx, o: Order, reason| {
        let ev = fx.place(o);
        assert_eq!(
            ev,
            vec![Event::Rejected {
                order: o.0.id,
                account: o.0.account,
                reason
            }]
        );
    };
    let o = fx.limit(BOB, Side::Buy, Price(0), 0).pair(PairId(9));
    reject(&mut fx, o, RejectReason::UnknownPair);
    let o = fx.limit(BOB, Side::Buy, Price(0), 0);
    reject(&mut fx, o, RejectReason::InvalidPrice);
    let o = fx.limit(BOB, Side::Buy, Price(engine::MAX_PRICE_TICKS + 1), 10_000);
    reject(&mut fx, o, RejectReason::InvalidPrice);
    let o = fx.limit(BOB, Side::Buy, sek(1), 0);
    reject(&mut fx, o, RejectReason::InvalidAmount);
    let o = fx.limit(BOB, Side::Buy, sek(1), 9_999);
    reject(&mut fx, o, RejectReason::AmountTooSmall);
    let o = fx.market_base(BOB, Side::Buy, 9_999);
    reject(&mut fx, o, RejectReason::AmountTooSmall);
    let o = fx.market_quote(BOB, Side::Buy, 0);
    reject(&mut fx, o, RejectReason::InvalidAmount);
    let o = fx.limit(BOB, Side::Buy, sek(1), 10_000).id(resting.0);
    reject(&mut fx, o, RejectReason::DuplicateOrderId);
    let o = fx.limit(BOB, Side::Buy, sek(100), BTC_1);
    reject(&mut fx, o, RejectReason::InsufficientFunds);
    let o = fx.limit(ALICE, Side::Sell, sek(100), 10_000);
    reject(&mut fx, o, RejectReason::InsufficientFunds);
    assert_eq!(fx.e.state_hash(), before);
}

#[test]
fn a_full_book_rejects_new_resting_orders() {
    let mut fx = Fx::with_limits(engine::EngineLimits {
        max_orders_per_book: 2,
        ..Default::default()
    });
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(BOB, Side::Buy, sek(1), 10_000);
    fx.rest(BOB, Side::Buy, sek(2), 10_000);
    let o = fx.limit(BOB, Side::Buy, sek(3), 10_000);
    fx.refuses(o, RejectReason::BookFull);
    // A sell that does not reach the best bid would rest whole: refused too.
    fx.fund(ALICE, BTC, BTC_1);
    let o = fx.limit(ALICE, Side::Sell, sek(3), 10_000);
    fx.refuses(o, RejectReason::BookFull);
    // IOC never rests, so it is still accepted.
    let o = fx
        .limit(BOB, Side::Buy, sek(3), 10_000)
        .tif(TimeInForce::Ioc);
    assert!(matches!(fx.place(o)[0], Event::Accepted { .. }));
}

/// A book bounded at two resting orders and holding two, at the genesis rules: Bob's bid
/// of 10,000 lots at 1 SEK and Alice's ask of 30,000 lots at 5 SEK (returned); Carol has
/// SEK to buy with.
fn full_book() -> (Fx, OrderId) {
    let mut fx = Fx::with_limits(engine::EngineLimits {
        max_orders_per_book: 2,
        ..Default::default()
    });
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.fund(CAROL, SEK, 1000 * SEK_1);
    fx.rest(BOB, Side::Buy, sek(1), 10_000);
    let ask = fx.rest(ALICE, Side::Sell, sek(5), 30_000);
    (fx, ask)
}

/// Carol's GTC buy of 10,000 lots at 6 SEK is taken, trades once against part of `ask`
/// and is filled.
fn carol_buys_part_of(fx: &mut Fx, ask: OrderId) {
    let o = fx.limit(CAROL, Side::Buy, sek(6), 10_000);
    let ev = fx.place(o);
    assert!(matches!(ev[0], Event::Accepted { .. }), "{ev:?}");
    let t = trades(&ev);
    assert_eq!(
        (t.len(), t[0].maker_order, t[0].amount),
        (1, ask, Amount(10_000))
    );
    assert!(
        ev.contains(&done(o.0.id, CAROL, DoneReason::Filled)),
        "{ev:?}"
    );
}

/// Under rules version 2 a full book refuses only an order that would rest: a GTC order
/// that fills completely trades as on any book, whether it takes a maker off or leaves it
/// partly filled.
#[test]
fn a_full_book_takes_a_gtc_order_that_fills() {
    let (mut fx, ask) = full_book();
    fx.cmd(Command::SetRulesVersion { version: 2 });
    // Fills against part of the ask: the book stays full, with the ask reduced.
    carol_buys_part_of(&mut fx, ask);
    let book = fx.e.book(BTC_SEK).unwrap();
    assert_eq!(book.len(), 2);
    assert_eq!(book.best(Side::Sell), Some((sek(5), Amount(20_000))));
    // Fills exactly what the ask has left: the ask is done, the taker too.
    let o = fx.limit(CAROL, Side::Buy, sek(5), 20_000);
    let ev = fx.place(o);
    assert_eq!(trades(&ev).len(), 1, "{ev:?}");
    assert!(ev.contains(&done(ask, ALICE, DoneReason::Filled)), "{ev:?}");
    assert!(
        ev.contains(&done(o.0.id, CAROL, DoneReason::Filled)),
        "{ev:?}"
    );
    assert_eq!(fx.e.book(BTC_SEK).unwrap().len(), 1);
}

/// The boundary (rules version 2): a crossing GTC order whose remainder rests on a full
/// book. It is taken,
/// because what it met first left the book (filled, or expired by self-trade prevention),
/// so its remainder rests in the slot that freed and the book never passes its bound.
/// Post-only keeps its precedence; a bound lowered below the book is not passed either.
#[test]
fn a_full_book_takes_a_crossing_remainder_into_the_slot_it_freed() {
    let mut fx = Fx::with_limits(engine::EngineLimits {
        max_orders_per_book: 2,
        ..Default::default()
    });
    fx.cmd(Command::SetRulesVersion { version: 2 });
    fx.fund(ALICE, BTC, BTC_1);
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.fund(BOB, BTC, BTC_1);
    fx.fund(CAROL, SEK, 1000 * SEK_1);
    fx.rest(BOB, Side::Buy, sek(1), 10_000);
    let ask = fx.rest(ALICE, Side::Sell, sek(5), 10_000);

    // Post-only that would take: still PostOnlyWouldTake, not BookFull.
    let o = fx.limit(CAROL, Side::Buy, sek(6), 30_000).post_only();
    assert!(matches!(
        fx.place(o)[..],
        [Event::Rejected {
            reason: RejectReason::PostOnlyWouldTake,
            ..
        }]
    ));

    // Takes the whole ask, rests 20,000 lots at its limit: two orders again.
    let o = fx.limit(CAROL, Side::Buy, sek(6), 30_000);
    let ev = fx.place(o);
    assert!(ev.contains(&done(ask, ALICE, DoneReason::Filled)), "{ev:?}");
    assert!(
        ev.contains(&Event::Rested {
            order: o.0.id,
            remaining: Amount(20_000)
        }),
        "{ev:?}"
    );
    let book = fx.e.book(BTC_SEK).unwrap();
    assert_eq!(book.len(), 2);
    assert_eq!(book.best(Side::Buy), Some((sek(6), Amount(20_000))));

    // Self-trade prevention: expire-maker takes CAROL's own bid off, the sell rests in its
    // slot; expire-taker ends the order on its own bid and the book stays as it is.
    fx.fund(CAROL, BTC, BTC_1);
    let o = fx
        .limit(CAROL, Side::Sell, sek(2), 10_000)
        .stp(SelfTradePrevention::ExpireTaker);
    let before = fx.market_state();
    let ev = fx.place(o);
    assert!(matches!(ev[0], Event::Accepted { .. }), "{ev:?}");
    assert!(
        ev.contains(&done(o.0.id, CAROL, DoneReason::SelfTradePrevention)),
        "{ev:?}"
    );
    assert_eq!(fx.market_state(), before);
    let o = fx
        .limit(CAROL, Side::Sell, sek(2), 10_000)
        .stp(SelfTradePrevention::ExpireMaker);
    let ev = fx.place(o);
    assert!(
        ev.contains(&Event::Rested {
            order: o.0.id,
            remaining: Amount(10_000)
        }),
        "{ev:?}"
    );
    let book = fx.e.book(BTC_SEK).unwrap();
    assert_eq!(book.len(), 2);
    assert_eq!(book.best(Side::Buy), Some((sek(1), Amount(10_000))));
    assert_eq!(book.best(Side::Sell), Some((sek(2), Amount(10_000))));

    // Bound lowered below the book: a crossing order still rests where it freed a slot, a
    // non-crossing one is refused.
    fx.cmd(Command::SetMaxOrdersPerBook { max: 1 });
    let o = fx.limit(BOB, Side::Buy, sek(3), 30_000);
    let ev = fx.place(o);
    assert!(
        ev.contains(&Event::Rested {
            order: o.0.id,
            remaining: Amount(20_000)
        }),
        "{ev:?}"
    );
    assert_eq!(fx.e.book(BTC_SEK).unwrap().len(), 2);
    let o = fx.limit(BOB, Side::Sell, sek(4), 10_000);
    assert!(matches!(
        fx.place(o)[..],
        [Event::Rejected {
            reason: RejectReason::BookFull,
            ..
        }]
    ));
}

/// The full-book rule is selected by the engine's rules version: at genesis (version 1) a
/// crossing GTC order on a full book is refused with `BookFull` and changes nothing, as
/// before the rule changed; once `SetRulesVersion { version: 2 }` is applied the same order
/// trades. Older and unknown versions are refused and change nothing; snapshots carry the
/// version.
#[test]
fn the_full_book_rule_follows_the_rules_version() {
    let (mut fx, ask) = full_book();
    assert_eq!(fx.e.rules_version(), engine::RULES_VERSION_GENESIS);
    assert_eq!(engine::RULES_VERSION_GENESIS, 1);

    // Version 1: refused, though it would fill at once.
    let before = fx.e.state_hash();
    let o = fx.limit(CAROL, Side::Buy, sek(6), 10_000);
    fx.refuses(o, RejectReason::BookFull);

    // Unknown versions are refused and change nothing.
    for version in [0, engine::RULES_VERSION_CURRENT + 1, u32::MAX] {
        assert_eq!(
            fx.cmd(Command::SetRulesVersion { version }),
            vec![Event::ConfigRefused {
                reason: RejectReason::UnknownRulesVersion
            }]
        );
        assert_eq!(fx.e.state_hash(), before);
        assert_eq!(fx.e.rules_version(), 1);
    }

    // Version 2: the same order (a new id) trades against the ask.
    assert_eq!(
        fx.cmd(Command::SetRulesVersion { version: 2 }),
        vec![Event::RulesVersionSet { version: 2 }]
    );
    assert_eq!(fx.e.rules_version(), 2);
    assert_ne!(fx.e.state_hash(), before, "the version is state");
    carol_buys_part_of(&mut fx, ask);

    // Rules never go back; the version in force is confirmed and changes nothing.
    let before = fx.e.state_hash();
    assert_eq!(
        fx.cmd(Command::SetRulesVersion { version: 1 }),
        vec![Event::ConfigRefused {
            reason: RejectReason::RulesVersionDowngrade
        }]
    );
    assert_eq!(
        fx.cmd(Command::SetRulesVersion { version: 2 }),
        vec![Event::RulesVersionSet { version: 2 }]
    );
    assert_eq!(fx.e.state_hash(), before);
    assert_eq!(fx.e.rules_version(), 2);

    // A snapshot carries the version.
    let restored = engine::state::decode(
        &engine::state::encode(&fx.e),
        engine::EngineLimits::default(),
    )
    .unwrap();
    assert_eq!(restored.rules_version(), 2);
    assert_eq!(restored.state_hash(), fx.e.state_hash());
}

/// The bound is set by a journaled command, so a replay meets every order under the bound
/// its live run met; it is engine state, carried by snapshots.
#[test]
fn the_book_bound_is_set_by_a_command_and_kept_in_snapshots() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.rest(BOB, Side::Buy, sek(1), 10_000);
    fx.rest(BOB, Side::Buy, sek(2), 10_000);
    for max in [0, engine::MAX_ORDERS_PER_BOOK as u32 + 1] {
        let before = fx.e.state_hash();
        assert_eq!(
            fx.cmd(Command::SetMaxOrdersPerBook { max }),
            vec![Event::ConfigRefused {
                reason: RejectReason::InvalidSpec
            }]
        );
        assert_eq!(fx.e.state_hash(), before, "a refused bound changes nothing");
    }
    // Lowered below what rests: the resting orders stay, no new one rests.
    assert_eq!(
        fx.cmd(Command::SetMaxOrdersPerBook { max: 1 }),
        vec![Event::MaxOrdersPerBookSet { max: 1 }]
    );
    assert_eq!(fx.e.limits().max_orders_per_book, 1);
    assert_eq!(fx.e.book(PairId(0)).unwrap().len(), 2);
    let o = fx.limit(BOB, Side::Buy, sek(3), 10_000);
    assert!(matches!(
        fx.place(o)[0],
        Event::Rejected {
            reason: RejectReason::BookFull,
            ..
        }
    ));
    // A snapshot carries the bound, whatever the limits it is decoded with.
    let bytes = engine::state::encode(&fx.e);
    let restored = engine::state::decode(&bytes, engine::EngineLimits::default()).unwrap();
    assert_eq!(restored.limits().max_orders_per_book, 1);
    assert_eq!(engine::state::state_hash(&restored), fx.e.state_hash());
    // Raised again: orders rest.
    fx.cmd(Command::SetMaxOrdersPerBook { max: 3 });
    fx.rest(BOB, Side::Buy, sek(3), 10_000);
}

#[test]
fn market_kind_is_always_immediate() {
    let mut fx = Fx::new();
    fx.fund(ALICE, BTC, BTC_1);
    let o = fx.market_base(ALICE, Side::Sell, 10_000);
    fx.place(o);
    assert!(fx.e.book(BTC_SEK).unwrap().is_empty());
    assert!(matches!(
        o.0.kind,
        OrderKind::Market {
            size: MarketSize::Base(_)
        }
    ));
}

fn rejected(ev: &[Event], reason: RejectReason) -> bool {
    matches!(ev, [Event::Rejected { reason: r, .. }] if *r == reason)
}

fn was_accepted(ev: &[Event]) -> bool {
    matches!(ev.first(), Some(Event::Accepted { .. }))
}

/// Regression: only resting ids were checked, so a cancelled or filled order's id could be
/// used again (and every read model keyed by it would mix two orders).
#[test]
fn an_order_id_is_never_used_twice_even_after_its_order_is_final() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 1000 * SEK_1);
    fx.fund(ALICE, BTC, BTC_1);
    let cancelled = fx.rest(BOB, Side::Buy, sek(1), 10_000);
    fx.cancel(BOB, cancelled);
    let o = fx.limit(BOB, Side::Buy, sek(1), 10_000).id(cancelled.0);
    assert!(rejected(&fx.place(o), RejectReason::DuplicateOrderId));

    let filled = fx.rest(BOB, Side::Buy, sek(2), 10_000);
    let taker = fx.limit(ALICE, Side::Sell, sek(2), 10_000);
    fx.place(taker);
    assert!(fx.e.resting_order(filled).is_none());
    for id in [filled.0, taker.0.id.0] {
        let o = fx.limit(BOB, Side::Buy, sek(1), 10_000).id(id);
        assert!(
            rejected(&fx.place(o), RejectReason::DuplicateOrderId),
            "{id}"
        );
    }
    // A rejected order leaves no trace: its id is still free.
    let short = fx.limit(BOB, Side::Buy, sek(1_000_000), BTC_1);
    assert!(rejected(&fx.place(short), RejectReason::InsufficientFunds));
    let o = fx.limit(BOB, Side::Buy, sek(1), 10_000).id(short.0.id.0);
    assert!(was_accepted(&fx.place(o)));
    let _ = fx.e.check_invariants().map_err(|e| panic!("{e}"));
}

/// Ids are assigned before sequencing, so they may arrive slightly out of order: a lower id
/// never used is accepted; one older than the window below the highest is refused.
#[test]
fn order_ids_may_arrive_out_of_order_within_the_window() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 1000 * SEK_1);
    let high = 5 * engine::id_window::WINDOW;
    for id in [
        high,
        high - 3,
        high - 1,
        high - engine::id_window::WINDOW + 1,
    ] {
        let o = fx.limit(BOB, Side::Buy, sek(1), 10_000).id(id);
        assert!(was_accepted(&fx.place(o)), "{id}");
    }
    for id in [high - 3, high - engine::id_window::WINDOW, 1, 0] {
        let o = fx.limit(BOB, Side::Buy, sek(1), 10_000).id(id);
        assert!(
            rejected(&fx.place(o), RejectReason::DuplicateOrderId),
            "{id}"
        );
    }
    // A snapshot keeps the window: the restored engine refuses the same ids.
    let restored = engine::state::decode(&engine::state::encode(&fx.e), fx.e.limits()).unwrap();
    assert_eq!(restored.state_hash(), fx.e.state_hash());
    let mut fx2 = Fx::new();
    fx2.e = restored;
    let o = fx2.limit(BOB, Side::Buy, sek(1), 10_000).id(high - 1);
    assert!(rejected(&fx2.place(o), RejectReason::DuplicateOrderId));
    let o = fx2.limit(BOB, Side::Buy, sek(1), 10_000).id(high - 2);
    assert!(was_accepted(&fx2.place(o)));
}

/// Regression: a level total is a `u64` sum of lots, and nothing bounded an order's lots,
/// so two buys of 2^63 lots at a tiny price (cheap to hold) overflowed the level total.
#[test]
fn order_amounts_above_the_lot_cap_are_rejected_so_level_totals_cannot_overflow() {
    let mut fx = Fx::new();
    fx.fund(BOB, SEK, 1_000_000_000 * SEK_1);
    fx.fund(ALICE, BTC, 20_000 * BTC_1);
    let huge = 1u64 << 63;
    let o = fx.limit(BOB, Side::Buy, Price(1), huge);
    assert!(rejected(&fx.place(o), RejectReason::InvalidAmount));
    let o = fx.limit(BOB, Side::Buy, Price(1), engine::MAX_ORDER_LOTS + 1);
    assert!(rejected(&fx.place(o), RejectReason::InvalidAmount));
    let o = fx.market_base(ALICE, Side::Sell, engine::MAX_ORDER_LOTS + 1);
    assert!(rejected(&fx.place(o), RejectReason::InvalidAmount));
    // The cap itself is fine, twice on one level.
    fx.rest(BOB, Side::Buy, Price(1), engine::MAX_ORDER_LOTS);
    fx.rest(BOB, Side::Buy, Price(1), engine::MAX_ORDER_LOTS);
    assert_eq!(
        fx.e.book(BTC_SEK).unwrap().level_total(Side::Buy, Price(1)),
        2 * engine::MAX_ORDER_LOTS
    );
    let _ = fx.e.check_invariants().map_err(|e| panic!("{e}"));
}

#[test]
#[should_panic(expected = "max_orders_per_book")]
fn a_book_limit_that_could_overflow_a_level_total_is_refused() {
    let _ = engine::Engine::new(engine::EngineLimits {
        max_orders_per_book: engine::MAX_ORDERS_PER_BOOK + 1,
        ..Default::default()
    });
}
