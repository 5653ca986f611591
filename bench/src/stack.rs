//! What a benchmark runs against: a PostgreSQL server, fresh migrated databases, the simulator,
//! and `ingest` / `graphql` as separate processes (the release binaries), so that their CPU and
//! memory are their own.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use binance::Venue;
use tokio::process::{Child, Command};
use tokio_postgres::{Client, NoTls};

/// A PostgreSQL server: a private durable cluster, or one given by URL (to bench a server with
/// TimescaleDB, say).
#[derive(Debug)]
pub struct Server {
    admin_url: String,
    _private: Option<(pgembed::PgServer, tempfile::TempDir)>,
    pub postmaster_pid: Option<i32>,
    /// The storage path every database is migrated on.
    pub storage: schema::Flavor,
}

impl Server {
    /// A private durable server preloading TimescaleDB as `storage` needs, or `external`.
    pub async fn start(external: Option<String>, storage: schema::Flavor) -> Result<Server> {
        if let Some(url) = external {
            return Ok(Server {
                admin_url: url,
                _private: None,
                postmaster_pid: None,
                storage,
            });
        }
        let dir = tempfile::tempdir().context("server directory")?;
        let data = dir.path().join("data");
        // Durable (fsync on), as deployed: a benchmark of an unsafe server would flatter ingest.
        let server = tokio::task::spawn_blocking(move || {
            pgembed::PgServer::start(pgembed::Options {
                dir: Some(data),
                port: None,
                ephemeral: false,
                settings: vec![],
                timescaledb: match storage {
                    schema::Flavor::Timescale => pgembed::Timescale::Community,
                    schema::Flavor::TimescaleApache => pgembed::Timescale::Apache,
                    schema::Flavor::Postgres => pgembed::Timescale::Off,
                },
                replica_of: None,
            })
        })
        .await??;
        let admin_url = server.url("postgres");
        let pid_file = server.dir().join("pgdata").join("postmaster.pid");
        let postmaster_pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
        Ok(Server {
            admin_url,
            _private: Some((server, dir)),
            postmaster_pid,
            storage,
        })
    }

    /// A new, migrated database named `name` (dropped first if a previous run left it).
    pub async fn fresh_database(&self, name: &str) -> Result<String> {
        let admin = connect(&self.admin_url).await?;
        // One statement each: a multi-statement string would run as one transaction, which
        // DROP/CREATE DATABASE refuse. The CHECKPOINT writes out what the previous part left
        // dirty (a ladder's top step leaves gigabytes of WAL), which the server's own
        // checkpoint could otherwise flush in the middle of this part's window, with every
        // commit waiting on it (two nominal runs after the ladder: p99 190–340 ms, not ~20).
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
            "CHECKPOINT".to_owned(),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .with_context(|| format!("creating database {name}"))?;
        }
        let url = with_database(&self.admin_url, name)?;
        let mut db = connect(&url).await?;
        schema::apply(&mut db, schema::FlavorChoice::Require(self.storage))
            .await
            .context("migrating")?;
        Ok(url)
    }

    pub async fn drop_database(&self, name: &str) -> Result<()> {
        let admin = connect(&self.admin_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        Ok(())
    }

    /// `SELECT version()` and the timescaledb package's version, if the server has it.
    pub async fn describe(&self) -> Result<(String, Option<String>)> {
        let admin = connect(&self.admin_url).await?;
        let row = admin
            .query_one(
                "SELECT version(), (SELECT default_version FROM pg_available_extensions
                                    WHERE name = 'timescaledb')",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

/// The URL with its database name replaced.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(slash) = base.rfind('/').filter(|&i| i > "postgres://".len()) else {
        bail!("cannot find the database name in the URL");
    };
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended");
        }
    });
    Ok(client)
}

/// A free loopback port (bound then released: the child binds it right after).
pub fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A benchmarked binary, running; killed if dropped without `stop`.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    child: Child,
    pub pid: i32,
    pub addr: SocketAddr,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, addr: SocketAddr, log: &Path) -> Result<Proc> {
        let out = std::fs::File::create(log)?;
        cmd.stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let pid = child.id().context("child pid")? as i32;
        Ok(Proc {
            name,
            child,
            pid,
            addr,
        })
    }

    /// SIGTERM, then wait for a clean exit (ingest flushes everything first).
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .with_context(|| format!("{} did not stop", self.name))??;
        if !status.success() {
            bail!("{} exited with {status}", self.name);
        }
        Ok(())
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// A simulated venue at `multiplier` × Binance's rates, with a snapshot budget high enough that
/// first syncs are not what a benchmark waits for.
/// Consumers the simulator cut for falling behind, every venue: the frames it lost.
pub fn consumers_cut(sim: &sim::Sim) -> u64 {
    [&sim.spot, &sim.usdm]
        .into_iter()
        .flatten()
        .map(|v| v.state().slow_consumers_cut)
        .sum()
}

pub fn sim_venue(venue: Venue, symbols: usize, multiplier: f64) -> sim::VenueConfig {
    let mut c = sim::VenueConfig::for_venue(venue);
    c.symbols = symbols;
    c.rate_multiplier = multiplier;
    c.weight_limit = 1_000_000;
    c
}

/// Where ingest reads from (the simulator's venues) and how it is tuned.
#[derive(Debug, Clone)]
pub struct IngestArgs {
    pub database_url: String,
    pub venues: Vec<(Venue, String, String)>,
    pub top: usize,
    /// Extra `--flag value` pairs (an empty value: `--flag` alone).
    pub extra: Vec<(String, String)>,
}

impl IngestArgs {
    /// Both of `sim`'s venues, their `top` symbols each.
    pub fn both_venues(
        sim: &sim::Sim,
        url: &str,
        top: usize,
        extra: &[(String, String)],
    ) -> Result<IngestArgs> {
        let (spot, usdm) = (
            sim.spot.as_ref().context("spot")?,
            sim.usdm.as_ref().context("usdm")?,
        );
        Ok(IngestArgs {
            database_url: url.to_owned(),
            venues: vec![
                (Venue::Spot, spot.rest_url(), spot.ws_url()),
                (Venue::Usdm, usdm.rest_url(), usdm.ws_url()),
            ],
            top,
            extra: extra.to_vec(),
        })
    }
}

pub fn spawn_ingest(bin_dir: &Path, a: &IngestArgs, work: &Path) -> Result<Proc> {
    let addr = free_addr()?;
    let mut cmd = Command::new(bin_dir.join("ingest"));
    let venues: Vec<&str> = a.venues.iter().map(|v| v.0.as_str()).collect();
    cmd.arg("run")
        .arg("--database-url")
        .arg(&a.database_url)
        .arg("--venues")
        .arg(venues.join(","))
        .arg("--top")
        .arg(a.top.to_string())
        .arg("--metrics-bind")
        .arg(addr.to_string())
        .arg("--spool-dir")
        .arg(work.join("spool"))
        .env("RUST_LOG", "warn");
    for (venue, rest, ws) in &a.venues {
        let v = venue.as_str();
        cmd.arg(format!("--{v}-rest-url"))
            .arg(rest)
            .arg(format!("--{v}-ws-url"))
            .arg(ws)
            // The simulator's snapshot budget is raised alike: how fast 400 books first sync
            // is the REST budget's business, not what is measured here.
            .arg(format!("--{v}-weight-limit"))
            .arg("1000000");
    }
    for (k, v) in &a.extra {
        cmd.arg(format!("--{k}"));
        if !v.is_empty() {
            cmd.arg(v);
        }
    }
    Proc::spawn("ingest", cmd, addr, &work.join("ingest.log"))
}

pub fn spawn_graphql(bin_dir: &Path, database_url: &str, work: &Path) -> Result<Proc> {
    let addr = free_addr()?;
    let mut cmd = Command::new(bin_dir.join("graphql"));
    cmd.arg("--database-url")
        .arg(database_url)
        .arg("--bind")
        .arg(addr.to_string())
        .env("RUST_LOG", "warn");
    Proc::spawn("graphql", cmd, addr, &work.join("graphql.log"))
}

/// Sums a Prometheus text-format metric over all its label sets.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

pub async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Result<String> {
    Ok(http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// ingest's counters a benchmark window is judged by.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestCounters {
    pub messages: f64,
    pub dropped_rows: f64,
    pub gaps: f64,
    pub reconnects: f64,
}

impl IngestCounters {
    pub async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Result<IngestCounters> {
        let t = scrape(http, addr).await?;
        let m = |n: &str| metric_sum(&t, &format!("depthbook_ingest_{n}"));
        Ok(IngestCounters {
            messages: m("messages_total"),
            dropped_rows: m("dropped_rows_total"),
            gaps: m("gaps_total"),
            reconnects: m("reconnects_total"),
        })
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &IngestCounters) -> IngestCounters {
        IngestCounters {
            messages: self.messages - before.messages,
            dropped_rows: self.dropped_rows - before.dropped_rows,
            gaps: self.gaps - before.gaps,
            reconnects: self.reconnects - before.reconnects,
        }
    }
}

/// Waits until ingest reports `books` books synced.
pub async fn wait_synced(
    http: &reqwest::Client,
    ingest: &mut Proc,
    books: usize,
    deadline: Duration,
) -> Result<()> {
    let addr = ingest.addr;
    wait_for("every book synced", deadline, ingest, || async {
        scrape(http, addr)
            .await
            .map(|t| metric_sum(&t, "depthbook_ingest_books_synced") >= books as f64)
            .unwrap_or(false)
    })
    .await
}

/// Polls until `f` holds, failing after `deadline`; `proc` is checked for an early exit.
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, proc: &mut Proc, f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_until(what, deadline, Duration::from_millis(200), proc, f).await
}

/// [`wait_for`], polling every `every`.
pub async fn poll_until<F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    proc: &mut Proc,
    mut f: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if f().await {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited ({status}) while waiting for {what}", proc.name);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "b").expect("url"),
            "postgres://u@h:5/b"
        );
        assert_eq!(
            with_database("postgres://u@h/x?sslmode=require", "b").expect("url"),
            "postgres://u@h/b?sslmode=require"
        );
        assert!(with_database("postgres://host", "b").is_err());
    }

    #[test]
    fn metric_sums_over_labels() {
        let t = "# HELP x\nrows_total{table=\"a\"} 3\nrows_total{table=\"b\"} 4.5\nrows_totalx 9\nrows_total 1\n";
        assert_eq!(metric_sum(t, "rows_total"), 8.5);
        assert_eq!(metric_sum(t, "missing"), 0.0);
    }
}
