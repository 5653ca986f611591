//! Range arguments checked against the limits, and keyset pagination (Relay cursors) over
//! one instrument's rows in `[from, to)`.

use std::time::Duration;

use async_graphql::connection::{Connection, Edge};
use chrono::{DateTime, Utc};

use crate::db::{instrument_id, ApiError, Pool};
use crate::input::{self, decode_cursor, encode_cursor, KeyKind};
use crate::limits::Limits;
use crate::types::Venue;

/// Checked range arguments.
#[derive(Debug)]
pub struct Range {
    pub iid: i32,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub limit: i64,
}

pub async fn range(
    pool: &Pool,
    limits: &Limits,
    symbol: &str,
    venue: Venue,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    first: Option<i32>,
) -> Result<Range, ApiError> {
    let (from, to) = (input::time("from", from)?, input::time("to", to)?);
    if from >= to {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    let width = (to - from).to_std().unwrap_or(Duration::MAX);
    if width > limits.max_range {
        return Err(ApiError::BadRequest(format!(
            "the range is wider than the maximum of {} s",
            limits.max_range.as_secs()
        )));
    }
    let first = first.unwrap_or(100);
    if first < 1 || first > limits.max_page {
        return Err(ApiError::BadRequest(format!(
            "`first` must be between 1 and {}",
            limits.max_page
        )));
    }
    let iid = instrument_id(pool, venue.as_str(), symbol).await?;
    Ok(Range {
        iid,
        from,
        to,
        limit: i64::from(first),
    })
}

/// A range query paginated by keyset: rows of one instrument with `time_col` in [from, to),
/// ordered by `key` (each column with the SQL type its cursor part is read back as).
pub(crate) struct Keyset {
    pub table: &'static str,
    pub cols: &'static str,
    pub time_col: &'static str,
    pub key: &'static [(&'static str, KeyKind)],
}

impl Keyset {
    /// $1 instrument, $2 from, $3 to, $4 limit; with a cursor, $5.. its parts. The key columns
    /// come back as text after `cols`, to make the next cursor.
    fn sql(&self, after: bool) -> String {
        let names: Vec<&str> = self.key.iter().map(|k| k.0).collect();
        let key_text: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, (n, kind))| format!("{} AS cursor_{i}", kind.select(n)))
            .collect();
        let mut sql = format!(
            "SELECT {}, {} FROM {} WHERE instrument_id = $1 AND {t} >= $2 AND {t} < $3",
            self.cols,
            key_text.join(", "),
            self.table,
            t = self.time_col
        );
        if after {
            let params: Vec<String> = self
                .key
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| kind.param(i + 5))
                .collect();
            sql.push_str(&format!(
                " AND ({}) > ({})",
                names.join(", "),
                params.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT $4", names.join(", ")));
        sql
    }
}

/// Runs one page of `q`; `row` reads a result row (its first columns are `q.cols`).
pub(crate) async fn page<T, F>(
    pool: &Pool,
    r: &Range,
    q: &Keyset,
    after: Option<String>,
    row: F,
) -> Result<Connection<String, T>, ApiError>
where
    T: async_graphql::OutputType,
    F: Fn(&tokio_postgres::Row) -> T,
{
    let c = pool.get().await?;
    let lim = r.limit + 1;
    let rows = match after {
        None => {
            c.query(&q.sql(false), &[&r.iid, &r.from, &r.to, &lim])
                .await?
        }
        Some(cur) => {
            let kinds: Vec<KeyKind> = q.key.iter().map(|k| k.1).collect();
            let parts = decode_cursor(&cur, &kinds)?;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                vec![&r.iid, &r.from, &r.to, &lim];
            params.extend(parts.iter().map(|p| p.as_sql()));
            c.query(&q.sql(true), &params).await?
        }
    };
    let more = rows.len() as i64 > r.limit;
    let mut conn = Connection::new(false, more);
    for rw in rows.iter().take(r.limit as usize) {
        let key: Vec<String> = (rw.len() - q.key.len()..rw.len())
            .map(|i| rw.get(i))
            .collect();
        conn.edges.push(Edge::new(encode_cursor(&key), row(rw)));
    }
    Ok(conn)
}
