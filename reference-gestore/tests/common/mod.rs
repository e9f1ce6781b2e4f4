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
    let store = SqliteStore::open(db).await.unwrap();
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
        tokio::time::sleep(Duration::from_millis(50)).await;
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
