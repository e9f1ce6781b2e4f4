//! End to end: scenarios of the catalog against reference gestori embedded in this process, on
//! loopback, with the shared manual clock (no sleeps for synchronisation: the runner polls the
//! stores with a deadline).

use pec_conformance::run_report::Status;
use pec_conformance::runner::run_scenario;
use pec_conformance::scenario::{Scenario, load_requirements};
use std::collections::BTreeSet;
use std::path::Path;

fn reqs() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    load_requirements(&root.join("requirements.yaml"))
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn scenario(id: &str) -> Scenario {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Scenario::load(&root.join("scenarios").join(format!("{id}.yaml")), &reqs()).unwrap()
}

fn failures(r: &pec_conformance::run_report::ScenarioResult) -> String {
    r.steps
        .iter()
        .flat_map(|s| s.checks.iter().filter(|c| c.status == Status::Failed))
        .map(|c| format!("{}: {}", c.id, c.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scenarios_pass_end_to_end_with_evidence() {
    let out = tempfile::tempdir().unwrap();
    for id in [
        "delivery.to-one.completa",
        "access.bcc-refused",
        "timers.presa-no-delivery",
    ] {
        let r = run_scenario(scenario(id), None, false, out.path().to_path_buf()).await;
        assert_eq!(
            r.status,
            Status::Passed,
            "{id}: {:?}\n{}",
            r.message,
            failures(&r)
        );
        assert!(r.steps.iter().all(|s| s.status == Status::Passed), "{id}");
        // Every expected message was also judged by the offline checks.
        let expects: Vec<_> = r.steps.iter().filter(|s| s.name == "expect").collect();
        assert!(!expects.is_empty());
        for s in expects {
            assert!(
                s.checks
                    .iter()
                    .any(|c| c.id == "verify.signature.integrity" && c.status == Status::Passed),
                "{id} step {}: no passing signature check",
                s.index + 1
            );
            assert!(!s.evidence.is_empty());
            for e in &s.evidence {
                assert!(out.path().join(e).is_file(), "{e}");
            }
        }
        assert!(
            r.evidence.iter().any(|e| e.contains("/mailboxes/")),
            "{id}: mailboxes dumped"
        );
    }
    // The transcript of the submission shows the SMTP dialogue.
    let t = std::fs::read_to_string(
        out.path()
            .join("evidence/delivery.to-one.completa/01-submit.transcript"),
    )
    .unwrap();
    assert!(t.contains("AUTH PLAIN") && t.contains("DATA"), "{t}");
    // The dropped receipt of the timer scenario is kept as evidence.
    assert!(
        out.path()
            .join("evidence/timers.presa-no-delivery/dropped")
            .read_dir()
            .unwrap()
            .count()
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expectation_fails_and_names_the_step() {
    let mut s = scenario("delivery.same-domain");
    // Ask for a kind that never comes: the step fails within its window, later steps are skipped.
    let text = std::fs::read_to_string(&s.file)
        .unwrap()
        .replace(
            "kind: accettazione, signed_by: A",
            "kind: non-accettazione, within: 2s",
        )
        .replace("same_identificativo: acc, ricevuta", "ricevuta")
        .replace(", same_identificativo: acc }", " }");
    s = Scenario::from_yaml(&s.file, &text, &reqs()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = run_scenario(s, None, false, out.path().to_path_buf()).await;
    assert_eq!(r.status, Status::Failed);
    let m = r.message.unwrap();
    assert!(m.starts_with("step 2 (line 11, expect)"), "{m}");
    assert!(m.contains("non-accettazione"), "{m}");
    assert_eq!(r.steps[2].status, Status::Skipped);
}
