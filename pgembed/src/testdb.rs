//! One private server per test process, and a fresh database per test.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::{Binaries, Error, Options, PgServer, Timescale};

/// The storage paths a test can run on, named as `schema::Flavor` names them (so
/// `Flavor::parse(path.as_str())` maps one to the other without this crate knowing the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoragePath {
    /// Plain PostgreSQL: a server that does not preload TimescaleDB, even where it is installed.
    Postgres,
    /// TimescaleDB preloaded with its community license.
    Timescale,
    /// TimescaleDB preloaded with `timescaledb.license=apache`.
    TimescaleApache,
}

impl StoragePath {
    pub const ALL: [StoragePath; 3] = [
        StoragePath::Postgres,
        StoragePath::Timescale,
        StoragePath::TimescaleApache,
    ];

    /// `postgres`, `timescaledb` or `timescaledb-apache`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoragePath::Postgres => "postgres",
            StoragePath::Timescale => "timescaledb",
            StoragePath::TimescaleApache => "timescaledb-apache",
        }
    }

    /// What a private server for this path preloads.
    pub fn preload(self) -> Timescale {
        match self {
            StoragePath::Postgres => Timescale::Off,
            StoragePath::Timescale => Timescale::Community,
            StoragePath::TimescaleApache => Timescale::Apache,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for StoragePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

static SERVERS: [OnceLock<Result<PgServer, String>>; 3] =
    [OnceLock::new(), OnceLock::new(), OnceLock::new()];

extern "C" fn stop_shared_at_exit() {
    for server in SERVERS.iter().filter_map(OnceLock::get).flatten() {
        server.stop();
    }
}

/// The process-wide ephemeral server for one storage path, started on first use and stopped
/// when the process exits. `initdb` costs seconds, so tests share one cluster per path and take
/// a database each.
pub fn shared_on(path: StoragePath) -> Result<&'static PgServer, Error> {
    let res = SERVERS[path.index()].get_or_init(|| {
        let server = PgServer::start(Options {
            ephemeral: true,
            timescaledb: path.preload(),
            ..Options::default()
        })
        .map_err(|e| e.to_string())?;
        static AT_EXIT: OnceLock<()> = OnceLock::new();
        AT_EXIT.get_or_init(|| {
            // SAFETY: registering a plain extern "C" fn with no captured state.
            unsafe {
                libc::atexit(stop_shared_at_exit);
            }
        });
        Ok(server)
    });
    res.as_ref().map_err(|e| Error::Shared(e.clone()))
}

/// The process-wide server with TimescaleDB preloaded where it is installed, else plain.
pub fn shared() -> Result<&'static PgServer, Error> {
    shared_on(if timescaledb_installed() {
        StoragePath::Timescale
    } else {
        StoragePath::Postgres
    })
}

fn timescaledb_installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| Binaries::locate().is_ok_and(|b| b.timescaledb))
}

/// A line the test harness does not capture (it bypasses `print!`), so a skip is visible in
/// every run.
pub fn say_skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why} ({test})");
}

/// Whether a test can run on `path` here; when not, says so (uncaptured) and returns false.
/// With `DATABASE_URL` set only the plain path is certain; the TimescaleDB paths are judged
/// when the database is created.
pub fn skip_unless_available(path: StoragePath, test: &str) -> bool {
    let external = std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty());
    if path == StoragePath::Postgres || external || timescaledb_installed() {
        return true;
    }
    say_skipped(
        test,
        &format!("{path}: timescaledb is not installed for this machine's PostgreSQL"),
    );
    false
}

/// A database of its own for one test, dropped again when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL for the new database, with superuser rights.
    pub url: String,
    /// Its name.
    pub name: String,
    /// Whether TimescaleDB can be created in it (preloaded on the server).
    pub timescaledb: bool,
    /// `timescaledb.license` on the server: `timescale` or `apache`.
    pub license: String,
    admin_url: String,
}

/// Creates a fresh, empty database: on `DATABASE_URL` when it is set (the role needs
/// CREATEDB), else on the [`shared`] private server. `prefix` names it after the test.
pub async fn test_database(prefix: &str) -> Result<TestDatabase, Error> {
    let server = match external_url() {
        Some(_) => None,
        None => Some(
            tokio::task::spawn_blocking(shared)
                .await
                .map_err(|e| Error::Shared(e.to_string()))??,
        ),
    };
    create(server, prefix).await
}

/// A fresh database on the private server of `path` (or on `DATABASE_URL` when it is set),
/// `None` where this machine cannot give that path: TimescaleDB is not installed, or the
/// external server does not run that edition. The caller says it skipped.
pub async fn test_database_on(
    path: StoragePath,
    prefix: &str,
) -> Result<Option<TestDatabase>, Error> {
    let server = match external_url() {
        Some(_) => None,
        None if path != StoragePath::Postgres && !timescaledb_installed() => return Ok(None),
        None => Some(
            tokio::task::spawn_blocking(move || shared_on(path))
                .await
                .map_err(|e| Error::Shared(e.to_string()))??,
        ),
    };
    let db = create(server, prefix).await?;
    let fits = match path {
        StoragePath::Postgres => true,
        StoragePath::Timescale => db.timescaledb && db.license != "apache",
        StoragePath::TimescaleApache => db.timescaledb && db.license == "apache",
    };
    Ok(fits.then_some(db))
}

fn external_url() -> Option<String> {
    std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty())
}

async fn create(server: Option<&PgServer>, prefix: &str) -> Result<TestDatabase, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{}_{}_{}",
        prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            })
            .take(40)
            .collect::<String>(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let admin_url = match (server, external_url()) {
        (Some(s), _) => s.url("postgres"),
        (None, Some(url)) => url,
        (None, None) => return Err(Error::Shared("no server and no DATABASE_URL".into())),
    };
    let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    // Preloaded and licensed as the server says (not merely installed).
    let row = client
        .query_one(
            "SELECT coalesce((SELECT setting FROM pg_settings
                              WHERE name = 'shared_preload_libraries'), '') LIKE '%timescaledb%',
                    coalesce(current_setting('timescaledb.license', true), 'timescale')",
            &[],
        )
        .await?;
    drop(client);
    let _ = conn.await;
    let url = with_dbname(&admin_url, &name)?;
    Ok(TestDatabase {
        url,
        name,
        timescaledb: row.get(0),
        license: row.get(1),
        admin_url,
    })
}

/// The same URL pointing at another database.
pub(crate) fn with_dbname(url: &str, dbname: &str) -> Result<String, Error> {
    let mut u = url::Url::parse(url).map_err(|e| Error::BadUrl(e.to_string()))?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        return Err(Error::BadUrl(format!(
            "scheme `{}` is not postgres://",
            u.scheme()
        )));
    }
    u.set_path(&format!("/{dbname}"));
    Ok(u.to_string())
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside a runtime: use a thread with its own.
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                let conn = tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
                drop(client);
                let _ = conn.await;
                Some(())
            })
        })
        .join();
    }
}

/// Generates, for each `async fn NAME(path: pgembed::StoragePath)` named, a module `NAME` with
/// one test per storage path: `NAME::postgres`, `NAME::timescaledb`, `NAME::timescaledb_apache`.
/// A path this machine cannot give is reported as skipped, outside the harness's capture.
#[macro_export]
macro_rules! storage_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            async fn on(path: $crate::StoragePath) {
                let test = concat!(module_path!(), "::", stringify!($name));
                if $crate::skip_unless_available(path, test) {
                    super::$name(path).await;
                }
            }
            #[tokio::test]
            async fn postgres() {
                on($crate::StoragePath::Postgres).await
            }
            #[tokio::test]
            async fn timescaledb() {
                on($crate::StoragePath::Timescale).await
            }
            #[tokio::test]
            async fn timescaledb_apache() {
                on($crate::StoragePath::TimescaleApache).await
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn swaps_the_database_and_keeps_everything_else() {
        let u = with_dbname(
            "postgres://u:p@db.example:25060/defaultdb?sslmode=require",
            "x_1",
        )
        .expect("valid");
        assert_eq!(u, "postgres://u:p@db.example:25060/x_1?sslmode=require");
        assert!(with_dbname("mysql://h/db", "x").is_err());
        assert!(with_dbname("not a url", "x").is_err());
    }
}
