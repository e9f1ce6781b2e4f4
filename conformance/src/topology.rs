//! A scenario's topology: reference gestori (each scenario in its own temporary folder, on
//! loopback), by default as `pec-gestore serve` child processes on a manual clock moved over their
//! control port, or embedded in this process sharing one [`ManualClock`] (`--embedded`); both
//! behind one [`RunningGestore`] handle. Then the links between them (every
//! provider-to-provider path goes through a small SMTP relay of the runner, so a scenario can take
//! a link down or drop messages of some kinds), a sink for ordinary (non-PEC) mail, and the
//! description of a third-party gestore under test (`--target FILE`).

use crate::scenario::{DirectoryForm, GestoreSpec, LinkState, MailboxSpec, Scenario};
use anyhow::Context;
use pec_formats::build::Provider;
use pec_formats::smime::Signer;
use reference_gestore::clock::ManualClock;
use reference_gestore::config::{Config, MailboxConfig};
use reference_gestore::control::Ready;
use reference_gestore::dev;
use reference_gestore::gestore;
use reference_gestore::instance::{Endpoints, Instance};
use reference_gestore::smtp::Reply;
use reference_gestore::smtp::client::{ClientTls, SmtpClient, Timeouts};
use reference_gestore::smtp::server::{self, Handler, Mode, SessionConfig, SessionInfo};
use reference_gestore::smtp::transcript::{Side, Transcript};
use reference_gestore::store::{SqliteStore, Store, StoredMessage};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The local part that names a gestore's service address in a scenario mailbox.
pub const SERVICE_USER: &str = "service";

/// The classification of a message by its PEC headers (digest §5.12, §5.13; never by subject:
/// digest §5.12): the kind id, or `ordinary` for a message without them.
pub fn kind_by_headers(raw: &[u8]) -> &'static str {
    let end = find(raw, b"\r\n\r\n")
        .or_else(|| find(raw, b"\n\n"))
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]);
    // Unfold (RFC 5322 §2.2.3) and split into fields.
    let unfolded = head
        .replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ");
    let field = |name: &str| -> Option<String> {
        unfolded.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let virus = field("X-VerificaSicurezza").is_some_and(|v| v == "errore");
    if let Some(r) = field("X-Ricevuta") {
        // RFC 6109 Appendix A: X-Ricevuta values; X-VerificaSicurezza tells the virus variants.
        return match (r.as_str(), virus) {
            ("accettazione", _) => "accettazione",
            ("non-accettazione", true) => "non-accettazione-virus",
            ("non-accettazione", false) => "non-accettazione",
            ("presa-in-carico", _) => "presa-in-carico",
            ("avvenuta-consegna", _) => "avvenuta-consegna",
            ("errore-consegna", true) => "errore-consegna-virus",
            ("errore-consegna", false) => "errore-consegna",
            ("preavviso-errore-consegna", _) => "preavviso-errore-consegna",
            ("rilevazione-virus", _) => "rilevazione-virus",
            _ => "ordinary",
        };
    }
    match field("X-Trasporto").as_deref() {
        // RFC 6109 §3.1.5, §3.2.2.
        Some("posta-certificata") => "posta-certificata",
        Some("errore") => "anomalia",
        _ => "ordinary",
    }
}

/// The first position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The state of one link, shared with its relay.
#[derive(Debug, Default)]
pub struct LinkControl {
    /// Up or down.
    pub state: Mutex<(LinkState, Vec<String>)>,
    /// Messages dropped: (kind, raw).
    pub dropped: Mutex<Vec<(String, Vec<u8>)>>,
    /// The SMTP sessions through the relay as captured from the wire, in the order they began:
    /// (heading, transcript); the sending gestore's sessions with the relay and the relay's
    /// sessions with the receiving gestore.
    pub transcripts: Mutex<Vec<(String, Transcript)>>,
}

impl LinkControl {
    /// Starts recording a session of the link under `heading`.
    pub fn record(&self, heading: String, side: Side) -> Transcript {
        let t = Transcript::new(side);
        // The transcript's times are relative to its start: the heading gives the start.
        let start = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if let Ok(mut v) = self.transcripts.lock() {
            v.push((format!("{heading}, started {start}"), t.clone()));
        }
        t
    }

    /// Every session of the link so far, each under its heading; empty when there was none.
    pub fn transcript_text(&self) -> String {
        let sessions = self
            .transcripts
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let mut out = String::new();
        for (i, (heading, t)) in sessions.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("=== session {}: {heading}\n", i + 1));
            out.push_str(&t.text());
        }
        out
    }
}

/// The relay of one link: a provider's inbound as seen from another provider.
struct LinkRelay {
    control: Arc<LinkControl>,
    /// The sending and the receiving gestore, for the transcripts' headings.
    from: String,
    to: String,
    /// The receiving gestore's inbound, known once it has started.
    target: Arc<std::sync::OnceLock<SocketAddr>>,
    roots: rustls::RootCertStore,
}

impl LinkRelay {
    fn state(&self) -> (LinkState, Vec<String>) {
        self.control
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: std::time::Duration::from_secs(10),
        command: std::time::Duration::from_secs(60),
        data: std::time::Duration::from_secs(120),
    }
}

impl Handler for LinkRelay {
    async fn authenticate(&self, _user: &str, _password: &str) -> bool {
        false
    }
    async fn mail_from(&self, _info: &SessionInfo, _from: &str) -> Reply {
        Reply::sender_ok("ok")
    }
    async fn rcpt_to(&self, _info: &SessionInfo, _rcpt: &str) -> Reply {
        match self.state().0 {
            // A transient refusal: the sender keeps the message queued (RFC 5321 §4.2.5).
            LinkState::Down => Reply::new(451, [4, 4, 1], "link down (runner fault)"),
            LinkState::Up => Reply::new(250, [2, 1, 5], "ok"),
        }
    }
    async fn data(
        &self,
        _info: &SessionInfo,
        from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> Reply {
        let (state, drop) = self.state();
        if state == LinkState::Down {
            return Reply::new(451, [4, 4, 1], "link down (runner fault)");
        }
        let Some(target) = self.target.get().copied() else {
            return Reply::new(451, [4, 4, 0], "relay: the receiving gestore is not up yet");
        };
        let kind = kind_by_headers(&message);
        if drop.iter().any(|k| k == kind) {
            if let Ok(mut d) = self.control.dropped.lock() {
                d.push((kind.to_string(), message));
            }
            return Reply::ok("accepted and dropped (runner fault)");
        }
        let tls = ClientTls::starttls(self.roots.clone(), "127.0.0.1");
        let transcript = self.control.record(
            format!(
                "relay of link {}→{} → gestore {} inbound {target} (the relay is the SMTP client)",
                self.from, self.to, self.to
            ),
            Side::Client,
        );
        let result = async {
            let mut c =
                SmtpClient::connect_recorded(target, tls, timeouts(), transcript.clone()).await?;
            c.ehlo("runner.test").await?;
            c.starttls().await?;
            c.ehlo("runner.test").await?;
            let to: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            let r = c.send(from, &to, &message).await?;
            let _ = c.quit().await;
            Ok::<_, reference_gestore::smtp::client::ClientError>(r)
        }
        .await;
        if let Err(e) = &result {
            transcript.note(format!("error: {e}"));
        }
        match result {
            Ok(r) => match (&r.data, r.refused().first()) {
                (Some(d), _) => d.clone(),
                (None, Some(refused)) => refused.reply.clone(),
                (None, None) => Reply::new(451, [4, 4, 0], "relay: no reply"),
            },
            Err(reference_gestore::smtp::client::ClientError::Rejected { reply, .. }) => reply,
            Err(e) => Reply::new(451, [4, 4, 0], format!("relay: {e}")),
        }
    }
}

/// Ordinary mail received by the sink: (recipient, raw).
pub type SinkBox = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The sink for ordinary recipients: accepts everything.
struct Sink(SinkBox);

impl Handler for Sink {
    async fn authenticate(&self, _user: &str, _password: &str) -> bool {
        false
    }
    async fn mail_from(&self, _info: &SessionInfo, _from: &str) -> Reply {
        Reply::sender_ok("ok")
    }
    async fn rcpt_to(&self, _info: &SessionInfo, _rcpt: &str) -> Reply {
        Reply::new(250, [2, 1, 5], "ok")
    }
    async fn data(
        &self,
        _info: &SessionInfo,
        _from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> Reply {
        if let Ok(mut b) = self.0.lock() {
            for r in rcpts {
                b.push((r.to_ascii_lowercase(), message.clone()));
            }
        }
        Reply::ok("queued")
    }
}

/// How the runner starts its reference gestori.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Inside the runner's process, sharing its [`ManualClock`] (`--embedded`).
    Embedded,
    /// As `pec-gestore serve --manual-clock --control 127.0.0.1:0` child processes of this binary.
    Process {
        /// The `pec-gestore` executable.
        bin: PathBuf,
    },
}

/// How long a child may take to print its ready line (it hashes the mailbox passwords first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a control command may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// `pec-gestore` for process mode: `explicit` (`--gestore-bin`), else `$PEC_GESTORE_BIN`, else
/// next to this executable or one folder up (`target/debug/deps/` → `target/debug/`). The error
/// says how to get one.
pub fn find_gestore_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let env = std::env::var_os("PEC_GESTORE_BIN").map(PathBuf::from);
    for (given, how) in [
        (explicit, "--gestore-bin"),
        (env.as_deref(), "PEC_GESTORE_BIN"),
    ] {
        if let Some(p) = given {
            anyhow::ensure!(
                p.is_file(),
                "{how} {}: no such file (build it with `cargo build -p reference-gestore`)",
                p.display()
            );
            return Ok(p.to_path_buf());
        }
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let name = format!("pec-gestore{}", std::env::consts::EXE_SUFFIX);
    let here = exe.parent();
    for dir in [here, here.and_then(Path::parent)].into_iter().flatten() {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "{name} not found next to {} or one folder up: build it with \
         `cargo build -p reference-gestore`, pass --gestore-bin PATH (or set PEC_GESTORE_BIN), \
         or run the reference gestori in-process with --embedded",
        exe.display()
    )
}

/// A reference gestore running as a `pec-gestore serve` child process.
pub struct GestoreProcess {
    child: tokio::process::Child,
    /// Its process id.
    pub pid: u32,
    /// The command line it was started with.
    pub command: String,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// What its ready line said.
    pub ready: Ready,
    control: tokio::sync::Mutex<BufReader<TcpStream>>,
    store: SqliteStore,
}

/// The last `n` lines of a log file, for error messages.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl GestoreProcess {
    /// Starts `bin serve --config <config> --manual-clock --control 127.0.0.1:0`, stderr to `log`,
    /// and waits (at most [`READY_TIMEOUT`]) for its ready line; then connects to its control port
    /// and opens its store read-only at `sqlite`.
    pub async fn start(
        bin: &Path,
        config: &Path,
        sqlite: &Path,
        log: &Path,
    ) -> anyhow::Result<GestoreProcess> {
        let stderr = std::fs::File::create(log)
            .with_context(|| format!("creating the gestore log {}", log.display()))?;
        let args = [
            "serve".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--manual-clock".into(),
            "--control".into(),
            "127.0.0.1:0".into(),
        ];
        let command = std::iter::once(bin.display().to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = tokio::process::Command::new(bin)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        let pid = child.id().unwrap_or_default();
        let Some(stdout) = child.stdout.take() else {
            anyhow::bail!("`{command}`: no stdout");
        };
        let mut lines = BufReader::new(stdout).lines();
        let waited = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(l)) => match Ready::parse_line(&l) {
                        Some(r) => return r.map_err(|e| anyhow::anyhow!(e)),
                        None => continue,
                    },
                    Ok(None) => anyhow::bail!("it ended before it was ready"),
                    Err(e) => anyhow::bail!("reading its stdout: {e}"),
                }
            }
        })
        .await;
        let failure = match waited {
            Ok(Ok(ready)) => Ok(ready),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no ready line within {}s", READY_TIMEOUT.as_secs())),
        };
        let ready = match failure {
            Ok(r) => r,
            Err(why) => {
                let _ = child.start_kill();
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                anyhow::bail!(
                    "`{command}` (pid {pid}): {why} ({status}); its stderr ({}) ends with:\n{}",
                    log.display(),
                    log_tail(log, 20)
                );
            }
        };
        // Nothing else comes on stdout; drained so that the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let Some(control) = ready.control else {
            anyhow::bail!("`{command}`: the ready line has no control port");
        };
        let stream = TcpStream::connect(control)
            .await
            .with_context(|| format!("connecting to the control port {control} of pid {pid}"))?;
        let store = SqliteStore::open_read_only(sqlite)
            .await
            .with_context(|| format!("opening {} read-only", sqlite.display()))?;
        Ok(GestoreProcess {
            child,
            pid,
            command,
            log: log.to_path_buf(),
            ready,
            control: tokio::sync::Mutex::new(BufReader::new(stream)),
            store,
        })
    }

    /// Sends one control command and returns what follows `OK `.
    async fn control(&self, command: &str) -> anyhow::Result<String> {
        let mut c = self.control.lock().await;
        let exchange = async {
            c.get_mut()
                .write_all(format!("{command}\r\n").as_bytes())
                .await?;
            let mut reply = String::new();
            c.read_line(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = match tokio::time::timeout(CONTROL_TIMEOUT, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => anyhow::bail!("control port of pid {}: {e}", self.pid),
            Err(_) => anyhow::bail!(
                "control port of pid {}: no reply to `{command}` within {}s",
                self.pid,
                CONTROL_TIMEOUT.as_secs()
            ),
        };
        match reply.trim_end().strip_prefix("OK ") {
            Some(now) => Ok(now.to_string()),
            None if reply.is_empty() => anyhow::bail!(
                "control port of pid {}: closed; its stderr ends with:\n{}",
                self.pid,
                log_tail(&self.log, 20)
            ),
            None => anyhow::bail!("control port of pid {}: `{}`", self.pid, reply.trim_end()),
        }
    }

    /// Kills the child and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A reference gestore, embedded or a child process: what the runner uses of it.
pub enum GestoreHandle {
    /// In this process.
    Embedded(Box<Instance>),
    /// A `pec-gestore serve` child.
    Process(Box<GestoreProcess>),
}

/// One reference gestore of a running topology.
pub struct RunningGestore {
    /// Its name in the scenario.
    pub name: String,
    /// Its PEC domain.
    pub domain: String,
    /// Its service address (From of notices, mailReceipt).
    pub service_address: String,
    /// The config it runs with.
    pub config: Config,
    /// Its signing identity, loaded from the config's key and certificate files (RFC 6109 §5.5),
    /// so that the runner can sign as this gestore in either mode.
    pub signer: Signer,
    /// The running gestore.
    pub handle: GestoreHandle,
}

impl RunningGestore {
    /// Where it listens.
    pub fn endpoints(&self) -> Endpoints {
        match &self.handle {
            GestoreHandle::Embedded(i) => i.endpoints,
            GestoreHandle::Process(p) => p.ready.endpoints,
        }
    }

    /// The provider as the message builders see it (crafted injections signed as this gestore).
    pub fn provider(&self) -> Provider<'_> {
        gestore::provider_of(&self.config, &self.signer)
    }

    /// Its SQLite store.
    pub fn sqlite(&self) -> &Path {
        &self.config.store.sqlite
    }

    /// The child process, in process mode.
    pub fn process(&self) -> Option<&GestoreProcess> {
        match &self.handle {
            GestoreHandle::Process(p) => Some(p),
            GestoreHandle::Embedded(_) => None,
        }
    }

    /// The INBOX of a mailbox, in UID order.
    pub async fn mailbox(&self, address: &str) -> anyhow::Result<Vec<StoredMessage>> {
        let store = match &self.handle {
            GestoreHandle::Embedded(i) => &i.gestore.store,
            GestoreHandle::Process(p) => &p.store,
        };
        Ok(store.mailbox(address, "INBOX").await?)
    }

    /// Moves its clock forward: an embedded gestore shares the topology's clock (moved by
    /// [`Topology::advance`]); a child is told over its control port, and this returns once it
    /// answered that its clock moved.
    pub async fn advance(&self, by: Duration) -> anyhow::Result<()> {
        match &self.handle {
            GestoreHandle::Embedded(_) => Ok(()),
            GestoreHandle::Process(p) => {
                // The protocol counts whole seconds: a fraction rounds up.
                let secs = by.as_secs() + u64::from(by.subsec_nanos() > 0);
                p.control(&format!("ADVANCE {secs}")).await.map(|_| ())
            }
        }
    }

    /// Stops it (a child is killed and waited for).
    pub async fn stop(self) {
        match self.handle {
            GestoreHandle::Embedded(i) => i.stop().await,
            GestoreHandle::Process(p) => p.stop().await,
        }
    }
}

/// A running topology.
pub struct Topology {
    /// The reference gestori by scenario name.
    pub gestori: BTreeMap<String, RunningGestore>,
    /// The links (from, to) → control.
    pub links: BTreeMap<(String, String), Arc<LinkControl>>,
    /// Ordinary mail received.
    pub sink: SinkBox,
    /// The shared clock.
    pub clock: Arc<ManualClock>,
    /// The test CA (PEM file) of the topology.
    pub ca_pem: PathBuf,
    /// TLS roots with the test CA.
    pub roots: rustls::RootCertStore,
    shutdown: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    _dir: tempfile::TempDir,
}

fn sessions(tls: Arc<rustls::ServerConfig>) -> Arc<SessionConfig> {
    let mut s = SessionConfig::new("runner.test", Mode::Inbound);
    s.tls = Some(tls);
    s.max_message_size = 200 * 1024 * 1024;
    Arc::new(s)
}

/// The address of a PEC mailbox: `user@domain`, the mailbox name when no user is given,
/// the service address for `service`.
pub fn pec_address(name: &str, user: &str, domain: &str, service: &str) -> String {
    match user {
        "" => format!("{name}@{domain}"),
        SERVICE_USER => service.to_string(),
        u => format!("{u}@{domain}"),
    }
}

impl Topology {
    /// Prepares and starts every reference gestore of `s` (external ones are described by the
    /// target, not started). `target_routes` maps external domains to their inbound `host:port`.
    pub async fn start(
        s: &Scenario,
        target_routes: &[(String, String)],
    ) -> anyhow::Result<Topology> {
        Topology::start_with_target(s, target_routes, None).await
    }

    /// [`Topology::start_launched`] with embedded gestori.
    pub async fn start_with_target(
        s: &Scenario,
        target_routes: &[(String, String)],
        target: Option<&Target>,
    ) -> anyhow::Result<Topology> {
        Topology::start_launched(s, target_routes, target, &Launch::Embedded, None).await
    }

    /// [`Topology::start`], and with a target its reference gestori also trust the target's `ca`
    /// (TLS and signatures) and list its `directory_entry` in their provider directory
    /// (RFC 6109 §4.5), so that its receipts are accepted as PEC. `launch` says how the gestori
    /// run; child processes write their stderr to `logs/gestore-<name>.log` (`logs`: the
    /// scenario's evidence folder; the topology's temporary folder without it).
    pub async fn start_launched(
        s: &Scenario,
        target_routes: &[(String, String)],
        target: Option<&Target>,
        launch: &Launch,
        logs: Option<&Path>,
    ) -> anyhow::Result<Topology> {
        let dir = tempfile::Builder::new()
            .prefix("pec-conformance-")
            .tempdir()
            .context("creating the topology folder")?;
        let names: Vec<&String> = s
            .topology
            .iter()
            .filter(|(_, g)| matches!(g, GestoreSpec::Reference(_)))
            .map(|(n, _)| n)
            .collect();
        let clock = ManualClock::new();
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let sink: SinkBox = Arc::default();
        if names.is_empty() {
            let roots = rustls::RootCertStore::empty();
            return Ok(Topology {
                gestori: BTreeMap::new(),
                links: BTreeMap::new(),
                sink,
                clock,
                ca_pem: PathBuf::new(),
                roots,
                shutdown,
                tasks,
                _dir: dir,
            });
        }
        // The gestori's identity: new in the scenario's folder, or the target's kept runner state.
        let kept = target.and_then(|t| t.runner_state.clone());
        let state = tokio::task::spawn_blocking({
            let path = kept.clone().unwrap_or_else(|| dir.path().to_path_buf());
            let n = names.len();
            move || dev::prepare(&path, n, false)
        })
        .await??;
        let roots = reference_gestore::tls::root_store_from_files(&[&state.ca])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // A kept state is shared between scenarios: the directory changes on a copy.
        let directory = if kept.is_some() {
            let copy = dir.path().join("directory.ldif");
            std::fs::copy(&state.directory, &copy)
                .with_context(|| format!("copying {}", state.directory.display()))?;
            copy
        } else {
            state.directory.clone()
        };
        if let Some(entry) = target.and_then(|t| t.directory_entry.as_ref()) {
            let ldif = std::fs::read(entry)
                .with_context(|| format!("the target's directory_entry {}", entry.display()))?;
            let mut dir = std::fs::read(&directory)
                .with_context(|| format!("reading {}", directory.display()))?;
            // LDIF records are separated by a blank line (RFC 2849).
            dir.extend_from_slice(b"\n\n");
            // One `version:` line per file, at its start (RFC 2849): the appended one is dropped.
            let text = String::from_utf8_lossy(&ldif);
            for line in text.lines().filter(|l| !l.starts_with("version:")) {
                dir.extend_from_slice(line.as_bytes());
                dir.push(b'\n');
            }
            std::fs::write(&directory, dir)
                .with_context(|| format!("writing {}", directory.display()))?;
        }
        // RFC 6109 §4.5: the distributed directory is a signed PKCS#7; the gestori check it.
        let signed_directory = match s.directory {
            DirectoryForm::Ldif => None,
            DirectoryForm::Signed => Some(sign_directory(&state.ca, &directory, dir.path())?),
        };
        let mut configs = Vec::new();
        for (name, inst) in names.iter().zip(&state.instances) {
            let c = Config::load(&inst.config).map_err(|e| anyhow::anyhow!("{e}"))?;
            configs.push(((*name).clone(), inst.clone(), c));
        }
        // The ordinary mail sink, with the first gestore's TLS certificate (SAN 127.0.0.1).
        let first_tls = reference_gestore::tls::server_config_from_files(
            &configs[0].2.tls.cert,
            &configs[0].2.tls.key,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sink_listener = TcpListener::bind("127.0.0.1:0").await?;
        let sink_addr = sink_listener.local_addr()?;
        {
            let (cfg, h, rx) = (
                sessions(first_tls.clone()),
                Arc::new(Sink(sink.clone())),
                rx.clone(),
            );
            tasks.spawn(async move {
                let _ = server::serve(sink_listener, cfg, h, rx).await;
            });
        }
        // One relay per ordered pair of reference gestori.
        let mut links = BTreeMap::new();
        let mut relay_addr: BTreeMap<(String, String), SocketAddr> = BTreeMap::new();
        let mut inbound: BTreeMap<String, Arc<std::sync::OnceLock<SocketAddr>>> = BTreeMap::new();
        for (to_name, _, to_cfg) in &configs {
            let target = inbound.entry(to_name.clone()).or_default().clone();
            let tls =
                reference_gestore::tls::server_config_from_files(&to_cfg.tls.cert, &to_cfg.tls.key)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            for (from_name, _, _) in &configs {
                if from_name == to_name {
                    continue;
                }
                let control = Arc::new(LinkControl::default());
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                relay_addr.insert((from_name.clone(), to_name.clone()), listener.local_addr()?);
                let relay = Arc::new(LinkRelay {
                    control: control.clone(),
                    from: from_name.clone(),
                    to: to_name.clone(),
                    target: target.clone(),
                    roots: roots.clone(),
                });
                let (cfg, rx) = (sessions(tls.clone()), rx.clone());
                let (c, from) = (control.clone(), from_name.clone());
                // Issue 5: the relay records what the sending gestore says to it.
                let record = move |peer| {
                    let heading =
                        format!("gestore {from} {peer} → relay (the relay is the SMTP server)");
                    c.record(heading, Side::Server)
                };
                tasks.spawn(async move {
                    let _ = server::serve_recorded(listener, cfg, relay, rx, record).await;
                });
                links.insert((from_name.clone(), to_name.clone()), control);
            }
        }
        let mut gestori = BTreeMap::new();
        for (name, inst, mut c) in configs {
            let GestoreSpec::Reference(spec) = &s.topology[&name] else {
                continue;
            };
            if let Some(ca) = target.and_then(|t| t.ca.as_ref()) {
                c.trust.push(ca.clone());
            }
            c.directory = directory.clone();
            if let Some((p7m, signer)) = &signed_directory {
                c.directory = p7m.clone();
                c.directory_trust = vec![signer.clone()];
            }
            let p = &spec.profile;
            if let Some(v) = p.test_addresses {
                c.profile.test_addresses = v;
            }
            if let Some(v) = &p.ordinary_mail {
                c.profile.ordinary_mail = v.clone();
            }
            if let Some(v) = &p.text_form {
                c.profile.text_form = v.clone();
            }
            if let Some(v) = &p.signature_style {
                c.profile.signature_style = v.clone();
            }
            if let Some(d) = &spec.digest {
                c.signing.digest = d.clone();
            }
            if let Some(v) = p.max_message_size {
                c.profile.max_message_size = v;
            }
            if let Some(v) = p.hard_message_size {
                c.profile.hard_message_size = v;
            }
            if let Some(v) = p.max_recipients {
                c.profile.max_recipients = v;
            }
            if let Some(t) = &p.timeouts {
                if let Some(d) = t.preavviso {
                    c.timeouts.preavviso.0 = d.0.as_secs();
                }
                if let Some(d) = t.finale {
                    c.timeouts.finale.0 = d.0.as_secs();
                }
            }
            // Listeners on ports the kernel picks when they bind (the ports dev::prepare wrote
            // could be taken by then by another scenario running in parallel).
            let any: SocketAddr = ([127, 0, 0, 1], 0).into();
            c.listeners.submission_tls = Some(any);
            c.listeners.submission_starttls = Some(any);
            c.listeners.inbound = Some(any);
            if kept.is_some() {
                // The target routes this gestore's domain to the inbound port of the kept state;
                // the store is the scenario's own.
                c.listeners.inbound = Some(inst.inbound);
                c.store.sqlite = dir.path().join(format!("{name}.db"));
            }
            // The runner reads mailboxes from the stores: no IMAP or POP3 listeners.
            c.listeners.imap_tls = None;
            c.listeners.imap_starttls = None;
            c.listeners.pop3_tls = None;
            c.listeners.pop3_starttls = None;
            // Routes: every other reference gestore through its link relay, external domains to
            // the target, everything else to the ordinary mail sink.
            c.routes.clear();
            for ((from, to), addr) in &relay_addr {
                if from == &name {
                    let domain =
                        &state.instances[names.iter().position(|n| *n == to).unwrap_or(0)].domain;
                    c.routes.insert(domain.clone(), addr.to_string());
                }
            }
            for (domain, route) in target_routes {
                c.routes.insert(domain.clone(), route.clone());
            }
            c.routes.insert("*".into(), sink_addr.to_string());
            // Accounts for the scenario's mailboxes on this gestore.
            for m in s.mailboxes.iter() {
                if let (
                    mname,
                    MailboxSpec::Pec {
                        gestore,
                        user,
                        exists,
                    },
                ) = (m.0, &m.1.value)
                    && gestore == &name
                    && *exists
                    && user != SERVICE_USER
                {
                    let address = pec_address(mname, user, &inst.domain, &inst.service_address);
                    if !c
                        .mailboxes
                        .iter()
                        .any(|b| b.address.eq_ignore_ascii_case(&address))
                    {
                        c.mailboxes.push(MailboxConfig {
                            address,
                            password: dev::DEV_PASSWORD.into(),
                        });
                    }
                }
            }
            let signer = gestore::load_signer(&c).with_context(|| format!("gestore {name}"))?;
            let handle = match launch {
                Launch::Embedded => {
                    let instance = Instance::start(c.clone(), clock.clone())
                        .await
                        .with_context(|| format!("starting gestore {name}"))?;
                    // The ports dev::prepare reserved and this gestore did not take (it binds
                    // port 0).
                    dev::release(&inst);
                    GestoreHandle::Embedded(Box::new(instance))
                }
                Launch::Process { bin } => {
                    // The child binds its own ports: a kept inbound port must be free for it.
                    dev::release(&inst);
                    let config = dir.path().join(format!("{name}.yaml"));
                    let yaml = c
                        .to_yaml()
                        .map_err(|e| anyhow::anyhow!("gestore {name}: its config: {e}"))?;
                    std::fs::write(&config, yaml)
                        .with_context(|| format!("writing {}", config.display()))?;
                    let logs = logs.unwrap_or(dir.path());
                    std::fs::create_dir_all(logs)
                        .with_context(|| format!("creating {}", logs.display()))?;
                    let log = logs.join(format!("gestore-{name}.log"));
                    let p = GestoreProcess::start(bin, &config, &c.store.sqlite, &log)
                        .await
                        .with_context(|| format!("starting gestore {name}"))?;
                    GestoreHandle::Process(Box::new(p))
                }
            };
            let g = RunningGestore {
                name: name.clone(),
                domain: inst.domain.clone(),
                service_address: inst.service_address.clone(),
                config: c,
                signer,
                handle,
            };
            if let (Some(cell), Some(addr)) = (inbound.get(&name), g.endpoints().inbound) {
                let _ = cell.set(addr);
            }
            gestori.insert(name.clone(), g);
        }
        Ok(Topology {
            gestori,
            links,
            sink,
            clock,
            ca_pem: state.ca.clone(),
            roots,
            shutdown,
            tasks,
            _dir: dir,
        })
    }

    /// Moves time forward by `by`: the runner's own clock (shared with embedded gestori) and
    /// every child's, each of which has answered that its clock moved when this returns
    /// (RFC 6109 §3.1.6 deadlines without waiting).
    pub async fn advance(&self, by: Duration) -> anyhow::Result<()> {
        let d = chrono::Duration::from_std(by).context("advance: the duration is too long")?;
        self.clock.advance(d);
        for (name, g) in &self.gestori {
            g.advance(by)
                .await
                .with_context(|| format!("moving the clock of gestore {name}"))?;
        }
        Ok(())
    }

    /// Stops everything.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for (_, g) in std::mem::take(&mut self.gestori) {
            g.stop().await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Signs the LDIF `directory` as the directory's distributed form (RFC 6109 §4.5): a "directory
/// signer" certificate issued by the topology's test CA (its key next to `ca_pem`), the p7m and
/// the signer's certificate written into `out`. Returns (p7m, signer PEM).
pub fn sign_directory(
    ca_pem: &Path,
    directory: &Path,
    out: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca_dir = ca_pem.parent().unwrap_or(Path::new("."));
    let ca = pec_formats::pki::TestCa::load_from(ca_dir)
        .map_err(|e| anyhow::anyhow!("the test CA in {}: {e}", ca_dir.display()))?;
    let signer = ca
        .issue_provider("Indice dei gestori di prova", "indice@igpec.test")
        .map_err(|e| anyhow::anyhow!("issuing the directory signer: {e}"))?;
    let d = pec_formats::directory::Directory::load(directory)
        .map_err(|e| anyhow::anyhow!("{}: {e}", directory.display()))?;
    let der = d
        .sign_p7m(&signer.key, &signer.cert)
        .map_err(|e| anyhow::anyhow!("signing {}: {e}", directory.display()))?;
    let p7m = out.join("directory.ldif.p7m");
    std::fs::write(&p7m, der).with_context(|| format!("writing {}", p7m.display()))?;
    let pem = out.join("directory-signer.pem");
    let cert = signer
        .cert
        .to_pem()
        .map_err(|e| anyhow::anyhow!("directory signer: {e}"))?;
    std::fs::write(&pem, cert).with_context(|| format!("writing {}", pem.display()))?;
    Ok((p7m, pem))
}

/// A third-party gestore under test (`--target FILE`; design notes, "A third-party target").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A name for reports.
    pub name: String,
    /// Its PEC domains.
    pub domains: Vec<String>,
    /// Submission.
    pub submission: Endpoint,
    /// IMAP, to read its mailboxes (`tls`: `implicit`, the default, or `starttls`).
    pub imap: Option<Endpoint>,
    /// Inbound SMTP from other providers.
    pub inbound: Endpoint,
    /// Test mailboxes.
    pub mailboxes: Vec<TargetMailbox>,
    /// Its entry in the provider directory (LDIF), relative to the target file.
    pub directory_entry: Option<PathBuf>,
    /// Trust anchors (PEM) for its TLS and signing certificates, relative to the target file.
    pub ca: Option<PathBuf>,
    /// A folder where the runner keeps its reference gestori's identity between runs (test CA,
    /// keys, directory entries, inbound ports: a `pec-gestore dev` state, created on first use),
    /// relative to the target file. The target lists those gestori in its directory, trusts
    /// their CA and routes their domains to their inbound ports, so that it accepts their
    /// envelopes as PEC and sends its receipts back (RFC 6109 §4.5, §5.3). Without it each
    /// scenario's gestori are new and unknown to the target.
    #[serde(default)]
    pub runner_state: Option<PathBuf>,
}

/// A host and port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `implicit` or `starttls` (submission, IMAP).
    pub tls: Option<String>,
    /// STARTTLS offered (inbound).
    pub starttls: Option<bool>,
}

/// A mailbox of the target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetMailbox {
    /// Its address (also the login).
    pub address: String,
    /// The environment variable holding its password.
    pub password_env: String,
}

impl Target {
    /// Reads and checks a target file; errors name the file and what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<Target> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut t: Target = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let fail = |m: String| anyhow::anyhow!("{}: {m}", path.display());
        if t.domains.is_empty() {
            return Err(fail("domains: at least one PEC domain".into()));
        }
        if let Some(tls) = &t.submission.tls
            && !matches!(tls.as_str(), "implicit" | "starttls")
        {
            return Err(fail(format!(
                "submission.tls: `{tls}` (implicit or starttls)"
            )));
        }
        if let Some(tls) = t.imap.as_ref().and_then(|i| i.tls.as_ref())
            && !matches!(tls.as_str(), "implicit" | "starttls")
        {
            return Err(fail(format!("imap.tls: `{tls}` (implicit or starttls)")));
        }
        for m in &t.mailboxes {
            let domain = m.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !t.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                return Err(fail(format!(
                    "mailbox `{}` is not in the target's domains",
                    m.address
                )));
            }
            if m.password_env.trim().is_empty() {
                return Err(fail(format!("mailbox `{}`: empty password_env", m.address)));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut t.directory_entry, &mut t.ca, &mut t.runner_state]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(t)
    }

    /// The inbound route `host:port`.
    pub fn inbound_route(&self) -> String {
        format!("{}:{}", self.inbound.host, self.inbound.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_headers_not_subjects() {
        let m = |h: &str| format!("{h}\r\nSubject: ACCETTAZIONE: x\r\n\r\nbody").into_bytes();
        assert_eq!(
            kind_by_headers(&m("X-Ricevuta: accettazione")),
            "accettazione"
        );
        assert_eq!(
            kind_by_headers(&m(
                "x-ricevuta:  Errore-Consegna\r\nX-VerificaSicurezza: errore"
            )),
            "errore-consegna-virus"
        );
        assert_eq!(kind_by_headers(&m("X-Trasporto: errore")), "anomalia");
        assert_eq!(
            kind_by_headers(&m("X-Trasporto:\r\n posta-certificata")),
            "posta-certificata"
        );
        assert_eq!(kind_by_headers(&m("From: a@b")), "ordinary");
        // Header names after the body do not count.
        assert_eq!(
            kind_by_headers(b"From: a@b\r\n\r\nX-Ricevuta: accettazione\r\n"),
            "ordinary"
        );
    }

    #[test]
    fn a_target_file_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t.yaml");
        let good = "name: staging\ndomains: [pec.example.it]\n\
            submission: { host: smtp.example.it, port: 465, tls: implicit }\n\
            imap: { host: imap.example.it, port: 993 }\n\
            inbound: { host: mx.example.it, port: 25, starttls: true }\n\
            mailboxes:\n  - { address: t1@pec.example.it, password_env: T1 }\n\
            directory_entry: entry.ldif\nrunner_state: kept\n";
        std::fs::write(&p, good).unwrap();
        let t = Target::load(&p).unwrap();
        assert_eq!(t.inbound_route(), "mx.example.it:25");
        assert_eq!(t.directory_entry.unwrap(), tmp.path().join("entry.ldif"));
        assert_eq!(t.runner_state.unwrap(), tmp.path().join("kept"));
        std::fs::write(&p, good.replace("t1@pec.example.it", "t1@elsewhere.it")).unwrap();
        let e = Target::load(&p).unwrap_err().to_string();
        assert!(e.contains("not in the target's domains"), "{e}");
        std::fs::write(&p, good.replace("imap:", "imapp:")).unwrap();
        let e = Target::load(&p).unwrap_err().to_string();
        assert!(e.contains("t.yaml") && e.contains("imapp"), "{e}");
        std::fs::write(&p, good.replace("port: 993", "port: 993, tls: ssl")).unwrap();
        let e = Target::load(&p).unwrap_err().to_string();
        assert!(e.contains("imap.tls: `ssl`"), "{e}");
    }
}
