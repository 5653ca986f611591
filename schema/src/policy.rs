//! Changing retention and compression intervals (`storage_policies`) and making them effective.

use tokio_postgres::Client;

use crate::{Error, DEADLOCK_ATTEMPTS};

/// One change to a table's policy, as given on the command line (`depth_updates=14 days`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyChange {
    /// Drop rows older than the interval; `None` keeps them forever.
    Retention {
        relation: String,
        after: Option<String>,
    },
    /// Compress chunks older than the interval (TimescaleDB); `None` never compresses.
    Compression {
        relation: String,
        after: Option<String>,
    },
    /// Whether retention waits for the table's verified daily files (`on`) or drops at
    /// `drop_after` without them (`off`).
    Archive { relation: String, on: bool },
}

/// The daily data type whose files hold each table that can be archived (`archive_as`).
pub const ARCHIVE_TYPES: [(&str, &str); 5] = [
    ("depth_updates", "incremental_book_L2"),
    ("book_checkpoints", "incremental_book_L2"),
    ("book_ticker", "quotes"),
    ("trades", "trades"),
    ("mark_prices", "derivative_ticker"),
];

impl PolicyChange {
    /// Parses `RELATION=on|off` for [`PolicyChange::Archive`].
    pub fn parse_archive(s: &str) -> Result<PolicyChange, Error> {
        let (relation, v) = s.split_once('=').ok_or_else(|| {
            Error::Policy(format!(
                "expected RELATION=on|off (e.g. depth_updates=on), got {s:?}"
            ))
        })?;
        let on = match v.trim() {
            "on" => true,
            "off" => false,
            other => {
                return Err(Error::Policy(format!(
                    "{relation}: expected on or off, got {other:?}"
                )))
            }
        };
        Ok(PolicyChange::Archive {
            relation: relation.trim().to_owned(),
            on,
        })
    }

    /// Parses `RELATION=INTERVAL`, where INTERVAL is a PostgreSQL interval (`7 days`, `12h`)
    /// or `none`.
    pub fn parse_pair(s: &str) -> Result<(String, Option<String>), Error> {
        let (rel, iv) = s.split_once('=').ok_or_else(|| {
            Error::Policy(format!(
                "expected RELATION=INTERVAL (e.g. depth_updates=14d), got {s:?}"
            ))
        })?;
        let rel = rel.trim().to_owned();
        let iv = iv.trim();
        if rel.is_empty() || iv.is_empty() {
            return Err(Error::Policy(format!(
                "expected RELATION=INTERVAL, got {s:?}"
            )));
        }
        let iv = (!iv.eq_ignore_ascii_case("none")).then(|| iv.to_owned());
        Ok((rel, iv))
    }
}

/// Applies the changes in one transaction, then `apply_storage_policies()`. An unknown table or
/// an interval PostgreSQL cannot read is refused with nothing changed.
///
/// On TimescaleDB, replacing a policy job locks the job catalog and the hypertable in the
/// opposite order to a continuous-aggregate refresh job that runs at that moment, so the server
/// may abort one of the two with a deadlock. Nothing was changed then, and the whole
/// transaction is tried again, as PostgreSQL's manual advises.
pub async fn set_policies(client: &mut Client, changes: &[PolicyChange]) -> Result<(), Error> {
    let mut attempt = 1;
    loop {
        match set_policies_once(client, changes).await {
            Err(e) if attempt < DEADLOCK_ATTEMPTS && e.is_deadlock() => {
                tracing::warn!(
                    attempt,
                    "storage policy change hit a deadlock with a job; retrying"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn set_policies_once(client: &mut Client, changes: &[PolicyChange]) -> Result<(), Error> {
    let mut tx = client.transaction().await?;
    for change in changes {
        let (column, relation, after) = match change {
            PolicyChange::Retention { relation, after } => ("drop_after", relation, after),
            PolicyChange::Compression { relation, after } => ("compress_after", relation, after),
            PolicyChange::Archive { relation, on } => {
                set_archive(&tx, relation, *on).await?;
                continue;
            }
        };
        let interval_ok = match after {
            None => true,
            Some(iv) => {
                // PostgreSQL is the judge of its own interval syntax; a savepoint keeps a
                // parse error from aborting the whole transaction.
                let sp = tx.savepoint("interval_check").await?;
                let ok = sp
                    .query_one("SELECT $1::text::interval > interval '0'", &[iv])
                    .await
                    .map(|r| r.get::<_, bool>(0))
                    .unwrap_or(false);
                sp.rollback().await?;
                ok
            }
        };
        if !interval_ok {
            return Err(Error::Policy(format!(
                "{relation}: {:?} is not a positive PostgreSQL interval (e.g. '14 days', '12h') or 'none'",
                after.as_deref().unwrap_or_default()
            )));
        }
        let sql = format!(
            "UPDATE storage_policies SET {column} = $2::text::interval WHERE relation = $1"
        );
        let n = tx.execute(&sql, &[relation, after]).await?;
        if n == 0 {
            let known: Vec<String> = tx
                .query("SELECT relation FROM storage_policies ORDER BY 1", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            return Err(Error::Policy(format!(
                "unknown table {relation:?}; policies exist for: {}",
                known.join(", ")
            )));
        }
    }
    tx.batch_execute("SELECT apply_storage_policies()").await?;
    tx.commit().await?;
    Ok(())
}

async fn set_archive(
    tx: &tokio_postgres::Transaction<'_>,
    relation: &str,
    on: bool,
) -> Result<(), Error> {
    let Some((_, data_type)) = ARCHIVE_TYPES.iter().find(|(r, _)| *r == relation) else {
        let known: Vec<&str> = ARCHIVE_TYPES.iter().map(|(r, _)| *r).collect();
        return Err(Error::Policy(format!(
            "no daily file type holds {relation:?}; tables that can be archived: {}",
            known.join(", ")
        )));
    };
    let value = on.then_some(*data_type);
    tx.execute(
        "UPDATE storage_policies SET archive_as = $2 WHERE relation = $1",
        &[&relation, &value],
    )
    .await?;
    Ok(())
}

/// Creates (or updates the password of) a login role that reads through `depthbook_reader`:
/// the API's and Grafana's database users.
pub async fn ensure_reader_login(client: &Client, name: &str, password: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(Error::Policy(format!(
            "reader login {name:?}: use lower-case letters, digits and underscores"
        )));
    }
    if password.is_empty() {
        return Err(Error::Policy(format!(
            "reader login {name:?}: the password is empty"
        )));
    }
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&name],
        )
        .await?
        .get(0);
    // format() quotes the name and the password; neither is ever spliced in by us.
    let sql: String = if exists {
        client
            .query_one(
                "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
                &[&name, &password],
            )
            .await?
            .get(0)
    } else {
        client.query_one("SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE depthbook_reader', $1::text, $2::text)", &[&name, &password]).await?.get(0)
    };
    client.batch_execute(&sql).await?;
    let grant: String = client
        .query_one(
            "SELECT format('GRANT depthbook_reader TO %I', $1::text)",
            &[&name],
        )
        .await?
        .get(0);
    client.batch_execute(&grant).await?;
    Ok(())
}
