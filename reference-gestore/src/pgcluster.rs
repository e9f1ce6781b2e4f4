//! A throw-away PostgreSQL 15 cluster on loopback, for the tests that run the store on PostgreSQL
//! (store.rs unit tests, tests/postgres.rs). It is started by the test itself: `initdb` and
//! `pg_ctl` from `/usr/lib/postgresql/15/bin`, run as the `postgres` user when we are root
//! (`initdb` refuses root), listening on 127.0.0.1 only, with its socket in the cluster's folder.
//! Dropping it stops the server.

use anyhow::{Context, bail};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `postgresql-15` package puts the server programs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running cluster; stopped on drop.
pub struct PgCluster {
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// `program args...`, as the `postgres` user when `as_postgres` (we are root).
fn pg_command(as_postgres: bool, program: &str) -> Command {
    let path = Path::new(PG_BIN).join(program);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl PgCluster {
    /// Creates and starts a cluster in `dir`: an empty folder of its own (a fresh
    /// `tempfile::tempdir()`, whose parent the `postgres` user can traverse), removed by the caller.
    pub fn start(dir: &Path) -> anyhow::Result<PgCluster> {
        if !Path::new(PG_BIN).join("initdb").is_file() {
            bail!("PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing): run scripts/setup");
        }
        let as_postgres = std::fs::metadata("/proc/self")
            .context("reading /proc/self")?
            .uid()
            == 0;
        if as_postgres {
            // The cluster's files belong to the user the server runs as.
            let id = |flag: &str| -> anyhow::Result<u32> {
                let out = Command::new("id").args([flag, "postgres"]).output()?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .context("no `postgres` user: run scripts/setup")
            };
            std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))
                .with_context(|| format!("chown postgres {}", dir.display()))?;
        }
        let data = dir.join("data");
        let mut initdb = pg_command(as_postgres, "initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        run(initdb, "initdb")?;
        let port = crate::dev::free_port()?.port();
        let mut start = pg_command(as_postgres, "pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .arg("-o")
            // fsync=off: a test cluster need not survive a power cut; commits are still only
            // acknowledged once in the server's WAL (synchronous_commit stays on).
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
                dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        let cluster = PgCluster {
            data,
            port,
            as_postgres,
        };
        run(start, "pg_ctl start")
            .with_context(|| format!("server log: {}", dir.join("server.log").display()))?;
        Ok(cluster)
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` (lower-case letters, digits, `_`) and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("database name `{name}`: only a-z, 0-9 and _");
        }
        use sqlx::Connection;
        let mut conn = sqlx::postgres::PgConnection::connect(&self.url("postgres"))
            .await
            .context("connecting to the test cluster")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = conn.close().await;
        Ok(self.url(name))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut stop = pg_command(self.as_postgres, "pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        if let Err(e) = run(stop, "pg_ctl stop") {
            eprintln!("test PostgreSQL cluster: {e:#}");
        }
    }
}
