//! Planning and applying migrations: one transaction each, checksummed, serialized across
//! processes by an advisory lock.

use std::time::Instant;

use tokio_postgres::Client;

use crate::catalog::{checksum, migrations, Migration};
use crate::{Error, Flavor, FlavorChoice, DEADLOCK_ATTEMPTS};

/// `pg_advisory_lock` key held while migrating, so two processes starting at once (ingest and
/// a one-shot migrate container) apply each migration exactly once.
const LOCK_KEY: i64 = 0x6465_7074_6862_6b31; // "depthbk1"

const LEDGER: &str = "
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    file        text        NOT NULL,
    flavor      text        NOT NULL CHECK (flavor IN ('timescaledb', 'timescaledb-apache', 'postgres')),
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
        let lacks = self.flavor.lacks();
        if !lacks.is_empty() {
            writeln!(f, "note: {lacks}")?;
        }
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

/// What the server says about TimescaleDB, read without creating or loading anything: a failed
/// `CREATE EXTENSION` would leave the session with the library half-loaded (every later
/// `CREATE EXTENSION` in it fails), and on a server that has the package but does not preload
/// it, even trying kills the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerFacts {
    /// `extversion` when the extension exists in this database.
    pub created: Option<String>,
    /// `default_version` when the package is installed on the server.
    pub available: Option<String>,
    /// `shared_preload_libraries`, when this role may read it.
    pub preload: Option<String>,
    /// `timescaledb.license`: the server's configuration sets it, so it reads the same before
    /// the extension is created.
    pub license: Option<String>,
}

async fn server_facts(client: &Client) -> Result<ServerFacts, Error> {
    let row = client
        .query_one(
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                    (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
                    (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
                    current_setting('timescaledb.license', true)",
            &[],
        )
        .await?;
    Ok(ServerFacts {
        created: row.get(0),
        available: row.get(1),
        preload: row.get(2),
        license: row.get(3),
    })
}

/// The TimescaleDB path these facts allow, with its version, or why there is none.
pub(crate) fn timescale_path(facts: &ServerFacts) -> Result<(Flavor, String), String> {
    let apache = facts
        .license
        .as_deref()
        .is_some_and(|l| l.trim().eq_ignore_ascii_case("apache"));
    let flavor = if apache {
        Flavor::TimescaleApache
    } else {
        Flavor::Timescale
    };
    if let Some(v) = &facts.created {
        return Ok((flavor, v.clone()));
    }
    let Some(v) = &facts.available else {
        return Err("the timescaledb extension is not installed on this server".into());
    };
    // A role that may not read the setting cannot tell; managed services that offer the
    // extension preload it, so unknown counts as preloaded (CREATE EXTENSION then says why not).
    let preloaded = facts.preload.as_deref().is_none_or(|libs| {
        libs.split(',')
            .any(|l| l.trim().trim_matches('"') == "timescaledb")
    });
    if !preloaded {
        return Err(format!(
            "timescaledb {v} is installed but not in shared_preload_libraries, so it cannot be \
             created; add it there and restart the server to use it"
        ));
    }
    Ok((flavor, v.clone()))
}

/// The path for a database not migrated yet. A forced plain path reads nothing of TimescaleDB.
async fn choose(
    client: &Client,
    choice: FlavorChoice,
) -> Result<(Flavor, String, Option<String>), Error> {
    if choice == FlavorChoice::Require(Flavor::Postgres) {
        return Ok((
            Flavor::Postgres,
            "plain PostgreSQL was required".to_owned(),
            None,
        ));
    }
    let found = timescale_path(&server_facts(client).await?);
    match (choice, found) {
        (FlavorChoice::Require(wanted), Ok((found, v))) if wanted != found => {
            Err(Error::TimescaleUnavailable(format!(
                "this server's timescaledb {v} runs the {found} edition \
                 (timescaledb.license), not {wanted}"
            )))
        }
        (_, Ok((flavor, v))) => {
            let license = match flavor {
                Flavor::TimescaleApache => "Apache-2 edition (timescaledb.license = apache)",
                _ => "community edition",
            };
            Ok((
                flavor,
                format!("the timescaledb extension {v} is available, {license}"),
                Some(v),
            ))
        }
        (FlavorChoice::Require(_), Err(why)) => Err(Error::TimescaleUnavailable(why)),
        (FlavorChoice::Auto, Err(why)) => Ok((Flavor::Postgres, why, None)),
    }
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
                Flavor::Postgres => None,
                _ => server_facts(client).await?.created,
            };
            (
                first.flavor,
                "recorded when this database was first migrated".to_owned(),
                version,
            )
        }
        None => choose(client, choice).await?,
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
    if plan.flavor.hypertables() {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await?;
    }
    for m in &plan.pending {
        let ms = apply_retrying(client, m, plan.flavor).await?;
        tracing::info!(file = m.file, ms = ms as u64, "migration applied");
        applied_now.push((m.file.to_owned(), ms));
    }
    Ok(Report { plan, applied_now })
}

/// One migration in its own transaction, tried again when TimescaleDB makes it a deadlock
/// victim (see [`crate::DEADLOCK_ATTEMPTS`]).
async fn apply_retrying(client: &mut Client, m: &Migration, flavor: Flavor) -> Result<u128, Error> {
    let mut attempt = 1;
    loop {
        match apply_one(client, m, flavor).await {
            Err(e) if attempt < DEADLOCK_ATTEMPTS && e.is_deadlock() => {
                tracing::warn!(
                    file = m.file,
                    attempt,
                    "migration hit a deadlock with a job; retrying"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn apply_one(client: &mut Client, m: &Migration, flavor: Flavor) -> Result<u128, Error> {
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
            &flavor.as_str(),
            &checksum(m.sql),
            &i32::try_from(ms).unwrap_or(i32::MAX),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(ms)
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

#[cfg(test)]
mod tests {
    use super::{timescale_path, ServerFacts};
    use crate::Flavor;

    fn facts(created: Option<&str>, available: Option<&str>, preload: Option<&str>) -> ServerFacts {
        ServerFacts {
            created: created.map(str::to_owned),
            available: available.map(str::to_owned),
            preload: preload.map(str::to_owned),
            license: None,
        }
    }

    #[test]
    fn a_package_that_is_not_preloaded_is_not_a_timescale_path() {
        let why = timescale_path(&facts(None, Some("2.25.2"), Some("pg_stat_statements")))
            .expect_err("not preloaded");
        assert!(why.contains("shared_preload_libraries"), "{why}");
        assert!(timescale_path(&facts(None, None, Some("timescaledb"))).is_err());
    }

    #[test]
    fn preloaded_or_unreadable_preload_takes_timescale() {
        for preload in [Some("pg_stat_statements, \"timescaledb\""), None] {
            let (flavor, v) =
                timescale_path(&facts(None, Some("2.25.2"), preload)).expect("timescale");
            assert_eq!((flavor, v.as_str()), (Flavor::Timescale, "2.25.2"));
        }
    }

    #[test]
    fn the_license_picks_the_edition() {
        let mut f = facts(Some("2.25.2"), Some("2.25.2"), Some(""));
        f.license = Some("apache".into());
        assert_eq!(
            timescale_path(&f).expect("apache").0,
            Flavor::TimescaleApache
        );
        f.license = Some("timescale".into());
        assert_eq!(timescale_path(&f).expect("community").0, Flavor::Timescale);
    }
}
