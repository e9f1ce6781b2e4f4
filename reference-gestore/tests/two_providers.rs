//! Black-box: `pec-gestore dev --instances 2` as a user runs it; Python's smtplib submits over TLS
//! from a user of provider A to a user of provider B; the acceptance, the envelope, the presa in
//! carico and the delivery receipt all arrive, each signed and valid for `openssl smime -verify`.

mod common;

use common::*;

fn message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: {from}\nTo: {to}\nSubject: {subject}\nMessage-ID: <test-{}@client.example>\nDate: Mon, 30 Nov 2026 10:00:00 +0100\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nCiao, questo e' un messaggio di prova.\n",
        subject.replace(' ', "-")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_between_two_providers_yields_every_receipt_signed_and_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = start_dev(tmp.path(), 2, &[]);
    let (a, b) = (&dev.state.instances[0], &dev.state.instances[1]);
    let alice = &a.users[0];
    let bob = &b.users[1];
    python_submit(
        a.submission_tls.port(),
        &dev.state.ca,
        &alice.address,
        &alice.password,
        &[&bob.address],
        &message(&alice.address, &bob.address, "prova due gestori"),
    );
    let db_a = tmp.path().join("gestore-a/gestore.db");
    let db_b = tmp.path().join("gestore-b/gestore.db");
    let inbox_alice = wait_for(
        &db_a,
        &alice.address,
        &["accettazione", "avvenuta-consegna"],
    )
    .await;
    let inbox_bob = wait_for(&db_b, &bob.address, &["posta-certificata"]).await;
    let service_a = wait_for(&db_a, &a.service_address, &["presa-in-carico"]).await;

    for m in inbox_alice.iter().chain(&inbox_bob).chain(&service_a) {
        openssl_verifies(&m.raw, &dev.state.ca)
            .unwrap_or_else(|e| panic!("{} does not verify: {e}", m.kind));
    }
    // Exactly one of each: no receipt twice.
    let count = |v: &[reference_gestore::store::StoredMessage], k: &str| {
        v.iter().filter(|m| m.kind == k).count()
    };
    assert_eq!(count(&inbox_alice, "accettazione"), 1);
    assert_eq!(count(&inbox_alice, "avvenuta-consegna"), 1);
    assert_eq!(count(&inbox_bob, "posta-certificata"), 1);
    assert_eq!(count(&service_a, "presa-in-carico"), 1);

    // The same identificativo in the acceptance, the envelope and the delivery receipt.
    let envelope = String::from_utf8_lossy(&inbox_bob[0].raw).into_owned();
    let id = inbox_bob[0]
        .message_id
        .clone()
        .expect("envelope Message-ID");
    assert!(
        envelope.contains("X-Trasporto: posta-certificata"),
        "{envelope}"
    );
    for m in &inbox_alice {
        let text = String::from_utf8_lossy(&m.raw);
        assert!(
            text.contains("X-Riferimento-Message-ID: <test-prova-due-gestori@client.example>"),
            "{}",
            m.kind
        );
    }
    assert!(id.contains("pec.a.test"), "{id}");
}
