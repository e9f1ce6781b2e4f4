//! Shared by the mailbox access tests: a store with three mailboxes, a line-oriented client over
//! any stream (with STARTTLS), and TLS material from the SMTP tests' test PKI.
#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use reference_gestore::access::{AccessConfig, BoxIo};
use reference_gestore::password;
use reference_gestore::store::{Account, Batch, Op, SqliteStore, Store};
use reference_gestore::tls;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[path = "../smtp_common/mod.rs"]
mod smtp_common;
pub use smtp_common::{TestPki, test_pki};

pub const M1: &str = "From: Mario Rossi <mario@pec.b.test>\r\nTo: alice@pec.a.test\r\nSubject: Contratto\r\nDate: Mon, 1 Dec 2025 10:00:00 +0100\r\nMessage-ID: <m1@pec.b.test>\r\n\r\nTesto del contratto\r\n.riga con punto\r\n";
pub const M2: &str = "From: luigi@pec.c.test\r\nTo: alice@pec.a.test\r\nSubject: Fattura\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIn allegato la fattura.\r\n--XX\r\nContent-Type: application/pdf; name=\"f.pdf\"\r\nContent-Disposition: attachment; filename=\"f.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n";
pub const BOB1: &str =
    "From: alice@pec.a.test\r\nTo: bob@pec.a.test\r\nSubject: Per Bob\r\n\r\nsolo per bob\r\n";

pub struct Fixture {
    pub store: SqliteStore,
    pub cfg: Arc<AccessConfig>,
    pub pki: TestPki,
}

pub async fn deliver(store: &SqliteStore, mailbox: &str, raw: &str) {
    let mut b = Batch::new(Utc.with_ymd_and_hms(2025, 12, 1, 9, 0, 0).unwrap());
    b.push(Op::Deliver {
        mailbox: mailbox.into(),
        folder: "INBOX".into(),
        raw: raw.as_bytes().to_vec(),
        kind: "ordinary".into(),
        message_id: None,
    });
    store.commit(b).await.unwrap();
}

/// alice (2 messages, password `pw-alice`), bob (1, `pw-bob`), carol (disabled, `pw-carol`).
pub async fn fixture_with(store: SqliteStore) -> Fixture {
    for (a, p, disabled) in [
        ("alice@pec.a.test", "pw-alice", false),
        ("bob@pec.a.test", "pw-bob", false),
        ("carol@pec.a.test", "pw-carol", true),
    ] {
        store
            .put_account(&Account {
                address: a.into(),
                password_hash: password::hash(p).unwrap(),
                quota: 1 << 20,
                disabled,
            })
            .await
            .unwrap();
    }
    deliver(&store, "alice@pec.a.test", M1).await;
    deliver(&store, "alice@pec.a.test", M2).await;
    deliver(&store, "bob@pec.a.test", BOB1).await;
    let pki = test_pki();
    let mut cfg = AccessConfig::new(
        store.clone(),
        Some(tls::server_config_from_pem(&pki.cert_pem, &pki.key_pem).unwrap()),
        "pec.a.test",
    );
    // No waiting after a failed login in tests; the count-based close stays.
    cfg.auth.delay = Duration::ZERO;
    let cfg = Arc::new(cfg);
    Fixture { store, cfg, pki }
}

pub async fn fixture() -> Fixture {
    fixture_with(SqliteStore::memory().await.unwrap()).await
}

/// A test client reading lines (bounded waits: a hung server fails the test, it never hangs it).
pub struct Client {
    pub io: BufReader<BoxIo>,
}

impl Client {
    pub fn new(io: BoxIo) -> Client {
        Client {
            io: BufReader::new(io),
        }
    }

    pub async fn line(&mut self) -> String {
        let mut l = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(20), self.io.read_until(b'\n', &mut l))
            .await
            .expect("server answered in time")
            .unwrap();
        assert!(n > 0, "connection closed");
        String::from_utf8_lossy(&l).into_owned()
    }

    /// Whether the server closed the connection (end of input, nothing more sent).
    pub async fn closed(&mut self) -> bool {
        let mut l = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(20), self.io.read_until(b'\n', &mut l))
            .await
            .expect("server answered or closed in time");
        matches!(r, Ok(0) | Err(_))
    }

    pub async fn send(&mut self, s: &str) {
        let w = self.io.get_mut();
        w.write_all(s.as_bytes()).await.unwrap();
        w.flush().await.unwrap();
    }

    /// Sends `tag cmd` and returns every line up to and including the tagged one.
    pub async fn imap(&mut self, tag: &str, cmd: &str) -> String {
        self.send(&format!("{tag} {cmd}\r\n")).await;
        self.until(&format!("{tag} ")).await
    }

    pub async fn until(&mut self, prefix: &str) -> String {
        let mut out = String::new();
        loop {
            let l = self.line().await;
            out += &l;
            if l.starts_with(prefix) {
                return out;
            }
        }
    }

    /// A POP3 multi-line answer up to the "." line.
    pub async fn pop_multi(&mut self, cmd: &str) -> String {
        self.send(&format!("{cmd}\r\n")).await;
        let first = self.line().await;
        if !first.starts_with("+OK") {
            return first;
        }
        let mut out = first;
        loop {
            let l = self.line().await;
            out += &l;
            if l == ".\r\n" {
                return out;
            }
        }
    }

    pub async fn pop(&mut self, cmd: &str) -> String {
        self.send(&format!("{cmd}\r\n")).await;
        self.line().await
    }

    /// Runs the TLS handshake as a client trusting the test CA (after STARTTLS/STLS).
    pub async fn start_tls(self, ca_pem: &[u8]) -> Client {
        let roots = tls::root_store_from_pem(ca_pem).unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(roots));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        assert!(self.io.buffer().is_empty(), "no plaintext left before TLS");
        let s = connector.connect(name, self.io.into_inner()).await.unwrap();
        Client::new(Box::new(s))
    }
}

/// A session of `f` over an in-memory duplex; `tls_active` as if on an implicit TLS listener.
pub fn connect<F, Fut>(cfg: &Arc<AccessConfig>, tls_active: bool, f: F) -> Client
where
    F: FnOnce(BoxIo, Arc<AccessConfig>, bool) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let (a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(f(Box::new(b), cfg.clone(), tls_active));
    Client::new(Box::new(a))
}
