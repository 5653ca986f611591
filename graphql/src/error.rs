//! What a request can get wrong, or what went wrong serving it, and how each reaches a
//! client: REST's status and `code`, GraphQL's `extensions.code` and `extensions.reason`.

use async_graphql::ErrorExtensions;

/// What a request can get wrong, or what went wrong serving it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown symbol {symbol} on {venue}")]
    UnknownSymbol { symbol: String, venue: &'static str },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// `book_at` refused: a gap, nothing recorded yet, or past retention.
    #[error("{0}")]
    Unavailable(String),
    /// The time or range has left the database for the daily files (retention moved it).
    #[error("{0}")]
    Cold(String),
    /// Every export slot is taken (`--max-exports`); try again shortly.
    #[error("{0}")]
    Busy(String),
    #[error("database unavailable")]
    Pool(String),
    #[error("database error")]
    Db(tokio_postgres::Error),
}

impl ApiError {
    /// Client mistakes and known refusals, as opposed to server trouble.
    pub fn is_client(&self) -> bool {
        !matches!(self, ApiError::Pool(_) | ApiError::Db(_))
    }

    /// GraphQL's `extensions.code`, in Apollo Server's vocabulary that clients and tools
    /// (schemathesis, gql) read: the caller's mistake or our failure.
    pub fn graphql_code(&self) -> &'static str {
        if self.is_client() {
            "BAD_USER_INPUT"
        } else {
            "INTERNAL_SERVER_ERROR"
        }
    }

    /// Which refusal: REST's `code`, GraphQL's `extensions.reason`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSymbol { .. } => "UNKNOWN_SYMBOL",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Unavailable(_) => "BOOK_UNAVAILABLE",
            ApiError::Cold(_) => "COLD",
            ApiError::Busy(_) => "BUSY",
            ApiError::Pool(_) | ApiError::Db(_) => "INTERNAL",
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        // book_at's own refusals carry SQLSTATE DB001..DB004 (see sql/0005_book_at.sql).
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if code == "DB003" {
                return ApiError::Cold(db.message().trim_start_matches("book_at: ").to_owned());
            }
            if code.starts_with("DB0") || code == "22023" {
                return ApiError::Unavailable(
                    db.message().trim_start_matches("book_at: ").to_owned(),
                );
            }
        }
        tracing::error!(error = ?e, "database error");
        ApiError::Db(e)
    }
}

impl From<export::ExportError> for ApiError {
    fn from(e: export::ExportError) -> Self {
        match e {
            export::ExportError::Database(e) => e.into(),
            e @ export::ExportError::Cold { .. } => ApiError::Cold(e.to_string()),
            e => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl<E: std::error::Error + 'static> From<bb8::RunError<E>> for ApiError {
    fn from(e: bb8::RunError<E>) -> Self {
        tracing::error!(error = %e, "database pool");
        ApiError::Pool(e.to_string())
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(if self.is_client() {
            self.to_string()
        } else {
            "internal error".to_owned()
        })
        .extend_with(|_, e| {
            e.set("code", self.graphql_code());
            e.set("reason", self.code());
        })
    }
}

/// An [`ApiError`] as resolvers return it.
pub(crate) fn err(e: ApiError) -> async_graphql::Error {
    e.extend()
}
