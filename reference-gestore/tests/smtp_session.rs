//! SMTP server sessions driven in memory through `tokio::io::duplex`.

mod smtp_common;

use base64::Engine;
use proptest::prelude::*;
use reference_gestore::smtp::client::{ClientError, ClientTls, SmtpClient, Timeouts};
use reference_gestore::smtp::server::{Mode, SessionConfig, handle_connection};
use reference_gestore::tls;
use smtp_common::{TestHandler, test_pki};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn peer() -> SocketAddr {
    "192.0.2.1:40000".parse().unwrap()
}

fn inbound() -> SessionConfig {
    SessionConfig::new("mx.test", Mode::Inbound)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Sends all of `input` at once (a fully pipelined client), then returns everything the server said.
async fn transcript(config: SessionConfig, input: &[u8]) -> (String, Arc<TestHandler>) {
    let handler = Arc::new(TestHandler::default());
    let (client, server) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(handle_connection(
        server,
        peer(),
        Arc::new(config),
        handler.clone(),
        None,
    ));
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(input).await.unwrap();
    w.shutdown().await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    task.await.unwrap().unwrap();
    (String::from_utf8(out).unwrap(), handler)
}

/// The code of every reply (the last line of multiline replies).
fn codes(out: &str) -> Vec<u16> {
    out.lines()
        .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn plain_transaction_with_every_command() {
    let input = b"EHLO client.test\r\nHELP\r\nNOOP\r\nVRFY bob\r\nMAIL FROM:<a@x.test>\r\n\
RCPT TO:<b@y.test>\r\nRSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n\
DATA\r\nSubject: hi\r\n\r\n..dot line\r\nbody\r\n.\r\nQUIT\r\n";
    let (out, handler) = transcript(inbound(), input).await;
    assert_eq!(
        codes(&out),
        vec![
            220, 250, 214, 250, 252, 250, 250, 250, 250, 250, 250, 354, 250, 221
        ],
        "{out}"
    );
    assert!(
        out.contains(
            "250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 67108864\r\n250 ENHANCEDSTATUSCODES\r\n"
        ),
        "{out}"
    );
    assert!(
        !out.contains("250-STARTTLS") && !out.contains("AUTH PLAIN"),
        "{out}"
    );
    let m = handler.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].from, "a@x.test");
    assert_eq!(m[0].rcpts, vec!["b@y.test", "c@y.test"]);
    // RFC 5321 §4.5.2: dot-unstuffed.
    assert_eq!(m[0].message, b"Subject: hi\r\n\r\n.dot line\r\nbody\r\n");
}

#[tokio::test]
async fn order_errors() {
    let input = b"MAIL FROM:<a@x.test>\r\nHELO c\r\nRCPT TO:<b@y.test>\r\nDATA\r\n\
MAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\nDATA\r\nRCPT TO:<nobody@y.test>\r\nDATA\r\n\
STARTTLS\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nBDAT 10 LAST\r\nFOO\r\nQUIT\r\n";
    let (out, handler) = transcript(inbound(), input).await;
    assert_eq!(
        codes(&out),
        vec![
            220, 503, 250, 503, 503, 250, 503, 554, 550, 554, 502, 502, 502, 500, 221
        ],
        "{out}"
    );
    assert!(out.contains("554 5.5.1 No valid recipients"), "{out}");
    assert!(handler.messages().is_empty());
}

#[tokio::test]
async fn refused_sender_and_recipient_limits() {
    let mut config = inbound();
    config.max_recipients = 2;
    let input = b"EHLO c\r\nMAIL FROM:<blocked@x.test>\r\nMAIL FROM:<>\r\nRCPT TO:<a@y>\r\n\
RCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let (out, handler) = transcript(config, input).await;
    assert_eq!(
        codes(&out),
        vec![220, 250, 550, 250, 250, 250, 452, 354, 250, 221],
        "{out}"
    );
    assert!(out.contains("452 4.5.3 Too many recipients"));
    let m = handler.messages();
    assert_eq!(m[0].from, "", "null reverse-path");
    assert_eq!(m[0].rcpts.len(), 2);
}

#[tokio::test]
async fn size_limit_declared_and_counted() {
    let mut config = inbound();
    config.max_message_size = 100;
    let big = "x".repeat(60);
    let input = format!(
        "EHLO c\r\nMAIL FROM:<a@x> SIZE=101\r\nMAIL FROM:<a@x> SIZE=50\r\nRCPT TO:<b@y>\r\nDATA\r\n\
{big}\r\n{big}\r\n.\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n{big}\r\n.\r\nQUIT\r\n"
    );
    let (out, handler) = transcript(config, input.as_bytes()).await;
    assert_eq!(
        codes(&out),
        vec![220, 250, 552, 250, 250, 354, 552, 250, 250, 354, 250, 221],
        "{out}"
    );
    assert!(out.contains("250-SIZE 100\r\n"));
    // Only the second message arrived; the session went on after the oversized one.
    let m = handler.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].message.len(), 62);
}

#[tokio::test]
async fn bare_lf_and_long_lines_are_refused() {
    let input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nline\nnext\r\n.\n.\r\n\
MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nbare\rcr\r\n.\r\n";
    let mut input = input.to_vec();
    let long = format!(
        "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n{}\r\n.\r\nQUIT\r\n",
        "y".repeat(1200)
    );
    input.extend_from_slice(long.as_bytes());
    let (out, handler) = transcript(inbound(), &input).await;
    assert_eq!(
        codes(&out),
        vec![
            220, 250, 250, 250, 354, 550, 250, 250, 354, 550, 250, 250, 354, 550, 221
        ],
        "{out}"
    );
    assert!(out.contains("550 5.6.0 Bare CR or LF"), "{out}");
    assert!(
        out.contains("550 5.6.0 Message line longer than 1000"),
        "{out}"
    );
    assert!(handler.messages().is_empty());
}

#[tokio::test]
async fn command_limits() {
    let mut config = inbound();
    config.max_errors = 3;
    let long = format!("NOOP {}\r\n", "z".repeat(5000));
    let input = format!("{long}XYZZY\r\nEHLO\r\nNOOP\r\n");
    let (out, _) = transcript(config, input.as_bytes()).await;
    assert_eq!(codes(&out), vec![220, 500, 500, 501, 421], "{out}");
    assert!(out.contains("500 5.5.2 Line too long"), "{out}");

    let mut config = inbound();
    config.max_commands = 3;
    let (out, _) = transcript(config, b"NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n").await;
    assert_eq!(codes(&out), vec![220, 250, 250, 250, 421], "{out}");
}

#[tokio::test]
async fn command_timeout_gives_421() {
    let mut config = inbound();
    config.command_timeout = Duration::from_millis(50);
    let handler = Arc::new(TestHandler::default());
    let (mut client, server) = tokio::io::duplex(4096);
    let task = tokio::spawn(handle_connection(
        server,
        peer(),
        Arc::new(config),
        handler,
        None,
    ));
    let mut out = String::new();
    // The client never writes; the server gives up and closes.
    client.read_to_string(&mut out).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(codes(&out), vec![220, 421], "{out}");
    assert!(out.contains("421 4.4.2"));
}

fn submission_plain() -> SessionConfig {
    SessionConfig::new("smtp.test", Mode::Submission)
}

#[tokio::test]
async fn submission_without_tls_offers_no_auth() {
    let input = format!(
        "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<alice@x>\r\nQUIT\r\n",
        b64("\0alice\0secret")
    );
    let (out, _) = transcript(submission_plain(), input.as_bytes()).await;
    assert!(!out.contains("AUTH"), "{out}");
    // RFC 4954 §6: 538 without encryption; 530 for MAIL before AUTH.
    assert_eq!(codes(&out), vec![220, 250, 538, 530, 221], "{out}");
}

fn tls_config(mode: Mode) -> (SessionConfig, rustls::RootCertStore) {
    let pki = test_pki();
    let mut config = SessionConfig::new("smtp.test", mode);
    config.tls = Some(tls::server_config_from_pem(&pki.cert_pem, &pki.key_pem).unwrap());
    config.auth_failure_delay = Duration::from_millis(20);
    config.auth_failure_max_delay = Duration::from_millis(30);
    (config, tls::root_store_from_pem(&pki.ca_pem).unwrap())
}

async fn client_over_duplex(
    config: SessionConfig,
    tls: ClientTls,
) -> (
    SmtpClient,
    Arc<TestHandler>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let handler = Arc::new(TestHandler::default());
    let (client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(handle_connection(
        server,
        peer(),
        Arc::new(config),
        handler.clone(),
        None,
    ));
    let client = SmtpClient::from_stream(client, tls, Timeouts::default())
        .await
        .unwrap();
    (client, handler, task)
}

#[tokio::test]
async fn auth_after_starttls_and_pipelined_send() {
    let (config, roots) = tls_config(Mode::Submission);
    let (mut c, handler, task) =
        client_over_duplex(config, ClientTls::starttls(roots, "localhost")).await;
    c.ehlo("client.test").await.unwrap();
    assert!(c.has_capability("STARTTLS"));
    assert!(!c.has_capability("AUTH"));
    c.starttls().await.unwrap();
    c.ehlo("client.test").await.unwrap();
    assert!(!c.has_capability("STARTTLS"), "{:?}", c.capabilities());
    assert_eq!(c.capability_params("AUTH"), vec!["PLAIN", "LOGIN"]);
    // MAIL before AUTH is refused with 530.
    let err = c.send("alice@x", &["b@y"], b"x").await.unwrap_err();
    match err {
        ClientError::Rejected { step, reply } => {
            assert_eq!((step.as_str(), reply.code), ("MAIL FROM", 530));
        }
        other => panic!("{other}"),
    }
    c.rset().await.unwrap();
    c.auth_plain("alice", "secret").await.unwrap();
    // RFC 4954 §4: a second AUTH is out of order.
    let err = c.auth_login("alice", "secret").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("AUTH LOGIN: server replied 503"),
        "{err}"
    );
    let result = c
        .send(
            "alice@x",
            &["b@y", "nobody@y", "c@y"],
            b"Subject: t\n\n.leading dot\nend",
        )
        .await
        .unwrap();
    assert_eq!(result.delivered(), vec!["b@y", "c@y"]);
    assert_eq!(result.refused()[0].reply.code, 550);
    assert_eq!(result.refused()[0].reply.enhanced, Some([5, 1, 1]));
    c.quit().await.unwrap();
    task.await.unwrap().unwrap();
    let m = handler.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].message, b"Subject: t\r\n\r\n.leading dot\r\nend\r\n");
    assert_eq!(m[0].user.as_deref(), Some("alice"));
    assert!(m[0].tls);
}

#[tokio::test]
async fn auth_login_over_implicit_tls_and_failures_slow_down_then_disconnect() {
    let (mut config, roots) = tls_config(Mode::Submission);
    config.implicit_tls = true;
    let (mut c, _, task) =
        client_over_duplex(config, ClientTls::implicit(roots, "localhost")).await;
    assert!(c.is_tls());
    c.ehlo("client.test").await.unwrap();
    assert!(c.has_capability("AUTH") && !c.has_capability("STARTTLS"));
    let start = Instant::now();
    for _ in 0..2 {
        let err = c.auth_login("alice", "wrong").await.unwrap_err();
        assert!(err.to_string().contains("535 5.7.8"), "{err}");
    }
    // 20 ms then 40 ms bounded to 30 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    let err = c.auth_plain("alice", "wrong").await.unwrap_err();
    assert!(err.to_string().contains("535"), "{err}");
    // After the third failure the server says 421 and closes.
    let reply = c.read_reply("after", Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply.code, 421);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn sasl_exchanges() {
    let (config, roots) = tls_config(Mode::Submission);
    let (mut c, _, _task) =
        client_over_duplex(config, ClientTls::starttls(roots, "localhost")).await;
    c.starttls().await.unwrap();
    c.ehlo("c").await.unwrap();
    // Cancel, bad base64, unknown mechanism, authzid of another user.
    assert_eq!(c.command("AUTH PLAIN").await.unwrap().code, 334);
    assert_eq!(c.command("*").await.unwrap().code, 501);
    assert_eq!(c.command("AUTH PLAIN !!!").await.unwrap().code, 501);
    assert_eq!(c.command("AUTH CRAM-MD5").await.unwrap().code, 504);
    let other = b64("bob\0alice\0secret");
    assert_eq!(
        c.command(&format!("AUTH PLAIN {other}"))
            .await
            .unwrap()
            .code,
        535
    );
    // Empty challenge then the response.
    assert_eq!(c.command("AUTH PLAIN").await.unwrap().code, 334);
    assert_eq!(c.command(&b64("\0alice\0secret")).await.unwrap().code, 235);
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let (config, _) = tls_config(Mode::Inbound);
    let handler = Arc::new(TestHandler::default());
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(handle_connection(
        server,
        peer(),
        Arc::new(config),
        handler,
        None,
    ));
    // The injected NOOP must not be answered (in plaintext or later inside TLS).
    client
        .write_all(b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&out).contains("220 2.0.0") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
    }
    drop(client);
    let _ = task.await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(codes(&out), vec![220, 250, 220], "{out}");
    assert!(out.contains("250 STARTTLS\r\n"), "{out}");
}

/// Random bytes, or a known command word followed by random text.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let words = prop::sample::select(vec![
        "EHLO ",
        "HELO ",
        "MAIL FROM:<",
        "MAIL FROM:",
        "RCPT TO:<",
        "DATA",
        "AUTH PLAIN ",
        "AUTH LOGIN ",
        "AUTH ",
        "STARTTLS",
        "RSET",
        "NOOP ",
        "VRFY ",
        "QUIT",
        "BDAT ",
        ".",
    ]);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (words, "[ -~]{0,60}").prop_map(|(w, rest)| format!("{w}{rest}").into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn arbitrary_command_lines_never_panic(lines in proptest::collection::vec(command_line(), 0..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut input = Vec::new();
        for l in &lines {
            input.extend_from_slice(l);
            input.extend_from_slice(b"\r\n");
        }
        let (out, _) = rt.block_on(transcript(submission_plain(), &input));
        prop_assert!(out.starts_with("220 "));
        for line in out.lines() {
            prop_assert!(line.len() >= 3 && line[..3].bytes().all(|b| b.is_ascii_digit()), "{}", line);
        }
    }
}

#[tokio::test]
async fn client_reports_refused_content_and_all_recipients_refused() {
    let (mut c, handler, task) = client_over_duplex(inbound(), ClientTls::none()).await;
    c.ehlo("peer.test").await.unwrap();
    // The handler's reply after DATA reaches the client as an error naming the step.
    let err = c.send("a@x", &["refuse-data@y"], b"x").await.unwrap_err();
    match &err {
        ClientError::Rejected { step, reply } => {
            assert_eq!(step, "message data");
            assert_eq!((reply.code, reply.enhanced), (554, Some([5, 6, 0])));
        }
        other => panic!("{other}"),
    }
    // Every RCPT refused: no data is sent, the replies are reported, the session stays usable.
    let r = c
        .send("a@x", &["nobody1@y", "nobody2@y"], b"x")
        .await
        .unwrap();
    assert_eq!(r.data, None);
    assert_eq!(r.refused().len(), 2);
    let r = c.send("a@x", &["b@y"], b"x").await.unwrap();
    assert_eq!(r.delivered(), vec!["b@y"]);
    c.quit().await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(handler.messages().len(), 1);
}
