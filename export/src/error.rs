use thiserror::Error;

/// Why an export could not be written.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The range is empty or reversed.
    #[error("empty range: from {from} is not before to {to}")]
    EmptyRange { from: String, to: String },
    /// No such instrument was ever collected.
    #[error("no instrument {symbol} on {venue} in this database")]
    UnknownInstrument { venue: String, symbol: String },
    /// The data type does not exist on the venue (derivative_ticker on spot).
    #[error("{data_type} is not collected on {venue}")]
    NotOnVenue {
        data_type: &'static str,
        venue: &'static str,
    },
    /// A name that is not one of the data types.
    #[error("unknown data type {0:?}; one of: {1}")]
    UnknownDataType(String, String),
    /// A format that is not one of ours.
    #[error("unknown format {0:?}; one of: csv, parquet")]
    UnknownFormat(String),
    /// A manifest that is not one this program wrote.
    #[error("manifest {0} unreadable: {1}")]
    Manifest(String, String),
    /// The bucket refused, or its URL is wrong.
    #[error("bucket {0}")]
    Bucket(String),
    /// A written file does not hold what the database does: it is not listed as archived.
    #[error("verification failed: {0}")]
    Verify(String),
    /// The range reaches before what the database still holds: it is in the daily files.
    #[error("{data_type} before {before} is cold: it has left the database for the daily files ({location}); ask for a range from {before} on")]
    Cold {
        data_type: &'static str,
        before: String,
        location: String,
    },
    /// No book at that instant in a cold file (a gap, or before its first row), or a file that
    /// is not an L2 file of ours.
    #[error("{0}")]
    NoBook(String),
    /// The rows could not be written as Parquet.
    #[error("parquet: {0}")]
    Parquet(String),
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}
