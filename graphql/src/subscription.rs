//! The subscriptions: ingest's NOTIFY payloads, through the `live` hub, as GraphQL types.

use async_graphql::{Context, Result, Subscription};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::StreamExt;

use crate::db::{instrument_id, Pool};
use crate::error::err;
use crate::input;
use crate::live::Hub;
use crate::types::{Book, BookTicker, Level, Trade, Venue};
use schema::live::{BookNote, TickerNote, TradesNote};

fn time(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?)
}

fn levels(l: Vec<(String, String)>, depth: usize) -> Vec<Level> {
    l.into_iter()
        .take(depth)
        .map(|(price, qty)| Level { price, qty })
        .collect()
}

/// A [`BookNote`] as the GraphQL type, `depth` levels per side.
fn live_book(payload: &str, symbol: &str, venue: Venue, depth: usize) -> Option<Book> {
    let n: BookNote = sonic_rs::from_str(payload).ok()?;
    Some(Book {
        symbol: symbol.to_owned(),
        venue,
        time: time(n.time)?,
        update_id: n.update_id.to_string(),
        bids: levels(n.bids, depth),
        asks: levels(n.asks, depth),
        depth_levels: None,
    })
}

fn live_ticker(payload: &str) -> Option<BookTicker> {
    let n: TickerNote = sonic_rs::from_str(payload).ok()?;
    Some(BookTicker {
        time: time(n.time)?,
        update_id: n.update_id.to_string(),
        bid_price: n.bid,
        bid_qty: n.bid_qty,
        ask_price: n.ask,
        ask_qty: n.ask_qty,
    })
}

fn live_trades(payload: &str) -> Vec<Trade> {
    let Ok(n) = sonic_rs::from_str::<TradesNote>(payload) else {
        return Vec::new();
    };
    n.trades
        .into_iter()
        .filter_map(|t| {
            Some(Trade {
                time: time(t.time)?,
                agg_trade_id: t.id.to_string(),
                price: t.price,
                qty: t.qty,
                first_trade_id: t.first.to_string(),
                last_trade_id: t.last.to_string(),
                buyer_is_maker: t.buyer_is_maker,
            })
        })
        .collect()
}

#[derive(Debug)]
pub struct SubscriptionRoot;

/// The instrument a subscription follows (an unknown symbol is the client's error).
async fn instrument(ctx: &Context<'_>, venue: Venue, symbol: &str) -> Result<i32> {
    let pool = ctx.data::<Pool>()?;
    instrument_id(pool, venue.as_str(), symbol)
        .await
        .map_err(err)
}

#[Subscription]
impl SubscriptionRoot {
    /// The live book (top levels sampled by ingest), latest state first; a slow client skips
    /// intermediate states.
    async fn book(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        #[graphql(default = 20)] depth: i32,
    ) -> Result<impl Stream<Item = Book>> {
        let iid = instrument(ctx, venue, &symbol).await?;
        let sym = input::symbol(&symbol).map_err(err)?;
        let rx = ctx.data::<Hub>()?.book(iid);
        let depth = depth.clamp(1, 1000) as usize;
        Ok(WatchStream::new(rx)
            .filter_map(move |p| p.and_then(|p| live_book(&p, &sym, venue, depth))))
    }

    /// Live best bid/ask, latest state.
    async fn book_ticker(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
    ) -> Result<impl Stream<Item = BookTicker>> {
        let iid = instrument(ctx, venue, &symbol).await?;
        let rx = ctx.data::<Hub>()?.ticker(iid);
        Ok(WatchStream::new(rx).filter_map(|p| p.and_then(|p| live_ticker(&p))))
    }

    /// Live trades; a client too slow for the stream loses the oldest.
    async fn trades(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
    ) -> Result<impl Stream<Item = Trade>> {
        let iid = instrument(ctx, venue, &symbol).await?;
        let rx = ctx.data::<Hub>()?.trades(iid);
        let batches = BroadcastStream::new(rx).filter_map(|r: Result<std::sync::Arc<str>, _>| {
            r.ok().map(|p| tokio_stream::iter(live_trades(&p)))
        });
        Ok(futures_util::StreamExt::flatten(batches))
    }
}
