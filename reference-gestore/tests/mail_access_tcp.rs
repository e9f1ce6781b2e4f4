//! IMAP and POP3 over real TLS on 127.0.0.1, judged by outside clients: Python's imaplib and poplib
//! (implicit TLS and STARTTLS/STLS), fetchmail as a user would run it, and `pec-gestore admin`
//! changing mailboxes under a running server.

mod access_common;

use access_common::*;
use reference_gestore::access;
use reference_gestore::store::{SqliteStore, Store};
use reference_gestore::{imap, pop3};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Server {
    imaps: u16,
    imap: u16,
    pop3s: u16,
    pop3: u16,
    store: SqliteStore,
    dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("gestore.db"))
        .await
        .unwrap();
    let f = fixture_with(store.clone()).await;
    std::fs::write(dir.path().join("ca.pem"), &f.pki.ca_pem).unwrap();
    let (stop, rx) = watch::channel(false);
    let mut ports = Vec::new();
    for (imap_proto, implicit) in [(true, true), (true, false), (false, true), (false, false)] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(l.local_addr().unwrap().port());
        let (cfg, rx) = (f.cfg.clone(), rx.clone());
        tokio::spawn(async move {
            if imap_proto {
                access::serve(l, cfg, implicit, rx, imap::session).await
            } else {
                access::serve(l, cfg, implicit, rx, pop3::session).await
            }
        });
    }
    Server {
        imaps: ports[0],
        imap: ports[1],
        pop3s: ports[2],
        pop3: ports[3],
        store,
        dir,
        _stop: stop,
    }
}

/// Runs a Python script with the ports and the CA as arguments; returns its stdout.
async fn python(script: &'static str, s: &Server) -> String {
    let args = [
        s.imaps.to_string(),
        s.imap.to_string(),
        s.pop3s.to_string(),
        s.pop3.to_string(),
        s.dir.path().join("ca.pem").display().to_string(),
    ];
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const PY_IMAP: &str = r#"
import imaplib, ssl, sys, time
imaps, imap, pop3s, pop3, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
# STARTTLS: no login before TLS.
M = imaplib.IMAP4('127.0.0.1', imap)
assert 'LOGINDISABLED' in M.capabilities and 'STARTTLS' in M.capabilities, M.capabilities
M.starttls(ssl_context=ctx)
M.login('bob@pec.a.test', 'pw-bob')
typ, data = M.select('INBOX')
assert (typ, data) == ('OK', [b'1']), (typ, data)
M.logout()
# Implicit TLS.
M = imaplib.IMAP4_SSL('127.0.0.1', imaps, ssl_context=ctx)
M.login('alice@pec.a.test', 'pw-alice')
typ, data = M.list()
# INBOX is an atom, other names quoted strings (RFC 3501 §9 astring), as Dovecot sends them.
assert any(l.endswith(b' INBOX') for l in data) and any(b'"Sent"' in l for l in data), data
typ, data = M.select('INBOX')
assert data == [b'2'], data
typ, data = M.search(None, 'SUBJECT', 'Fattura')
assert data == [b'2'], data
typ, data = M.search(None, 'UNSEEN')
assert data == [b'1 2'], data
typ, data = M.fetch('1', '(RFC822)')
assert b'Testo del contratto' in data[0][1], data
typ, data = M.fetch('1', '(FLAGS)')
assert b'\\Seen' in data[0], data
typ, data = M.store('1', '+FLAGS', '\\Deleted')
assert typ == 'OK', data
typ, data = M.expunge()
assert data == [b'1'], data
typ, data = M.append('INBOX', '(\\Seen)', imaplib.Time2Internaldate(time.time()), b'Subject: da python\r\n\r\ncorpo\r\n')
assert typ == 'OK', data
typ, data = M.uid('search', None, 'ALL')
assert data == [b'2 3'], data
typ, data = M.fetch('2', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
assert data[0][1].startswith(b'Subject: da python'), data
assert M.create('Progetti')[0] == 'OK'
assert M.rename('Progetti', 'Progetti2025')[0] == 'OK'
typ, data = M.list()
assert any(b'Progetti2025' in l for l in data) and not any(b'"Progetti"' in l for l in data), data
assert M.delete('Progetti2025')[0] == 'OK'
M.close()
M.logout()
print('imap ok')
"#;

const PY_POP3: &str = r#"
import poplib, ssl, sys
imaps, imap, pop3s, pop3, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
P = poplib.POP3('127.0.0.1', pop3)
assert b'STLS' in b' '.join(P.capa().keys()).encode() if False else 'STLS' in P.capa(), P.capa()
try:
    P.user('alice@pec.a.test'); raise SystemExit('USER accepted before TLS')
except poplib.error_proto:
    pass
P.stls(context=ctx)
P.user('bob@pec.a.test'); P.pass_('pw-bob')
assert P.stat()[0] == 1
P.quit()
P = poplib.POP3_SSL('127.0.0.1', pop3s, context=ctx)
P.user('alice@pec.a.test'); P.pass_('pw-alice')
n, size = P.stat()
assert n == 2, (n, size)
resp, listing, _ = P.list()
assert len(listing) == 2 and sum(int(l.split()[1]) for l in listing) == size, listing
resp, uids, _ = P.uidl()
assert [u.split()[1].split(b'.')[1] for u in uids] == [b'1', b'2'], uids
resp, lines, _ = P.retr(1)
assert b'Testo del contratto' in lines and b'.riga con punto' in lines, lines
resp, lines, _ = P.top(2, 0)
assert b'Subject: Fattura' in lines and b'--XX' not in lines, lines
P.dele(1)
P.quit()
print('pop3 ok')
"#;

/// A delivered PEC with an RFC 2047 subject and sender name, as real ones arrive.
const ENCODED: &str = "From: =?UTF-8?B?VWZmaWNpbyBQcm90b2NvbGxv?= <protocollo@pec.b.test>\r\nTo: alice@pec.a.test\r\nSubject: =?UTF-8?B?UE9TVEEgQ0VSVElGSUNBVEE6IFBlcmNow6kgbGEgZmF0dHVyYQ==?=\r\n\r\ncorpo\r\n";

const PY_IMAP_EXT: &str = r#"
import imaplib, poplib, ssl, sys
imaps, imap, pop3s, pop3, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
M = imaplib.IMAP4_SSL('127.0.0.1', imaps, ssl_context=ctx)
assert 'UIDPLUS' in M.capabilities and 'MOVE' in M.capabilities, M.capabilities
# Three failed logins end the connection (the test configuration waits zero seconds).
for i in range(2):
    try:
        M.login('alice@pec.a.test', 'wrong'); raise SystemExit('wrong password accepted')
    except imaplib.IMAP4.abort as e:
        raise SystemExit('closed after %d failures: %s' % (i + 1, e))
    except imaplib.IMAP4.error as e:
        assert 'AUTHENTICATIONFAILED' in str(e), e
try:
    M.login('alice@pec.a.test', 'wrong'); raise SystemExit('third wrong password accepted')
except imaplib.IMAP4.abort as e:
    assert 'too many failed logins' in str(e), e
P = poplib.POP3_SSL('127.0.0.1', pop3s, context=ctx)
for i in range(3):
    P.user('alice@pec.a.test')
    try:
        P.pass_('wrong'); raise SystemExit('POP3 wrong password accepted')
    except poplib.error_proto as e:
        assert ('too many' in str(e)) == (i == 2), (i, e)
try:
    P.stat(); raise SystemExit('POP3 session still open')
except (poplib.error_proto, OSError, EOFError):
    pass

M = imaplib.IMAP4_SSL('127.0.0.1', imaps, ssl_context=ctx)
M.login('alice@pec.a.test', 'pw-alice')
assert M.create('Archivio')[0] == 'OK'
typ, data = M.select('INBOX')
assert data == [b'3'], data
assert M.response('RECENT') == ('RECENT', [b'3']), M.response('RECENT')
# Header SEARCH compares the decoded text, case-insensitively (RFC 2047 subjects).
typ, data = M.search(None, 'SUBJECT', '"posta certificata: perch"')
assert data == [b'3'], data
M.literal = 'PERCHÉ LA'.encode('utf-8')
typ, data = M.search('UTF-8', 'SUBJECT')
assert data == [b'3'], data
typ, data = M.search(None, 'FROM', '"ufficio protocollo"')
assert data == [b'3'], data
# RFC 6851 UID MOVE with RFC 4315 COPYUID.
typ, data = M.uid('MOVE', '1', 'Archivio')
assert typ == 'OK', data
typ, data = M.response('COPYUID')
assert data[0].split()[1:] == [b'1', b'1'], data
typ, data = M.response('EXPUNGE')
assert data == [b'1'], data
typ, data = M.status('Archivio', '(MESSAGES RECENT)')
assert data == [b'"Archivio" (MESSAGES 1 RECENT 1)'], data
# RFC 4315: APPENDUID, then UID EXPUNGE removes only the \Deleted messages of its set.
typ, data = M.append('INBOX', '(\\Deleted)', None, b'Subject: via\r\n\r\nx\r\n')
assert typ == 'OK' and data[0].startswith(b'[APPENDUID ') and data[0].split()[2] == b'4]', data
assert M.uid('STORE', '2', '+FLAGS', '(\\Deleted)')[0] == 'OK'
typ, data = M.uid('EXPUNGE', '4')
assert typ == 'OK', data
assert M.response('EXPUNGE') == ('EXPUNGE', [b'3']), 'expunged'
typ, data = M.uid('SEARCH', None, 'ALL')
assert data == [b'2 3'], data
M.logout()
print('ext ok')
"#;

#[tokio::test]
async fn python_imaplib_uidplus_move_login_limit_and_decoded_search() {
    let s = start().await;
    deliver(&s.store, "alice@pec.a.test", ENCODED).await;
    assert_eq!(python(PY_IMAP_EXT, &s).await.trim(), "ext ok");
    let archived = s
        .store
        .messages("alice@pec.a.test", "Archivio")
        .await
        .unwrap();
    assert_eq!(archived.len(), 1);
    let inbox = s.store.messages("alice@pec.a.test", "INBOX").await.unwrap();
    assert_eq!(inbox.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2, 3]);
}

#[tokio::test]
async fn python_imaplib_over_tls_and_starttls() {
    let s = start().await;
    assert_eq!(python(PY_IMAP, &s).await.trim(), "imap ok");
    let left = s.store.messages("alice@pec.a.test", "INBOX").await.unwrap();
    assert_eq!(left.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2, 3]);
}

#[tokio::test]
async fn python_poplib_over_tls_and_stls() {
    let s = start().await;
    assert_eq!(python(PY_POP3, &s).await.trim(), "pop3 ok");
    let left = s.store.messages("alice@pec.a.test", "INBOX").await.unwrap();
    assert_eq!(left.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2]);
}

fn fetchmail_available() -> bool {
    Command::new("fetchmail").arg("--version").output().is_ok()
}

#[tokio::test]
async fn fetchmail_fetches_over_imaps_and_pop3s_with_the_test_ca() {
    assert!(
        fetchmail_available(),
        "fetchmail is missing: run scripts/setup"
    );
    let s = start().await;
    let d = s.dir.path();
    let (bob_box, alice_box) = (d.join("bob.mbox"), d.join("alice.mbox"));
    let rc = format!(
        "set no bouncemail\n\
         poll 127.0.0.1 protocol IMAP service {imaps} auth password\n  \
           user \"bob@pec.a.test\" password \"pw-bob\" is bob here\n  \
           ssl sslcertck sslcertfile \"{ca}\" sslcommonname localhost\n  \
           mda \"/bin/sh -c 'cat >> {bob}'\"\n\
         poll 127.0.0.1 via 127.0.0.1 protocol POP3 service {pop3s} auth password\n  \
           user \"alice@pec.a.test\" password \"pw-alice\" is alice here keep\n  \
           ssl sslcertck sslcertfile \"{ca}\" sslcommonname localhost\n  \
           mda \"/bin/sh -c 'cat >> {alice}'\"\n",
        imaps = s.imaps,
        pop3s = s.pop3s,
        ca = d.join("ca.pem").display(),
        bob = bob_box.display(),
        alice = alice_box.display(),
    );
    let rc_path = d.join("fetchmailrc");
    std::fs::write(&rc_path, rc).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = tokio::process::Command::new("fetchmail")
        .args(["--nodetach", "--nosyslog", "--fetchmailrc"])
        .arg(&rc_path)
        .env("FETCHMAILHOME", d)
        .env("HOME", d)
        .output()
        .await
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 0: mail retrieved.
    assert_eq!(out.status.code(), Some(0), "fetchmail:\n{log}");
    let bob = std::fs::read_to_string(&bob_box).unwrap();
    assert!(bob.contains("solo per bob"), "{bob}");
    let alice = std::fs::read_to_string(&alice_box).unwrap();
    assert!(
        alice.contains("Testo del contratto") && alice.contains("In allegato"),
        "{alice}"
    );
    // Over IMAP fetchmail deleted Bob's message; over POP3 with `keep` Alice keeps hers.
    assert!(
        s.store
            .messages("bob@pec.a.test", "INBOX")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.store
            .messages("alice@pec.a.test", "INBOX")
            .await
            .unwrap()
            .len(),
        2
    );
}

fn admin(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pec-gestore"))
        .args(["admin", "--config"])
        .arg(config)
        .arg("mailbox")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const PY_LOGIN: &str = r#"
import imaplib, ssl, sys
imaps, imap, pop3s, pop3, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
M = imaplib.IMAP4_SSL('127.0.0.1', imaps, ssl_context=ctx)
try:
    M.login('dario@pec.a.test', 'pw-dario')
except imaplib.IMAP4.error as e:
    print('refused', e); raise SystemExit(0)
M.select('INBOX')
typ, data = M.search(None, 'SUBJECT', 'Benvenuto')
typ, msg = M.fetch(data[0].split()[0], '(BODY[TEXT])')
print('welcome' if b'IMAP (TLS):' in msg[0][1] else 'no welcome')
M.logout()
"#;

#[tokio::test]
async fn admin_creates_disables_enables_and_deletes_mailboxes_under_a_running_server() {
    let s = start().await;
    let d = s.dir.path();
    let config = d.join("config.yaml");
    let imaps: SocketAddr = format!("127.0.0.1:{}", s.imaps).parse().unwrap();
    std::fs::write(
        &config,
        format!(
            "provider:\n  name: Gestore A\n  domains: [pec.a.test]\n  service_address: posta-certificata@pec.a.test\n  mail_receipt: posta-certificata@pec.a.test\n\
             listeners:\n  submission_tls: 127.0.0.1:4650\n  inbound: 127.0.0.1:2525\n  imap_tls: {imaps}\n\
             tls: {{ cert: tls.pem, key: tls.key }}\nsigning: {{ cert: s.pem, key: s.key }}\n\
             directory: d.ldif\ntrust: [ca.pem]\nstore: {{ sqlite: gestore.db }}\n"
        ),
    )
    .unwrap();
    let (ok, out) = admin(
        &config,
        &[
            "create",
            "dario@pec.a.test",
            "--password",
            "pw-dario",
            "--quota",
            "10MiB",
        ],
    );
    assert!(ok, "{out}");
    let acc = s.store.account("dario@pec.a.test").await.unwrap().unwrap();
    assert_eq!(acc.quota, 10 * 1024 * 1024);
    assert_eq!(python(PY_LOGIN, &s).await.trim(), "welcome");
    let (ok, out) = admin(&config, &["create", "dario@pec.a.test", "--password", "x"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = admin(&config, &["create", "eve@other.test", "--password", "x"]);
    assert!(
        !ok && out.contains("not a domain of this provider"),
        "{out}"
    );

    assert!(admin(&config, &["disable", "dario@pec.a.test"]).0);
    assert!(python(PY_LOGIN, &s).await.starts_with("refused"));
    assert!(admin(&config, &["enable", "dario@pec.a.test"]).0);
    assert!(
        admin(
            &config,
            &["password", "dario@pec.a.test", "--password", "nuova"]
        )
        .0
    );
    assert!(python(PY_LOGIN, &s).await.starts_with("refused"));
    assert!(
        admin(
            &config,
            &["password", "dario@pec.a.test", "--password", "pw-dario"]
        )
        .0
    );
    assert_eq!(python(PY_LOGIN, &s).await.trim(), "welcome");
    assert!(admin(&config, &["quota", "dario@pec.a.test", "1GB"]).0);
    assert_eq!(
        s.store
            .account("dario@pec.a.test")
            .await
            .unwrap()
            .unwrap()
            .quota,
        1_000_000_000
    );

    assert!(admin(&config, &["delete", "dario@pec.a.test"]).0);
    assert!(s.store.account("dario@pec.a.test").await.unwrap().is_none());
    assert!(
        s.store
            .messages("dario@pec.a.test", "INBOX")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.store
            .folders("dario@pec.a.test")
            .await
            .unwrap()
            .is_empty()
    );
    let (ok, out) = admin(&config, &["delete", "dario@pec.a.test"]);
    assert!(!ok && out.contains("no mailbox"), "{out}");
}

mod common;

const PY_DEV: &str = r#"
import imaplib, poplib, ssl, sys, json
state = json.load(open(sys.argv[1]))
inst = state['instances'][0]
ctx = ssl.create_default_context(cafile=state['ca'])
port = lambda k: int(inst[k].rsplit(':', 1)[1])
bob = inst['users'][1]
M = imaplib.IMAP4_SSL('127.0.0.1', port('imap_tls'), ssl_context=ctx)
M.login(bob['address'], bob['password'])
M.select('INBOX')
typ, data = M.search(None, 'HEADER', 'X-Trasporto', 'posta-certificata')
assert typ == 'OK' and len(data[0].split()) == 1, data
typ, data = M.fetch(data[0], '(BODYSTRUCTURE ENVELOPE)')
assert b'"SIGNED"' in data[0] and b'POSTA CERTIFICATA: prova imap' in data[0], data
M.logout()
M = imaplib.IMAP4('127.0.0.1', port('imap_starttls'))
M.starttls(ssl_context=ctx)
M.login(bob['address'], bob['password'])
assert M.select('INBOX')[0] == 'OK'
M.logout()
P = poplib.POP3('127.0.0.1', port('pop3_starttls'))
P.stls(context=ctx)
P.user(bob['address']); P.pass_(bob['password'])
assert P.stat()[0] == 1
P.quit()
P = poplib.POP3_SSL('127.0.0.1', port('pop3_tls'), context=ctx)
P.user(bob['address']); P.pass_(bob['password'])
resp, lines, _ = P.retr(1)
assert b'Content-Type: application/x-pkcs7-signature; name="smime.p7s"' in lines or any(b'smime.p7s' in l for l in lines), lines[:20]
P.quit()
print('dev ok')
"#;

#[tokio::test(flavor = "multi_thread")]
async fn pec_gestore_dev_serves_imap_and_pop3_on_the_ports_of_dev_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = common::start_dev(tmp.path(), 1, &[]);
    let a = &dev.state.instances[0];
    for p in [a.imap_tls, a.imap_starttls, a.pop3_tls, a.pop3_starttls] {
        assert!(p.is_some(), "dev.json lists every mailbox access port");
    }
    let (alice, bob) = (&a.users[0], &a.users[1]);
    let msg = format!(
        "From: {}\nTo: {}\nSubject: prova imap\nMessage-ID: <imap-dev@{}>\n\ncorpo\n",
        alice.address, bob.address, a.domain
    );
    common::python_submit(
        a.submission_tls.port(),
        &dev.state.ca,
        &alice.address,
        &alice.password,
        &[&bob.address],
        &msg,
    );
    let db = tmp.path().join("gestore-a/gestore.db");
    common::wait_for(&db, &bob.address, &["posta-certificata"]).await;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(PY_DEV)
        .arg(tmp.path().join("dev.json"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
