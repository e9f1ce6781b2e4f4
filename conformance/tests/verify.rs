//! `pec-conformance verify` run as a process on the real fixtures and on mutations of them, plus the
//! DTD validator cross-checked against xmllint.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_pec-conformance");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn eml(name: &str) -> PathBuf {
    repo().join("fixtures/real/eml").join(name)
}

fn reference() -> PathBuf {
    repo().join("fixtures/reference")
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run pec-conformance")
}

/// Runs `verify --format json` and returns the exit code and the one file's report.
fn verify_json(extra: &[&str], file: &Path) -> (i32, Value, String) {
    let mut args = vec!["verify", "--format", "json"];
    args.extend_from_slice(extra);
    let f = file.to_str().unwrap();
    args.push(f);
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic on {f}: {stderr}");
    let code = out.status.code().expect("exit code");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON for {f}: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (code, json["files"][0].clone(), stderr)
}

fn verdict<'a>(file: &'a Value, id: &str) -> &'a str {
    file["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {file:#}"))["verdict"]
        .as_str()
        .unwrap()
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A fixture with LF line ends (some are stored CRLF); the verifier normalises before checking.
fn read(name: &str) -> String {
    String::from_utf8(std::fs::read(eml(name)).unwrap())
        .unwrap()
        .replace("\r\n", "\n")
}

const ARUBA: &[(&str, &str)] = &[
    (
        "aruba-2014_busta-trasporto_message1.eml",
        "2014-11-07T16:00:00Z",
    ),
    (
        "aruba-2014_ricevuta-accettazione.eml",
        "2014-11-14T17:30:00Z",
    ),
    (
        "aruba-2014_ricevuta-avvenuta-consegna-completa.eml",
        "2014-11-14T17:30:00Z",
    ),
];

#[test]
fn real_aruba_signatures_verify_at_their_own_date() {
    let trust = reference();
    for (name, at) in ARUBA {
        let (code, f, _) = verify_json(
            &["--trust", trust.to_str().unwrap(), "--at", at],
            &eml(name),
        );
        for id in [
            "signature.present",
            "signature.integrity",
            "signature.chain",
            "signature.validity",
        ] {
            assert_eq!(verdict(&f, id), "pass", "{name} {id}: {f:#}");
        }
        // SHA-1: accepted with a warning (digest §4.1).
        assert_eq!(verdict(&f, "signature.digest"), "warn", "{name}");
        assert_eq!(f["digest"], "sha1", "{name}");
        assert_eq!(
            f["signer"]["email"], "posta-certificata@pec.aruba.it",
            "{name}"
        );
        assert_eq!(verdict(&f, "signature.signer-from"), "pass", "{name}");
        // SIG-05: Aruba's 2014 certificate has Key Usage not critical and Basic Constraints
        // cA FALSE (RFC 6109 §5.5.2 wants neither): tolerated by `verify`, with a warning.
        assert_eq!(
            verdict(&f, "signature.certificate-profile"),
            "warn",
            "{name}: {f:#}"
        );
        for id in [
            "daticert.dtd",
            "daticert.tipo-header",
            "daticert.identificativo",
            "daticert.msgid",
            "daticert.date-zone",
        ] {
            assert_eq!(verdict(&f, id), "pass", "{name} {id}: {f:#}");
        }
        let bare_lf = read(name).len() == std::fs::read(eml(name)).unwrap().len();
        assert_eq!(
            verdict(&f, "mime.lf-normalised"),
            if bare_lf { "warn" } else { "pass" },
            "{name}"
        );
        assert_eq!(f["status"], "pass", "{name}: {f:#}");
        assert_eq!(code, 0, "{name}");
    }
}

#[test]
fn aruba_envelope_checks_hold() {
    let (_, f, _) = verify_json(&[], &eml(ARUBA[0].0));
    assert_eq!(f["kind"], "posta-certificata");
    for id in [
        "headers.from",
        "headers.destinatari",
        "postacert.msgid-swap",
        "mime.parts",
        "mime.layout",
        "mime.charset",
    ] {
        assert_eq!(verdict(&f, id), "pass", "{id}: {f:#}");
    }
    assert_eq!(verdict(&f, "signature.chain"), "skip", "no --trust");
}

#[test]
fn a_signature_outside_its_validity_fails() {
    let trust = reference();
    let (code, f, _) = verify_json(
        &[
            "--trust",
            trust.to_str().unwrap(),
            "--at",
            "2020-01-01T00:00:00Z",
        ],
        &eml(ARUBA[1].0),
    );
    assert_eq!(verdict(&f, "signature.integrity"), "pass");
    assert_eq!(verdict(&f, "signature.validity"), "fail", "{f:#}");
    assert_eq!(code, 1);
}

#[test]
fn sanitized_messages_parse_and_their_altered_signatures_fail() {
    for name in [
        "sanitized-2021_busta-trasporto_go-pec.eml",
        "sanitized-2021_ricevuta-avvenuta-consegna_go-pec.eml",
    ] {
        let (code, f, _) = verify_json(&[], &eml(name));
        assert_eq!(f["status"], "fail", "{name}");
        assert_eq!(verdict(&f, "signature.present"), "pass", "{name}");
        assert_eq!(verdict(&f, "signature.integrity"), "fail", "{name}: {f:#}");
        assert_eq!(code, 1);
    }
    // The java-pec-parser sample had its smime.p7s removed.
    let (code, f, _) = verify_json(
        &[],
        &eml("sanitized-2024_ricevuta-accettazione_java-pec-parser.eml"),
    );
    assert_eq!(f["kind"], "accettazione");
    assert_eq!(verdict(&f, "signature.present"), "fail", "{f:#}");
    assert_eq!(verdict(&f, "daticert.tipo-header"), "pass");
    assert_eq!(code, 1);
}

#[test]
fn a_message_that_is_not_pec_fails_the_kind_check() {
    let (code, f, _) = verify_json(&[], &eml("synthetic_postacert-inner-message_php-pec.eml"));
    assert_eq!(verdict(&f, "message.kind"), "fail");
    assert_eq!(f["kind"], Value::Null);
    assert_eq!(code, 1);
}

#[test]
fn one_byte_changed_in_the_signed_body_fails_integrity() {
    let src = read(ARUBA[1].0);
    assert!(src.contains("stato accettato dal sistema"));
    let bad = src.replacen(
        "stato accettato dal sistema",
        "stato accettato dal sistemA",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, f, _) = verify_json(&[], &write_tmp(&dir, "m.eml", bad.as_bytes()));
    assert_eq!(verdict(&f, "signature.integrity"), "fail", "{f:#}");
    assert_eq!(code, 1);
}

#[test]
fn removing_smime_p7s_fails_presence() {
    let src = read(ARUBA[1].0);
    let b = "------0E32ED7BC110EE1F6074D6F7771A6303";
    let sig = src
        .find(&format!("{b}\nContent-Type: application/x-pkcs7-signature"))
        .expect("sig part");
    let bad = format!("{}{b}--\n", &src[..sig]);
    let dir = tempfile::tempdir().unwrap();
    let (code, f, _) = verify_json(&[], &write_tmp(&dir, "m.eml", bad.as_bytes()));
    assert_eq!(verdict(&f, "signature.present"), "fail", "{f:#}");
    assert_eq!(verdict(&f, "signature.integrity"), "skip");
    assert_eq!(code, 1);
}

#[test]
fn a_tipo_contradicting_x_ricevuta_fails() {
    let src = read(ARUBA[1].0);
    let bad = src.replacen("X-Ricevuta: accettazione", "X-Ricevuta: presa-in-carico", 1);
    assert_ne!(src, bad);
    let dir = tempfile::tempdir().unwrap();
    let (code, f, _) = verify_json(&[], &write_tmp(&dir, "m.eml", bad.as_bytes()));
    assert_eq!(verdict(&f, "daticert.tipo-header"), "fail", "{f:#}");
    assert_eq!(verdict(&f, "headers.subject-prefix"), "fail");
    // The signature covers only the body: it still verifies.
    assert_eq!(verdict(&f, "signature.integrity"), "pass");
    assert_eq!(code, 1);
}

/// The Aruba acceptance with its daticert.xml replaced (base64) by `xml`.
fn with_daticert(xml: &str) -> String {
    let src = read(ARUBA[1].0);
    let start = src.find("PD94bWwgdmVyc2lvbj0i").expect("daticert base64");
    let end = start + src[start..].find("\n\n").expect("end of base64");
    let b64 = openssl::base64::encode_block(xml.as_bytes());
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("{}{}{}", &src[..start], wrapped.join("\n"), &src[end..])
}

#[test]
fn billion_laughs_is_refused_never_expanded() {
    let mut lol =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE postacert [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        lol.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    lol.push_str("]>\n<postacert tipo=\"accettazione\"><intestazione><mittente>&lol9;</mittente></intestazione></postacert>\n");
    let dir = tempfile::tempdir().unwrap();
    let (code, f, _) = verify_json(
        &[],
        &write_tmp(&dir, "m.eml", with_daticert(&lol).as_bytes()),
    );
    assert_eq!(verdict(&f, "daticert.entities"), "fail", "{f:#}");
    assert_eq!(verdict(&f, "signature.integrity"), "fail");
    assert_eq!(code, 1);
}

#[test]
fn truncated_messages_never_panic() {
    let src = std::fs::read(eml(ARUBA[0].0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in [10, 200, src.len() / 3, src.len() / 2, src.len() - 40] {
        let p = write_tmp(&dir, &format!("t{cut}.eml"), &src[..cut]);
        let out = run(&["verify", p.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "cut {cut}: {stderr}"
        );
        let code = out.status.code().unwrap();
        assert!(code == 1 || code == 2, "cut {cut}: exit {code}");
    }
}

#[test]
fn an_empty_file_is_unusable_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "empty.eml", b"");
    let out = run(&["verify", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("empty.eml") && stderr.contains("empty"),
        "{stderr}"
    );
    let out = run(&["verify", "/nonexistent/x.eml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.eml"));
}

#[test]
fn stdin_is_read_with_dash() {
    let mut child = Command::new(BIN)
        .args(["verify", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let bytes = std::fs::read(eml(ARUBA[1].0)).unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["files"][0]["file"], "-");
    assert_eq!(json["files"][0]["kind"], "accettazione");
}

#[test]
fn json_has_the_documented_fields() {
    let (_, _, _) = verify_json(&[], &eml(ARUBA[1].0));
    let out = run(&[
        "verify",
        "--format",
        "json",
        eml(ARUBA[1].0).to_str().unwrap(),
        eml(ARUBA[0].0).to_str().unwrap(),
    ]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "pec-conformance/verify/v1");
    assert_eq!(json["summary"]["files"], 2);
    for key in ["passed", "failed", "errors"] {
        assert!(json["summary"][key].is_u64(), "{key}");
    }
    let f = &json["files"][0];
    for key in [
        "file", "status", "error", "kind", "wrapped", "signer", "digest", "checks",
    ] {
        assert!(f.get(key).is_some(), "missing {key}");
    }
    for key in ["subject", "email", "issuer"] {
        assert!(f["signer"].get(key).is_some(), "signer.{key}");
    }
    for c in f["checks"].as_array().unwrap() {
        assert!(c["id"].is_string() && c["rule"].is_string() && c["detail"].is_string());
        assert!(["pass", "warn", "fail", "skip"].contains(&c["verdict"].as_str().unwrap()));
    }
}

#[test]
fn human_output_names_file_kind_signer_and_checks() {
    let out = run(&["verify", eml(ARUBA[1].0).to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kind:   accettazione"), "{text}");
    assert!(
        text.contains("signer: CN=Posta Certificata ARUBA PEC"),
        "{text}"
    );
    assert!(text.contains("digest: sha1"), "{text}");
    assert!(text.contains("warn signature.digest"), "{text}");
}

// ---- DTD validator vs xmllint ------------------------------------------------------------------

fn xmllint_valid(file: &Path) -> Option<bool> {
    let dtd = reference().join("daticert.dtd");
    let out = Command::new("xmllint")
        .args([
            "--nonet",
            "--noout",
            "--dtdvalid",
            dtd.to_str().unwrap(),
            file.to_str().unwrap(),
        ])
        .output()
        .ok()?;
    Some(out.status.success())
}

#[test]
fn dtd_validator_agrees_with_xmllint() {
    let valid = std::fs::read_to_string(repo().join(
        "fixtures/real/daticert/from-eml_aruba-2014_ricevuta-avvenuta-consegna-completa.xml",
    ))
    .unwrap();
    let mut cases: Vec<(String, String)> = Vec::new();
    for e in std::fs::read_dir(repo().join("fixtures/real/daticert")).unwrap() {
        let p = e.unwrap().path();
        cases.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read_to_string(&p).unwrap(),
        ));
    }
    let mutate = |name: &str, from: &str, to: &str| {
        assert!(valid.contains(from), "{name}: {from}");
        (name.to_string(), valid.replacen(from, to, 1))
    };
    cases.push(mutate(
        "bad-tipo",
        "tipo=\"avvenuta-consegna\"",
        "tipo=\"consegnata\"",
    ));
    cases.push(mutate("bad-errore", "errore=\"nessuno\"", "errore=\"boh\""));
    cases.push(mutate("no-tipo", "tipo=\"avvenuta-consegna\"", ""));
    cases.push(mutate(
        "bad-ricevuta",
        "<ricevuta tipo=\"completa\"",
        "<ricevuta tipo=\"lunga\"",
    ));
    cases.push(mutate(
        "no-risposte",
        "<risposte>l.battistini@pec.it</risposte>",
        "",
    ));
    cases.push(mutate(
        "no-destinatari",
        "<destinatari tipo=\"certificato\">thinkstudio@pec.it</destinatari>",
        "",
    ));
    cases.push(mutate(
        "two-destinatari",
        "</destinatari>",
        "</destinatari><destinatari tipo=\"esterno\">a@b.it</destinatari>",
    ));
    cases.push(mutate(
        "two-consegna",
        "</consegna>",
        "</consegna><consegna>x</consegna>",
    ));
    cases.push(mutate("ricezione-ok", "</consegna>", "</consegna><ricezione>a</ricezione><ricezione>b</ricezione><errore-esteso>e</errore-esteso>"));
    cases.push(mutate(
        "ricevuta-content",
        "<ricevuta tipo=\"completa\" />",
        "<ricevuta tipo=\"completa\">x</ricevuta>",
    ));
    cases.push(mutate("not-well-formed", "</dati>", "</data>"));
    cases.push(mutate(
        "undeclared-attr",
        "<consegna>",
        "<consegna x=\"1\">",
    ));
    cases.push(mutate(
        "unknown-element",
        "<consegna>",
        "<extra/><consegna>",
    ));
    cases.push(mutate("text-in-dati", "<dati>", "<dati>testo"));
    cases.push(mutate("element-in-pcdata", "<consegna>", "<consegna><b/>"));
    cases.push(mutate("no-zona", " zona=\"+0100\"", ""));
    cases.push(mutate(
        "order",
        "<identificativo>",
        "<msgid>x</msgid><identificativo>",
    ));
    cases.push(mutate("root", "<postacert ", "<posta "));
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (name, xml) in &cases {
        let ours = pec_conformance::dtd::validate_bytes(xml.as_bytes())
            .map(|e| e.is_empty())
            .unwrap_or(false);
        let p = write_tmp(&dir, &format!("{name}.xml"), xml.as_bytes());
        match xmllint_valid(&p) {
            Some(theirs) => {
                assert_eq!(ours, theirs, "{name}: ours {ours}, xmllint {theirs}");
                checked += 1;
            }
            None => {
                eprintln!("NOTICE: xmllint not found; DTD cross-check skipped");
                return;
            }
        }
    }
    assert!(checked >= 25, "{checked}");
}

#[test]
fn bare_lf_files_verify_after_normalisation_with_a_warning() {
    let lf = read(ARUBA[1].0);
    let crlf = lf.replace('\n', "\r\n");
    let dir = tempfile::tempdir().unwrap();
    let (_, f, _) = verify_json(&[], &write_tmp(&dir, "lf.eml", lf.as_bytes()));
    assert_eq!(verdict(&f, "mime.lf-normalised"), "warn");
    assert_eq!(verdict(&f, "signature.integrity"), "pass");
    let (_, f, _) = verify_json(&[], &write_tmp(&dir, "crlf.eml", crlf.as_bytes()));
    assert_eq!(verdict(&f, "mime.lf-normalised"), "pass");
    assert_eq!(verdict(&f, "signature.integrity"), "pass");
}

#[test]
fn a_forwarded_envelope_is_found_and_reported_as_wrapped() {
    let inner = read(ARUBA[0].0);
    let outer = format!(
        "From: list@example.org\nTo: member@example.org\nSubject: [list] POSTA CERTIFICATA: Re: archetipo\n\
         MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"WRAP\"\n\n--WRAP\n\
         Content-Type: text/plain\n\nForwarded by the list.\n\n--WRAP\n\
         Content-Type: message/rfc822\n\n{inner}\n--WRAP--\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, f, _) = verify_json(&[], &write_tmp(&dir, "wrapped.eml", outer.as_bytes()));
    assert_eq!(f["wrapped"], true, "{f:#}");
    assert_eq!(f["kind"], "posta-certificata");
    assert_eq!(verdict(&f, "message.wrapped"), "warn");
    assert_eq!(verdict(&f, "signature.integrity"), "pass", "{f:#}");
    assert_eq!(verdict(&f, "daticert.identificativo"), "pass", "{f:#}");
}

#[test]
fn daticert_mutations_name_their_check() {
    let xml = std::fs::read_to_string(
        repo().join("fixtures/real/daticert/from-eml_aruba-2014_ricevuta-accettazione.xml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("zona=\"+0100\"", "zona=\"+0200\"", "daticert.date-zone"),
        (
            "<risposte>",
            "<oggetto>x</oggetto><risposte>",
            "daticert.dtd",
        ),
        (
            "opec275.20141114182632.23219.07.1.48@pec.aruba.it",
            "opec275.20141114182632.23219.07.1.09.48@pec.aruba.it",
            "daticert.identificativo",
        ),
        ("&lt;1415985992", "&lt;9", "daticert.msgid"),
    ];
    for (from, to, id) in cases {
        assert!(xml.contains(from), "{from}");
        let msg = with_daticert(&xml.replacen(from, to, 1));
        let (code, f, _) = verify_json(&[], &write_tmp(&dir, "m.eml", msg.as_bytes()));
        assert_eq!(verdict(&f, id), "fail", "{id}: {f:#}");
        assert_eq!(code, 1);
    }
    // The unchanged daticert re-encoded passes those checks (the mutation is what fails).
    let msg = with_daticert(&xml);
    let (_, f, _) = verify_json(&[], &write_tmp(&dir, "m.eml", msg.as_bytes()));
    for (_, _, id) in cases {
        assert_eq!(verdict(&f, id), "pass", "{id}: {f:#}");
    }
}

/// A real message `verify` was never developed against (digest [S-NAMIRIAL], kept back from the
/// shared samples): a Namirial transport envelope of Dec 2024, re-wrapped by Mailman into a
/// `multipart/mixed` and subject-tagged `[Osst-users] [SPAM]` (digest §14.6). Unaltered inside.
#[test]
fn unseen_real_namirial_envelope_through_a_mailing_list() {
    let name = "namirial-2024_busta-trasporto_via-mailing-list.eml";
    let agid = reference().join("agid-ca1_intermediate.pem");
    let (code, f, _) = verify_json(
        &[
            "--trust",
            agid.to_str().unwrap(),
            "--at",
            "2024-12-05T00:00:00Z",
        ],
        &eml(name),
    );
    assert_eq!(f["kind"], "posta-certificata");
    assert_eq!(f["wrapped"], true);
    assert_eq!(f["digest"], "sha1");
    assert_eq!(
        f["signer"]["email"], "posta-certificata@sicurezzapostale.it",
        "{f:#}"
    );
    for id in [
        "signature.present",
        "signature.integrity",
        "signature.chain",
        "signature.validity",
        "signature.signer-from",
        // SIG-05: Namirial's certificate follows RFC 6109 §5.5.2 in full.
        "signature.certificate-profile",
        "daticert.dtd",
        "daticert.tipo-header",
        "daticert.identificativo",
        "daticert.msgid",
        "daticert.date-zone",
        "headers.from",
        "headers.destinatari",
        "mime.layout",
        "mime.parts",
        "mime.charset",
        "postacert.msgid-swap",
    ] {
        assert_eq!(verdict(&f, id), "pass", "{id}: {f:#}");
    }
    // The list's changes are outside the signature: worth knowing, not faults (digest §14.6).
    for id in [
        "message.wrapped",
        "headers.subject-prefix",
        "signature.digest",
        "mime.lf-normalised",
    ] {
        assert_eq!(verdict(&f, id), "warn", "{id}: {f:#}");
    }
    assert_eq!(code, 0, "{f:#}");

    // Without the AgID anchor the chain is skipped, and nothing else changes.
    let (_, f, _) = verify_json(&["--at", "2024-12-05T00:00:00Z"], &eml(name));
    assert_eq!(verdict(&f, "signature.chain"), "skip");
    assert_eq!(verdict(&f, "signature.integrity"), "pass");
    // Judged after the certificate expired (2026-09-27), validity fails: exit 1, never 2.
    let (code, f, _) = verify_json(&["--at", "2026-10-01T00:00:00Z"], &eml(name));
    assert_eq!(verdict(&f, "signature.validity"), "fail", "{f:#}");
    assert_eq!(code, 1);
}

/// A tag before the subject prefix warns; a missing prefix still fails.
#[test]
fn subject_tags_before_the_prefix_warn_but_a_missing_prefix_fails() {
    let src = read(ARUBA[1].0);
    let dir = tempfile::tempdir().unwrap();
    let tagged = src.replacen(
        "Subject: ACCETTAZIONE: ",
        "Subject: [lista] ACCETTAZIONE: ",
        1,
    );
    assert_ne!(tagged, src);
    let (_, f, _) = verify_json(&[], &write_tmp(&dir, "t.eml", tagged.as_bytes()));
    assert_eq!(verdict(&f, "headers.subject-prefix"), "warn", "{f:#}");
    let missing = src.replacen("Subject: ACCETTAZIONE: ", "Subject: [lista] ", 1);
    let (_, f, _) = verify_json(&[], &write_tmp(&dir, "m.eml", missing.as_bytes()));
    assert_eq!(verdict(&f, "headers.subject-prefix"), "fail", "{f:#}");
}

/// A real Aruba non-delivery notice of Sep 2026 (anonymised by its collector, so the content no
/// longer matches the signature), a kind with no other real sample: read completely, the altered
/// content named by signature.integrity, the chain still checked, never exit 2.
#[test]
fn unseen_real_aruba_non_delivery_notice() {
    let name = "sanitized-2026_mancata-consegna_aruba_pmm.eml";
    let agid = reference().join("agid-ca1_intermediate.pem");
    let (code, f, _) = verify_json(
        &[
            "--trust",
            agid.to_str().unwrap(),
            "--at",
            "2026-09-19T14:00:00Z",
        ],
        &eml(name),
    );
    assert_eq!(f["kind"], "errore-consegna");
    assert_eq!(f["digest"], "sha256");
    assert_eq!(verdict(&f, "signature.integrity"), "fail", "{f:#}");
    for id in [
        "signature.present",
        "signature.chain",
        "signature.validity",
        "signature.digest",
        "signature.signer-from",
        "daticert.dtd",
        "daticert.tipo-header",
        "daticert.identificativo",
        "daticert.msgid",
        "daticert.date-zone",
        "headers.subject-prefix",
        "headers.from",
        "mime.layout",
        "mime.parts",
        "mime.charset",
        "mime.lf-normalised",
    ] {
        assert_eq!(verdict(&f, id), "pass", "{id}: {f:#}");
    }
    assert_eq!(code, 1);
}

/// `--crl` on a real message (RFC 6109 §2.2.2): a CRL that names DigitPA CA1 as issuer but was
/// signed by another key is refused (fail, exit 1); a CRL of an unrelated CA leaves revocation not
/// checked (warn, exit 0); the report lists the one SignerInfo.
#[test]
fn crl_on_a_real_message_refused_when_not_signed_by_the_issuer() {
    use pec_formats::pki::TestCa;
    let (name, at) = ARUBA[0];
    let trust = reference();
    let certs = openssl::x509::X509::stack_from_pem(
        &std::fs::read(reference().join("aruba-2014_pec-signing-cert_and_digitpa-ca1.pem"))
            .unwrap(),
    )
    .unwrap();
    let digitpa = certs
        .into_iter()
        .find(|c| pec_formats::smime::subject_string(c).contains("CN=DigitPA CA1"))
        .unwrap();
    // DigitPA's name and key identifier, someone else's key.
    let impostor = TestCa {
        key: openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
        cert: digitpa,
    };
    let t = chrono::DateTime::parse_from_rfc3339(at).unwrap().to_utc();
    let day = chrono::Duration::days(1);
    let forged = impostor.crl(&[], t - day, t + day, 1).unwrap();
    let unrelated = TestCa::generate("Unrelated CA")
        .unwrap()
        .crl(&[], t - day, t + day, 1)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let forged = write_tmp(&dir, "forged.pem", &forged.to_pem().unwrap());
    let unrelated = write_tmp(&dir, "unrelated.crl", &unrelated.to_der().unwrap());
    let base = ["--trust", trust.to_str().unwrap(), "--at", at];

    let mut args = base.to_vec();
    args.extend(["--crl", forged.to_str().unwrap()]);
    let (code, f, _) = verify_json(&args, &eml(name));
    assert_eq!(verdict(&f, "signature.revocation"), "fail", "{f:#}");
    let detail = f["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "signature.revocation")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("refused"), "{detail}");
    assert!(detail.contains("DigitPA CA1"), "{detail}");
    assert_eq!(code, 1);

    let mut args = base.to_vec();
    args.extend(["--crl", unrelated.to_str().unwrap()]);
    let (code, f, _) = verify_json(&args, &eml(name));
    assert_eq!(verdict(&f, "signature.revocation"), "warn", "{f:#}");
    assert_eq!(f["signers"].as_array().unwrap().len(), 1);
    assert_eq!(f["signers"][0]["verdict"], "pass", "{f:#}");
    assert_eq!(f["signers"][0]["digest"], "sha1");
    assert_eq!(code, 0, "{f:#}");

    let (_, f, _) = verify_json(&base, &eml(name));
    assert_eq!(verdict(&f, "signature.revocation"), "skip");
}
