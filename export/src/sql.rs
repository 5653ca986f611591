//! The queries whose rows are the CSV lines. PostgreSQL formats them (`COPY … TO STDOUT
//! (FORMAT csv)`): numerics print exactly as stored, NULL as an empty field. COPY takes no
//! bind parameters, so values are written in as literals; every one is a number, a timestamp
//! we format, or a symbol quoted by `literal`.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::segments::{Segment, Start};
use crate::tardis::{exchange, DataType};
use crate::{Instrument, Range};

/// A timestamp column as Tardis's microseconds since the epoch. `date_part` is a float8, a third
/// faster than `extract`'s numeric (measured: 1 M rows, 1.46 s → 1.00 s per COPY) and still
/// exact after rounding: the epoch second is within half a float8 step (0.12 µs until 2242) and
/// the product within half another (0.125 µs), under the 0.5 µs that `round` forgives.
fn us(column: &str) -> String {
    format!("round(date_part('epoch', {column}) * 1000000)::int8")
}

fn ts(t: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamptz",
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The leading `exchange,symbol` fields.
fn head(inst: &Instrument) -> String {
    format!(
        "{}, {}",
        literal(exchange(inst.venue)),
        literal(&inst.symbol)
    )
}

fn in_range(inst: &Instrument, range: Range) -> String {
    format!(
        "instrument_id = {} AND time >= {} AND time < {}",
        inst.id,
        ts(range.from),
        ts(range.to)
    )
}

/// The full book a segment starts with, as `is_snapshot` rows: bids best first, then asks.
pub fn snapshot(inst: &Instrument, seg: &Segment) -> String {
    match &seg.start {
        Start::BookAt { at } => format!(
            "SELECT {}, {t}, {t}, 'true', b.side, b.price, b.qty
             FROM book_at({}, {}, 2147483647) b ORDER BY b.side DESC, b.level",
            head(inst),
            inst.id,
            ts(*at - Duration::microseconds(1)),
            t = us(&ts(*at)),
        ),
        Start::Sync { time, update_id } => format!(
            "SELECT {}, {}, {}, 'true', l.side, l.p, l.q
             FROM book_checkpoints c, LATERAL (
                 SELECT 'bid' AS side, p, q, o FROM unnest(c.bid_prices, c.bid_qtys) WITH ORDINALITY AS b(p, q, o)
                 UNION ALL
                 SELECT 'ask', p, q, o FROM unnest(c.ask_prices, c.ask_qtys) WITH ORDINALITY AS a(p, q, o)) l
             WHERE c.instrument_id = {} AND c.kind = 'snapshot' AND c.time = {} AND c.update_id = {update_id}
             ORDER BY l.side DESC, l.o",
            head(inst),
            us("c.time"),
            us("c.received_at"),
            inst.id,
            ts(*time),
        ),
    }
}

/// A segment's level changes inside the range, event by event, as the index gives them. The
/// levels of one event are not sorted: they come in the order ingest stored them (Binance's),
/// and sorting them by side and price made PostgreSQL twice as slow (an incremental sort per
/// event: 5 M rows, 12.2 s against 6.1 s). Their order inside an event changes no book.
pub fn updates(inst: &Instrument, seg: &Segment, range: Range) -> String {
    let until = seg
        .until
        .map(|t| format!(" AND time <= {}", ts(t)))
        .unwrap_or_default();
    format!(
        "SELECT {}, {}, {}, 'false', side, price, qty FROM depth_updates
         WHERE {} AND time >= {} AND update_id > {}{until}
         ORDER BY time, update_id",
        head(inst),
        us("time"),
        us("received_at"),
        in_range(inst, range),
        ts(seg.updates_from),
        seg.after_update_id,
    )
}

/// Every other data type: one table's rows inside the range.
pub fn table(inst: &Instrument, data_type: DataType, range: Range) -> String {
    let (columns, table, order) = match data_type {
        DataType::Quotes => (
            format!(
                "{}, {}, ask_qty, ask_price, bid_price, bid_qty",
                us("time"),
                us("received_at")
            ),
            "book_ticker",
            "time, update_id",
        ),
        DataType::Trades => (
            format!(
                "{}, {}, agg_trade_id, CASE WHEN buyer_is_maker THEN 'sell' ELSE 'buy' END, price, qty",
                us("time"),
                us("received_at")
            ),
            "trades",
            "time, agg_trade_id",
        ),
        DataType::DerivativeTicker => (
            format!(
                "{}, {}, {}, funding_rate, NULL, NULL, NULL, index_price, mark_price",
                us("time"),
                us("received_at"),
                us("next_funding_time")
            ),
            "mark_prices",
            "time",
        ),
        DataType::BookSnapshot25 | DataType::BookSnapshot5 | DataType::IncrementalBookL2 => (
            snapshot_columns(data_type.snapshot_levels().unwrap_or(0)),
            "book_top",
            "time, update_id",
        ),
    };
    format!(
        "SELECT {}, {columns} FROM {table} WHERE {} ORDER BY {order}",
        head(inst),
        in_range(inst, range)
    )
}

/// `book_top` as Tardis's `asks[i].price,asks[i].amount,bids[i].price,bids[i].amount`; levels
/// beyond what was sampled are empty (`--book-top-levels` sets how many are).
fn snapshot_columns(levels: usize) -> String {
    let mut c = format!("{}, {}", us("time"), us("time"));
    for i in 1..=levels {
        c.push_str(&format!(
            ", ask_prices[{i}], ask_qtys[{i}], bid_prices[{i}], bid_qtys[{i}]"
        ));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_in_a_symbol_cannot_end_the_literal() {
        assert_eq!(literal("A'B"), "'A''B'");
    }

    #[test]
    fn timestamps_are_written_to_the_microsecond_in_utc() {
        let t = DateTime::from_timestamp_micros(1_764_115_200_123_456).expect("time");
        assert_eq!(ts(t), "'2025-11-26T00:00:00.123456Z'::timestamptz");
    }
}
