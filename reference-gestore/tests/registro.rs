//! The message log through a running provider and the `pec-gestore log` CLI (digest §11): the worker
//! seals the day when the manual clock passes Rome midnight, `log verify` proves chain and seal and
//! names a changed record, `log extract` answers and refuses ranges over 7 days.

use reference_gestore::clock::{Clock, ManualClock};
use reference_gestore::config::Config;
use reference_gestore::dev;
use reference_gestore::instance::Instance;
use reference_gestore::registro;
use reference_gestore::store::{Batch, LogRecord, Op, Store};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn log_cli(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pec-gestore"))
        .arg("log")
        .args(&args[..1])
        .arg("--config")
        .arg(config)
        .args(&args[1..])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_day_is_sealed_past_midnight_and_log_verify_proves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = dev::prepare(tmp.path(), 1, false).unwrap();
    let config = state.instances[0].config.clone();
    let c = Config::load(&config).unwrap();
    assert!(c.log.tsa_local.is_some(), "dev configures the local TSA");
    // 10:00 in Rome (CEST) on 10 June 2026.
    let start = chrono::DateTime::parse_from_rfc3339("2026-06-10T08:00:00Z")
        .unwrap()
        .to_utc();
    let clock = ManualClock::starting_at(start);
    let i = Instance::start(c, clock.clone() as Arc<dyn Clock>)
        .await
        .unwrap();
    let store = &i.gestore.store;
    for n in 1..=3 {
        let mut b = Batch::new(clock.now());
        b.push(Op::Log(LogRecord {
            event: "accettazione".into(),
            msgid: format!("opec-{n}@pec.a.test"),
            sender: "alice@pec.a.test".into(),
            recipients: vec!["bob@pec.b.test".into()],
            subject: format!("prova {n}"),
            related: vec![format!("<r{n}@pec.a.test>")],
            provider: "Gestore di prova A".into(),
        }));
        store.commit(b).await.unwrap();
    }
    assert!(registro::seals(store).await.unwrap().is_empty());

    // 23:59 in Rome: still the same day, nothing to seal.
    clock.advance(chrono::Duration::hours(13) + chrono::Duration::minutes(59));
    assert_eq!(
        registro::seal_pass(store, &i.gestore.config.log, clock.now())
            .await
            .unwrap(),
        0
    );
    // 00:01 on 11 June in Rome: the worker wakes on the jump and seals 10 June.
    clock.advance(chrono::Duration::minutes(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    let seals = loop {
        let s = registro::seals(store).await.unwrap();
        if !s.is_empty() {
            break s;
        }
        assert!(Instant::now() < deadline, "no seal after passing midnight");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seals.len(), 1);
    assert_eq!(seals[0].day, "2026-06-10");
    assert_eq!(
        (seals[0].first_seq, seals[0].last_seq, seals[0].count),
        (1, 3, 3)
    );
    i.stop().await;

    let o = log_cli(&["verify"], &config);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("ok: 3 records chained, 1 sealed days verified"),
        "{}",
        text(&o)
    );

    // The read-only reader of outside judges (the conformance runner's `expect_log`) sees the same
    // chain, and creates nothing where there is no store.
    let db_file = tmp.path().join("gestore-a/gestore.db");
    let rows = registro::read_only_records(&db_file).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(registro::check_chain(&rows).is_none());
    let missing = tmp.path().join("none.db");
    let e = registro::read_only_records(&missing).await.unwrap_err();
    assert!(format!("{e:#}").contains("no such store"), "{e:#}");
    assert!(!missing.exists());

    // The holder's extract, as JSON and refused beyond 7 days.
    let o = log_cli(
        &[
            "extract",
            "--sender",
            "alice@pec.a.test",
            "--recipient",
            "bob@pec.b.test",
            "--from",
            "2026-06-08",
            "--to",
            "2026-06-14",
            "--subject",
            "prova 2",
            "--format",
            "json",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 1);
    assert_eq!(j[0]["msgid"], "opec-2@pec.a.test");
    let o = log_cli(
        &[
            "extract",
            "--sender",
            "alice@pec.a.test",
            "--recipient",
            "bob@pec.b.test",
            "--from",
            "2026-06-01",
            "--to",
            "2026-06-10",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("at most 7 days"), "{}", text(&o));

    // One byte changed in a stored record.
    let db = tmp.path().join("gestore-a/gestore.db");
    let s = reference_gestore::store::SqliteStore::open(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE log SET sender = 'alicf@pec.a.test' WHERE seq = 2")
        .execute(s.pool())
        .await
        .unwrap();
    drop(s);
    let o = log_cli(&["verify"], &config);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("record seq 2 was changed (field `sender`)"),
        "{}",
        text(&o)
    );
    // `log verify` and the read-only reader agree on what changed.
    let rows = registro::read_only_records(&db_file).await.unwrap();
    assert_eq!(
        registro::check_chain(&rows)
            .map(|f| f.to_string())
            .as_deref(),
        Some("record seq 2 was changed (field `sender`)")
    );

    // Unusable: exit 2 with the reason.
    let o = log_cli(&["verify"], &tmp.path().join("missing.yaml"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("missing.yaml"), "{}", text(&o));
}
