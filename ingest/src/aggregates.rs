//! Aggregates over rows written late. A spool replay writes rows whose aggregate buckets may
//! already be materialized, or lie below a continuous aggregate's watermark where real-time
//! aggregation does not look: have them recomputed (plain PostgreSQL and the Apache edition:
//! lower the rollup watermarks; TimescaleDB: refresh every level over the replayed range,
//! finest first, since a coarser level's policy window may not reach back that far).

use tokio_postgres::Client;

use crate::row::Table;

/// The continuous aggregates built on `table`, finest first (`sql/0004_aggregates.*`).
fn views(table: Table) -> &'static [&'static str] {
    match table {
        Table::BookTicker => &["ticker_1s", "ticker_1m", "ticker_1h"],
        Table::Trades => &["trades_1s", "trades_1m", "trades_1h"],
        _ => &[],
    }
}

/// Has the aggregates over `table` recomputed for rows replayed from `since_ms` to
/// `until_ms`. Failures are logged: the views' own refresh jobs catch up later.
pub async fn refresh_after_replay(client: &Client, table: Table, since_ms: u64, until_ms: u64) {
    let views = views(table);
    if views.is_empty() {
        return;
    }
    let plain = client
        .query_one(
            "SELECT to_regproc('invalidate_aggregates') IS NOT NULL",
            &[],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    let res = if plain {
        client
            .execute(
                "SELECT invalidate_aggregates(to_timestamp($1::float8))",
                &[&(since_ms as f64 / 1000.0)],
            )
            .await
            .map(|_| ())
    } else {
        refresh_continuous(client, views, since_ms, until_ms).await
    };
    if let Err(e) = res {
        let error = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned());
        tracing::warn!(
            table = table.name(),
            error,
            "could not refresh aggregates after a spool replay"
        );
    }
}

/// Refreshes continuous aggregates `views` (finest first: 1 s, 1 m, 1 h) over replayed rows
/// from `since_ms` to `until_ms`. Only whole buckets up to the last replayed row: rows after it
/// may still be arriving (a backlog after an outage is written late), and a bucket materialized
/// before they land would miss them, while unmaterialized buckets above the watermark are
/// aggregated in real time. Rows replayed into a still-open bucket below a watermark are taken
/// up by the view's refresh job, whose window covers recent buckets.
async fn refresh_continuous(
    client: &Client,
    views: &[&str],
    since_ms: u64,
    until_ms: u64,
) -> Result<(), tokio_postgres::Error> {
    let mut res = Ok(());
    for (v, (bucket, bucket_ms)) in views.iter().zip([
        ("1 second", 1_000u64),
        ("1 minute", 60_000),
        ("1 hour", 3_600_000),
    ]) {
        // TimescaleDB rounds the window to whole buckets and refuses one that holds none.
        if until_ms / bucket_ms <= since_ms / bucket_ms {
            continue;
        }
        // CALL cannot take bind parameters for its procedure arguments here: the values are
        // our own numbers, formatted, never user input.
        let sql = format!(
            "CALL refresh_continuous_aggregate('{v}', to_timestamp({}) - interval '{bucket}', to_timestamp({}))",
            since_ms as f64 / 1000.0,
            until_ms as f64 / 1000.0,
        );
        if let Err(e) = client.batch_execute(&sql).await {
            res = Err(e);
        }
    }
    res
}
