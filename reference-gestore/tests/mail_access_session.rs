//! IMAP and POP3 sessions over in-memory streams: the protocol as a client sees it, the mailbox
//! isolation, TLS-only login, two clients on one mailbox, IDLE woken by a delivery.

mod access_common;

use access_common::*;
use reference_gestore::store::Store;
use reference_gestore::{imap, pop3};

#[tokio::test]
async fn imap_refuses_login_before_starttls_and_accepts_it_after() {
    let f = fixture().await;
    let mut c = connect(&f.cfg, false, imap::session);
    let greeting = c.line().await;
    assert!(
        // Capability names are case-insensitive atoms (RFC 3501 §7.2.1); imap-codec writes
        // IMAP4REV1.
        greeting.starts_with("* OK [CAPABILITY IMAP4REV1 STARTTLS LOGINDISABLED"),
        "{greeting}"
    );
    let r = c.imap("a1", "LOGIN alice@pec.a.test pw-alice").await;
    assert!(r.contains("a1 NO [PRIVACYREQUIRED]"), "{r}");
    let r = c.imap("a2", "AUTHENTICATE PLAIN AGFsaWNlAHB3").await;
    assert!(r.contains("a2 NO"), "{r}");
    let r = c.imap("a3", "SELECT INBOX").await;
    assert!(r.contains("a3 BAD"), "{r}");
    let r = c.imap("a4", "STARTTLS").await;
    assert!(r.starts_with("a4 OK"), "{r}");
    let mut c = c.start_tls(&f.pki.ca_pem).await;
    let r = c.imap("b1", "CAPABILITY").await;
    assert!(
        r.contains("AUTH=PLAIN") && !r.contains("LOGINDISABLED") && !r.contains("STARTTLS"),
        "{r}"
    );
    let r = c.imap("b2", "LOGIN alice@pec.a.test wrong").await;
    assert!(r.contains("b2 NO [AUTHENTICATIONFAILED]"), "{r}");
    // AUTHENTICATE PLAIN with a continuation: "\0alice@pec.a.test\0pw-alice".
    c.send("b3 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ \r\n");
    c.send("AGFsaWNlQHBlYy5hLnRlc3QAcHctYWxpY2U=\r\n").await;
    let r = c.until("b3 ").await;
    assert!(r.starts_with("b3 OK"), "{r}");
    let r = c.imap("b4", "LOGOUT").await;
    assert!(r.starts_with("* BYE") && r.contains("b4 OK"), "{r}");
}

#[tokio::test]
async fn imap_select_fetch_search_store_copy_expunge_append_and_folders() {
    let f = fixture().await;
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    assert!(
        c.imap("a", "LOGIN \"alice@pec.a.test\" {8+}\r\npw-alice")
            .await
            .contains("a OK")
    );
    let r = c.imap("l", "LIST \"\" \"*\"").await;
    assert!(
        // RFC 3501 §9: a mailbox is an astring; imap-codec writes INBOX as the atom.
        r.contains("* LIST () \"/\" INBOX\r\n") && r.contains("\"Sent\""),
        "{r}"
    );
    let r = c.imap("s", "SELECT inbox").await;
    assert!(
        r.contains("* 2 EXISTS") && r.contains("[UIDVALIDITY ") && r.contains("[UIDNEXT 3]"),
        "{r}"
    );
    // RFC 3501 §2.3.2: the first session to select the mailbox sees both messages \Recent.
    assert!(r.contains("* 2 RECENT\r\n"), "{r}");
    assert!(
        r.contains("* OK [UNSEEN 1]") && r.contains("s OK [READ-WRITE]"),
        "{r}"
    );

    let r = c
        .imap("f1", "FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)")
        .await;
    assert!(
        r.contains(&format!(
            "* 1 FETCH (FLAGS (\\Recent) UID 1 RFC822.SIZE {} INTERNALDATE \"01-Dec-2025 09:00:00 +0000\")",
            M1.len()
        )),
        "{r}"
    );
    let r = c.imap("f2", "FETCH 2 (ENVELOPE BODYSTRUCTURE)").await;
    assert!(
        r.contains("\"Fattura\" ((NIL NIL \"luigi\" \"pec.c.test\"))"),
        "{r}"
    );
    assert!(r.contains("(\"APPLICATION\" \"PDF\" (\"NAME\" \"f.pdf\") NIL NIL \"BASE64\" 12 NIL (\"ATTACHMENT\" (\"FILENAME\" \"f.pdf\")) NIL NIL) \"MIXED\" (\"BOUNDARY\" \"XX\")"), "{r}");
    let r = c
        .imap("f3", "FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        .await;
    assert!(
        r.contains("BODY[HEADER.FIELDS (SUBJECT)] {22}\r\nSubject: Contratto\r\n\r\n"),
        "{r}"
    );
    let r = c
        .imap("f4", "FETCH 2 (BODY[1] BODY.PEEK[2]<0.4> RFC822.HEADER)")
        .await;
    assert!(
        r.contains("BODY[1] {23}\r\nIn allegato la fattura.")
            && r.contains("BODY[2]<0> {4}\r\nJVBE"),
        "{r}"
    );
    assert!(r.contains("RFC822.HEADER {"), "{r}");
    // BODY[1] was not PEEK: message 2 is now \Seen, and the response said so.
    assert!(r.contains("FLAGS (\\Seen \\Recent)"), "{r}");
    let r = c.imap("f5", "FETCH 1 RFC822").await;
    assert!(
        r.contains(&format!("RFC822 {{{}}}\r\n{M1}", M1.len())),
        "{r}"
    );
    let r = c.imap("f6", "FETCH 1 (BODY[TEXT] BODY[HEADER])").await;
    assert!(
        r.contains("BODY[TEXT] {38}\r\nTesto del contratto\r\n.riga con punto\r\n"),
        "{r}"
    );

    let search = |q: &'static str| q;
    for (q, want) in [
        (search("SEARCH ALL"), "* SEARCH 1 2\r\n"),
        ("SEARCH FROM rossi", "* SEARCH 1\r\n"),
        ("SEARCH SUBJECT \"fattura\"", "* SEARCH 2\r\n"),
        (
            "SEARCH OR SUBJECT fattura SUBJECT contratto",
            "* SEARCH 1 2\r\n",
        ),
        ("SEARCH NOT TO alice", "* SEARCH\r\n"),
        ("SEARCH HEADER Message-ID m1@pec", "* SEARCH 1\r\n"),
        ("SEARCH LARGER 300", "* SEARCH 2\r\n"),
        ("SEARCH SMALLER 300", "* SEARCH 1\r\n"),
        ("SEARCH SINCE 1-Dec-2025", "* SEARCH 1 2\r\n"),
        ("SEARCH BEFORE 1-Dec-2025", "* SEARCH\r\n"),
        ("SEARCH CHARSET UTF-8 BODY allegato", "* SEARCH 2\r\n"),
        ("SEARCH 2 SEEN", "* SEARCH 2\r\n"),
        ("UID SEARCH UID 2:*", "* SEARCH 2\r\n"),
    ] {
        let r = c.imap("q", q).await;
        assert!(r.starts_with(want), "{q}: {r}");
    }
    c.imap("u0", "STORE 1 -FLAGS.SILENT (\\Seen)").await;
    assert!(
        c.imap("q", "SEARCH UNSEEN")
            .await
            .starts_with("* SEARCH 1\r\n")
    );
    assert!(c.imap("q", "SEARCH FOO").await.contains("q BAD"));

    let r = c.imap("st", "STORE 2 +FLAGS (\\Flagged)").await;
    assert!(
        r.contains("* 2 FETCH (FLAGS (\\Seen \\Flagged \\Recent))"),
        "{r}"
    );
    let r = c.imap("st", "UID STORE 2 -FLAGS.SILENT (\\Flagged)").await;
    assert!(r.starts_with("st OK"), "{r}");
    assert!(
        c.imap("st", "STORE 2 +FLAGS (\\Recent)")
            .await
            .contains("st BAD")
    );

    assert!(c.imap("c", "CREATE Archivio").await.contains("c OK"));
    assert!(c.imap("c", "CREATE Archivio").await.contains("c NO"));
    assert!(c.imap("c", "COPY 1 Archivio").await.contains("c OK"));
    assert!(
        c.imap("c", "COPY 1 Missing")
            .await
            .contains("c NO [TRYCREATE]")
    );
    let r = c
        .imap("c", "STATUS Archivio (MESSAGES UIDNEXT UNSEEN)")
        .await;
    assert!(
        r.contains("* STATUS \"Archivio\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"),
        "{r}"
    );

    c.imap("e", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    let r = c.imap("e", "EXPUNGE").await;
    assert!(
        r.starts_with("* 1 EXPUNGE\r\n") && r.contains("e OK"),
        "{r}"
    );
    let r = c.imap("e", "FETCH 1 UID").await;
    assert!(r.contains("* 1 FETCH (UID 2)"), "{r}");
    // UIDs are never reused: a new message after the expunge gets UID 3.
    c.send("ap APPEND INBOX (\\Seen) \"05-Dec-2025 10:00:00 +0100\" {24}\r\n")
        .await;
    assert!(c.line().await.starts_with("+ "));
    c.send("Subject: appeso\r\n\r\ncorpo\r\n").await;
    let r = c.until("ap ").await;
    // RFC 4315 §3: APPENDUID <uidvalidity> <uid>; the session's own APPEND is \Recent to it.
    assert!(
        r.contains("* 2 EXISTS\r\n* 2 RECENT\r\n") && r.contains("ap OK [APPENDUID "),
        "{r}"
    );
    assert!(r.contains(" 3] APPEND completed"), "{r}");
    let r = c.imap("ap", "UID FETCH 3 (FLAGS INTERNALDATE)").await;
    assert!(
        r.contains("UID 3 FLAGS (\\Seen \\Recent) INTERNALDATE \"05-Dec-2025 09:00:00 +0000\""),
        "{r}"
    );
    assert!(
        c.imap("ap", "APPEND Nowhere {1+}\r\nx")
            .await
            .contains("ap NO [TRYCREATE]")
    );
    // A literal ending in CRLF keeps it (only the command's own line end is removed).
    assert!(
        c.imap("ap", "APPEND Sent {5+}\r\nx\r\n\r\n")
            .await
            .contains("ap OK")
    );
    let r = c.imap("ap", "STATUS Sent (MESSAGES)").await;
    assert!(r.contains("MESSAGES 1"), "{r}");

    assert!(c.imap("r", "CREATE Archivio/2025").await.contains("r OK"));
    assert!(
        c.imap("r", "RENAME Archivio Vecchio")
            .await
            .contains("r OK")
    );
    let r = c.imap("r", "LIST \"\" \"%\"").await;
    assert!(
        r.contains("\"Vecchio\"") && !r.contains("Archivio") && !r.contains("Vecchio/2025"),
        "{r}"
    );
    let r = c.imap("r", "LIST \"\" \"V*\"").await;
    assert!(r.contains("\"Vecchio/2025\""), "{r}");
    assert!(c.imap("d", "DELETE Vecchio").await.contains("d OK"));
    assert!(c.imap("d", "DELETE INBOX").await.contains("d NO"));
    assert!(c.imap("d", "DELETE Vecchio").await.contains("d NO"));

    assert!(c.imap("x", "FETCH 1 (FLAGS").await.contains("x BAD"));
    assert!(c.imap("x", "FETCH 1 BODY[BOGUS]").await.contains("x BAD"));
    assert!(c.imap("x", "FROB").await.contains("x BAD"));
    assert!(c.imap("x", "CLOSE").await.contains("x OK"));
    assert!(c.imap("x", "FETCH 1 UID").await.contains("x BAD"));
    let r = c.imap("x", "EXAMINE INBOX").await;
    assert!(r.contains("[READ-ONLY]"), "{r}");
    // The first SELECT claimed every message: none is \Recent for a later session.
    assert!(r.contains("* 0 RECENT\r\n"), "{r}");
    assert!(
        c.imap("x", "STORE 1 +FLAGS (\\Deleted)")
            .await
            .contains("x NO")
    );
}

#[tokio::test]
async fn two_clients_stay_consistent_and_idle_is_woken_by_a_delivery() {
    let f = fixture().await;
    let mut a = connect(&f.cfg, true, imap::session);
    let mut b = connect(&f.cfg, true, imap::session);
    for c in [&mut a, &mut b] {
        c.line().await;
        assert!(
            c.imap("l", "LOGIN alice@pec.a.test pw-alice")
                .await
                .contains("l OK")
        );
        assert!(c.imap("s", "SELECT INBOX").await.contains("* 2 EXISTS"));
    }
    a.imap("d", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    let r = b.imap("n", "NOOP").await;
    assert!(r.contains("* 1 FETCH (FLAGS (\\Deleted) UID 1)"), "{r}");
    assert!(a.imap("e", "EXPUNGE").await.contains("* 1 EXPUNGE"));
    let r = b.imap("n", "NOOP").await;
    assert!(r.starts_with("* 1 EXPUNGE\r\n"), "{r}");
    assert!(
        b.imap("f", "FETCH 1 UID")
            .await
            .contains("* 1 FETCH (UID 2)")
    );

    b.send("i IDLE\r\n").await;
    assert_eq!(b.line().await, "+ idling\r\n");
    deliver(&f.store, "alice@pec.a.test", BOB1).await;
    assert_eq!(b.line().await, "* 2 EXISTS\r\n");
    // RFC 3501 §2.3.2: b is the first session told of the new message: \Recent for b only.
    assert_eq!(b.line().await, "* 1 RECENT\r\n");
    b.send("DONE\r\n").await;
    assert_eq!(b.line().await, "i OK IDLE terminated\r\n");
    let r = b.imap("f", "FETCH 2 (FLAGS UID)").await;
    assert!(r.contains("* 2 FETCH (FLAGS (\\Recent) UID 3)"), "{r}");
    // a selected first: its old message 2 (UID 2) stays \Recent for a, the new one is not.
    let r = a.imap("n", "NOOP").await;
    assert!(r.contains("* 2 EXISTS\r\n* 1 RECENT\r\n"), "{r}");
    let r = a.imap("f", "FETCH 1:2 FLAGS").await;
    assert!(
        r.contains("* 1 FETCH (FLAGS (\\Recent))") && r.contains("* 2 FETCH (FLAGS ())"),
        "{r}"
    );
    let r = a.imap("q", "SEARCH RECENT").await;
    assert!(r.starts_with("* SEARCH 1\r\n"), "{r}");
    let r = b.imap("q", "SEARCH NEW").await;
    assert!(r.starts_with("* SEARCH 2\r\n"), "{r}");
}

#[tokio::test]
async fn each_user_sees_only_their_mailbox_and_a_disabled_one_cannot_log_in() {
    let f = fixture().await;
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    assert!(
        c.imap("l", "LOGIN BOB@pec.a.test pw-bob")
            .await
            .contains("l OK")
    );
    assert!(c.imap("s", "SELECT INBOX").await.contains("* 1 EXISTS"));
    let r = c
        .imap("f", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    assert!(r.contains("Per Bob") && !r.contains("Contratto"), "{r}");
    // Alice's password does not open Bob's mailbox.
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    assert!(
        c.imap("l", "LOGIN bob@pec.a.test pw-alice")
            .await
            .contains("l NO")
    );
    let r = c.imap("l", "LOGIN carol@pec.a.test pw-carol").await;
    assert!(
        r.contains("l NO [AUTHENTICATIONFAILED] mailbox disabled"),
        "{r}"
    );
    let mut p = connect(&f.cfg, true, pop3::session);
    p.line().await;
    assert!(p.pop("USER carol@pec.a.test").await.starts_with("+OK"));
    assert!(
        p.pop("PASS pw-carol")
            .await
            .starts_with("-ERR [AUTH] mailbox disabled")
    );
}

#[tokio::test]
async fn pop3_over_stls_lists_retrieves_and_deletes_on_quit() {
    let f = fixture().await;
    let mut p = connect(&f.cfg, false, pop3::session);
    assert!(p.line().await.starts_with("+OK"));
    let capa = p.pop_multi("CAPA").await;
    assert!(
        capa.contains("STLS\r\n") && !capa.contains("USER\r\n"),
        "{capa}"
    );
    assert!(p.pop("USER alice@pec.a.test").await.starts_with("-ERR"));
    assert!(p.pop("STAT").await.starts_with("-ERR"));
    assert!(p.pop("STLS").await.starts_with("+OK"));
    let mut p = p.start_tls(&f.pki.ca_pem).await;
    assert!(p.pop_multi("CAPA").await.contains("USER\r\n"));
    assert!(p.pop("USER alice@pec.a.test").await.starts_with("+OK"));
    assert!(p.pop("PASS nope").await.starts_with("-ERR [AUTH]"));
    assert!(p.pop("USER alice@pec.a.test").await.starts_with("+OK"));
    assert_eq!(p.pop("PASS pw-alice").await, "+OK 2 messages\r\n");
    assert_eq!(
        p.pop("STAT").await,
        format!("+OK 2 {}\r\n", M1.len() + M2.len())
    );
    let list = p.pop_multi("LIST").await;
    assert_eq!(
        list,
        format!("+OK\r\n1 {}\r\n2 {}\r\n.\r\n", M1.len(), M2.len())
    );
    let uidl = p.pop_multi("UIDL").await;
    let uidvalidity = f
        .store
        .folder("alice@pec.a.test", "INBOX")
        .await
        .unwrap()
        .unwrap()
        .uidvalidity;
    assert_eq!(
        uidl,
        format!("+OK\r\n1 {uidvalidity}.1\r\n2 {uidvalidity}.2\r\n.\r\n")
    );
    let retr = p.pop_multi("RETR 1").await;
    // Byte-stuffed: the line ".riga" travels as "..riga" (RFC 1939 §3).
    assert!(
        retr.contains("Testo del contratto\r\n..riga con punto\r\n.\r\n"),
        "{retr}"
    );
    let top = p.pop_multi("TOP 2 0").await;
    assert!(
        top.contains("Subject: Fattura") && !top.contains("--XX"),
        "{top}"
    );
    assert!(p.pop("TOP 2").await.starts_with("-ERR"));
    assert!(p.pop("RETR 9").await.starts_with("-ERR"));
    assert!(p.pop("DELE 1").await.starts_with("+OK"));
    assert!(p.pop("LIST 1").await.starts_with("-ERR"));
    assert!(p.pop("RSET").await.starts_with("+OK"));
    assert!(p.pop("LIST 1").await.starts_with("+OK 1 "));
    assert!(p.pop("DELE 2").await.starts_with("+OK"));
    assert_eq!(p.pop("QUIT").await, "+OK 1 messages deleted, bye\r\n");
    let left = f.store.messages("alice@pec.a.test", "INBOX").await.unwrap();
    assert_eq!(left.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1]);
    // RETR set \Seen, which IMAP then shows.
    assert_eq!(left[0].flags, vec!["\\Seen".to_string()]);
}

#[tokio::test]
async fn pop3_without_quit_deletes_nothing() {
    let f = fixture().await;
    let mut p = connect(&f.cfg, true, pop3::session);
    p.line().await;
    p.pop("USER alice@pec.a.test").await;
    assert!(p.pop("PASS pw-alice").await.starts_with("+OK"));
    assert!(p.pop("DELE 1").await.starts_with("+OK"));
    drop(p);
    // The session ends when it sees end of input; QUIT never came, so the UPDATE state is skipped.
    let mut q = connect(&f.cfg, true, pop3::session);
    q.line().await;
    q.pop("USER alice@pec.a.test").await;
    assert_eq!(q.pop("PASS pw-alice").await, "+OK 2 messages\r\n");
}

/// A fixture whose access configuration is changed by `f`.
async fn fixture_cfg(f: impl FnOnce(&mut reference_gestore::access::AccessConfig)) -> Fixture {
    let mut fx = fixture().await;
    let mut cfg = (*fx.cfg).clone();
    f(&mut cfg);
    fx.cfg = std::sync::Arc::new(cfg);
    fx
}

#[tokio::test]
async fn imap_closes_after_too_many_failed_logins_of_either_kind() {
    let f = fixture().await;
    assert_eq!(f.cfg.auth.max_failures, 3);
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    let r = c.imap("a1", "LOGIN alice@pec.a.test wrong").await;
    assert_eq!(r, "a1 NO [AUTHENTICATIONFAILED] invalid credentials\r\n");
    // AUTHENTICATE PLAIN counts too: "\0alice@pec.a.test\0wrong".
    let r = c
        .imap("a2", "AUTHENTICATE PLAIN AGFsaWNlQHBlYy5hLnRlc3QAd3Jvbmc=")
        .await;
    assert!(r.starts_with("a2 NO [AUTHENTICATIONFAILED]"), "{r}");
    // Commands that are not logins do not reset the count.
    assert!(c.imap("n", "NOOP").await.starts_with("n OK"));
    let r = c.imap("a3", "LOGIN alice@pec.a.test wrong").await;
    assert_eq!(
        r,
        "* BYE too many failed logins\r\na3 NO [AUTHENTICATIONFAILED] invalid credentials\r\n"
    );
    assert!(c.closed().await, "the session must end after the BYE");

    // The limit is per connection and configurable; a success before it keeps the session.
    let f = fixture_cfg(|c| c.auth.max_failures = 1).await;
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    let r = c.imap("a1", "LOGIN alice@pec.a.test wrong").await;
    assert!(
        r.starts_with("* BYE too many failed logins\r\na1 NO"),
        "{r}"
    );
    assert!(c.closed().await);
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    assert!(
        c.imap("a1", "LOGIN alice@pec.a.test pw-alice")
            .await
            .starts_with("a1 OK")
    );
}

#[tokio::test]
async fn pop3_closes_after_too_many_failed_passwords() {
    let f = fixture().await;
    let mut p = connect(&f.cfg, true, pop3::session);
    p.line().await;
    for i in 1..=3 {
        assert!(p.pop("USER alice@pec.a.test").await.starts_with("+OK"));
        let r = p.pop("PASS wrong").await;
        if i < 3 {
            assert_eq!(r, "-ERR [AUTH] invalid credentials\r\n");
        } else {
            assert_eq!(
                r,
                "-ERR [AUTH] invalid credentials; too many failures, closing\r\n"
            );
        }
    }
    assert!(p.closed().await, "the session must end");
    // A disabled mailbox with the right password is not a guess: it does not count.
    let f = fixture_cfg(|c| c.auth.max_failures = 1).await;
    let mut p = connect(&f.cfg, true, pop3::session);
    p.line().await;
    for _ in 0..2 {
        p.pop("USER carol@pec.a.test").await;
        assert_eq!(
            p.pop("PASS pw-carol").await,
            "-ERR [AUTH] mailbox disabled\r\n"
        );
    }
    p.pop("USER bob@pec.a.test").await;
    assert!(p.pop("PASS pw-bob").await.starts_with("+OK 1 messages"));
}

#[tokio::test]
async fn imap_literals_are_bounded_per_command() {
    let f = fixture_cfg(|c| {
        c.max_append_size = 100;
        c.max_command_literals = 50;
    })
    .await;
    let mut c = connect(&f.cfg, true, imap::session);
    let greeting = c.line().await;
    assert!(greeting.contains(" APPENDLIMIT=100]"), "{greeting}");
    // Over the cap: refused instead of the continuation request (RFC 3501 §7.5); the session goes
    // on with the next command.
    c.send("a1 LOGIN {51}\r\n").await;
    assert_eq!(
        c.line().await,
        "a1 BAD the literals of this command exceed 50 octets\r\n"
    );
    // Two literals that fit one by one but not together.
    c.send("a2 LOGIN {30}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(&format!("{} {{21}}\r\n", "u".repeat(30))).await;
    assert_eq!(
        c.line().await,
        "a2 BAD the literals of this command exceed 50 octets\r\n"
    );
    assert!(
        c.imap("a3", "LOGIN {16+}\r\nalice@pec.a.test {8+}\r\npw-alice")
            .await
            .starts_with("a3 OK")
    );
    // APPEND: the message may reach APPENDLIMIT (RFC 7889), not more.
    c.send("p1 APPEND INBOX {101}\r\n").await;
    assert_eq!(
        c.line().await,
        "p1 NO [TOOBIG] APPEND: the message exceeds the limit of 100 octets\r\n"
    );
    let msg = format!("Subject: x\r\n\r\n{}", "y".repeat(100 - 14));
    assert_eq!(msg.len(), 100);
    let r = c
        .imap("p2", &format!("APPEND INBOX {{100+}}\r\n{msg}"))
        .await;
    assert!(r.contains("p2 OK [APPENDUID "), "{r}");
    assert_eq!(
        f.store
            .messages("alice@pec.a.test", "INBOX")
            .await
            .unwrap()
            .len(),
        3
    );
    // A non-synchronising literal over the cap is already on its way: refused, BYE, closed.
    c.send("n1 APPEND INBOX {101+}\r\n").await;
    assert_eq!(
        c.line().await,
        "n1 NO [TOOBIG] APPEND: the message exceeds the limit of 100 octets\r\n"
    );
    assert_eq!(c.line().await, "* BYE literal too large\r\n");
    assert!(c.closed().await);

    // So is a line during IDLE: one without end is not buffered.
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    c.imap("l", "LOGIN alice@pec.a.test pw-alice").await;
    c.send("i IDLE\r\n").await;
    assert_eq!(c.line().await, "+ idling\r\n");
    c.send(&"D".repeat(70 * 1024)).await;
    assert_eq!(c.line().await, "* BYE line too long during IDLE\r\n");
    assert!(c.closed().await);

    // The lines of one command are bounded too, literals or not.
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    c.send(&format!("x NOOP {}\r\n", "a".repeat(70 * 1024)))
        .await;
    assert_eq!(c.line().await, "* BYE command line too long\r\n");
    assert!(c.closed().await);
}

#[tokio::test]
async fn imap_uidplus_and_move() {
    let f = fixture().await;
    deliver(&f.store, "alice@pec.a.test", BOB1).await;
    let mut c = connect(&f.cfg, true, imap::session);
    let greeting = c.line().await;
    assert!(greeting.contains(" UIDPLUS MOVE "), "{greeting}");
    c.imap("l", "LOGIN alice@pec.a.test pw-alice").await;
    let dest = f
        .store
        .folder("alice@pec.a.test", "Sent")
        .await
        .unwrap()
        .unwrap();
    let v = dest.uidvalidity;
    c.imap("s", "SELECT INBOX").await;
    // COPY: COPYUID with ranges, source and destination in the same order (RFC 4315 §3).
    let r = c.imap("c", "COPY 1,3 Sent").await;
    assert_eq!(r, format!("c OK [COPYUID {v} 1,3 1:2] COPY completed\r\n"));
    // Nothing copied: no COPYUID.
    assert_eq!(
        c.imap("c", "UID COPY 9 Sent").await,
        "c OK COPY completed\r\n"
    );
    // UID EXPUNGE removes only the \Deleted messages whose UIDs are in the set.
    c.imap("d", "STORE 1:3 +FLAGS.SILENT (\\Deleted)").await;
    let r = c.imap("e", "UID EXPUNGE 2").await;
    assert_eq!(r, "* 2 EXPUNGE\r\ne OK EXPUNGE completed\r\n");
    c.imap("d", "STORE 1:2 -FLAGS.SILENT (\\Deleted)").await;
    // MOVE (RFC 6851 §4.3): untagged OK with COPYUID, then the EXPUNGEs, then the tagged OK.
    let r = c.imap("m", "UID MOVE 3 Sent").await;
    assert_eq!(
        r,
        format!("* OK [COPYUID {v} 3 3] moved\r\n* 2 EXPUNGE\r\nm OK MOVE completed\r\n")
    );
    let r = c.imap("m", "MOVE 1 Nowhere").await;
    assert!(r.starts_with("m NO [TRYCREATE]"), "{r}");
    let r = c.imap("m", "MOVE 1 INBOX").await;
    assert!(
        r.contains("* 1 EXPUNGE\r\n") && r.contains("* 1 EXISTS\r\n"),
        "{r}"
    );
    let sent: Vec<i64> = f
        .store
        .messages("alice@pec.a.test", "Sent")
        .await
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(sent, [1, 2, 3]);
    // EXAMINE is read-only: no MOVE.
    c.imap("x", "EXAMINE Sent").await;
    assert!(c.imap("m", "MOVE 1 INBOX").await.starts_with("m NO"));
    assert!(c.imap("e", "UID EXPUNGE 1").await.starts_with("e NO"));
}

#[tokio::test]
async fn recent_belongs_to_the_first_read_write_session() {
    let f = fixture().await;
    let mut a = connect(&f.cfg, true, imap::session);
    a.line().await;
    a.imap("l", "LOGIN alice@pec.a.test pw-alice").await;
    let r = a.imap("st", "STATUS INBOX (RECENT)").await;
    assert!(r.contains("(RECENT 2)"), "{r}");
    // EXAMINE shows them recent but leaves them for the next session.
    let r = a.imap("x", "EXAMINE INBOX").await;
    assert!(r.contains("* 2 RECENT\r\n"), "{r}");
    let r = a.imap("s", "SELECT INBOX").await;
    assert!(r.contains("* 2 RECENT\r\n"), "{r}");
    let r = a.imap("q", "SEARCH RECENT").await;
    assert!(r.starts_with("* SEARCH 1 2\r\n"), "{r}");
    let r = a.imap("q", "SEARCH OLD").await;
    assert!(r.starts_with("* SEARCH\r\n"), "{r}");
    let mut b = connect(&f.cfg, true, imap::session);
    b.line().await;
    b.imap("l", "LOGIN alice@pec.a.test pw-alice").await;
    let r = b.imap("st", "STATUS INBOX (RECENT MESSAGES)").await;
    assert!(r.contains("(RECENT 0 MESSAGES 2)"), "{r}");
    let r = b.imap("s", "SELECT INBOX").await;
    assert!(r.contains("* 0 RECENT\r\n"), "{r}");
    let r = b.imap("f", "FETCH 1 FLAGS").await;
    assert!(r.contains("* 1 FETCH (FLAGS ())"), "{r}");
    // A session that ends gives nothing back: a third session sees no \Recent either.
    let mut c = connect(&f.cfg, true, imap::session);
    c.line().await;
    c.imap("l", "LOGIN alice@pec.a.test pw-alice").await;
    assert!(c.imap("s", "SELECT INBOX").await.contains("* 0 RECENT\r\n"));
}
