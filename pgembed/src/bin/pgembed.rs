//! `pgembed`: run a private PostgreSQL in the foreground until SIGINT/SIGTERM, for the local
//! run (`manage.sh up`) and for poking at a database by hand.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "pgembed",
    version,
    about = "A private PostgreSQL from the system's binaries"
)]
struct Cli {
    /// Directory for the cluster (created and initialised if missing; kept afterwards).
    /// Without it, a temp dir that is removed on exit.
    #[arg(long, env = "PGEMBED_DIR")]
    dir: Option<PathBuf>,
    /// Loopback port; default: a free one.
    #[arg(long, env = "PGEMBED_PORT")]
    port: Option<u16>,
    /// Database to create if missing, and to print the URL of.
    #[arg(long, env = "PGEMBED_DATABASE", default_value = "depthbook")]
    database: String,
    /// TimescaleDB: preload it where installed (auto), never (off), or require the community
    /// or the Apache-2 edition (`timescaledb.license=apache`, what managed services run).
    #[arg(long, env = "PGEMBED_TIMESCALEDB", value_enum, default_value_t = Edition::Auto)]
    timescaledb: Edition,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Edition {
    Auto,
    Off,
    Community,
    Apache,
}

impl From<Edition> for pgembed::Timescale {
    fn from(e: Edition) -> Self {
        match e {
            Edition::Auto => pgembed::Timescale::Auto,
            Edition::Off => pgembed::Timescale::Off,
            Edition::Community => pgembed::Timescale::Community,
            Edition::Apache => pgembed::Timescale::Apache,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgembed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let ephemeral = cli.dir.is_none();
    let server = pgembed::PgServer::start(pgembed::Options {
        dir: cli.dir,
        port: cli.port,
        ephemeral,
        settings: Vec::new(),
        timescaledb: cli.timescaledb.into(),
        replica_of: None,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&cli.database],
            )
            .await?
            .is_some();
        if !exists {
            let quoted = cli.database.replace('"', "\"\"");
            client
                .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
                .await?;
        }
        drop(client);
        let _ = conn.await;
        // The one line a script reads.
        println!("{}", server.url(&cli.database));
        eprintln!(
            "pgembed: PostgreSQL on port {} (timescaledb: {:?}), data in {}; Ctrl-C stops it",
            server.port(),
            server.edition(),
            server.dir().display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    server.stop();
    Ok(())
}
