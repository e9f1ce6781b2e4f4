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
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED"),
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
        r.contains("* LIST () \"/\" \"INBOX\"") && r.contains("\"Sent\""),
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
