//! Finding the PostgreSQL server binaries and the extensions installed for them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Where Debian (and Ubuntu) install one directory of server binaries per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The server binaries of one PostgreSQL installation.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Directory holding `initdb`, `postgres`, `pg_isready`, `pg_dump`, ...
    pub bindir: PathBuf,
    /// Whether the TimescaleDB extension is installed for exactly these binaries; the server is
    /// then started with `shared_preload_libraries=timescaledb`.
    pub timescaledb: bool,
}

impl Binaries {
    /// `$PGEMBED_BINDIR`, else `pg_config --bindir` from PATH, else the newest
    /// `/usr/lib/postgresql/<major>/bin`; the first that holds `initdb` and `postgres` wins.
    pub fn locate() -> Result<Self, Error> {
        let candidates = std::env::var_os("PGEMBED_BINDIR")
            .map(PathBuf::from)
            .into_iter()
            .chain(pg_config("pg_config", "--bindir").map(PathBuf::from))
            .chain(debian_bindirs());
        for dir in candidates {
            if has_server(&dir) {
                let timescaledb = timescaledb_installed(&dir);
                return Ok(Binaries {
                    bindir: dir,
                    timescaledb,
                });
            }
        }
        Err(Error::NoBinaries)
    }

    /// Path of one of the binaries, e.g. `bin("pg_dump")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// Newest major version first.
fn debian_bindirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn pg_config(program: impl AsRef<std::ffi::OsStr>, flag: &str) -> Option<String> {
    let out = Command::new(program).arg(flag).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// The extension needs both its control file (for `CREATE EXTENSION`) and its loader library
/// (for `shared_preload_libraries`) installed for this server's major version.
fn timescaledb_installed(bindir: &Path) -> bool {
    let pgc = bindir.join("pg_config");
    let (Some(share), Some(lib)) = (
        pg_config(&pgc, "--sharedir"),
        pg_config(&pgc, "--pkglibdir"),
    ) else {
        return false;
    };
    Path::new(&share)
        .join("extension/timescaledb.control")
        .is_file()
        && Path::new(&lib).join("timescaledb.so").is_file()
}
