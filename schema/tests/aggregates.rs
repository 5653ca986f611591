//! The ticker_* and trades_* aggregates equal the same aggregation computed independently (in
//! Rust, with exact decimals) over the raw rows: in real time, after materialization, and after
//! rows arrive late. On TimescaleDB the continuous aggregates are refreshed explicitly.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{instrument, migrated_on};
use pgembed::StoragePath;
use rust_decimal::Decimal;
use schema::Flavor;
use tokio_postgres::Client;

#[derive(Clone)]
struct Tick {
    t: DateTime<Utc>,
    iid: i32,
    bid: Decimal,
    ask: Decimal,
}
#[derive(Clone)]
struct Trade {
    t: DateTime<Utc>,
    iid: i32,
    id: i64,
    price: Decimal,
    qty: Decimal,
    maker: bool,
    n: i64,
}

fn bucket(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    let b = ms.div_euclid(secs * 1000) * secs * 1000;
    Utc.timestamp_millis_opt(b).single().expect("valid")
}

/// Deterministic pseudo-random walk; times strictly increasing per instrument so first/last are
/// unambiguous.
fn generate(ids: &[i32], n: usize, start: DateTime<Utc>) -> (Vec<Tick>, Vec<Trade>) {
    let mut ticks = Vec::new();
    let mut trades = Vec::new();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for &iid in ids {
        let mut mid = Decimal::new(5_000_000 + i64::from(iid) * 1000, 2);
        let mut t = start;
        for i in 0..n {
            t += Duration::milliseconds(97 + (next() % 200) as i64);
            let step = Decimal::new((next() % 7) as i64 - 3, 2);
            mid += step;
            let half = Decimal::new(1 + (next() % 4) as i64, 2);
            ticks.push(Tick {
                t,
                iid,
                bid: mid - half,
                ask: mid + half,
            });
            if i % 2 == 0 {
                trades.push(Trade {
                    t: t + Duration::milliseconds(1),
                    iid,
                    id: i as i64,
                    price: mid + Decimal::new((next() % 5) as i64 - 2, 2),
                    qty: Decimal::new(1 + (next() % 100_000) as i64, 5),
                    maker: next() % 2 == 0,
                    n: 1 + (next() % 3) as i64,
                });
            }
        }
    }
    (ticks, trades)
}

async fn insert(client: &Client, ticks: &[Tick], trades: &[Trade]) {
    for k in ticks {
        client
            .execute(
                "INSERT INTO book_ticker (time, instrument_id, update_id, bid_price, bid_qty, ask_price, ask_qty, received_at)
                 VALUES ($1, $2, 1, $3, 1, $4, 1, now())",
                &[&k.t, &k.iid, &k.bid, &k.ask],
            )
            .await
            .expect("tick");
    }
    for tr in trades {
        client
            .execute(
                "INSERT INTO trades (time, instrument_id, agg_trade_id, price, qty, first_trade_id, last_trade_id, buyer_is_maker, event_time, received_at)
                 VALUES ($1, $2, $3, $4, $5, $3::bigint * 10, $3::bigint * 10 + $6::bigint - 1, $7, $1, now())",
                &[&tr.t, &tr.iid, &tr.id, &tr.price, &tr.qty, &tr.n, &tr.maker],
            )
            .await
            .expect("trade");
    }
}

type Key = (i32, DateTime<Utc>);

fn close_enough(a: Decimal, b: Decimal) -> bool {
    (a - b).abs() < Decimal::new(1, 12)
}

async fn check_ticker(client: &Client, view: &str, secs: i64, ticks: &[Tick]) {
    let mut exp: BTreeMap<Key, Vec<&Tick>> = BTreeMap::new();
    for k in ticks {
        exp.entry((k.iid, bucket(k.t, secs))).or_default().push(k);
    }
    let rows = client
        .query(
            &format!("SELECT instrument_id, bucket, open, high, low, close, spread_mean, spread_min, spread_max, spread_sum, samples FROM {view} ORDER BY 1, 2"),
            &[],
        )
        .await
        .expect("query view");
    assert_eq!(rows.len(), exp.len(), "{view}: bucket count");
    for (row, (key, group)) in rows.iter().zip(&exp) {
        let got_key: Key = (row.get(0), row.get(1));
        assert_eq!(&got_key, key, "{view}: bucket keys");
        let two = Decimal::from(2);
        let mids: Vec<Decimal> = group.iter().map(|k| (k.bid + k.ask) / two).collect();
        let spreads: Vec<Decimal> = group.iter().map(|k| k.ask - k.bid).collect();
        let sum: Decimal = spreads.iter().sum();
        assert_eq!(row.get::<_, Decimal>(2), mids[0], "{view} {key:?} open");
        assert_eq!(
            row.get::<_, Decimal>(3),
            *mids.iter().max().expect("non-empty"),
            "{view} high"
        );
        assert_eq!(
            row.get::<_, Decimal>(4),
            *mids.iter().min().expect("non-empty"),
            "{view} low"
        );
        assert_eq!(
            row.get::<_, Decimal>(5),
            *mids.last().expect("non-empty"),
            "{view} close"
        );
        assert!(
            close_enough(row.get(6), sum / Decimal::from(group.len())),
            "{view} spread_mean"
        );
        assert_eq!(
            row.get::<_, Decimal>(7),
            *spreads.iter().min().expect("non-empty"),
            "{view} spread_min"
        );
        assert_eq!(
            row.get::<_, Decimal>(8),
            *spreads.iter().max().expect("non-empty"),
            "{view} spread_max"
        );
        assert_eq!(row.get::<_, Decimal>(9), sum, "{view} spread_sum");
        assert_eq!(row.get::<_, i64>(10), group.len() as i64, "{view} samples");
    }
}

async fn check_trades(client: &Client, view: &str, secs: i64, trades: &[Trade]) {
    let mut exp: BTreeMap<Key, Vec<&Trade>> = BTreeMap::new();
    for t in trades {
        exp.entry((t.iid, bucket(t.t, secs))).or_default().push(t);
    }
    let rows = client
        .query(
            &format!("SELECT instrument_id, bucket, open, high, low, close, volume, quote_volume, vwap, buy_volume, sell_volume, trade_count, agg_trade_count FROM {view} ORDER BY 1, 2"),
            &[],
        )
        .await
        .expect("query view");
    assert_eq!(rows.len(), exp.len(), "{view}: bucket count");
    for (row, (key, g)) in rows.iter().zip(&exp) {
        let got_key: Key = (row.get(0), row.get(1));
        assert_eq!(&got_key, key, "{view}: bucket keys");
        let vol: Decimal = g.iter().map(|t| t.qty).sum();
        let qv: Decimal = g.iter().map(|t| t.price * t.qty).sum();
        assert_eq!(row.get::<_, Decimal>(2), g[0].price, "{view} open");
        assert_eq!(
            row.get::<_, Decimal>(3),
            g.iter().map(|t| t.price).max().expect("non-empty"),
            "{view} high"
        );
        assert_eq!(
            row.get::<_, Decimal>(4),
            g.iter().map(|t| t.price).min().expect("non-empty"),
            "{view} low"
        );
        assert_eq!(
            row.get::<_, Decimal>(5),
            g[g.len() - 1].price,
            "{view} close"
        );
        assert_eq!(row.get::<_, Decimal>(6), vol, "{view} volume");
        assert_eq!(row.get::<_, Decimal>(7), qv, "{view} quote_volume");
        assert!(close_enough(row.get(8), qv / vol), "{view} vwap");
        let buy: Decimal = g.iter().filter(|t| !t.maker).map(|t| t.qty).sum();
        assert_eq!(row.get::<_, Decimal>(9), buy, "{view} buy_volume");
        assert_eq!(row.get::<_, Decimal>(10), vol - buy, "{view} sell_volume");
        assert_eq!(
            row.get::<_, i64>(11),
            g.iter().map(|t| t.n).sum::<i64>(),
            "{view} trade_count"
        );
        assert_eq!(
            row.get::<_, i64>(12),
            g.len() as i64,
            "{view} agg_trade_count"
        );
    }
}

async fn check_all(client: &Client, ticks: &[Tick], trades: &[Trade]) {
    for (suffix, secs) in [("1s", 1), ("1m", 60), ("1h", 3600)] {
        check_ticker(client, &format!("ticker_{suffix}"), secs, ticks).await;
        check_trades(client, &format!("trades_{suffix}"), secs, trades).await;
    }
}

/// Materializes every bucket of the test's rows (which reach into the next minutes).
async fn materialize(client: &Client, flavor: Flavor, late_since: Option<DateTime<Utc>>) {
    match flavor {
        Flavor::Postgres | Flavor::TimescaleApache => {
            if let Some(since) = late_since {
                client
                    .execute("SELECT invalidate_aggregates($1)", &[&since])
                    .await
                    .expect("invalidate");
            }
            // maintain() settles only rows older than a few seconds: the same refresh, later.
            client
                .execute("SELECT rollup.refresh(now() + interval '1 hour')", &[])
                .await
                .expect("refresh");
        }
        Flavor::Timescale => common::refresh_continuous_aggregates(client).await,
    }
}

async fn aggregates_equal_the_aggregation_of_the_raw_rows(path: StoragePath) {
    let Some((_db, client, flavor)) = migrated_on(path, "aggregates").await else {
        return;
    };
    let a = instrument(&client, "spot", "BTCUSDT").await;
    let b = instrument(&client, "usdm", "BTCUSDT").await;
    // Rows from now on, as ingest writes them (crossing minute boundaries). On TimescaleDB the
    // refresh jobs run from the moment of migration, and real-time aggregation covers only
    // buckets above a view's watermark: rows older than that are aggregated once a refresh
    // covers them (ingest refreshes the range of every spool replay), as the late rows below.
    let start = bucket(Utc::now(), 1);
    let (ticks, trades) = generate(&[a, b], 700, start);
    let (early_ticks, late_ticks): (Vec<Tick>, Vec<Tick>) = ticks
        .iter()
        .cloned()
        .partition(|k| k.iid == a || k.t.timestamp() % 3 != 0);
    let (early_trades, late_trades): (Vec<Trade>, Vec<Trade>) = trades
        .iter()
        .cloned()
        .partition(|t| t.iid == a || t.t.timestamp() % 3 != 0);

    insert(&client, &early_ticks, &early_trades).await;
    check_all(&client, &early_ticks, &early_trades).await; // real-time only

    materialize(&client, flavor, None).await;
    if flavor != Flavor::Timescale {
        let n: i64 = client
            .query_one("SELECT count(*) FROM rollup.ticker_1m", &[])
            .await
            .expect("count")
            .get(0);
        assert!(n > 0, "buckets were materialized");
    }
    check_all(&client, &early_ticks, &early_trades).await; // materialized
    if flavor == Flavor::Timescale {
        // The refresh wrote buckets: visible with real-time aggregation switched off.
        client
            .batch_execute(
                "ALTER MATERIALIZED VIEW ticker_1m SET (timescaledb.materialized_only = true)",
            )
            .await
            .expect("materialized only");
        let n: i64 = client
            .query_one("SELECT count(*) FROM ticker_1m", &[])
            .await
            .expect("count")
            .get(0);
        assert!(n > 0, "buckets were materialized");
        client
            .batch_execute(
                "ALTER MATERIALIZED VIEW ticker_1m SET (timescaledb.materialized_only = false)",
            )
            .await
            .expect("real-time again");
    }

    // Rows that arrive late, into buckets already materialized (a spool replay).
    insert(&client, &late_ticks, &late_trades).await;
    let since = late_ticks
        .iter()
        .map(|k| k.t)
        .chain(late_trades.iter().map(|t| t.t))
        .min();
    materialize(&client, flavor, since).await;
    let mut all_ticks = early_ticks.clone();
    all_ticks.extend(late_ticks);
    all_ticks.sort_by_key(|k| (k.iid, k.t));
    let mut all_trades = early_trades.clone();
    all_trades.extend(late_trades);
    all_trades.sort_by_key(|t| (t.iid, t.t));
    check_all(&client, &all_ticks, &all_trades).await;
}

/// A spool replay lowers the watermarks (`invalidate_aggregates`) while ingest's housekeeping
/// raises them (`maintain()`), on two connections: both must always finish, never deadlock.
async fn invalidation_and_maintenance_never_deadlock(path: StoragePath) {
    if path == StoragePath::Timescale {
        common::say_skipped(
            "invalidation_and_maintenance_never_deadlock::timescaledb",
            "timescaledb: no rollup watermarks (continuous aggregates)",
        );
        return;
    }
    let Some((db, client, _)) = migrated_on(path, "agg_deadlock").await else {
        return;
    };
    let other = common::connect(&db.url).await;
    for round in 0..500 {
        let (a, b) = tokio::join!(
            client.query_one("SELECT maintain()", &[]),
            other.execute(
                "SELECT invalidate_aggregates(now() - interval '2 hours')",
                &[]
            ),
        );
        if let Err(e) = a.map(|_| ()).and(b.map(|_| ())) {
            panic!("round {round}: {e:?}");
        }
    }
}

/// A batch of ingest's that commits after the buckets of its rows were materialized (a backlog
/// behind a spool replay, a slow commit) is in the aggregates after the next refresh, with
/// nobody calling `invalidate_aggregates`: its ledger row is what says it came late.
async fn a_batch_committed_late_is_aggregated_by_the_next_refresh(path: StoragePath) {
    let Some((_db, client, flavor)) = migrated_on(path, "aggregates_late").await else {
        return;
    };
    let a = instrument(&client, "spot", "ETHUSDT").await;
    let (ticks, trades) = generate(&[a], 400, bucket(Utc::now(), 1));
    let (early_ticks, late_ticks): (Vec<Tick>, Vec<Tick>) = ticks
        .iter()
        .cloned()
        .partition(|k| k.t.timestamp() % 4 != 0);
    let (early_trades, late_trades): (Vec<Trade>, Vec<Trade>) = trades
        .iter()
        .cloned()
        .partition(|t| t.t.timestamp() % 4 != 0);
    insert(&client, &early_ticks, &early_trades).await;
    materialize(&client, flavor, None).await;

    for (relation, times) in [
        (
            "book_ticker",
            late_ticks.iter().map(|k| k.t).collect::<Vec<_>>(),
        ),
        ("trades", late_trades.iter().map(|t| t.t).collect()),
    ] {
        let (first, last) = (times.iter().min(), times.iter().max());
        client
            .execute(
                "INSERT INTO ingest_batches (batch_id, relation, rows, first_time, last_time)
                 VALUES ('late-' || $1, $1, $2, $3, $4)",
                &[&relation, &(times.len() as i32), &first, &last],
            )
            .await
            .expect("ledger row");
    }
    insert(&client, &late_ticks, &late_trades).await;
    materialize(&client, flavor, None).await;
    check_all(&client, &ticks, &trades).await;
}

pgembed::storage_tests!(
    aggregates_equal_the_aggregation_of_the_raw_rows,
    a_batch_committed_late_is_aggregated_by_the_next_refresh,
    invalidation_and_maintenance_never_deadlock,
);
