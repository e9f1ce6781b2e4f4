//! The antivirus against a real clamd on a unix socket, with an offline test database
//! (dependencies.md §2.1): EICAR and the project's marker, raw and as base64 MIME attachments.

use base64::Engine;
use reference_gestore::antivirus::{Antivirus, TEST_MARKER, Verdict, eicar};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Clamd {
    child: Child,
    _dir: tempfile::TempDir,
    socket: String,
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn start_clamd() -> Clamd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("db")).unwrap();
    let mut ndb = std::fs::File::create(d.join("db/test.ndb")).unwrap();
    writeln!(ndb, "Pec-Test.EICAR:0:*:{}", hex(&eicar())).unwrap();
    writeln!(ndb, "Pec-Test.Marker:0:*:{}", hex(TEST_MARKER.as_bytes())).unwrap();
    let socket = d.join("clamd.sock").display().to_string();
    std::fs::write(
        d.join("clamd.conf"),
        format!(
            "Foreground yes\nLocalSocket {socket}\nDatabaseDirectory {db}\nTemporaryDirectory {tmp}\n\
             LogFile {tmp}/clamd.log\nStreamMaxLength 25M\n",
            db = d.join("db").display(),
            tmp = d.display()
        ),
    )
    .unwrap();
    let clamd = ["/usr/sbin/clamd", "clamd"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .expect("clamd is not installed: run scripts/setup (Debian package clamav-daemon)");
    let mut child = Command::new(clamd)
        .arg("-c")
        .arg(d.join("clamd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Readiness probe: PING until PONG, bounded (clamd loads this tiny database in ~0.1 s).
    for _ in 0..200 {
        if let Ok(mut s) = tokio::net::UnixStream::connect(&socket).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut out = Vec::new();
            if s.write_all(b"zPING\0").await.is_ok()
                && s.read_to_end(&mut out).await.is_ok()
                && out.starts_with(b"PONG")
            {
                return Clamd {
                    child,
                    _dir: dir,
                    socket,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("clamd did not answer PING within 10 s");
}

fn mail_with(content: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    format!(
        "From: a@x\r\nSubject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n\
         Content-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn clamd_and_the_builtin_scanner_agree() {
    let clamd = start_clamd().await;
    let engines = [Antivirus::Clamd(clamd.socket.clone()), Antivirus::Builtin];
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("clean", mail_with(b"nothing to see"), false),
        ("eicar raw", eicar(), true),
        ("eicar in base64", mail_with(&eicar()), true),
        (
            "marker in base64",
            mail_with(format!("x {TEST_MARKER} y").as_bytes()),
            true,
        ),
    ];
    for (name, data, infected) in cases {
        for engine in &engines {
            let v = engine.scan(&data).await.unwrap();
            assert_eq!(
                matches!(v, Verdict::Infected(_)),
                infected,
                "{name} with {engine:?}: {v:?}"
            );
        }
    }
}
