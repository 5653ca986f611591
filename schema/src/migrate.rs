//! Planning and applying migrations: one transaction each, checksummed, serialized across
//! processes by an advisory lock.

use std::time::Instant;

use tokio_postgres::Client;

use crate::catalog::{checksum, migrations, Migration};
use crate::{Error, Flavor, FlavorChoice};

/// `pg_advisory_lock` key held while migrating, so two processes starting at once (ingest and
/// a one-shot migrate container) apply each migration exactly once.
const LOCK_KEY: i64 = 0x6465_7074_6862_6b31; // "depthbk1"

const LEDGER: &str = "
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    file        text        NOT NULL,
    flavor      text        NOT NULL CHECK (flavor IN ('timescaledb', 'postgres')),
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL
)";

/// A migration recorded in `schema_migrations`.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: i32,
    pub file: String,
    pub flavor: Flavor,
    pub checksum: String,
}

/// What `apply` would do, and why.
#[derive(Debug, Clone)]
pub struct Plan {
    pub flavor: Flavor,
    /// Why this path: the recorded path, or what probing the extension found.
    pub reason: String,
    /// TimescaleDB's version when it is (or will be) installed.
    pub timescaledb_version: Option<String>,
    pub applied: Vec<Applied>,
    pub pending: Vec<Migration>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "path: {} ({})", self.flavor, self.reason)?;
        if let Some(v) = &self.timescaledb_version {
            writeln!(f, "timescaledb: {v}")?;
        }
        for a in &self.applied {
            writeln!(f, "  applied  {:04} {}", a.version, a.file)?;
        }
        for m in &self.pending {
            writeln!(f, "  pending  {:04} {}", m.version, m.file)?;
        }
        if self.pending.is_empty() {
            writeln!(f, "up to date")?;
        }
        Ok(())
    }
}

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct Report {
    pub plan: Plan,
    /// The files applied now, with their duration in ms.
    pub applied_now: Vec<(String, u128)>,
}

async fn ledger_exists(client: &Client) -> Result<bool, Error> {
    let row = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?;
    Ok(row.get(0))
}

async fn read_ledger(client: &Client) -> Result<Vec<Applied>, Error> {
    if !ledger_exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT version, file, flavor, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let flavor: String = r.get(2);
            Ok(Applied {
                version: r.get(0),
                file: r.get(1),
                flavor: Flavor::parse(&flavor)
                    .ok_or_else(|| Error::Catalog(format!("unknown recorded flavor {flavor:?}")))?,
                checksum: r.get(3),
            })
        })
        .collect()
}

/// Can this database take the TimescaleDB path? `Ok(version)` or `Err(why not)`.
async fn probe_timescale(client: &mut Client) -> Result<Result<String, String>, Error> {
    let installed = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?;
    if let Some(row) = installed {
        return Ok(Ok(row.get(0)));
    }
    let available = client
        .query_opt(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await?;
    let Some(row) = available else {
        return Ok(Err(
            "the timescaledb extension is not installed on this server".into(),
        ));
    };
    let version: String = row.get(0);
    // Creating it is the only reliable test (it must be preloaded, and we need the right to
    // create it); the transaction is rolled back.
    let tx = client.transaction().await?;
    let res = tx.batch_execute("CREATE EXTENSION timescaledb").await;
    tx.rollback().await?;
    Ok(match res {
        Ok(()) => Ok(version),
        Err(e) => Err(format!(
            "timescaledb {version} is installed but cannot be created here: {}",
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        )),
    })
}

/// Which path, why, and what is applied and pending. Changes nothing.
pub async fn plan(client: &mut Client, choice: FlavorChoice) -> Result<Plan, Error> {
    let applied = read_ledger(client).await?;
    let (flavor, reason, tsdb_version) = match applied.first() {
        Some(first) => {
            if let FlavorChoice::Require(requested) = choice {
                if requested != first.flavor {
                    return Err(Error::FlavorMismatch {
                        recorded: first.flavor,
                        requested,
                    });
                }
            }
            let version = match first.flavor {
                Flavor::Timescale => probe_timescale(client).await?.ok(),
                Flavor::Postgres => None,
            };
            (
                first.flavor,
                "recorded when this database was first migrated".to_owned(),
                version,
            )
        }
        None => match (choice, probe_timescale(client).await?) {
            (FlavorChoice::Require(Flavor::Postgres), _) => (
                Flavor::Postgres,
                "plain PostgreSQL was required".to_owned(),
                None,
            ),
            (_, Ok(v)) => (
                Flavor::Timescale,
                format!("the timescaledb extension {v} can be created"),
                Some(v),
            ),
            (FlavorChoice::Require(Flavor::Timescale), Err(why)) => {
                return Err(Error::TimescaleUnavailable(why))
            }
            (FlavorChoice::Auto, Err(why)) => (Flavor::Postgres, why, None),
        },
    };
    let all = migrations(flavor)?;
    for a in &applied {
        let Some(m) = all.iter().find(|m| m.version == a.version) else {
            return Err(Error::UnknownApplied {
                version: a.version,
                file: a.file.clone(),
            });
        };
        let current = m.checksum();
        if current != a.checksum || m.file != a.file {
            return Err(Error::Tampered {
                version: a.version,
                file: a.file.clone(),
                recorded: a.checksum.clone(),
                current,
            });
        }
    }
    let pending = all
        .into_iter()
        .filter(|m| applied.iter().all(|a| a.version != m.version))
        .collect();
    Ok(Plan {
        flavor,
        reason,
        timescaledb_version: tsdb_version,
        applied,
        pending,
    })
}

/// Applies every pending migration, each in its own transaction, under an advisory lock.
/// Safe to run from several processes at once and as often as you like.
pub async fn apply(client: &mut Client, choice: FlavorChoice) -> Result<Report, Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let res = apply_locked(client, choice).await;
    // Unlock even after a failure: the connection may be pooled and live on.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = res?;
    unlock?;
    Ok(report)
}

async fn apply_locked(client: &mut Client, choice: FlavorChoice) -> Result<Report, Error> {
    // Planned under the lock: whoever waited sees what the first process applied.
    let plan = plan(client, choice).await?;
    let mut applied_now = Vec::new();
    if plan.pending.is_empty() {
        return Ok(Report { plan, applied_now });
    }
    client.batch_execute(LEDGER).await?;
    if plan.flavor == Flavor::Timescale {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await?;
    }
    for m in &plan.pending {
        let started = Instant::now();
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql).await.map_err(|e| Error::Apply {
            file: m.file.to_owned(),
            at: error_line(m.sql, &e),
            source: e,
        })?;
        let ms = started.elapsed().as_millis();
        tx.execute(
            "INSERT INTO schema_migrations (version, name, file, flavor, checksum, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &m.version,
                &m.name,
                &m.file,
                &plan.flavor.as_str(),
                &checksum(m.sql),
                &i32::try_from(ms).unwrap_or(i32::MAX),
            ],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(file = m.file, ms = ms as u64, "migration applied");
        applied_now.push((m.file.to_owned(), ms));
    }
    Ok(Report { plan, applied_now })
}

/// " at line N" when the server reported a position inside the file.
fn error_line(sql: &str, e: &tokio_postgres::Error) -> String {
    use tokio_postgres::error::ErrorPosition;
    match e.as_db_error().and_then(|d| d.position()) {
        Some(ErrorPosition::Original(pos)) => {
            let upto: String = sql.chars().take(*pos as usize).collect();
            format!(" at line {}", upto.lines().count().max(1))
        }
        _ => String::new(),
    }
}
