//! End to end: scenarios of the catalog against reference gestori embedded in this process, on
//! loopback, with the shared manual clock (no sleeps for synchronisation: the runner polls the
//! stores with a deadline).

use pec_conformance::run_report::Status;
use pec_conformance::runner::{run_scenario, run_scenario_with};
use pec_conformance::scenario::{Dur, LogEvent, Scenario, Step, load_requirements};
use pec_conformance::topology::Launch;
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
    submit_transcript_is_from_the_wire(out.path(), &t);
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

/// Issue 5: the submission's transcript is what crossed the wire, and the relay between the two
/// gestori recorded what A said to B.
fn submit_transcript_is_from_the_wire(out: &Path, t: &str) {
    let dir = out.join("evidence/delivery.to-one.completa");
    // The lines without their relative times.
    let lines: Vec<&str> = t
        .lines()
        .map(|l| l.trim_start().split_once(' ').map_or(l, |x| x.1))
        .collect();
    // Implicit TLS (RFC 8314): the handshake marker comes first, then the greeting inside TLS.
    let tls = lines
        .iter()
        .position(|l| l.starts_with("-- TLS handshake (implicit TLS) done: TLSv1_"))
        .unwrap_or_else(|| panic!("no TLS marker:\n{t}"));
    assert!(lines[tls + 1].starts_with("S: 220 "), "{t}");
    assert_eq!(lines[tls + 2], "C: EHLO runner.test", "{t}");
    // The gestore's own EHLO reply lines, capabilities and AUTH included (RFC 4954 §3).
    assert!(lines[tls + 3].starts_with("S: 250-"), "{t}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("S: 250-AUTH PLAIN") || l.starts_with("S: 250 AUTH PLAIN")),
        "{t}"
    );
    // The credentials are not in the transcript.
    assert!(lines.contains(&"C: AUTH PLAIN ****"), "{t}");
    let pw = reference_gestore::dev::DEV_PASSWORD;
    assert!(!t.contains(pw), "{t}");
    assert!(lines.iter().any(|l| l.starts_with("S: 235 ")), "{t}");
    // The content is one marker line: the size and hash of the .eml kept next to it.
    let eml = std::fs::read(dir.join("01-submit.eml")).unwrap();
    let sha: String = openssl::sha::sha256(&eml)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let marker = format!("C: [message: {} bytes, sha256 {sha}]", eml.len());
    let at = lines
        .iter()
        .position(|l| *l == marker)
        .unwrap_or_else(|| panic!("no `{marker}`:\n{t}"));
    assert!(lines[at - 1].starts_with("S: 354"), "{t}");
    assert!(lines[at + 1].starts_with("S: 250 "), "{t}");
    assert!(!t.contains("Contratto"), "the content is not copied: {t}");
    // The relay between A and B saw the envelope's transaction on both of its sides.
    let rcpt = lines
        .iter()
        .find(|l| l.starts_with("C: RCPT TO:<"))
        .unwrap_or_else(|| panic!("no RCPT TO:\n{t}"));
    let link = std::fs::read_to_string(dir.join("links/A-B.transcript")).unwrap();
    assert!(link.contains("=== session 1: gestore A "), "{link}");
    assert!(link.contains("(the relay is the SMTP client)"), "{link}");
    assert!(link.matches(*rcpt).count() >= 2, "{rcpt} twice:\n{link}");
    assert!(link.matches("C: MAIL FROM:<").count() >= 2, "{link}");
    assert!(
        link.contains("-- TLS handshake (STARTTLS) done: TLSv1_"),
        "{link}"
    );
    assert!(link.contains("C: [message: "), "{link}");
    // B's receipts go back to A through the other link.
    assert!(dir.join("links/B-A.transcript").is_file());
}

/// Process mode: the reference gestori are `pec-gestore serve` children (the binary found as the
/// runner finds it: built by `cargo test --workspace` or `cargo build -p reference-gestore`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_pass_with_gestori_as_processes_and_keep_their_logs() {
    let bin = pec_conformance::topology::find_gestore_bin(None).unwrap_or_else(|e| panic!("{e:#}"));
    let launch = Launch::Process { bin };
    let out = tempfile::tempdir().unwrap();
    for id in [
        // advance_clock on a §12 path: the children's clocks move over their control ports.
        "timers.presa-no-delivery",
        // inject: an envelope signed with A's key loaded from its files, not from an instance.
        "reception.bad-daticert-anomaly",
        // submit with every receipt.
        "delivery.to-one.completa",
        // a full mailbox.
        "delivery.full-mailbox",
    ] {
        let r =
            run_scenario_with(scenario(id), None, false, out.path().to_path_buf(), &launch).await;
        assert_eq!(
            r.status,
            Status::Passed,
            "{id}: {:?}\n{}",
            r.message,
            failures(&r)
        );
        // Every reference gestore left its stderr log and its command line with its pid.
        let gestori: Vec<_> = r.gestori.iter().filter(|g| g.role == "reference").collect();
        assert!(!gestori.is_empty(), "{id}");
        for g in gestori {
            let log = format!("evidence/{id}/gestore-{}.log", g.name);
            let cmd = format!("evidence/{id}/gestore-{}.cmd", g.name);
            assert!(r.evidence.contains(&log), "{id}: {:?}", r.evidence);
            assert!(r.evidence.contains(&cmd), "{id}: {:?}", r.evidence);
            assert!(out.path().join(&log).is_file(), "{log}");
            let text = std::fs::read_to_string(out.path().join(&cmd)).unwrap();
            let pid: u32 = text
                .lines()
                .find_map(|l| l.strip_prefix("pid: "))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{cmd}: no pid in {text}"));
            assert!(pid > 0, "{text}");
            assert!(
                text.contains("serve --config") && text.contains("--manual-clock"),
                "{text}"
            );
        }
    }
}

/// A missing `pec-gestore` is a clear error that says how to build it.
#[test]
fn a_missing_gestore_binary_says_how_to_get_one() {
    let e =
        pec_conformance::topology::find_gestore_bin(Some(Path::new("/nonexistent/pec-gestore")))
            .unwrap_err()
            .to_string();
    assert!(e.contains("--gestore-bin /nonexistent/pec-gestore"), "{e}");
    assert!(e.contains("cargo build -p reference-gestore"), "{e}");
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

/// The environment variable holding the dev mailboxes' password in the target files below.
const DEV_PASSWORD_ENV: &str = "PEC_CONFORMANCE_TEST_DEV_PASSWORD";

/// A `pec-gestore dev` provider (one instance, real clock) and a target file describing it, its
/// IMAP read with `imap_tls` (`implicit`) or `starttls`.
/// The directory entry (RFC 6109 §4.5) of a dev provider, from its signing certificate.
fn dev_entry(inst: &reference_gestore::dev::DevInstance) -> pec_formats::directory::ProviderEntry {
    let c = reference_gestore::config::Config::load(&inst.config).unwrap();
    let cert = openssl::x509::X509::from_pem(&std::fs::read(&c.signing.cert).unwrap()).unwrap();
    reference_gestore::dev::entry(&inst.name, &inst.domain, &inst.service_address, &cert).unwrap()
}

/// With `runner_state`, the runner's gestore A keeps its identity there and the dev provider
/// lists it in its directory, trusts its CA and routes its domain to its inbound port.
async fn dev_target(
    dir: &Path,
    imap_tls: &str,
    runner_state: bool,
) -> (reference_gestore::instance::Instance, std::path::PathBuf) {
    // The second provider of a dev pair (pec.b.test), so that its domain differs from the
    // runner's own gestore A (pec.a.test); only it runs.
    let state = reference_gestore::dev::prepare(&dir.join("dev"), 2, false).unwrap();
    let inst = &state.instances[1];
    reference_gestore::dev::release(&state.instances[0]);
    let mut config = reference_gestore::config::Config::load(&inst.config).unwrap();
    // Its own entry of the provider directory, for `directory_entry`.
    let mine = dev_entry(inst);
    let runner_dir = dir.join("runner-state");
    if runner_state {
        let runner = reference_gestore::dev::prepare(&runner_dir, 1, false).unwrap();
        let a = &runner.instances[0];
        let both = pec_formats::directory::Directory {
            providers: vec![dev_entry(a), mine.clone()],
            root: vec![],
        };
        let file = dir.join("target-directory.ldif");
        std::fs::write(&file, both.to_ldif()).unwrap();
        config.directory = file;
        config.trust.push(runner.ca.clone());
        config
            .routes
            .insert(a.domain.clone(), a.inbound.to_string());
    }
    let running = reference_gestore::instance::Instance::start(
        config,
        reference_gestore::clock::SystemClock::new(),
    )
    .await
    .unwrap();
    let ldif = pec_formats::directory::Directory {
        providers: vec![mine],
        root: vec![],
    }
    .to_ldif();
    let entry_file = dir.join("entry.ldif");
    std::fs::write(&entry_file, ldif).unwrap();
    let e = &running.endpoints;
    let imap = if imap_tls == "starttls" {
        e.imap_starttls
    } else {
        e.imap_tls
    }
    .unwrap();
    // SAFETY: set before any scenario reads it; every test sets the same value.
    unsafe { std::env::set_var(DEV_PASSWORD_ENV, reference_gestore::dev::DEV_PASSWORD) };
    let mailboxes: String = inst
        .users
        .iter()
        .map(|u| {
            format!(
                "  - {{ address: {}, password_env: {DEV_PASSWORD_ENV} }}\n",
                u.address
            )
        })
        .collect();
    let text = format!(
        "name: dev-{imap_tls}\ndomains: [{domain}]\n{kept}\
         submission: {{ host: 127.0.0.1, port: {sub}, tls: implicit }}\n\
         imap: {{ host: 127.0.0.1, port: {imap}, tls: {imap_tls} }}\n\
         inbound: {{ host: 127.0.0.1, port: {inb}, starttls: true }}\n\
         mailboxes:\n{mailboxes}directory_entry: {dir_entry}\nca: {ca}\n",
        domain = inst.domain,
        kept = if runner_state {
            format!("runner_state: {}\n", runner_dir.display())
        } else {
            String::new()
        },
        sub = e.submission_tls.unwrap().port(),
        imap = imap.port(),
        inb = e.inbound.unwrap().port(),
        dir_entry = entry_file.display(),
        ca = state.ca.display(),
    );
    let file = dir.join("target.yaml");
    std::fs::write(&file, text).unwrap();
    (running, file)
}

fn step_status(r: &pec_conformance::run_report::ScenarioResult) -> Vec<(String, Status)> {
    r.steps
        .iter()
        .map(|s| (s.description.clone(), s.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_delivery_reads_a_dev_provider_over_imap_starttls() {
    use pec_conformance::topology::Target;
    let tmp = tempfile::tempdir().unwrap();
    let (dev, file) = dev_target(tmp.path(), "starttls", false).await;
    let target = std::sync::Arc::new(Target::load(&file).unwrap());
    // external.target-delivery, up to what a provider that does not list the runner's per-scenario
    // gestori in its directory can do: the envelope from A is not trusted there, so t1 gets a busta
    // di anomalia (RFC 6109 §3.2.2) and no presa in carico or receipt comes back.
    let mut s = scenario("external.target-delivery");
    let text = std::fs::read_to_string(&s.file).unwrap();
    let cut = text.find("  - expect: { mailbox: serviceA").unwrap();
    let text = format!(
        "{}  - expect: {{ mailbox: t1, kind: anomalia, within: 20s }}\n  - expect_none: {{ mailbox: t1, kind: any, for: 1s }}\n",
        &text[..cut]
    );
    s = Scenario::from_yaml(&s.file, &text, &reqs()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = run_scenario(s, Some(target), false, out.path().to_path_buf()).await;
    dev.stop().await;
    assert_eq!(
        r.status,
        Status::Passed,
        "{:?}\n{}\n{:?}",
        r.message,
        failures(&r),
        step_status(&r)
    );
    assert!(r.steps.iter().all(|s| s.status == Status::Passed));
    // The anomaly read over IMAP was judged offline, its signature chained to the target's `ca`.
    let read = &r.steps[2];
    assert!(
        read.checks
            .iter()
            .any(|c| c.id == "verify.signature.chain" && c.status == Status::Passed),
        "{:?}",
        read.checks
    );
    let eml = out.path().join(&read.evidence[0]);
    let raw = std::fs::read_to_string(eml).unwrap();
    assert!(raw.contains("X-Trasporto: errore"), "{raw}");
    // Issue 5: the IMAP session that read it is in the evidence, recorded from the wire inside
    // TLS, the password redacted and the message bodies reduced to size and hash.
    let imap = read
        .evidence
        .iter()
        .find(|e| e.contains("-imap-") && e.ends_with(".transcript"))
        .unwrap_or_else(|| panic!("no IMAP transcript in {:?}", read.evidence));
    let t = std::fs::read_to_string(out.path().join(imap)).unwrap();
    for want in [
        " C: c1 STARTTLS",
        "-- TLS handshake (STARTTLS) done",
        " C: c2 CAPABILITY",
        " S: * CAPABILITY ",
        " C: c4 SELECT \"INBOX\"",
        "LOGIN \"",
        " ****",
        "[literal: ",
        " bytes, sha256 ",
    ] {
        assert!(
            t.contains(want),
            "`{want}` missing from the IMAP transcript:\n{t}"
        );
    }
    assert!(!t.contains(reference_gestore::dev::DEV_PASSWORD), "{t}");
    assert!(
        !t.contains("X-Trasporto"),
        "a message body was copied:\n{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_mailboxes_are_read_over_implicit_tls_imap() {
    use pec_conformance::topology::Target;
    let tmp = tempfile::tempdir().unwrap();
    let (dev, file) = dev_target(tmp.path(), "implicit", false).await;
    let target = std::sync::Arc::new(Target::load(&file).unwrap());
    // Between two mailboxes of the target: its own receipts and envelope, read over IMAP.
    let text = "id: external.target-internal\ntitle: t\ntags: [external]\nrequirements: [DEL-01]\n\
                topology: { T: { external: target } }\nmailboxes: { t1: T, t2: T }\nsteps:\n\
                \x20 - submit: { as: t1, to: [t2], subject: Interno }\n\
                \x20 - expect: { mailbox: t1, kind: accettazione, save: acc }\n\
                \x20 - expect: { mailbox: t2, kind: posta-certificata, same_identificativo: acc }\n\
                \x20 - expect: { mailbox: t1, kind: avvenuta-consegna, same_identificativo: acc }\n\
                \x20 - expect_none: { mailbox: t2, kind: any, for: 1s }\n";
    let s = Scenario::from_yaml(&tmp.path().join("internal.yaml"), text, &reqs()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = run_scenario(s, Some(target.clone()), false, out.path().to_path_buf()).await;
    assert_eq!(
        r.status,
        Status::Passed,
        "{:?}\n{}\n{:?}",
        r.message,
        failures(&r),
        step_status(&r)
    );
    // A refused IMAP login is a failed step that says why, not a skip.
    // SAFETY: only this test reads this variable.
    unsafe { std::env::set_var("PEC_CONFORMANCE_TEST_WRONG_PASSWORD", "not-the-password") };
    let mut bad = (*target).clone();
    bad.mailboxes[1].password_env = "PEC_CONFORMANCE_TEST_WRONG_PASSWORD".into();
    let text = "id: external.target-login\ntitle: t\ntags: [external]\nrequirements: [DEL-01]\n\
                topology: { T: { external: target } }\nmailboxes: { t1: T, t2: T }\nsteps:\n\
                \x20 - expect_none: { mailbox: t1, kind: any, for: 1s }\n\
                \x20 - expect: { mailbox: t2, kind: posta-certificata, within: 1s }\n";
    let s = Scenario::from_yaml(&tmp.path().join("login.yaml"), text, &reqs()).unwrap();
    let r = run_scenario(
        s,
        Some(std::sync::Arc::new(bad)),
        false,
        out.path().to_path_buf(),
    )
    .await;
    dev.stop().await;
    assert_eq!(r.status, Status::Failed);
    let m = r.message.unwrap_or_default();
    // Step 1 passes: what t1 held before the scenario started is not new.
    assert_eq!(
        r.steps[0].status,
        Status::Passed,
        "{:?}",
        r.steps[0].message
    );
    assert!(m.starts_with("step 2 ") && m.contains("IMAP LOGIN"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_delivery_passes_against_a_dev_provider_that_knows_the_runner() {
    use pec_conformance::topology::Target;
    let tmp = tempfile::tempdir().unwrap();
    let (dev, file) = dev_target(tmp.path(), "starttls", true).await;
    let target = std::sync::Arc::new(Target::load(&file).unwrap());
    let out = tempfile::tempdir().unwrap();
    let r = run_scenario(
        scenario("external.target-delivery"),
        Some(target),
        false,
        out.path().to_path_buf(),
    )
    .await;
    dev.stop().await;
    assert_eq!(
        r.status,
        Status::Passed,
        "{:?}\n{}\n{:?}",
        r.message,
        failures(&r),
        step_status(&r)
    );
    assert!(r.steps.iter().all(|s| s.status == Status::Passed));
    // The envelope on the target, read over IMAP, passed every offline check.
    let last = r.steps.last().unwrap();
    assert!(
        last.checks
            .iter()
            .filter(|c| c.id.starts_with("verify."))
            .all(|c| c.status != Status::Failed)
            && last.checks.iter().any(|c| c.id == "verify.signature.chain"),
        "{:?}",
        last.checks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_log_scenario_passes_and_a_missing_event_fails_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let s = scenario("log.delivery");
    let r = run_scenario(s.clone(), None, false, out.path().to_path_buf()).await;
    assert_eq!(
        r.status,
        Status::Passed,
        "{:?}\n{}",
        r.message,
        failures(&r)
    );
    let logs: Vec<_> = r.steps.iter().filter(|s| s.name == "expect_log").collect();
    assert_eq!(logs.len(), 2);
    for want in [
        "log.event",
        "log.msgid",
        "log.time",
        "log.recipients",
        "log.related",
        "log.chain",
    ] {
        assert!(
            logs[0]
                .checks
                .iter()
                .any(|c| c.id == want && c.status == Status::Passed),
            "{want}"
        );
    }
    // Mutation: B's log must also hold an event it never wrote.
    let mut m = s;
    let Some(Step::ExpectLog(l)) = m.steps.last_mut().map(|s| &mut s.value) else {
        panic!("log.delivery ends with expect_log");
    };
    l.events.push(LogEvent {
        event: "mancata-consegna".into(),
        related: vec![],
    });
    l.within = Some(Dur(std::time::Duration::from_millis(300)));
    let r = run_scenario(m, None, false, out.path().to_path_buf()).await;
    assert_eq!(r.status, Status::Failed);
    let message = r.message.clone().unwrap_or_default();
    assert!(message.contains("expect_log"), "{message}");
    assert!(
        message.contains("event `mancata-consegna` is missing"),
        "{message}"
    );
    assert!(message.contains("presa-in-carico, consegna"), "{message}");
}
