//! SMTP over real TCP and TLS on 127.0.0.1: our client and outside clients (Python smtplib, swaks)
//! against our server run by `serve`.

mod smtp_common;

use reference_gestore::smtp::client::{ClientTls, SmtpClient};
use reference_gestore::smtp::server::{Mode, SessionConfig, serve};
use reference_gestore::tls;
use smtp_common::{TestHandler, TestPki, test_pki};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Server {
    addr: SocketAddr,
    handler: Arc<TestHandler>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

async fn start(pki: &TestPki, mode: Mode, implicit_tls: bool) -> Server {
    let mut config = SessionConfig::new("smtp.test", mode);
    config.tls = Some(tls::server_config_from_pem(&pki.cert_pem, &pki.key_pem).unwrap());
    config.implicit_tls = implicit_tls;
    config.auth_failure_delay = Duration::from_millis(10);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(TestHandler::default());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, Arc::new(config), handler.clone(), rx));
    Server {
        addr,
        handler,
        stop,
        task,
    }
}

fn roots(pki: &TestPki) -> rustls::RootCertStore {
    tls::root_store_from_pem(&pki.ca_pem).unwrap()
}

#[tokio::test]
async fn our_client_starttls_submission_and_inbound_plaintext() {
    let pki = test_pki();
    let sub = start(&pki, Mode::Submission, false).await;
    let mut c = SmtpClient::connect(sub.addr, ClientTls::starttls(roots(&pki), "localhost"))
        .await
        .unwrap();
    c.ehlo("client.test").await.unwrap();
    c.starttls().await.unwrap();
    c.ehlo("client.test").await.unwrap();
    c.auth_login("alice", "secret").await.unwrap();
    let r = c
        .send("alice@x.test", &["b@y.test"], b"Subject: a\r\n\r\nbody\r\n")
        .await
        .unwrap();
    assert_eq!(r.delivered(), vec!["b@y.test"]);
    // A second transaction on the same connection.
    let r = c
        .send("alice@x.test", &["c@y.test"], b"Subject: b\r\n\r\nbody\r\n")
        .await
        .unwrap();
    assert_eq!(r.delivered(), vec!["c@y.test"]);
    c.quit().await.unwrap();
    assert_eq!(sub.handler.messages().len(), 2);
    sub.stop().await;

    let inbound = start(&pki, Mode::Inbound, false).await;
    let mut c = SmtpClient::connect(inbound.addr, ClientTls::none())
        .await
        .unwrap();
    c.ehlo("peer.test").await.unwrap();
    let r = c.send("a@x.test", &["nobody@y.test"], b"x").await.unwrap();
    assert!(r.delivered().is_empty() && r.data.is_none());
    let r = c.send("a@x.test", &["b@y.test"], b"x").await.unwrap();
    assert_eq!(r.delivered(), vec!["b@y.test"]);
    let m = inbound.handler.messages();
    assert!(!m[0].tls && m[0].user.is_none());
    inbound.stop().await;
}

#[tokio::test]
async fn our_client_implicit_tls_and_certificate_checks() {
    let pki = test_pki();
    let sub = start(&pki, Mode::Submission, true).await;
    let mut c = SmtpClient::connect(sub.addr, ClientTls::implicit(roots(&pki), "127.0.0.1"))
        .await
        .unwrap();
    c.ehlo("client.test").await.unwrap();
    c.auth_plain("alice", "secret").await.unwrap();
    c.send("alice@x.test", &["b@y.test"], b"hi").await.unwrap();
    c.quit().await.unwrap();
    // Wrong name and untrusted CA are refused, naming the step.
    let err = SmtpClient::connect(sub.addr, ClientTls::implicit(roots(&pki), "other.test"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("implicit TLS: TLS:"), "{err}");
    let other = test_pki();
    let err = SmtpClient::connect(sub.addr, ClientTls::implicit(roots(&other), "localhost"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("implicit TLS"), "{err}");
    sub.stop().await;
}

#[tokio::test]
async fn shutdown_ends_idle_sessions_with_421() {
    let pki = test_pki();
    let server = start(&pki, Mode::Inbound, false).await;
    let mut c = SmtpClient::connect(server.addr, ClientTls::none())
        .await
        .unwrap();
    c.ehlo("peer.test").await.unwrap();
    server.stop.send(true).unwrap();
    let reply = c
        .read_reply("shutdown", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((reply.code, reply.enhanced), (421, Some([4, 3, 2])));
    server.task.await.unwrap().unwrap();
}

/// Runs a program; `None` when it is not installed.
async fn run(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("NOTICE: {program} not installed; test skipped");
            None
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

const PYTHON: &str = r#"
import smtplib, ssl, sys
port, mode, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "ssl":
    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=20)
else:
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    s.ehlo()
    assert s.has_extn("starttls") and not s.has_extn("auth")
    s.starttls(context=ctx)
s.ehlo()
assert s.has_extn("auth") and not s.has_extn("starttls")
try:
    s.login("alice", "wrong")
    sys.exit("wrong password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535
s.login("alice", "secret")
refused = s.sendmail("alice@x.test", ["b@y.test", "nobody@y.test"],
                     b"Subject: py\r\n\r\n.dot\r\nline\r\n")
assert list(refused) == ["nobody@y.test"], refused
s.quit()
print("OK")
"#;

#[tokio::test]
async fn python_smtplib_smtp_ssl_and_starttls() {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    for (mode, implicit) in [("ssl", true), ("starttls", false)] {
        let server = start(&pki, Mode::Submission, implicit).await;
        let port = server.addr.port().to_string();
        let Some(out) = run(
            "python3",
            &["-c", PYTHON, &port, mode, ca.to_str().unwrap()],
        )
        .await
        else {
            server.stop().await;
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("OK"),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = server.handler.messages();
        assert_eq!(m.len(), 1, "{mode}");
        assert_eq!(m[0].rcpts, vec!["b@y.test"]);
        assert_eq!(m[0].message, b"Subject: py\r\n\r\n.dot\r\nline\r\n");
        assert_eq!(m[0].user.as_deref(), Some("alice"));
        server.stop().await;
    }
}

#[tokio::test]
async fn swaks_starttls_and_implicit_tls_with_auth() {
    let pki = test_pki();
    for (flag, implicit) in [("--tls", false), ("--tlsc", true)] {
        let server = start(&pki, Mode::Submission, implicit).await;
        let target = server.addr.to_string();
        let args = [
            "--server",
            &target,
            flag,
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "secret",
            "--from",
            "alice@x.test",
            "--to",
            "b@y.test",
            "--timeout",
            "20",
        ];
        let Some(out) = run("swaks", &args).await else {
            server.stop().await;
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("not available")
            || String::from_utf8_lossy(&out.stderr).contains("not available")
        {
            eprintln!("NOTICE: swaks lacks TLS or AUTH support (perl modules); test skipped");
            server.stop().await;
            return;
        }
        assert!(
            out.status.success(),
            "{flag}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("235 2.7.0"), "{stdout}");
        let m = server.handler.messages();
        assert_eq!(m.len(), 1, "{flag}: {stdout}");
        assert!(m[0].tls);
        server.stop().await;
    }
}
