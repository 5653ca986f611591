//! depthbook's data model: the numbered SQL migrations of `sql/`, compiled in,
//! and the migrator that applies them on one of three paths: TimescaleDB (community license),
//! TimescaleDB's Apache-2 edition (what managed PostgreSQL services ship), or plain PostgreSQL.
//!
//! Every path creates the same relation names and columns, so every query, the API and the
//! dashboards work unchanged. The path is chosen once, when the first migration is applied,
//! and recorded in `schema_migrations`; later runs follow the recorded path.

mod catalog;
pub mod live;
mod migrate;
mod policy;

pub use catalog::{files, migrations, Migration};
pub use migrate::{apply, plan, Applied, Plan, Report};
pub use policy::{ensure_reader_login, set_policies, PolicyChange};

/// Compresses every chunk of every hypertable of the public schema that is not compressed yet
/// (TimescaleDB community edition); returns the number of chunks in one row. For tests and
/// benchmarks that must read compressed data now instead of when the policy jobs get to it.
pub const COMPRESS_EVERY_CHUNK: &str = "
SELECT count(compress_chunk(c, if_not_compressed => true))
FROM timescaledb_information.hypertables h,
     show_chunks(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) c
WHERE h.hypertable_schema = 'public'";

/// Which storage path a database uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Flavor {
    /// Hypertables, compression, retention and continuous-aggregate jobs.
    Timescale,
    /// TimescaleDB's Apache-2 edition (`timescaledb.license = apache`): hypertables and
    /// retention by `drop_chunks` from `maintain()`; it refuses compression, policy jobs and
    /// continuous aggregates, so aggregates are the plain path's rollups.
    TimescaleApache,
    /// Ordinary tables, rollup tables refreshed by `maintain()`, retention by `DELETE`.
    #[default]
    Postgres,
}

impl Flavor {
    /// Every path, in the order tests and reports list them.
    pub const ALL: [Flavor; 3] = [Flavor::Timescale, Flavor::TimescaleApache, Flavor::Postgres];

    /// The name recorded in `schema_migrations.flavor` and taken by `--storage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Timescale => "timescaledb",
            Flavor::TimescaleApache => "timescaledb-apache",
            Flavor::Postgres => "postgres",
        }
    }

    /// The inverse of [`Flavor::as_str`].
    pub fn parse(s: &str) -> Option<Flavor> {
        Flavor::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Whether the tables are hypertables (chunks, `drop_chunks`).
    pub fn hypertables(self) -> bool {
        self != Flavor::Postgres
    }

    /// What this path lacks against the community TimescaleDB path, for `--plan`.
    pub fn lacks(self) -> &'static str {
        match self {
            Flavor::Timescale => "",
            Flavor::TimescaleApache => {
                "the Apache edition has no compression, no policy jobs and no continuous \
                 aggregates: data stays uncompressed, aggregates are rollup tables refreshed by \
                 maintain(), and retention drops whole chunks from maintain()"
            }
            Flavor::Postgres => {
                "plain PostgreSQL has no chunks and no compression: aggregates are rollup tables \
                 refreshed by maintain(), and retention deletes rows from maintain()"
            }
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator asked for; `Auto` takes TimescaleDB when the extension can be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlavorChoice {
    #[default]
    Auto,
    Require(Flavor),
}

/// Everything the migrator can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the migration files are malformed: {0}")]
    Catalog(String),
    #[error(
        "migration {version:04} ({file}) was changed after it was applied: the database recorded \
         checksum {recorded}, the file now has {current}. Applied migrations must never change; \
         put the change in a new migration"
    )]
    Tampered {
        version: i32,
        file: String,
        recorded: String,
        current: String,
    },
    #[error(
        "the database has migration {version:04} ({file}) that this binary does not know: it was \
         migrated by a newer depthbook; upgrade this binary"
    )]
    UnknownApplied { version: i32, file: String },
    #[error(
        "the database was migrated on the {recorded} path; it cannot be switched to {requested}"
    )]
    FlavorMismatch { recorded: Flavor, requested: Flavor },
    #[error("the TimescaleDB path was required, but {0}")]
    TimescaleUnavailable(String),
    #[error("migration {file} failed{at}: {source}")]
    Apply {
        file: String,
        at: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("bad storage policy: {0}")]
    Policy(String),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// How often a transaction is tried when the server picks it as a deadlock victim: on
/// TimescaleDB a change to policy jobs can deadlock with a job running at that moment (a
/// continuous-aggregate refresh). The server rolled the whole transaction back, so it is tried
/// again, as PostgreSQL's manual advises.
pub(crate) const DEADLOCK_ATTEMPTS: u32 = 5;

impl Error {
    /// Whether the server aborted the transaction as a deadlock victim.
    pub(crate) fn is_deadlock(&self) -> bool {
        let db = match self {
            Error::Db(e) | Error::Apply { source: e, .. } => e,
            _ => return false,
        };
        db.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
    }
}
