//! One private server per test process, and a fresh database per test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::{Error, Options, PgServer};

static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(server)) = SHARED.get() {
        server.stop();
    }
}

/// The process-wide ephemeral server, started on first use and stopped when the process exits.
/// `initdb` costs seconds, so tests share one cluster and take a database each.
pub fn shared() -> Result<&'static PgServer, Error> {
    let res = SHARED.get_or_init(|| {
        let server = PgServer::start(Options {
            ephemeral: true,
            ..Options::default()
        })
        .map_err(|e| e.to_string())?;
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(stop_shared_at_exit);
        }
        Ok(server)
    });
    res.as_ref().map_err(|e| Error::Shared(e.clone()))
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
    admin_url: String,
}

/// Creates a fresh, empty database: on `DATABASE_URL` when it is set (the role needs
/// CREATEDB), else on the [`shared`] private server. `prefix` names it after the test.
pub async fn test_database(prefix: &str) -> Result<TestDatabase, Error> {
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
    let (admin_url, server_has_tsdb) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let server = tokio::task::spawn_blocking(shared)
                .await
                .map_err(|e| Error::Shared(e.to_string()))??;
            (server.url("postgres"), Some(server.timescaledb()))
        }
    };
    let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    let timescaledb = match server_has_tsdb {
        Some(t) => t,
        None => {
            let row = client
                .query_one(
                    "SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'timescaledb'",
                    &[],
                )
                .await?;
            row.get(0)
        }
    };
    drop(client);
    let _ = conn.await;
    let url = with_dbname(&admin_url, &name)?;
    Ok(TestDatabase {
        url,
        name,
        timescaledb,
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
