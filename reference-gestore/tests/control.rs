//! Black-box, maddy style: a real `pec-gestore serve --manual-clock --control 127.0.0.1:0` process
//! with every listener on port 0. The test reads the `pec-gestore ready <json>` line, submits to a
//! recipient whose provider never answers (its route is a closed port), moves the gestore's clock
//! 12h and then 24h over the control port and finds the preavviso and the 24h notice in the
//! sender's mailbox (RFC 6109 §3.1.6; digest §5.11, §12), read from the child's SQLite store.

mod common;

use common::wait_for;
use reference_gestore::config::Config;
use reference_gestore::control::Ready;
use reference_gestore::dev;
use reference_gestore::smtp::client::{ClientTls, SmtpClient};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// A `pec-gestore serve` process, killed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first stdout line, which must be the ready line (`serve` prints it once every listener
/// is bound). `read_line` returns at the end of the stream too: an early exit fails here.
fn ready(out: ChildStdout) -> Ready {
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    match Ready::parse_line(&line) {
        Some(Ok(r)) => r,
        other => panic!("not a ready line: {line:?} ({other:?})"),
    }
}

/// Sends one control command and returns the reply line.
fn control(c: &mut BufReader<TcpStream>, command: &str) -> String {
    c.get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    c.read_line(&mut reply).unwrap();
    reply.trim_end().to_string()
}

fn start(config: &Path, extra: &[&str]) -> (Serve, Ready) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pec-gestore"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting pec-gestore serve");
    let out = child.stdout.take().unwrap();
    let serve = Serve(child);
    let r = ready(out);
    (serve, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_port_moves_the_clock_to_the_12h_and_24h_notices() {
    let tmp = tempfile::tempdir().unwrap();
    let state = dev::prepare(tmp.path(), 2, false).unwrap();
    // Only A runs, on ports the kernel picks; B's inbound (A's route to B) is a closed port.
    for i in &state.instances {
        dev::release(i);
    }
    let mut c = Config::load(&state.instances[0].config).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for l in [
        &mut c.listeners.submission_tls,
        &mut c.listeners.submission_starttls,
        &mut c.listeners.inbound,
        &mut c.listeners.imap_tls,
    ] {
        *l = Some(any);
    }
    c.listeners.imap_starttls = None;
    c.listeners.pop3_tls = None;
    c.listeners.pop3_starttls = None;
    let config = tmp.path().join("serve.yaml");
    std::fs::write(&config, c.to_yaml().unwrap()).unwrap();

    let (_serve, r) = start(&config, &["--manual-clock", "--control", "127.0.0.1:0"]);
    let e = r.endpoints;
    for a in [
        e.submission_tls,
        e.submission_starttls,
        e.inbound,
        e.imap_tls,
    ] {
        assert!(a.is_some_and(|a| a.port() != 0), "{r:?}");
    }
    assert_eq!(e.pop3_tls, None);
    let control_addr = r.control.expect("the control port in the ready line");
    assert_ne!(control_addr.port(), 0);

    let alice = &state.instances[0].users[0].address;
    let bob_b = &state.instances[1].users[1].address;
    let roots = reference_gestore::tls::root_store_from_files(&[&state.ca]).unwrap();
    let mut s = SmtpClient::connect(
        e.submission_tls.unwrap(),
        ClientTls::implicit(roots, "localhost"),
    )
    .await
    .unwrap();
    s.ehlo("client.test").await.unwrap();
    s.auth_plain(alice, dev::DEV_PASSWORD).await.unwrap();
    let msg = format!(
        "From: {alice}\r\nTo: {bob_b}\r\nSubject: mai consegnato\r\n\
         Message-ID: <mai.consegnato@client.test>\r\n\r\ncorpo\r\n"
    );
    let reply = s.send(alice, &[bob_b], msg.as_bytes()).await.unwrap();
    assert!(reply.data.unwrap().text.contains("accettato"));
    let _ = s.quit().await;
    let db = c.store.sqlite.clone();
    wait_for(&db, alice, &["accettazione"]).await;

    let stream = TcpStream::connect(control_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut ctl = BufReader::new(stream);
    let now = control(&mut ctl, "NOW");
    let t0 = chrono::DateTime::parse_from_rfc3339(now.strip_prefix("OK ").unwrap()).unwrap();
    // One connection, several commands; a wrong one is an ERR and the connection stays usable.
    let err = control(&mut ctl, "ADVANCE twelve-hours");
    assert!(
        err.starts_with("ERR ") && err.contains("twelve-hours"),
        "{err}"
    );

    let ok = control(&mut ctl, &format!("ADVANCE {}", 12 * 3600 + 60));
    let t1 = chrono::DateTime::parse_from_rfc3339(ok.strip_prefix("OK ").unwrap()).unwrap();
    assert!(t1 - t0 >= chrono::Duration::hours(12), "{now} → {ok}");
    let inbox = wait_for(&db, alice, &["accettazione", "preavviso-errore-consegna"]).await;
    let notices = |m: &[reference_gestore::store::StoredMessage]| {
        m.iter()
            .filter(|m| m.kind == "preavviso-errore-consegna")
            .count()
    };
    assert_eq!(notices(&inbox), 1, "the 12h preavviso");

    let ok = control(&mut ctl, &format!("ADVANCE {}", 12 * 3600));
    assert!(ok.starts_with("OK "), "{ok}");
    // Digest §5.11: the 24h notice has the same X-Ricevuta as the preavviso.
    let inbox = wait_for(
        &db,
        alice,
        &[
            "accettazione",
            "preavviso-errore-consegna",
            "preavviso-errore-consegna",
        ],
    )
    .await;
    assert_eq!(notices(&inbox), 2, "the preavviso and the 24h notice");

    // A line longer than the limit is refused and ends the connection (one byte too many, so
    // that nothing is left unread when the gestore closes).
    let long = "A".repeat(reference_gestore::control::MAX_LINE - 1);
    let reply = control(&mut ctl, &long);
    assert!(
        reply.starts_with("ERR ") && reply.contains("longer"),
        "{reply}"
    );
    let mut rest = String::new();
    assert_eq!(ctl.read_to_string(&mut rest).unwrap_or(0), 0, "{rest}");
}

#[test]
fn a_control_port_needs_the_manual_clock_and_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let state = dev::prepare(tmp.path(), 1, false).unwrap();
    let config = &state.instances[0].config;
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pec-gestore"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--manual-clock", "--control", "0.0.0.0:0"]);
    assert!(
        err.contains("loopback") && err.contains("0.0.0.0:0"),
        "{err}"
    );
    let err = run(&["--control", "127.0.0.1:0"]);
    assert!(err.contains("--manual-clock"), "{err}");
}
