//! Black-box, maddy style: two real `pec-gestore serve --config FILE` processes, A and B, each from
//! a YAML config the test writes (keys from `pec_formats::pki::TestCa`, one provider directory from
//! `pec_formats::directory`), each routing to the other. swaks submits over implicit TLS from A's
//! user to B's user; the acceptance, the envelope, the presa in carico and the avvenuta consegna
//! arrive. A broken config makes `serve` exit non-zero naming the field or the file.

mod common;

use common::wait_for;
use pec_formats::directory::{Directory, ProviderEntry, certificate_hash};
use pec_formats::pki::TestCa;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const PASSWORD: &str = "serve-test-password";

/// One provider's names, ports and folder.
struct Side {
    name: String,
    domain: String,
    dir: PathBuf,
    submission: SocketAddr,
    inbound: SocketAddr,
}

impl Side {
    fn new(root: &Path, l: &str) -> Side {
        let dir = root.join(format!("gestore-{l}"));
        std::fs::create_dir_all(&dir).unwrap();
        Side {
            name: format!("Gestore Serve {}", l.to_uppercase()),
            domain: format!("pec.{l}.test"),
            dir,
            submission: reference_gestore::dev::free_port().unwrap(),
            inbound: reference_gestore::dev::free_port().unwrap(),
        }
    }
    fn service(&self) -> String {
        format!("posta-certificata@{}", self.domain)
    }
    fn user(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }
    fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }
    /// Writes the keys and returns the directory entry (RFC 6109 §4.5).
    fn keys(&self, ca: &TestCa) -> ProviderEntry {
        let id = ca.issue_provider(&self.name, &self.service()).unwrap();
        std::fs::write(
            self.dir.join("signer.key"),
            id.key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        std::fs::write(self.dir.join("signer.pem"), id.cert.to_pem().unwrap()).unwrap();
        let (key, cert) = ca
            .issue_tls_server(&["localhost", "127.0.0.1", &self.domain])
            .unwrap();
        std::fs::write(
            self.dir.join("tls.key"),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let mut chain = cert.to_pem().unwrap();
        chain.extend(ca.cert.to_pem().unwrap());
        std::fs::write(self.dir.join("tls.pem"), chain).unwrap();
        ProviderEntry {
            name: self.name.clone(),
            managed_domains: vec![self.domain.clone()],
            mail_receipt: self.service(),
            certificate_hashes: vec![certificate_hash(&id.cert)],
            certificates: vec![id.cert.to_der().unwrap()],
            other: vec![],
        }
    }
    /// The inline YAML config, routing `peer`'s domain to its inbound listener.
    fn yaml(&self, peer: &Side) -> String {
        format!(
            "provider:
  name: {name}
  domains: [{domain}]
  service_address: {svc}
  mail_receipt: {svc}
listeners:
  submission_tls: {sub}
  inbound: {inb}
tls: {{ cert: tls.pem, key: tls.key }}
signing: {{ cert: signer.pem, key: signer.key }}
directory: ../directory.ldif
trust: [../ca.pem]
store: {{ sqlite: gestore.db }}
routes:
  {peer_domain}: {peer_inbound}
mailboxes:
  - {{ address: {alice}, password: {PASSWORD} }}
  - {{ address: {bob}, password: {PASSWORD} }}
",
            name = self.name,
            domain = self.domain,
            svc = self.service(),
            sub = self.submission,
            inb = self.inbound,
            peer_domain = peer.domain,
            peer_inbound = peer.inbound,
            alice = self.user("alice"),
            bob = self.user("bob"),
        )
    }
}

/// A `pec-gestore serve` process, killed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_cmd(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pec-gestore"));
    c.arg("serve").arg("--config").arg(config);
    c
}

/// Starts `serve` and waits until it prints its endpoints (`<name>: {...}` on stderr), which it
/// does once every listener is bound.
fn start(side: &Side) -> Serve {
    let mut child = serve_cmd(&side.config())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pec-gestore serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = format!("{}: ", side.name);
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with(&ready) => break,
            Some(Ok(l)) => eprintln!("{l}"),
            _ => panic!(
                "pec-gestore serve ({}) ended before it was ready",
                side.name
            ),
        }
    }
    std::thread::spawn(move || lines.for_each(|l| eprintln!("{}", l.unwrap_or_default())));
    Serve(child)
}

/// Two configs, keys and one directory under `root`.
fn topology(root: &Path) -> (Side, Side, PathBuf) {
    let ca = TestCa::generate("PEC Test CA (serve)").unwrap();
    ca.write_to(root).unwrap();
    let (a, b) = (Side::new(root, "a"), Side::new(root, "b"));
    let mut directory = Directory::default();
    directory.providers.push(a.keys(&ca));
    directory.providers.push(b.keys(&ca));
    std::fs::write(root.join("directory.ldif"), directory.to_ldif()).unwrap();
    std::fs::write(a.config(), a.yaml(&b)).unwrap();
    std::fs::write(b.config(), b.yaml(&a)).unwrap();
    (a, b, root.join("ca.pem"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_serve_processes_exchange_a_message_with_every_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, ca) = topology(tmp.path());
    let _pa = start(&a);
    let _pb = start(&b);
    let (alice, bob) = (a.user("alice"), b.user("bob"));
    let out = Command::new("swaks")
        .args(["--server", &a.submission.to_string(), "--tls-on-connect"])
        .args(["--tls-verify", "--tls-ca-path"])
        .arg(&ca)
        .args(["--auth", "PLAIN", "--auth-user", &alice])
        .args(["--auth-password", PASSWORD, "--from", &alice, "--to", &bob])
        .args(["--header", "Subject: prova serve"])
        .output()
        .expect("swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    // RFC 6109 §3.1.4: accepted, with the identificativo in the reply.
    assert!(
        transcript.contains("messaggio accettato, identificativo"),
        "{transcript}"
    );

    let db_a = a.dir.join("gestore.db");
    let db_b = b.dir.join("gestore.db");
    let inbox_alice = wait_for(&db_a, &alice, &["accettazione", "avvenuta-consegna"]).await;
    let inbox_bob = wait_for(&db_b, &bob, &["posta-certificata"]).await;
    let service_a = wait_for(&db_a, &a.service(), &["presa-in-carico"]).await;
    assert_eq!(
        inbox_alice.len(),
        2,
        "alice: acceptance and delivery receipt"
    );
    assert_eq!(inbox_bob.len(), 1, "bob: the envelope");
    assert_eq!(
        service_a.len(),
        1,
        "A's service mailbox: the presa in carico"
    );
    // Every notice concerns the one transaction: the envelope's identificativo.
    let id = common::daticert_of(&inbox_bob[0].raw).dati.identificativo;
    for m in inbox_alice.iter().chain(&service_a) {
        let d = common::daticert_of(&m.raw);
        assert_eq!(d.dati.identificativo, id, "{}", m.kind);
        assert!(!d.dati.gestore_emittente.is_empty());
    }
    // The presa in carico and the avvenuta consegna are B's (RFC 6109 §3.2.1, §3.3.2).
    for m in inbox_alice
        .iter()
        .filter(|m| m.kind == "avvenuta-consegna")
        .chain(&service_a)
    {
        assert_eq!(common::daticert_of(&m.raw).dati.gestore_emittente, b.name);
    }
}

fn run_serve(config: &Path) -> Output {
    serve_cmd(config).output().expect("pec-gestore serve")
}

#[test]
fn a_config_error_exits_non_zero_naming_the_field_or_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, _) = topology(tmp.path());
    let good = a.yaml(&b);

    // An unknown field.
    let bad = tmp.path().join("unknown-field.yaml");
    std::fs::write(&bad, good.replace("routes:", "routez:")).unwrap();
    let out = run_serve(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("routez"), "{err}");
    assert!(err.contains("unknown-field.yaml"), "{err}");

    // A file the config names that does not exist.
    let bad = a.dir.join("missing-file.yaml");
    std::fs::write(&bad, good.replace("cert: signer.pem", "cert: nowhere.pem")).unwrap();
    let out = run_serve(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nowhere.pem"), "{err}");

    // The config file itself missing.
    let out = run_serve(&tmp.path().join("absent.yaml"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("absent.yaml"), "{err}");
}
