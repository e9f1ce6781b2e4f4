//! The flows of the digest's checklist §15 A-D, over real SMTP and TLS on loopback between embedded
//! providers, each outcome read back from the mailboxes.

mod common;

use common::*;
use pec_formats::kind::{Errore, Tipo, TipoDestinatario};

/// A1: From differs from MAIL FROM and the user → non-accettazione, no envelope.
#[tokio::test(flavor = "multi_thread")]
async fn a1_from_mismatch_is_not_accepted_and_nothing_is_sent() {
    let t = Topo::start(2, |_, _| {}).await;
    let (alice, bob) = (t.user(0, 0), t.user(1, 1));
    let m = plain_message(&t.user(0, 2), &[&bob], &[], "mittente falso", "");
    let r = t.submit(0, &alice, &[&bob], &m).await.unwrap();
    assert!(r.data.unwrap().text.contains("non accettato"));
    let inbox = t.wait(0, &alice, &["non-accettazione"]).await;
    let d = daticert_of(&inbox[0].raw);
    assert_eq!(d.tipo, Tipo::NonAccettazione);
    assert!(d.dati.errore_esteso.unwrap().contains("non coincide"));
    t.settle().await;
    assert!(t.mailbox(1, &bob).await.is_empty(), "an envelope was sent");
}

/// A2, A3: a Bcc, a recipient not in the headers, no To → each its own non-accettazione.
#[tokio::test(flavor = "multi_thread")]
async fn a2_a3_bcc_hidden_recipient_and_missing_to_are_not_accepted() {
    let t = Topo::start(1, |_, _| {}).await;
    let (alice, bob, carol) = (t.user(0, 0), t.user(0, 1), t.user(0, 2));
    let bcc = plain_message(
        &alice,
        &[&bob],
        &[],
        "con bcc",
        &format!("Bcc: {carol}\r\n"),
    );
    t.submit(0, &alice, &[&bob, &carol], &bcc).await.unwrap();
    let hidden = plain_message(&alice, &[&bob], &[], "nascosto", "");
    t.submit(0, &alice, &[&bob, &carol], &hidden).await.unwrap();
    let no_to =
        plain_message(&alice, &[&bob], &[], "senza to", "").replace(&format!("To: {bob}\r\n"), "");
    t.submit(0, &alice, &[&bob], &no_to).await.unwrap();
    let inbox = t
        .wait(
            0,
            &alice,
            &["non-accettazione", "non-accettazione", "non-accettazione"],
        )
        .await;
    let reasons: Vec<String> = inbox
        .iter()
        .map(|m| daticert_of(&m.raw).dati.errore_esteso.unwrap_or_default())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("Bcc")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("non compare nei campi To o Cc")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("To")), "{reasons:?}");
    t.settle().await;
    assert!(t.mailbox(0, &bob).await.is_empty());
}

/// A4: over the profile's size (× recipients) → non-accettazione; over the hard limit → 552 at SMTP.
#[tokio::test(flavor = "multi_thread")]
async fn a4_oversize_is_not_accepted_and_the_hard_limit_is_an_smtp_refusal() {
    let t = Topo::start(1, |_, c| {
        c.profile.max_message_size = reference_gestore::config::ByteSize(2_000);
        c.profile.hard_message_size = reference_gestore::config::ByteSize(20_000);
    })
    .await;
    let (alice, bob, carol) = (t.user(0, 0), t.user(0, 1), t.user(0, 2));
    let body = "x".repeat(70) + "\r\n";
    // 1.2 kB × 2 recipients counts 2.4 kB: over 2 kB.
    let m = plain_message(&alice, &[&bob, &carol], &[], "grande", "") + &body.repeat(12);
    t.submit(0, &alice, &[&bob, &carol], &m).await.unwrap();
    let inbox = t.wait(0, &alice, &["non-accettazione"]).await;
    assert!(
        daticert_of(&inbox[0].raw)
            .dati
            .errore_esteso
            .unwrap()
            .contains("dimensione")
    );
    let huge = plain_message(&alice, &[&bob], &[], "enorme", "") + &body.repeat(400);
    let e = t.submit(0, &alice, &[&bob], &huge).await.unwrap_err();
    assert!(e.to_string().contains("552"), "{e}");
}

/// A5: EICAR at the access point → non-accettazione per virus with X-VerificaSicurezza.
#[tokio::test(flavor = "multi_thread")]
async fn a5_a_virus_at_the_access_point_is_not_accepted() {
    let t = Topo::start(1, |_, _| {}).await;
    let (alice, bob) = (t.user(0, 0), t.user(0, 1));
    let eicar = String::from_utf8(reference_gestore::antivirus::eicar()).unwrap();
    let m = plain_message(&alice, &[&bob], &[], "virus", "") + &eicar + "\r\n";
    let r = t.submit(0, &alice, &[&bob], &m).await.unwrap();
    assert!(r.data.unwrap().text.contains("virus"));
    let inbox = t.wait(0, &alice, &["non-accettazione-virus"]).await;
    let raw = String::from_utf8_lossy(&inbox[0].raw).into_owned();
    assert!(raw.contains("X-VerificaSicurezza: errore"));
    assert!(raw.contains("Subject: AVVISO DI NON ACCETTAZIONE PER VIRUS: virus"));
    assert_eq!(daticert_of(&inbox[0].raw).errore, Errore::Virus);
    t.settle().await;
    assert!(t.mailbox(0, &bob).await.is_empty());
}

/// A6, A7, B1, C1: To + Cc with breve; certified and ordinary recipients typed; the breve and
/// sintetica receipts; one presa in carico covering both recipients; one identificativo throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a6_c1_to_and_cc_with_breve_give_the_right_receipts() {
    let t = Topo::start(2, |_, _| {}).await;
    let (alice, bob, carol) = (t.user(0, 0), t.user(1, 1), t.user(1, 2));
    let extra = "X-TipoRicevuta: breve\r\n";
    let mut m = plain_message(&alice, &[&bob], &[&carol], "contratto", extra);
    m = m.replace(
        "Content-Type: text/plain; charset=utf-8\r\n\r\nTesto di prova.\r\n",
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nTesto\r\n--b1\r\nContent-Type: application/pdf; name=\"c.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n",
    );
    t.submit(0, &alice, &[&bob, &carol], &m).await.unwrap();
    let inbox = t
        .wait(
            0,
            &alice,
            &["accettazione", "avvenuta-consegna", "avvenuta-consegna"],
        )
        .await;
    let acc = inbox.iter().find(|m| m.kind == "accettazione").unwrap();
    let acc_d = daticert_of(&acc.raw);
    // E1 (RFC 6109 §4.1): one time value per transaction: the Date header, the daticert data and
    // the text of the acceptance say the same instant.
    let at = acc_d.dati.data.to_instant().unwrap();
    let parsed = pec_formats::parse::parse(&acc.raw).unwrap();
    assert_eq!(
        parsed.header("Date"),
        Some(pec_formats::time::rfc5322_date(at).as_str())
    );
    assert!(
        parsed
            .text
            .unwrap()
            .contains(&pec_formats::time::text_time(at))
    );
    assert!(
        acc_d
            .intestazione
            .destinatari
            .iter()
            .all(|d| d.tipo == TipoDestinatario::Certificato)
    );
    assert_eq!(acc_d.dati.msgid.as_deref(), Some("<contratto@client.test>"));
    let env = &t.wait(1, &bob, &["posta-certificata"]).await[0];
    assert_eq!(
        env.message_id.as_deref(),
        Some(acc_d.dati.identificativo.as_str())
    );
    for r in inbox.iter().filter(|m| m.kind == "avvenuta-consegna") {
        let d = daticert_of(&r.raw);
        assert_eq!(d.dati.identificativo, acc_d.dati.identificativo);
        let text = String::from_utf8_lossy(&r.raw).into_owned();
        let parsed = pec_formats::parse::parse(&r.raw).unwrap();
        match d.dati.consegna.as_deref() {
            Some(c) if c == bob => {
                // RFC 6109 §3.3.2.2: breve for To: the attachment replaced by its hash.
                let orig = String::from_utf8_lossy(parsed.postacert.as_ref().expect("original"))
                    .into_owned();
                assert!(orig.contains("c.pdf.hash"), "{text}");
            }
            Some(c) if c == carol => assert!(parsed.postacert.is_none(), "Cc gets sintetica"),
            other => panic!("unexpected consegna {other:?}"),
        }
    }
    let presa = t.wait(0, &t.service(0), &["presa-in-carico"]).await;
    assert_eq!(presa.len(), 1, "one presa in carico per transaction");
    let mut covered = daticert_of(&presa[0].raw).dati.ricezione;
    covered.sort();
    assert_eq!(covered, vec![bob.clone(), carol.clone()]);
}

/// An ordinary recipient is typed esterno, gets the envelope attempt, and starts no timer.
#[tokio::test(flavor = "multi_thread")]
async fn an_ordinary_recipient_is_esterno_and_has_no_timers() {
    let t = Topo::start(1, |_, _| {}).await;
    let alice = t.user(0, 0);
    let out = "mario@example.org";
    t.submit(
        0,
        &alice,
        &[out],
        &plain_message(&alice, &[out], &[], "esterno", ""),
    )
    .await
    .unwrap();
    let inbox = t.wait(0, &alice, &["accettazione"]).await;
    let d = daticert_of(&inbox[0].raw);
    assert_eq!(
        d.intestazione.destinatari[0].tipo,
        TipoDestinatario::Esterno
    );
    t.clock.advance(chrono::Duration::hours(25));
    t.settle().await;
    assert!(
        !t.mailbox(0, &alice)
            .await
            .iter()
            .any(|m| m.kind == "preavviso-errore-consegna")
    );
}

/// B2: ordinary mail, an unsigned PEC look-alike, a signature by an unknown CA and a tampered
/// envelope all become a busta di anomalia, with no receipt.
#[tokio::test(flavor = "multi_thread")]
async fn b2_everything_not_valid_pec_becomes_an_anomaly_envelope() {
    let t = Topo::start(2, |_, _| {}).await;
    let (alice, bob, carol) = (t.user(0, 0), t.user(1, 1), t.user(1, 2));
    // A real envelope to tamper with.
    t.submit(
        0,
        &alice,
        &[&bob],
        &plain_message(&alice, &[&bob], &[], "originale", ""),
    )
    .await
    .unwrap();
    let env = t.wait(1, &bob, &["posta-certificata"]).await[0].raw.clone();
    let mut tampered = env.clone();
    let at = tampered
        .windows(14)
        .position(|w| w == b"Testo di prova")
        .unwrap_or(tampered.len() - 10);
    tampered[at] ^= 0x20;
    // The same envelope signed by a CA the directory does not know.
    let rogue_ca = pec_formats::pki::TestCa::generate("Rogue CA").unwrap();
    let rogue = rogue_ca
        .issue_provider("Gestore di prova A", &t.service(0))
        .unwrap();
    let rogue_signer = rogue.signer(Default::default());
    let p = pec_formats::build::Provider::new("Gestore di prova A", "pec.a.test", &rogue_signer);
    let orig = plain_message(&alice, &[&carol], &[], "firmato male", "");
    let c = pec_formats::build::Certification::from_submission(
        orig.as_bytes(),
        &alice,
        std::slice::from_ref(&carol),
        &|_| TipoDestinatario::Certificato,
        "rogue1@pec.a.test".into(),
        chrono::Utc::now(),
    )
    .unwrap();
    let untrusted = pec_formats::build::busta_trasporto(&p, &c, orig.as_bytes())
        .unwrap()
        .raw;
    let ordinary = plain_message("someone@example.org", &[&carol], &[], "posta ordinaria", "");
    let unsigned = plain_message(
        &alice,
        &[&carol],
        &[],
        "non firmato",
        "X-Trasporto: posta-certificata\r\n",
    );
    for raw in [
        ordinary.as_bytes(),
        unsigned.as_bytes(),
        &untrusted,
        &tampered,
    ] {
        t.inject(1, "someone@example.org", &[&carol], raw)
            .await
            .unwrap();
    }
    let inbox = t
        .wait(1, &carol, &["anomalia", "anomalia", "anomalia", "anomalia"])
        .await;
    assert!(
        inbox.iter().all(|m| m.kind == "anomalia"),
        "{:?}",
        inbox.iter().map(|m| &m.kind).collect::<Vec<_>>()
    );
    for m in &inbox {
        let text = String::from_utf8_lossy(&m.raw).into_owned();
        assert!(text.contains("X-Trasporto: errore"));
        assert!(text.contains("Subject: ANOMALIA MESSAGGIO: "));
    }
    t.settle().await;
    // No receipt for any of them: A got only the receipts of the original envelope.
    let a = t.mailbox(0, &alice).await;
    assert_eq!(
        a.iter().filter(|m| m.kind == "avvenuta-consegna").count(),
        1
    );
}

/// B2, revocation (digest §7.2: the reception point checks the CRL): B's config lists a CRL of
/// the test CA that revokes A's signing certificate, so A's envelope is not valid PEC for B: the
/// recipient gets an anomaly envelope and A gets no presa in carico.
#[tokio::test(flavor = "multi_thread")]
async fn b2_an_envelope_signed_with_a_revoked_certificate_becomes_an_anomaly() {
    let t = Topo::start(2, |i, c| {
        if i != 1 {
            return;
        }
        let ca_dir = c.trust[0].parent().unwrap().to_path_buf();
        let ca = pec_formats::pki::TestCa::load_from(&ca_dir).unwrap();
        let a_cert = std::fs::read(ca_dir.join("gestore-a/signer.pem")).unwrap();
        let a_cert = openssl::x509::X509::from_pem(&a_cert).unwrap();
        let now = chrono::Utc::now();
        let revoked = ca
            .revoke(
                &a_cert,
                now - chrono::Duration::hours(1),
                Some(pec_formats::smime::RevocationReason::KeyCompromise),
            )
            .unwrap();
        let crl = ca
            .crl(
                &[revoked],
                now - chrono::Duration::hours(1),
                now + chrono::Duration::days(7),
                1,
            )
            .unwrap();
        let file = ca_dir.join("ca-crl.pem");
        std::fs::write(&file, crl.to_pem().unwrap()).unwrap();
        c.trust_crls = vec![file];
    })
    .await;
    let (alice, bob) = (t.user(0, 0), t.user(1, 1));
    t.submit(
        0,
        &alice,
        &[&bob],
        &plain_message(&alice, &[&bob], &[], "firmato con certificato revocato", ""),
    )
    .await
    .unwrap();
    let inbox = t.wait(1, &bob, &["anomalia"]).await;
    let text = String::from_utf8_lossy(&inbox[0].raw).into_owned();
    assert!(text.contains("X-Trasporto: errore"), "{text}");
    t.settle().await;
    let a = t.mailbox(0, &alice).await;
    assert!(
        !a.iter()
            .any(|m| m.kind == "presa-in-carico" || m.kind == "avvenuta-consegna"),
        "{:?}",
        a.iter().map(|m| &m.kind).collect::<Vec<_>>()
    );
    // Bob holds the anomaly envelope and nothing else: no busta di trasporto was delivered.
    assert_eq!(t.mailbox(1, &bob).await.len(), 1);
}

/// B4: a virus found by the recipient's provider → rilevazione virus to the sender's provider,
/// which gives its user the mancata consegna per virus; nothing delivered.
#[tokio::test(flavor = "multi_thread")]
async fn b4_a_virus_at_the_reception_point_reaches_the_sender_as_mancata_consegna_per_virus() {
    let t = Topo::start(2, |_, _| {}).await;
    let alice = t.user(0, 0);
    let target = t.at(1, "test-virus");
    t.submit(
        0,
        &alice,
        &[&target],
        &plain_message(&alice, &[&target], &[], "infetto", ""),
    )
    .await
    .unwrap();
    t.wait(0, &t.service(0), &["rilevazione-virus"]).await;
    let inbox = t
        .wait(0, &alice, &["accettazione", "errore-consegna-virus"])
        .await;
    let n = inbox
        .iter()
        .find(|m| m.kind == "errore-consegna-virus")
        .unwrap();
    let raw = String::from_utf8_lossy(&n.raw).into_owned();
    assert!(raw.contains("X-VerificaSicurezza: errore"));
    assert_eq!(daticert_of(&n.raw).errore, Errore::Virus);
    // The transaction is closed: no timeout notice later.
    t.clock.advance(chrono::Duration::hours(25));
    t.settle().await;
    assert!(
        !t.mailbox(0, &alice)
            .await
            .iter()
            .any(|m| m.kind == "preavviso-errore-consegna")
    );
}

/// C2 and the full mailbox: mancata consegna with the spec's errore values, no timeout later.
#[tokio::test(flavor = "multi_thread")]
async fn c2_unknown_and_full_mailboxes_get_mancata_consegna() {
    let t = Topo::start(2, |_, _| {}).await;
    let alice = t.user(0, 0);
    let (unknown, full) = (t.at(1, "nessuno"), t.at(1, "test-casella-piena"));
    t.submit(
        0,
        &alice,
        &[&unknown, &full],
        &plain_message(&alice, &[&unknown, &full], &[], "errori", ""),
    )
    .await
    .unwrap();
    let inbox = t
        .wait(0, &alice, &["errore-consegna", "errore-consegna"])
        .await;
    for m in inbox.iter().filter(|m| m.kind == "errore-consegna") {
        let d = daticert_of(&m.raw);
        assert_eq!(d.tipo, Tipo::ErroreConsegna);
        match d.dati.consegna.as_deref() {
            Some(c) if c == unknown => assert_eq!(d.errore, Errore::NoDest),
            Some(c) if c == full => {
                assert!(d.dati.errore_esteso.unwrap().contains("casella piena"))
            }
            other => panic!("{other:?}"),
        }
    }
    t.clock.advance(chrono::Duration::hours(25));
    t.settle().await;
    assert!(
        !t.mailbox(0, &alice)
            .await
            .iter()
            .any(|m| m.kind == "preavviso-errore-consegna")
    );
}

/// C3 and "a receipt never causes a receipt": a receipt injected again is delivered as it is and
/// produces nothing.
#[tokio::test(flavor = "multi_thread")]
async fn c3_receipts_are_delivered_as_they_are_and_cause_no_receipt() {
    let t = Topo::start(2, |_, _| {}).await;
    let (alice, bob) = (t.user(0, 0), t.user(1, 1));
    t.submit(
        0,
        &alice,
        &[&bob],
        &plain_message(&alice, &[&bob], &[], "ricevuta", ""),
    )
    .await
    .unwrap();
    let inbox = t
        .wait(0, &alice, &["accettazione", "avvenuta-consegna"])
        .await;
    let receipt = inbox
        .iter()
        .find(|m| m.kind == "avvenuta-consegna")
        .unwrap()
        .raw
        .clone();
    // The receipt goes to carol at A as B would send it.
    let carol = t.user(0, 2);
    t.inject(0, &t.service(1), &[&carol], &receipt)
        .await
        .unwrap();
    let got = t.wait(0, &carol, &["avvenuta-consegna"]).await;
    // Delivered unchanged but for our trace field on top (RFC 5321 §4.4).
    assert!(got[0].raw.starts_with(b"Received: from "));
    assert!(got[0].raw.ends_with(&receipt), "delivered unchanged");
    let added = got[0].raw.len() - receipt.len();
    assert!(
        got[0].raw[..added].ends_with(b"\r\n")
            && !got[0].raw[..added].windows(2).any(|w| w == b"\n\n")
    );
    t.settle().await;
    assert_eq!(
        t.mailbox(1, &t.service(1)).await.len(),
        0,
        "no presa in carico for a receipt"
    );
    assert_eq!(t.mailbox(0, &alice).await.len(), 2);
}

/// D1 with the reserved silent recipient: the peer takes the envelope and never answers, so the
/// sender gets the 12h preavviso and then the 24h notice (RFC 6109 §3.1.6, case 3).
#[tokio::test(flavor = "multi_thread")]
async fn d1_a_peer_that_never_answers_yields_both_timeout_notices() {
    let t = Topo::start(2, |_, _| {}).await;
    let alice = t.user(0, 0);
    let silent = t.at(1, "test-nessuna-risposta");
    t.submit(
        0,
        &alice,
        &[&silent],
        &plain_message(&alice, &[&silent], &[], "silenzio", ""),
    )
    .await
    .unwrap();
    t.wait(0, &alice, &["accettazione"]).await;
    t.settle().await;
    assert!(
        t.mailbox(0, &t.service(0)).await.is_empty(),
        "no presa in carico came back"
    );
    t.clock
        .advance(chrono::Duration::hours(12) + chrono::Duration::minutes(1));
    t.wait(0, &alice, &["accettazione", "preavviso-errore-consegna"])
        .await;
    t.clock.advance(chrono::Duration::hours(12));
    let inbox = t
        .wait(
            0,
            &alice,
            &[
                "accettazione",
                "preavviso-errore-consegna",
                "preavviso-errore-consegna",
            ],
        )
        .await;
    // E2: the human-readable text prints date, time and zone as the rules' examples do.
    let re_date = |s: &str| {
        s.as_bytes().windows(30).any(|w| {
            let w = String::from_utf8_lossy(w);
            let b = w.as_bytes();
            b.len() == 30
                && b[2] == b'/'
                && b[5] == b'/'
                && b[..2]
                    .iter()
                    .chain(&b[3..5])
                    .chain(&b[6..10])
                    .all(u8::is_ascii_digit)
        })
    };
    for m in &inbox {
        let p = pec_formats::parse::parse(&m.raw).unwrap();
        let text = p.text.unwrap_or_default();
        assert!(
            re_date(&text),
            "no dd/mm/yyyy date in the text of {}: {text}",
            m.kind
        );
        assert!(
            text.contains("(+0100)") || text.contains("(+0200)"),
            "no (+hhmm) zone in the text of {}: {text}",
            m.kind
        );
    }
}

/// RFC 5321 §4.2.5, §4.5.4.1: in one transaction the peer takes `ok`, answers 451 for `later` and
/// 550 for `never`. Only `later` is tried again (after the 2 s backoff), `ok` never twice; the
/// ordinary recipient refused for good gives the sender a bounce (digest §13), once.
#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_refused_with_4xx_is_retried_alone() {
    let (t, peer) = topo_with_peer().await;
    let alice = t.user(0, 0);
    let (ok, later, never) = ("ok@example.org", "later@example.org", "never@example.org");
    let m = plain_message(&alice, &[ok, later, never], &[], "parziale", "");
    t.submit(0, &alice, &[ok, later, never], &m).await.unwrap();
    let first = peer.wait(1).await;
    assert_eq!(first[0].rcpts, vec![ok.to_string()]);
    let inbox = t.wait(0, &alice, &["accettazione", "ordinary"]).await;
    let bounce = inbox.iter().find(|m| m.kind == "ordinary").unwrap();
    let text = String::from_utf8_lossy(&bounce.raw).into_owned();
    assert!(
        text.contains("Final-Recipient: rfc822; never@example.org"),
        "{text}"
    );
    assert!(!text.contains("Final-Recipient: rfc822; later@"), "{text}");
    // The clock runs in real time too: the retry comes after the 2 s backoff either way.
    t.clock.advance(chrono::Duration::seconds(2));
    let both = peer.wait(2).await;
    assert_eq!(both[1].rcpts, vec![later.to_string()]);
    assert_eq!(both[1].message, both[0].message, "the same envelope");
    // Nothing more, ever: an hour later still two transactions and one bounce.
    t.clock.advance(chrono::Duration::hours(1));
    t.settle().await;
    assert_eq!(peer.taken().len(), 2);
    let offered = peer.script.offered.lock().unwrap().clone();
    assert_eq!(offered.get(ok), Some(&1));
    assert_eq!(offered.get(later), Some(&2));
    assert_eq!(offered.get(never), Some(&1));
    let a = t.mailbox(0, &alice).await;
    assert_eq!(a.iter().filter(|m| m.kind == "ordinary").count(), 1);
}

/// Several due items for one route go over one SMTP session (RSET between transactions): one
/// submission to three domains routed to the same peer queues three items at once.
#[tokio::test(flavor = "multi_thread")]
async fn due_items_for_one_route_share_one_session() {
    let (t, peer) = topo_with_peer().await;
    let alice = t.user(0, 0);
    let to = ["x@example.org", "y@b.example.org", "z@c.example.org"];
    let m = plain_message(&alice, &to, &[], "sessione", "");
    t.submit(0, &alice, &to, &m).await.unwrap();
    let taken = peer.wait(3).await;
    let mut rcpts: Vec<String> = taken.iter().flat_map(|m| m.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, to.map(String::from));
    let sessions: std::collections::BTreeSet<_> = taken.iter().map(|m| m.peer).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    t.settle().await;
    assert_eq!(peer.taken().len(), 3);
}

/// RFC 5321 §4.4: the gestore prepends a `Received:` field at submission (ESMTPSA, without the
/// user) and at the inbound point (ESMTPS), with the TLS version and cipher (RFC 8314 §4.3);
/// envelopes and receipts still verify with `openssl smime -verify`.
#[tokio::test(flavor = "multi_thread")]
async fn received_fields_are_added_outside_the_signature() {
    let t = Topo::start(2, |_, _| {}).await;
    let (alice, bob) = (t.user(0, 0), t.user(1, 1));
    let m = plain_message(&alice, &[&bob], &[], "tracciato", "");
    t.submit(0, &alice, &[&bob], &m).await.unwrap();
    let env = t.wait(1, &bob, &["posta-certificata"]).await[0].raw.clone();
    let text = String::from_utf8_lossy(&env).into_owned();
    assert!(text.starts_with("Received: from "), "{text}");
    let header = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(header.contains("with ESMTPS\r\n\ttls TLS_"), "{header}");
    assert!(header.contains("(TLSv1."), "{header}");
    // The submission's field travels inside the envelope (RFC 6109 §3.1.5: copied unchanged).
    assert!(text.contains("with ESMTPSA\r\n\ttls TLS_"), "{text}");
    for (at, _) in text.match_indices("Received: from ") {
        let field = &text[at..at + text[at..].find(';').unwrap()];
        assert!(!field.contains(&alice), "the user is exposed: {field}");
    }
    openssl_verifies(&env, &t.state.ca).unwrap();
    let inbox = t
        .wait(0, &alice, &["accettazione", "avvenuta-consegna"])
        .await;
    let receipt = inbox
        .iter()
        .find(|m| m.kind == "avvenuta-consegna")
        .unwrap();
    assert!(receipt.raw.starts_with(b"Received: from "));
    openssl_verifies(&receipt.raw, &t.state.ca).unwrap();
}

/// A peer that takes every transaction (through [`PeerScript`]) but, while `stall` is set, never
/// answers the second MAIL FROM it sees: the sending worker is stuck mid-session, where a crash
/// would find it.
#[derive(Default)]
struct StallingPeer {
    script: PeerScript,
    stall: std::sync::atomic::AtomicBool,
    mails: std::sync::atomic::AtomicUsize,
    reached: tokio::sync::Notify,
}

impl reference_gestore::smtp::server::Handler for StallingPeer {
    async fn authenticate(&self, _user: &str, _password: &str) -> bool {
        false
    }
    async fn mail_from(
        &self,
        info: &reference_gestore::smtp::server::SessionInfo,
        from: &str,
    ) -> reference_gestore::smtp::Reply {
        use std::sync::atomic::Ordering;
        let n = self.mails.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 2 && self.stall.load(Ordering::SeqCst) {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        self.script.mail_from(info, from).await
    }
    async fn rcpt_to(
        &self,
        info: &reference_gestore::smtp::server::SessionInfo,
        rcpt: &str,
    ) -> reference_gestore::smtp::Reply {
        self.script.rcpt_to(info, rcpt).await
    }
    async fn data(
        &self,
        info: &reference_gestore::smtp::server::SessionInfo,
        from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> reference_gestore::smtp::Reply {
        self.script.data(info, from, rcpts, message).await
    }
}

/// RFC 5321 §4.5.4.1, digest §11: one outbox item for two domains routed to one peer goes over one
/// session as two transactions. The peer takes the first, then the worker dies before the second
/// completes (its pass is aborted while the peer holds MAIL FROM). What the peer took is already
/// recorded, with its `invio` record in the same commit; after the dead worker's lease ends, the
/// next pass sends only to the other recipient, and nobody gets the message twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_pass_that_dies_mid_session_resends_only_what_was_not_accepted() {
    use reference_gestore::clock::{Clock, ManualClock};
    use reference_gestore::config::Config;
    use reference_gestore::gestore::Gestore;
    use reference_gestore::smtp::server::{self, Mode, SessionConfig};
    use reference_gestore::store::{Batch, Op, Store};
    use reference_gestore::worker;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let state = reference_gestore::dev::prepare(dir.path(), 2, true).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c = Config::load(&state.instances[0].config).unwrap();
    for d in ["example.org", "b.example.org"] {
        c.routes.insert(d.into(), addr.to_string());
    }
    let mut peer_config = SessionConfig::new("mx.example.org", Mode::Inbound);
    peer_config.tls =
        Some(reference_gestore::tls::server_config_from_files(&c.tls.cert, &c.tls.key).unwrap());
    let peer = Arc::new(StallingPeer::default());
    peer.stall.store(true, Ordering::SeqCst);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(server::serve(
        listener,
        Arc::new(peer_config),
        peer.clone(),
        stopped,
    ));
    // The provider's context without its worker: the test runs the passes itself.
    let clock = ManualClock::new();
    let g = Gestore::open(c, clock.clone() as Arc<dyn Clock>)
        .await
        .unwrap();
    let alice = state.instances[0].users[0].address.clone();
    let (x, y) = ("x@example.org", "y@b.example.org");
    let m = plain_message(&alice, &[x, y], &[], "a meta", "");
    let mut b = Batch::new(clock.now());
    b.push(Op::Enqueue {
        key: "inoltro:1".into(),
        mail_from: alice.clone(),
        rcpts: vec![x.into(), y.into()],
        raw: m.into_bytes(),
    });
    g.store.commit(b).await.unwrap();
    let invii = |log: Vec<reference_gestore::store::LogRecord>| {
        log.into_iter()
            .filter(|r| r.event == "invio")
            .map(|r| r.recipients)
            .collect::<Vec<_>>()
    };

    let pass = tokio::spawn({
        let g = g.clone();
        async move { worker::outbox_pass(&g).await }
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), peer.reached.notified())
        .await
        .expect("the second transaction never started");
    // The crash: nothing after this point of the pass happens.
    pass.abort();
    assert!(pass.await.unwrap_err().is_cancelled());
    let first = peer.script.taken.lock().unwrap().clone();
    assert_eq!(first.len(), 1);
    let (taken, other) = if first[0].rcpts == [y] {
        (y, x)
    } else {
        (x, y)
    };
    assert_eq!(first[0].rcpts, [taken]);
    assert_eq!(
        invii(g.store.log().await.unwrap()),
        [vec![taken.to_string()]]
    );
    let far = clock.now() + chrono::Duration::days(1);
    let left = g.store.due_outbox(far, 10).await.unwrap();
    assert_eq!(left[0].rcpts, [other]);

    // The dead pass's lease holds: another pass now takes nothing.
    peer.stall.store(false, Ordering::SeqCst);
    assert_eq!(worker::outbox_pass(&g).await.unwrap(), 0);
    clock.advance(worker::LEASE);
    assert_eq!(worker::outbox_pass(&g).await.unwrap(), 1);
    let all = peer.script.taken.lock().unwrap().clone();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].rcpts, [other]);
    assert_eq!(all[1].message, all[0].message, "the same message");
    let offered = peer.script.offered.lock().unwrap().clone();
    assert_eq!((offered.get(x), offered.get(y)), (Some(&1), Some(&1)));
    assert_eq!(
        invii(g.store.log().await.unwrap()),
        [vec![taken.to_string()], vec![other.to_string()]]
    );
    assert!(g.store.due_outbox(far, 10).await.unwrap().is_empty());
}
