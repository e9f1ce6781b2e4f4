//! Embedded providers with a manual clock: the 12h preavviso and the 24h mancata consegna when the
//! recipient's provider never answers (RFC 6109 §3.1.6; digest §12), and none when delivery happens
//! (same provider, RFC 6109 §3.4).

mod common;

use common::wait_for;
use reference_gestore::clock::{Clock, ManualClock};
use reference_gestore::config::Config;
use reference_gestore::dev;
use reference_gestore::instance::Instance;
use reference_gestore::smtp::client::{ClientTls, SmtpClient};
use reference_gestore::store::Store;
use std::sync::Arc;

async fn submit(i: &Instance, ca: &std::path::Path, user: &str, to: &str, subject: &str) {
    let roots = reference_gestore::tls::root_store_from_files(&[ca]).unwrap();
    let mut c = SmtpClient::connect(
        i.endpoints.submission_tls.unwrap(),
        ClientTls::implicit(roots, "localhost"),
    )
    .await
    .unwrap();
    c.ehlo("client.test").await.unwrap();
    c.auth_plain(user, dev::DEV_PASSWORD).await.unwrap();
    let msg = format!(
        "From: {user}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\ncorpo\r\n",
        subject.replace(' ', ".")
    );
    let r = c.send(user, &[to], msg.as_bytes()).await.unwrap();
    assert!(r.data.unwrap().text.contains("accettato"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_provider_gets_the_12h_and_then_the_24h_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let state = dev::prepare(tmp.path(), 2, false).unwrap();
    let clock = ManualClock::new();
    // Only A runs: B never answers (its reserved ports are given back, so they refuse connections).
    dev::release(&state.instances[1]);
    let a = Instance::start(
        Config::load(&state.instances[0].config).unwrap(),
        clock.clone() as Arc<dyn Clock>,
    )
    .await
    .unwrap();
    let alice = &state.instances[0].users[0].address;
    let bob_b = &state.instances[1].users[1].address;
    submit(&a, &state.ca, alice, bob_b, "mai consegnato").await;
    let db = tmp.path().join("gestore-a/gestore.db");
    wait_for(&db, alice, &["accettazione"]).await;

    clock.advance(chrono::Duration::hours(12) + chrono::Duration::minutes(1));
    let inbox = wait_for(&db, alice, &["accettazione", "preavviso-errore-consegna"]).await;
    assert_eq!(
        inbox
            .iter()
            .filter(|m| m.kind == "preavviso-errore-consegna")
            .count(),
        1
    );

    clock.advance(chrono::Duration::hours(12));
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
    assert_eq!(
        inbox
            .iter()
            .filter(|m| m.kind == "preavviso-errore-consegna")
            .count(),
        2
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_within_one_provider_stops_the_timers() {
    let tmp = tempfile::tempdir().unwrap();
    let state = dev::prepare(tmp.path(), 1, false).unwrap();
    let clock = ManualClock::new();
    let a = Instance::start(
        Config::load(&state.instances[0].config).unwrap(),
        clock.clone() as Arc<dyn Clock>,
    )
    .await
    .unwrap();
    let alice = &state.instances[0].users[0].address;
    let bob = &state.instances[0].users[1].address;
    submit(&a, &state.ca, alice, bob, "stesso gestore").await;
    let db = tmp.path().join("gestore-a/gestore.db");
    wait_for(&db, alice, &["accettazione", "avvenuta-consegna"]).await;
    wait_for(&db, bob, &["posta-certificata"]).await;

    clock.advance(chrono::Duration::hours(25));
    // Every timer of the transaction has been cancelled or has fired without a notice: wait until
    // the store has no due timer left, then check that no notice was sent.
    let store = &a.gestore.store;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !store.due_timers(clock.now()).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "timers never handled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let inbox = store.mailbox(alice, "INBOX").await.unwrap();
    assert!(
        !inbox.iter().any(|m| m.kind == "preavviso-errore-consegna"),
        "a timeout notice was sent after delivery"
    );
    a.stop().await;
}
