//! depthbook's data model (DESIGN §4, §5): the numbered SQL migrations of `sql/`, compiled in,
//! and the migrator that applies them on one of two paths, TimescaleDB or plain PostgreSQL.
//!
//! Both paths create the same relation names and columns, so every query, the API and the
//! dashboards work unchanged. The path is chosen once, when the first migration is applied,
//! and recorded in `schema_migrations`; later runs follow the recorded path.

mod catalog;
mod migrate;
mod policy;

pub use catalog::{files, migrations, Migration};
pub use migrate::{apply, plan, Applied, Plan, Report};
pub use policy::{ensure_reader_login, set_policies, PolicyChange};

/// Which storage path a database uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Hypertables, compression, retention and continuous-aggregate jobs.
    Timescale,
    /// Ordinary tables, rollup tables refreshed by `maintain()`, retention by `DELETE`.
    Postgres,
}

impl Flavor {
    /// The name recorded in `schema_migrations.flavor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Timescale => "timescaledb",
            Flavor::Postgres => "postgres",
        }
    }

    fn parse(s: &str) -> Option<Flavor> {
        match s {
            "timescaledb" => Some(Flavor::Timescale),
            "postgres" => Some(Flavor::Postgres),
            _ => None,
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
