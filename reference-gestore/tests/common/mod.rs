//! Shared by the black-box tests: start `pec-gestore dev`, submit with Python's smtplib, read
//! mailboxes from the providers' stores.
#![allow(dead_code)]

use reference_gestore::dev::DevState;
use reference_gestore::store::{SqliteStore, Store, StoredMessage};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `pec-gestore dev` process, killed on drop.
pub struct Dev {
    pub child: Child,
    pub state: DevState,
    pub dir: PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pec-gestore dev --instances n` in `dir` and waits until it says it is ready.
pub fn start_dev(dir: &Path, n: usize, extra: &[&str]) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pec-gestore"))
        .args(["dev", "--instances", &n.to_string(), "--state"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting pec-gestore dev");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    // The process prints "Stop with Ctrl-C." once every listener is bound.
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("Stop with Ctrl-C") => break,
            Some(Ok(_)) => continue,
            _ => panic!("pec-gestore dev ended before it was ready"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let state: DevState =
        serde_json::from_slice(&std::fs::read(dir.join("dev.json")).unwrap()).unwrap();
    Dev {
        child,
        state,
        dir: dir.to_path_buf(),
    }
}

/// Submits `message` with Python's smtplib over implicit TLS, trusting `ca`.
pub fn python_submit(port: u16, ca: &Path, user: &str, password: &str, to: &[&str], message: &str) {
    let script = r#"
import smtplib, ssl, sys
port, ca, user, pw, to = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(',')
msg = sys.stdin.read().replace('\n', '\r\n')
ctx = ssl.create_default_context(cafile=ca)
with smtplib.SMTP_SSL('127.0.0.1', port, context=ctx, timeout=60) as s:
    s.login(user, pw)
    s.sendmail(user, to, msg.encode())
"#;
    let mut p = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .arg(ca)
        .args([user, password, &to.join(",")])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    p.stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    assert!(p.wait().unwrap().success(), "smtplib submission failed");
}

/// Waits (bounded) until `mailbox` in the store at `db` holds messages of every kind in `kinds`
/// (as many of each as listed), and returns the mailbox.
pub async fn wait_for(db: &Path, mailbox: &str, kinds: &[&str]) -> Vec<StoredMessage> {
    wait_in(&SqliteStore::open(db).await.unwrap(), mailbox, kinds).await
}

/// Waits (bounded) until `mailbox` in `store` holds the kinds listed (with multiplicity).
pub async fn wait_in(store: &SqliteStore, mailbox: &str, kinds: &[&str]) -> Vec<StoredMessage> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let msgs = store.mailbox(mailbox, "INBOX").await.unwrap();
        let have = |k: &str| msgs.iter().filter(|m| m.kind == k).count();
        if kinds
            .iter()
            .all(|k| have(k) >= kinds.iter().filter(|x| *x == k).count())
        {
            return msgs;
        }
        assert!(
            Instant::now() < deadline,
            "{mailbox} still lacks {kinds:?}; it has {:?}",
            msgs.iter().map(|m| &m.kind).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `openssl smime -verify` on a whole message, trusting `ca` (the outside oracle for signatures).
pub fn openssl_verifies(raw: &[u8], ca: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.eml");
    std::fs::write(&f, raw).unwrap();
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-out", "/dev/null", "-CAfile"])
        .arg(ca)
        .arg("-in")
        .arg(&f)
        .output()
        .expect("openssl");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

use reference_gestore::clock::{Clock, ManualClock};
use reference_gestore::config::Config;
use reference_gestore::instance::Instance;
use reference_gestore::smtp::client::{ClientError, ClientTls, SendResult, SmtpClient};
use std::sync::Arc;

/// Providers embedded in the test process, on loopback, sharing one manual clock.
pub struct Topo {
    pub dir: tempfile::TempDir,
    pub state: DevState,
    pub clock: Arc<ManualClock>,
    pub gestori: Vec<Instance>,
}

impl Topo {
    /// `n` dev providers (test addresses on), each config adjusted by `adjust` before start.
    pub async fn start(n: usize, adjust: impl Fn(usize, &mut Config)) -> Topo {
        let dir = tempfile::tempdir().unwrap();
        let state = reference_gestore::dev::prepare(dir.path(), n, true).unwrap();
        let clock = ManualClock::new();
        let mut gestori = Vec::new();
        for (i, inst) in state.instances.iter().enumerate() {
            let mut c = Config::load(&inst.config).unwrap();
            adjust(i, &mut c);
            gestori.push(
                Instance::start(c, clock.clone() as Arc<dyn Clock>)
                    .await
                    .unwrap(),
            );
        }
        Topo {
            dir,
            state,
            clock,
            gestori,
        }
    }

    /// User `u` (alice, bob, carol) of provider `g`.
    pub fn user(&self, g: usize, u: usize) -> String {
        self.state.instances[g].users[u].address.clone()
    }

    /// An address at provider `g`'s domain.
    pub fn at(&self, g: usize, local: &str) -> String {
        format!("{local}@{}", self.state.instances[g].domain)
    }

    /// Provider `g`'s service address (receipt mailbox).
    pub fn service(&self, g: usize) -> String {
        self.state.instances[g].service_address.clone()
    }

    fn roots(&self) -> rustls::RootCertStore {
        reference_gestore::tls::root_store_from_files(&[&self.state.ca]).unwrap()
    }

    /// Submits as `user` of provider `g` over implicit TLS with AUTH PLAIN.
    pub async fn submit(
        &self,
        g: usize,
        user: &str,
        rcpts: &[&str],
        message: &str,
    ) -> Result<SendResult, ClientError> {
        let addr = self.gestori[g].endpoints.submission_tls.unwrap();
        let mut c =
            SmtpClient::connect(addr, ClientTls::implicit(self.roots(), "localhost")).await?;
        c.ehlo("client.test").await?;
        c.auth_plain(user, reference_gestore::dev::DEV_PASSWORD)
            .await?;
        let r = c.send(user, rcpts, message.as_bytes()).await;
        let _ = c.quit().await;
        r
    }

    /// Delivers `raw` to provider `g`'s inbound SMTP (STARTTLS), as another provider or an
    /// ordinary mail server would.
    pub async fn inject(
        &self,
        g: usize,
        mail_from: &str,
        rcpts: &[&str],
        raw: &[u8],
    ) -> Result<SendResult, ClientError> {
        let addr = self.gestori[g].endpoints.inbound.unwrap();
        let mut c =
            SmtpClient::connect(addr, ClientTls::starttls(self.roots(), "localhost")).await?;
        c.ehlo("mx.example.org").await?;
        c.starttls().await?;
        c.ehlo("mx.example.org").await?;
        let r = c.send(mail_from, rcpts, raw).await;
        let _ = c.quit().await;
        r
    }

    /// Waits until `mailbox` at provider `g` holds the kinds listed (with multiplicity).
    pub async fn wait(&self, g: usize, mailbox: &str, kinds: &[&str]) -> Vec<StoredMessage> {
        wait_in(&self.gestori[g].gestore.store, mailbox, kinds).await
    }

    /// Waits until neither provider has outbound work or due timers left, so that "nothing more
    /// arrives" can be asserted.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in &self.gestori {
            let s = &i.gestore.store;
            loop {
                let now = self.clock.now();
                let busy = !s.due_outbox(now, 1).await.unwrap().is_empty()
                    || !s.due_timers(now).await.unwrap().is_empty();
                if !busy {
                    break;
                }
                assert!(Instant::now() < deadline, "work never settled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The messages of `mailbox` at provider `g` now.
    pub async fn mailbox(&self, g: usize, mailbox: &str) -> Vec<StoredMessage> {
        self.gestori[g]
            .gestore
            .store
            .mailbox(mailbox, "INBOX")
            .await
            .unwrap()
    }
}

/// A plain message from `from` to `to` (and `cc`), CRLF line ends.
pub fn plain_message(from: &str, to: &[&str], cc: &[&str], subject: &str, extra: &str) -> String {
    let mut m = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\n",
        to.join(", "),
        subject.replace(' ', ".")
    );
    if !cc.is_empty() {
        m += &format!("Cc: {}\r\n", cc.join(", "));
    }
    m += extra;
    m += "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto di prova.\r\n";
    m
}

/// The decoded daticert.xml of a stored message.
pub fn daticert_of(raw: &[u8]) -> pec_formats::daticert::Daticert {
    let m = pec_formats::parse::parse(raw).unwrap();
    pec_formats::daticert::Daticert::from_xml(&m.daticert_xml.expect("daticert.xml")).unwrap()
}

use reference_gestore::smtp::Reply;
use reference_gestore::smtp::server::{self, Handler, Mode, SessionConfig, SessionInfo};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// One transaction a [`Peer`] took.
#[derive(Debug, Clone)]
pub struct PeerMessage {
    /// The client's address: one per connection.
    pub peer: SocketAddr,
    pub rcpts: Vec<String>,
    pub message: Vec<u8>,
}

/// The script of a [`Peer`]: a recipient whose local part starts with `later` is refused with 451
/// the first `n` times it is offered (`n` from `later<n>`, default 1); `never` is refused with 550;
/// everything else is accepted.
#[derive(Default)]
pub struct PeerScript {
    pub offered: Mutex<BTreeMap<String, usize>>,
    pub taken: Mutex<Vec<PeerMessage>>,
}

impl Handler for PeerScript {
    async fn authenticate(&self, _user: &str, _password: &str) -> bool {
        false
    }
    async fn mail_from(&self, _info: &SessionInfo, _from: &str) -> Reply {
        Reply::sender_ok("ok")
    }
    async fn rcpt_to(&self, _info: &SessionInfo, rcpt: &str) -> Reply {
        let local = rcpt.split('@').next().unwrap_or_default().to_string();
        let seen = {
            let mut o = self.offered.lock().unwrap();
            let n = o.entry(rcpt.to_string()).or_default();
            *n += 1;
            *n
        };
        if let Some(rest) = local.strip_prefix("later") {
            let refusals: usize = rest.parse().unwrap_or(1);
            if seen <= refusals {
                return Reply::new(451, [4, 2, 1], "try again later");
            }
        }
        if local.starts_with("never") {
            return Reply::no_such_user("no such user");
        }
        Reply::recipient_ok("ok")
    }
    async fn data(
        &self,
        info: &SessionInfo,
        _from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> Reply {
        self.taken.lock().unwrap().push(PeerMessage {
            peer: info.peer,
            rcpts: rcpts.to_vec(),
            message,
        });
        Reply::ok("queued")
    }
}

/// A scripted ordinary mail server on loopback with STARTTLS (the dev certificate for 127.0.0.1),
/// routed to by provider 0 for `example.org`, `b.example.org` and `c.example.org`. Stops when dropped.
pub struct Peer {
    pub script: Arc<PeerScript>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Peer {
    /// The transactions taken so far.
    pub fn taken(&self) -> Vec<PeerMessage> {
        self.script.taken.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` transactions were taken.
    pub async fn wait(&self, n: usize) -> Vec<PeerMessage> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.taken();
            if t.len() >= n {
                return t;
            }
            assert!(Instant::now() < deadline, "the peer got {} of {n}", t.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Two providers, provider 0 routing `example.org` to a [`Peer`].
pub async fn topo_with_peer() -> (Topo, Peer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls_files = Mutex::new(None);
    let t = Topo::start(2, |i, c| {
        if i == 0 {
            for d in ["example.org", "b.example.org", "c.example.org"] {
                c.routes.insert(d.into(), addr.to_string());
            }
            *tls_files.lock().unwrap() = Some((c.tls.cert.clone(), c.tls.key.clone()));
        }
    })
    .await;
    let (cert, key) = tls_files.into_inner().unwrap().unwrap();
    let mut config = SessionConfig::new("mx.example.org", Mode::Inbound);
    config.tls = Some(reference_gestore::tls::server_config_from_files(&cert, &key).unwrap());
    let script = Arc::new(PeerScript::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(server::serve(
        listener,
        Arc::new(config),
        script.clone(),
        stopped,
    ));
    (t, Peer { script, stop })
}
