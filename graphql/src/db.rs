//! The read-only database: a bb8 pool and instrument lookup.

use bb8_postgres::PostgresConnectionManager;

pub use crate::error::ApiError;

pub type Pool = bb8::Pool<PostgresConnectionManager<pgconn::Tls>>;

/// `instruments.id` of (venue, symbol).
pub async fn instrument_id(
    pool: &Pool,
    venue: &'static str,
    symbol: &str,
) -> Result<i32, ApiError> {
    let sym = crate::input::symbol(symbol)?;
    let c = pool.get().await?;
    let row = c
        .query_opt(
            "SELECT id FROM instruments WHERE venue = $1 AND symbol = $2",
            &[&venue, &sym],
        )
        .await?;
    row.map(|r| r.get(0))
        .ok_or(ApiError::UnknownSymbol { symbol: sym, venue })
}
