//! Starting and stopping one private PostgreSQL cluster.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{io_err, Binaries, Error};

/// The superuser `initdb` creates; tests and the local run connect as it over loopback (trust).
pub const SUPERUSER: &str = "postgres";
/// How long a fresh server may take to accept connections (a cold, busy CI machine is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at a free port: another process can take the port between our probe and the bind.
const PORT_ATTEMPTS: usize = 5;

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A persistent directory (created if missing; holds `pgdata/` and `postgres.log`), reused
    /// across runs. `None`: a temp dir removed when the server stops.
    pub dir: Option<PathBuf>,
    /// A fixed port; `None` picks a free loopback port.
    pub port: Option<u16>,
    /// Trade durability for speed (`fsync=off`, ...): for tests and throw-away runs only.
    pub ephemeral: bool,
    /// Extra `postgresql.conf` settings passed as `-c name=value`.
    pub settings: Vec<(String, String)>,
    /// Whether and how TimescaleDB is preloaded.
    pub timescaledb: Timescale,
    /// A streaming hot standby of the server on this loopback port: a new data directory is a
    /// `pg_basebackup` of it instead of an `initdb`. Preload the same TimescaleDB edition.
    pub replica_of: Option<u16>,
}

/// TimescaleDB on a private server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timescale {
    /// Preloaded with its default (community) license when it is installed.
    #[default]
    Auto,
    /// Not preloaded, even where installed: the package is there but cannot be created.
    Off,
    /// Preloaded, community license; an error where it is not installed.
    Community,
    /// Preloaded with `timescaledb.license=apache`, the edition managed services ship; an error
    /// where it is not installed.
    Apache,
}

enum Home {
    Temp(tempfile::TempDir),
    Persistent(PathBuf),
}

impl Home {
    fn path(&self) -> &Path {
        match self {
            Home::Temp(t) => t.path(),
            Home::Persistent(p) => p,
        }
    }
}

/// A running private PostgreSQL; stopped (and its temp dir removed) on drop or [`PgServer::stop`].
pub struct PgServer {
    binaries: Binaries,
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    home: Mutex<Option<Home>>,
    /// What was preloaded: `Off`, `Community` or `Apache`.
    edition: Timescale,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("timescaledb", &self.edition)
            .finish()
    }
}

/// The OS user to run PostgreSQL as: `None` when we are not root.
fn run_as() -> Result<Option<(u32, u32)>, Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new(SUPERUSER).map_err(|_| Error::NoPostgresUser)?;
    // SAFETY: getpwnam reads a NUL-terminated name; the result is read before any other call
    // that could overwrite its static buffer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(Error::NoPostgresUser);
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn command(program: PathBuf, owner: Option<(u32, u32)>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd);
    if let Some((uid, gid)) = owner {
        // std also drops root's supplementary groups when switching the uid.
        cmd.uid(uid).gid(gid);
    }
    cmd.env("LC_ALL", "C");
    cmd
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), Error> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err(format!(
            "handing {} to the postgres user",
            path.display()
        )))?;
    }
    Ok(())
}

fn run(mut cmd: Command) -> Result<(), Error> {
    let program = format!("{:?}", cmd.get_program());
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {program}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        program,
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn initdb(
    binaries: &Binaries,
    owner: Option<(u32, u32)>,
    dir: &Path,
    data: &Path,
    ephemeral: bool,
) -> Command {
    let mut cmd = command(binaries.bin("initdb"), owner, dir);
    cmd.arg("-D")
        .arg(data)
        .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"]);
    if ephemeral {
        cmd.arg("--no-sync");
    }
    cmd
}

/// A copy of the server on `primary` that starts as its streaming standby (`-R` writes
/// `standby.signal` and `primary_conninfo`); initdb's loopback `replication` trust lets it in.
fn base_backup(
    binaries: &Binaries,
    owner: Option<(u32, u32)>,
    dir: &Path,
    data: &Path,
    primary: u16,
    ephemeral: bool,
) -> Command {
    let mut cmd = command(binaries.bin("pg_basebackup"), owner, dir);
    cmd.arg("-D")
        .arg(data)
        .args(["-h", "127.0.0.1", "-U", SUPERUSER]);
    cmd.args([
        "-p",
        &primary.to_string(),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
    ]);
    if ephemeral {
        cmd.arg("--no-sync");
    }
    cmd
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

/// Servers are spawned by one thread that lives as long as the process. The parent-death
/// signal fires when the *thread* that forked the child ends, so spawning from a test's thread
/// (or a tokio blocking thread) would stop a shared server when that thread is done.
fn spawn_long_lived(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("pgembed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so this loop never ends and the thread never
                // exits; park forever should that ever change.
                loop {
                    std::thread::park();
                }
            })
            .map(|_| ())
            .unwrap_or(());
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = tx
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((cmd, reply_tx));
    sent.map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

impl PgServer {
    /// Initialise (if needed) and start a cluster; returns once it accepts connections.
    pub fn start(mut opts: Options) -> Result<PgServer, Error> {
        let binaries = Binaries::locate()?;
        opts.timescaledb = match (opts.timescaledb, binaries.timescaledb) {
            (Timescale::Auto, true) => Timescale::Community,
            (Timescale::Auto | Timescale::Off, false) => Timescale::Off,
            (Timescale::Community | Timescale::Apache, false) => {
                return Err(Error::NoTimescale(binaries.bindir.display().to_string()))
            }
            (t, true) => t,
        };
        let owner = run_as()?;
        let home = match &opts.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
                let dir = dir
                    .canonicalize()
                    .map_err(io_err(format!("resolving {}", dir.display())))?;
                Home::Persistent(dir)
            }
            None => Home::Temp(
                tempfile::Builder::new()
                    .prefix("pgembed-")
                    .tempdir()
                    .map_err(io_err("creating a temp dir"))?,
            ),
        };
        let dir = home.path().to_path_buf();
        chown(&dir, owner)?;
        let data = dir.join("pgdata");
        if !data.join("PG_VERSION").is_file() {
            if let Some(primary) = opts.replica_of {
                run(base_backup(
                    &binaries,
                    owner,
                    &dir,
                    &data,
                    primary,
                    opts.ephemeral,
                ))?;
            } else {
                run(initdb(&binaries, owner, &dir, &data, opts.ephemeral))?;
            }
        }
        let log = dir.join("postgres.log");
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match opts.port {
                Some(p) => p,
                None => free_port()?,
            };
            match Self::launch(&binaries, owner, &dir, &data, &log, port, &opts) {
                Ok(child) => {
                    return Ok(PgServer {
                        binaries,
                        port,
                        dir,
                        child: Mutex::new(Some(child)),
                        home: Mutex::new(Some(home)),
                        edition: opts.timescaledb,
                    })
                }
                Err(e @ Error::Exited { .. }) if opts.port.is_none() => {
                    let port_taken = matches!(&e, Error::Exited { tail, .. }
                        if tail.contains("could not bind") || tail.contains("already in use"));
                    if !port_taken {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(Error::NoBinaries))
    }

    fn launch(
        binaries: &Binaries,
        owner: Option<(u32, u32)>,
        dir: &Path,
        data: &Path,
        log: &Path,
        port: u16,
        opts: &Options,
    ) -> Result<Child, Error> {
        let log_start = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let logfile = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("opening {}", log.display())))?;
        let logfile2 = logfile
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;
        let mut cmd = command(binaries.bin("postgres"), owner, dir);
        cmd.arg("-D").arg(data);
        for (k, v) in settings(port, opts) {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(logfile)
            .stderr(logfile2)
            // Its own process group: a Ctrl-C meant for a test run must not stop the server
            // before our own shutdown does.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; this runs in the child between fork and exec,
        // after the switch to the postgres user (a credential change would clear the signal).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_long_lived(cmd).map_err(io_err("starting postgres"))?;
        wait_ready(binaries, child, log, log_start, port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding `pgdata/` and `postgres.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server was started with TimescaleDB preloaded.
    pub fn timescaledb(&self) -> bool {
        self.edition != Timescale::Off
    }

    /// What was preloaded: `Off`, `Community` or `Apache`.
    pub fn edition(&self) -> Timescale {
        self.edition
    }

    /// The binaries this server runs (for `pg_dump` and friends).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A URL for database `dbname`, as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Fast shutdown; idempotent. A temp dir is removed afterwards.
    pub fn stop(&self) {
        if let Ok(mut child) = self.child.lock() {
            if let Some(mut c) = child.take() {
                stop_child(&mut c);
            }
        }
        if let Ok(mut home) = self.home.lock() {
            // Dropping a TempDir removes it; a persistent dir stays.
            home.take();
        }
    }
}

fn stop_child(child: &mut Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's settings: loopback only, no unix socket, durability off when ephemeral, and
/// TimescaleDB preloaded (Apache-licensed if asked) on top of the caller's own.
fn settings(port: u16, opts: &Options) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = vec![
        ("port".into(), port.to_string()),
        ("listen_addresses".into(), "127.0.0.1".into()),
        // No unix socket: its path length is limited and its directory needs permissions.
        ("unix_socket_directories".into(), String::new()),
        ("max_connections".into(), "200".into()),
    ];
    if opts.ephemeral {
        for (k, v) in [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
        ] {
            settings.push((k.into(), v.into()));
        }
    }
    if matches!(opts.timescaledb, Timescale::Community | Timescale::Apache) {
        settings.push(("shared_preload_libraries".into(), "timescaledb".into()));
        settings.push(("timescaledb.telemetry_level".into(), "off".into()));
    }
    if opts.timescaledb == Timescale::Apache {
        settings.push(("timescaledb.license".into(), "apache".into()));
    }
    settings.extend(opts.settings.iter().cloned());
    settings
}

/// Polls `pg_isready` until the server accepts connections, it exits, or `READY_TIMEOUT`
/// passes; the errors carry what the server logged since `log_start`.
fn wait_ready(
    binaries: &Binaries,
    mut child: Child,
    log: &Path,
    log_start: u64,
    port: u16,
) -> Result<Child, Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let new_log = || {
        let len = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        tail(log, (len - log_start.min(len)).min(4000))
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Exited {
                status: status.to_string(),
                log: log.display().to_string(),
                tail: new_log(),
            });
        }
        let ready = Command::new(binaries.bin("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-t", "1", "-U", SUPERUSER])
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            return Ok(child);
        }
        if Instant::now() > deadline {
            stop_child(&mut child);
            return Err(Error::NotReady {
                secs: READY_TIMEOUT.as_secs(),
                log: log.display().to_string(),
                tail: new_log(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
