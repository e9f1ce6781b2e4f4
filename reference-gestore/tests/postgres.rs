//! The gestore on PostgreSQL (`store: { postgres: URL }`): a whole flow between two providers that
//! both keep their store in a real PostgreSQL 15, started on loopback by the test itself
//! (reference_gestore::pgcluster), then `pec-gestore log verify` on a PostgreSQL-backed config.

mod common;

use common::*;
use reference_gestore::config::{Config, StoreConfig};
use reference_gestore::pgcluster::PgCluster;
use reference_gestore::store::{Backend, SqlStore};
use std::process::Command;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread")]
async fn two_gestori_on_postgres_certify_a_message_and_log_verify_reads_the_chain() {
    let started = Instant::now();
    // Declared before the topology, so the cluster outlives the providers using it.
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = PgCluster::start(pg_dir.path()).unwrap();
    let urls = [
        pg.create_database("gestore_a").await.unwrap(),
        pg.create_database("gestore_b").await.unwrap(),
    ];
    let t = Topo::start(2, |i, c| c.store = StoreConfig::postgres(&urls[i])).await;
    for g in &t.gestori {
        assert_eq!(g.gestore.store.backend(), Backend::Postgres);
    }

    // Submission → ricevuta di accettazione, busta di trasporto → presa in carico, avvenuta
    // consegna (RFC 6109 §3.1-§3.3), every step committed in PostgreSQL before SMTP said 250.
    let (alice, bob) = (t.user(0, 0), t.user(1, 1));
    let m = plain_message(&alice, &[&bob], &[], "su postgres", "");
    t.submit(0, &alice, &[&bob], &m).await.unwrap();
    let inbox = t
        .wait(0, &alice, &["accettazione", "avvenuta-consegna"])
        .await;
    let acc = daticert_of(&inbox.iter().find(|m| m.kind == "accettazione").unwrap().raw);
    let env = &t.wait(1, &bob, &["posta-certificata"]).await[0];
    assert_eq!(
        env.message_id.as_deref(),
        Some(acc.dati.identificativo.as_str())
    );
    let presa = t.wait(0, &t.service(0), &["presa-in-carico"]).await;
    assert_eq!(daticert_of(&presa[0].raw).dati.ricezione, vec![bob.clone()]);
    let consegna = daticert_of(
        &inbox
            .iter()
            .find(|m| m.kind == "avvenuta-consegna")
            .unwrap()
            .raw,
    );
    assert_eq!(consegna.dati.identificativo, acc.dati.identificativo);
    assert_eq!(consegna.dati.consegna.as_deref(), Some(bob.as_str()));
    t.settle().await;
    // Nothing went to the SQLite file the dev config names.
    assert!(!t.dir.path().join("gestore-a/gestore.db").exists());

    // `pec-gestore log verify` on provider A's config, pointed at its PostgreSQL database.
    let mut c = Config::load(&t.state.instances[0].config).unwrap();
    c.store = StoreConfig::postgres(&urls[0]);
    let config = t.dir.path().join("gestore-a-postgres.yaml");
    std::fs::write(&config, c.to_yaml().unwrap()).unwrap();
    let verify = || {
        let o = Command::new(env!("CARGO_BIN_EXE_pec-gestore"))
            .args(["log", "verify", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), text)
    };
    let (code, text) = verify();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("records chained"), "{text}");

    // One changed byte in a stored record is named (digest §11).
    let s = SqlStore::open_postgres(&urls[0]).await.unwrap();
    sqlx::query("UPDATE log SET sender = 'alicf@pec.a.test' WHERE seq = 2")
        .execute(s.pool())
        .await
        .unwrap();
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record seq 2 was changed (field `sender`)"),
        "{text}"
    );
    eprintln!("PostgreSQL flow test: {:?}", started.elapsed());
}
