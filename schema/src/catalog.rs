//! The migration files compiled into this binary, checked and grouped by version.
//!
//! A file is `NNNN_name.sql` (every path), or a pair `NNNN_name.tsdb.sql` (TimescaleDB) and
//! `NNNN_name.pg.sql` (plain PostgreSQL) giving the same version two bodies, optionally with a
//! third, `NNNN_name.apache.sql`, for TimescaleDB's Apache edition. Without one, the Apache
//! edition takes the `.pg.sql` body: what it lacks (compression, jobs, continuous aggregates)
//! is exactly what the plain path does without.

use sha2::{Digest, Sha256};

use crate::{Error, Flavor};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/files.rs"));
}

/// One migration as it applies on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    /// The name without number and extension, e.g. `core`.
    pub name: &'static str,
    /// The file it comes from, e.g. `0003_storage.tsdb.sql`.
    pub file: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the file's text: what `schema_migrations.checksum` records.
    pub fn checksum(&self) -> String {
        checksum(self.sql)
    }
}

pub(crate) fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

#[derive(Debug)]
struct Entry {
    version: i32,
    name: &'static str,
    variant: Option<Flavor>,
    file: &'static str,
    sql: &'static str,
}

fn parse(file: &'static str, sql: &'static str) -> Result<Entry, Error> {
    let bad = |why: &str| Error::Catalog(format!("{file}: {why}"));
    let stem = file
        .strip_suffix(".sql")
        .ok_or_else(|| bad("not a .sql file"))?;
    let (stem, variant) = if let Some(s) = stem.strip_suffix(".tsdb") {
        (s, Some(Flavor::Timescale))
    } else if let Some(s) = stem.strip_suffix(".apache") {
        (s, Some(Flavor::TimescaleApache))
    } else if let Some(s) = stem.strip_suffix(".pg") {
        (s, Some(Flavor::Postgres))
    } else {
        (stem, None)
    };
    let (num, name) = stem
        .split_once('_')
        .ok_or_else(|| bad("expected NNNN_name[.tsdb|.apache|.pg].sql"))?;
    if num.len() != 4 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the version must be four digits"));
    }
    let version: i32 = num.parse().map_err(|_| bad("bad version number"))?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
    {
        return Err(bad(
            "the name must be lower-case letters, digits and underscores",
        ));
    }
    Ok(Entry {
        version,
        name,
        variant,
        file,
        sql,
    })
}

/// The migrations for `flavor`, in version order, from an explicit file list.
pub(crate) fn migrations_from(
    files: &[(&'static str, &'static str)],
    flavor: Flavor,
) -> Result<Vec<Migration>, Error> {
    let mut entries = files
        .iter()
        .map(|(f, s)| parse(f, s))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.version);
    let mut out = Vec::new();
    let mut expected = 1;
    let mut i = 0;
    while i < entries.len() {
        let v = entries[i].version;
        let group: Vec<&Entry> = entries[i..].iter().take_while(|e| e.version == v).collect();
        i += group.len();
        if v != expected {
            return Err(Error::Catalog(format!(
                "migration versions must run 1, 2, 3, ... without holes; found {v:04} where {expected:04} was due"
            )));
        }
        expected += 1;
        let names_agree = group.iter().all(|e| e.name == group[0].name);
        let has = |f: Flavor| group.iter().filter(|e| e.variant == Some(f)).count() == 1;
        let shape_ok = match group.as_slice() {
            [one] => one.variant.is_none(),
            [_, _] => names_agree && has(Flavor::Timescale) && has(Flavor::Postgres),
            [_, _, _] => names_agree && Flavor::ALL.into_iter().all(has),
            _ => false,
        };
        if !shape_ok {
            let files: Vec<&str> = group.iter().map(|e| e.file).collect();
            return Err(Error::Catalog(format!(
                "version {v:04} must be one NNNN_name.sql, or a pair NNNN_name.tsdb.sql + NNNN_name.pg.sql (and optionally NNNN_name.apache.sql); found {files:?}"
            )));
        }
        let preference: &[Flavor] = match flavor {
            Flavor::Timescale => &[Flavor::Timescale],
            Flavor::TimescaleApache => &[Flavor::TimescaleApache, Flavor::Postgres],
            Flavor::Postgres => &[Flavor::Postgres],
        };
        let chosen = group
            .iter()
            .find(|e| e.variant.is_none())
            .or_else(|| {
                preference
                    .iter()
                    .find_map(|p| group.iter().find(|e| e.variant == Some(*p)))
            })
            .ok_or_else(|| Error::Catalog(format!("version {v:04} has no file for {flavor}")))?;
        out.push(Migration {
            version: chosen.version,
            name: chosen.name,
            file: chosen.file,
            sql: chosen.sql,
        });
    }
    Ok(out)
}

/// The migrations compiled into this binary for `flavor`, in version order.
pub fn migrations(flavor: Flavor) -> Result<Vec<Migration>, Error> {
    migrations_from(embedded::FILES, flavor)
}

/// Every embedded file name (for tests and `--plan`).
pub fn files() -> impl Iterator<Item = &'static str> {
    embedded::FILES.iter().map(|(f, _)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalog_is_well_formed_for_both_paths() {
        let ts = migrations(Flavor::Timescale).expect("timescale catalog");
        let pg = migrations(Flavor::Postgres).expect("postgres catalog");
        let ap = migrations(Flavor::TimescaleApache).expect("apache catalog");
        assert_eq!(ts.len(), pg.len());
        assert_eq!(ap.len(), pg.len());
        assert!(ap.iter().any(|m| m.file.ends_with(".apache.sql")));
        assert!(ap.iter().all(|m| !m.file.ends_with(".tsdb.sql")));
        assert!(ts.iter().any(|m| m.file.ends_with(".tsdb.sql")));
        assert!(pg.iter().all(|m| !m.file.ends_with(".tsdb.sql")));
        // Every file in sql/ is used by at least one path.
        let used: std::collections::BTreeSet<&str> =
            ts.iter().chain(&pg).chain(&ap).map(|m| m.file).collect();
        let all: std::collections::BTreeSet<&str> = files().collect();
        assert_eq!(used, all);
    }

    #[test]
    fn rejects_holes_half_pairs_and_bad_names() {
        let sql = "SELECT 1;";
        assert!(migrations_from(
            &[("0001_a.sql", sql), ("0003_c.sql", sql)],
            Flavor::Postgres
        )
        .is_err());
        assert!(migrations_from(&[("0001_a.tsdb.sql", sql)], Flavor::Postgres).is_err());
        assert!(migrations_from(
            &[("0001_a.tsdb.sql", sql), ("0001_b.pg.sql", sql)],
            Flavor::Postgres
        )
        .is_err());
        assert!(migrations_from(
            &[("0001_a.sql", sql), ("0001_a.pg.sql", sql)],
            Flavor::Postgres
        )
        .is_err());
        assert!(migrations_from(&[("1_a.sql", sql)], Flavor::Postgres).is_err());
        assert!(migrations_from(&[("0001_A.sql", sql)], Flavor::Postgres).is_err());
        let ok = migrations_from(
            &[
                ("0001_a.sql", sql),
                ("0002_b.tsdb.sql", "ts"),
                ("0002_b.pg.sql", "pg"),
            ],
            Flavor::Postgres,
        )
        .expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].sql, "pg");
        assert_eq!(ok[1].file, "0002_b.pg.sql");
    }

    #[test]
    fn the_apache_edition_takes_its_own_body_else_the_plain_one() {
        let files = [
            ("0001_a.tsdb.sql", "ts1"),
            ("0001_a.pg.sql", "pg1"),
            ("0002_b.tsdb.sql", "ts2"),
            ("0002_b.apache.sql", "ap2"),
            ("0002_b.pg.sql", "pg2"),
        ];
        let bodies = |f| -> Vec<&str> {
            migrations_from(&files, f)
                .expect("valid")
                .iter()
                .map(|m| m.sql)
                .collect()
        };
        assert_eq!(bodies(Flavor::TimescaleApache), ["pg1", "ap2"]);
        assert_eq!(bodies(Flavor::Timescale), ["ts1", "ts2"]);
        assert_eq!(bodies(Flavor::Postgres), ["pg1", "pg2"]);
        // An Apache body alone, or with only one of the pair, is a malformed version.
        assert!(migrations_from(&[("0001_a.apache.sql", "x")], Flavor::Postgres).is_err());
        assert!(migrations_from(
            &[("0001_a.apache.sql", "x"), ("0001_a.pg.sql", "y")],
            Flavor::Postgres
        )
        .is_err());
    }
}
