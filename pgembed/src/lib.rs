//! A private PostgreSQL server started from the system's binaries.
//!
//! Tests, benchmarks and the local run (`manage.sh up`) need a real PostgreSQL without Docker and
//! without touching any server the machine may already run. [`PgServer::start`] runs `initdb` in
//! a directory of its own (a temp dir, or a persistent one), starts `postgres` on a free loopback
//! port and stops it again when the value is dropped, also while a test unwinds from a panic.
//!
//! Two things make this harder than it looks:
//! * PostgreSQL refuses to run as root, and CI runs as root: then every command runs as the
//!   `postgres` OS user, and the directories are handed to that user.
//! * A process-wide server ([`shared`]) lives in a `static`, and statics are never dropped. It is
//!   stopped by an `atexit` hook, and every server is started with a parent-death signal from a
//!   thread that lives as long as the process, so even a killed test binary leaves no server
//!   running behind it.
//!
//! When `DATABASE_URL` is set, [`test_database`] creates its databases there instead and no
//! server is started.

mod binaries;
mod server;
mod testdb;

pub use binaries::Binaries;
pub use server::{Options, PgServer, Timescale};
pub use testdb::{
    say_skipped, shared, shared_on, skip_unless_available, test_database, test_database_on,
    StoragePath, TestDatabase,
};

/// Everything that can go wrong while locating, starting or using the private server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no PostgreSQL server binaries found (looked at $PGEMBED_BINDIR, `pg_config --bindir` on \
         PATH and /usr/lib/postgresql/*/bin); install them, e.g. `apt-get install postgresql` \
         on Debian"
    )]
    NoBinaries,
    #[error(
        "running as root, but there is no `postgres` OS user to run PostgreSQL as (PostgreSQL \
         refuses to run as root; the Debian `postgresql` package creates that user)"
    )]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status}):\n{output}")]
    Command {
        program: String,
        status: String,
        output: String,
    },
    #[error("PostgreSQL did not accept connections within {secs} s; last lines of {log}:\n{tail}")]
    NotReady {
        secs: u64,
        log: String,
        tail: String,
    },
    #[error("PostgreSQL exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        status: String,
        log: String,
        tail: String,
    },
    #[error(
        "TimescaleDB was asked for, but it is not installed for the server binaries in {0} \
         (extension/timescaledb.control and timescaledb.so)"
    )]
    NoTimescale(String),
    #[error("the process-wide test server could not be started: {0}")]
    Shared(String),
    #[error("DATABASE_URL is not a usable postgres:// URL: {0}")]
    BadUrl(String),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
