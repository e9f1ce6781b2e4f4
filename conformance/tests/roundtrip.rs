//! Every PEC kind round-trips build → parse → verify, judged by `verify` and by outside oracles
//! (xmllint with the reference DTD, `openssl cms -verify`, `gpgsm --verify`), then mutated so that
//! each check names what broke. The builders only make the inputs; no check uses them.

use pec_conformance::checks::{VerifyConfig, verify_bytes};
use pec_conformance::report::{FileReport, Verdict};
use pec_formats::build::{self, Built, Certification, Provider, ReceiptVariant, TextForm};
use pec_formats::kind::{Errore, Kind, TimeoutPhase, TipoDestinatario};
use pec_formats::pki::{ProviderIdentity, TestCa};
use pec_formats::smime::{DigestAlg, SignatureStyle, Signer, TrustStore};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_pec-conformance");
const ID: &str = "opec1700000000000.0001aabbccdd@pec.example.it";
const SENDER: &str = "mario.rossi@pec.example.it";
const TO_CERT: &str = "ufficio@pec.other.example";
const TO_EXT: &str = "info@example.com";
const CC: &str = "protocollo@pec.other.example";
const PROVIDER_MAILBOX: &str = "ricevute@pec.example.it";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A client's submission: folded To, Cc, an encoded subject, X-TipoRicevuta, a PDF attachment.
fn original() -> Vec<u8> {
    format!(
        "Received: from client.example (client.example [192.0.2.1])\r\n\
         \tby smtp.pec.example.it with ESMTPSA id ABC123;\r\n\
         \tMon, 3 Mar 2025 10:00:00 +0100\r\n\
         From: Mario Rossi <{SENDER}>\r\n\
         To: Ufficio <{TO_CERT}>,\r\n\
         \x20Info <{TO_EXT}>\r\n\
         Cc: {CC}\r\n\
         Subject: =?UTF-8?Q?Diffida_=C3=A8_urgente?=\r\n\
         Date: Mon, 3 Mar 2025 10:00:00 +0100\r\n\
         Message-ID: <client-1234@host.example>\r\n\
         X-TipoRicevuta: breve\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"=_orig_b1\"\r\n\
         \r\n\
         --=_orig_b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Testo della diffida.\r\n\
         --=_orig_b1\r\n\
         Content-Type: application/pdf; name=\"contratto.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"contratto.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK\r\n\
         --=_orig_b1--\r\n"
    )
    .into_bytes()
}

struct Pki {
    ca: TestCa,
    _identity: ProviderIdentity,
    signer: Signer,
    /// A provider certificate from another CA (for the signature.chain mutation).
    foreign: Signer,
    dir: tempfile::TempDir,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = TestCa::generate("PEC Test CA").expect("CA");
        let identity = ca
            .issue_provider("EXAMPLE PEC S.p.A.", "posta-certificata@pec.example.it")
            .expect("provider certificate");
        let other = TestCa::generate("Another CA").expect("other CA");
        let foreign = other
            .issue_provider("EXAMPLE PEC S.p.A.", "posta-certificata@pec.example.it")
            .expect("foreign certificate")
            .signer(DigestAlg::Sha256);
        let signer = identity.signer(DigestAlg::Sha256);
        let dir = tempfile::tempdir().expect("tempdir");
        ca.write_to(dir.path()).expect("write CA");
        Pki {
            ca,
            _identity: identity,
            signer,
            foreign,
            dir,
        }
    })
}

fn ca_pem() -> PathBuf {
    pki().dir.path().join("ca.pem")
}

fn provider(signer: &'static Signer, form: TextForm, style: SignatureStyle) -> Provider<'static> {
    let mut p = Provider::new("EXAMPLE PEC S.p.A.", "pec.example.it", signer);
    p.options.text_form = form;
    p.options.signature_style = style;
    p
}

fn certification() -> Certification {
    let rcpts = [TO_CERT, TO_EXT, CC].map(String::from);
    let kind_of = |a: &str| {
        if a.ends_with("@example.com") {
            TipoDestinatario::Esterno
        } else {
            TipoDestinatario::Certificato
        }
    };
    // The event time is now, so the signing time, the Date: and the certificate agree.
    Certification::from_submission(
        &original(),
        SENDER,
        &rcpts,
        &kind_of,
        ID.into(),
        chrono::Utc::now(),
    )
    .expect("certification")
}

/// Every kind, the three delivery receipt variants and both timeout phases, built by `p`.
fn every_message(p: &Provider<'_>) -> Vec<(String, Kind, Built)> {
    let c = certification();
    let post = build::postacert_original(&original(), ID).unwrap();
    let mut out = vec![
        (
            "busta-trasporto",
            Kind::BustaTrasporto,
            build::busta_trasporto(p, &c, &original()),
        ),
        (
            "busta-anomalia",
            Kind::BustaAnomalia,
            build::busta_anomalia(p, &original(), "firma non valida", c.time),
        ),
        (
            "accettazione",
            Kind::Accettazione,
            build::accettazione(p, &c),
        ),
        (
            "non-accettazione",
            Kind::NonAccettazione,
            build::non_accettazione(p, &c, "destinatario non valido"),
        ),
        (
            "non-accettazione-virus",
            Kind::NonAccettazioneVirus,
            build::non_accettazione_virus(p, &c, "EICAR-Test-File"),
        ),
        (
            "presa-in-carico",
            Kind::PresaInCarico,
            build::presa_in_carico(p, &c, &[TO_CERT.to_string()], PROVIDER_MAILBOX),
        ),
        (
            "rilevazione-virus",
            Kind::RilevazioneVirus,
            build::rilevazione_virus(p, &c, TO_CERT, "EICAR-Test-File", PROVIDER_MAILBOX),
        ),
        (
            "mancata-consegna-virus",
            Kind::MancataConsegnaVirus,
            build::mancata_consegna_virus(p, &c, TO_CERT, "EICAR-Test-File"),
        ),
        (
            "mancata-consegna",
            Kind::MancataConsegna,
            build::mancata_consegna(p, &c, TO_CERT, Errore::NoDest, "5.1.1 - utente sconosciuto"),
        ),
        (
            "timeout-12h",
            Kind::MancataConsegnaTimeout,
            build::mancata_consegna_timeout(p, &c, TO_CERT, TimeoutPhase::Preavviso12h),
        ),
        (
            "timeout-24h",
            Kind::MancataConsegnaTimeout,
            build::mancata_consegna_timeout(p, &c, TO_CERT, TimeoutPhase::Finale24h),
        ),
    ]
    .into_iter()
    .map(|(n, k, b)| (n.to_string(), k, b.unwrap_or_else(|e| panic!("{n}: {e}"))))
    .collect::<Vec<_>>();
    for (name, variant) in [
        ("consegna-completa", ReceiptVariant::Completa),
        ("consegna-breve", ReceiptVariant::Breve),
        ("consegna-sintetica", ReceiptVariant::Sintetica),
    ] {
        let b = build::avvenuta_consegna(p, &c, TO_CERT, variant, Some(&post))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((name.to_string(), Kind::AvvenutaConsegna, b));
    }
    out
}

/// Both text forms and both signature styles (each value at least once, each with each kind).
fn profiles() -> [(TextForm, SignatureStyle); 2] {
    [
        (TextForm::Plain, SignatureStyle::Rfc5751),
        (TextForm::Alternative, SignatureStyle::Legacy),
    ]
}

fn trusted() -> VerifyConfig {
    VerifyConfig {
        trust: Some(TrustStore::from_certs(vec![pki().ca.cert.clone()])),
        at: None,
    }
}

fn verdict(r: &FileReport, id: &str) -> Verdict {
    r.check(id)
        .unwrap_or_else(|| panic!("no check {id} in {}", r.file))
        .verdict
}

fn failures(r: &FileReport) -> Vec<String> {
    r.checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| format!("{}: {}", c.id, c.detail))
        .collect()
}

/// The CLI on one file: exit code and the file's JSON report; never a panic.
fn cli(args: &[&str], file: &Path) -> (i32, Value) {
    let out: Output = Command::new(BIN)
        .arg("verify")
        .args(args)
        .args(["--format", "json"])
        .arg(file)
        .output()
        .expect("run pec-conformance");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{}: {stderr}",
        file.display()
    );
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    (
        out.status.code().expect("exit code"),
        json["files"][0].clone(),
    )
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary gpgsm home that trusts the test CA as a root (CRL checks off: the test CA has none).
struct Gpgsm {
    home: tempfile::TempDir,
}

impl Gpgsm {
    fn new() -> Gpgsm {
        // A short path under /tmp: the agent's socket path has a length limit.
        let home = tempfile::Builder::new()
            .prefix("gs")
            .tempdir_in("/tmp")
            .unwrap();
        let h = home.path();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        std::fs::write(h.join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
        let fp = pec_formats::smime::sha1_fingerprint_hex(&pki().ca.cert).to_ascii_uppercase();
        std::fs::write(h.join("trustlist.txt"), format!("{fp} S\n")).unwrap();
        let g = Gpgsm { home };
        run_ok(
            g.cmd().arg("--import").arg(ca_pem()),
            "gpgsm --import ca.pem",
        );
        g
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("gpgsm");
        c.env("GNUPGHOME", self.home.path()).arg("--batch");
        c
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        // End the agent this home started (by its home directory, never by name).
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// Warnings a generated message may carry, each justified:
/// - `signature.digest` on the legacy style: it writes `micalg=sha1` as Aruba and Namirial do
///   (digest §4.1) while our test signer uses SHA-256, so micalg does not name the digest.
const ALLOWED_WARN: &[(&str, Option<SignatureStyle>)] =
    &[("signature.digest", Some(SignatureStyle::Legacy))];

#[test]
fn every_kind_round_trips_through_verify_and_outside_oracles() {
    let dtd = repo().join("fixtures/reference/daticert.dtd");
    let dir = tempfile::tempdir().unwrap();
    let gpgsm = Gpgsm::new();
    let cfg = trusted();
    let mut checked = 0;
    for (form, style) in profiles() {
        let p = provider(&pki().signer, form, style);
        for (name, kind, built) in every_message(&p) {
            let label = format!("{name} ({form:?}, {style:?})");
            let file = dir.path().join(format!("{name}-{form:?}-{style:?}.eml"));
            std::fs::write(&file, &built.raw).unwrap();

            // verify_bytes with the CA as trust: no fail; warnings only those allowed above.
            let r = verify_bytes(&label, &built.raw, &cfg);
            assert_eq!(r.kind.as_deref(), Some(kind.id()), "{label}");
            assert!(failures(&r).is_empty(), "{label}: {:#?}", failures(&r));
            for c in r.checks.iter().filter(|c| c.verdict == Verdict::Warn) {
                assert!(
                    ALLOWED_WARN
                        .iter()
                        .any(|(id, s)| *id == c.id && s.is_none_or(|s| s == style)),
                    "{label}: unexpected warning {}: {}",
                    c.id,
                    c.detail
                );
            }
            for id in [
                "signature.integrity",
                "signature.chain",
                "signature.validity",
                "signature.signer-from",
                "mime.layout",
                "mime.parts",
                "headers.from",
            ] {
                assert_eq!(verdict(&r, id), Verdict::Pass, "{label} {id}");
            }

            // The CLI agrees: exit 0.
            let ca = ca_pem();
            let (code, f) = cli(&["--trust", ca.to_str().unwrap()], &file);
            assert_eq!(code, 0, "{label}: {f:#}");
            assert_eq!(f["status"], "pass", "{label}");

            // xmllint with the reference DTD accepts the daticert (none on the anomaly envelope).
            let msg = pec_formats::parse::parse(&built.raw).expect("parses");
            match (&msg.daticert_xml, kind) {
                (None, Kind::BustaAnomalia) => {}
                (None, _) => panic!("{label}: no daticert.xml"),
                (Some(xml), _) => {
                    let x = dir.path().join(format!("{name}.xml"));
                    std::fs::write(&x, xml).unwrap();
                    run_ok(
                        Command::new("xmllint")
                            .args(["--nonet", "--noout", "--dtdvalid"])
                            .arg(&dtd)
                            .arg(&x),
                        &format!("xmllint {label}"),
                    );
                }
            }

            // openssl cms verifies the whole S/MIME message against the test CA.
            run_ok(
                Command::new("openssl")
                    .args(["cms", "-verify", "-CAfile"])
                    .arg(ca_pem())
                    .arg("-in")
                    .arg(&file)
                    .args(["-out", "/dev/null"]),
                &format!("openssl cms -verify {label}"),
            );

            // gpgsm verifies the detached signature over the signed entity.
            let signed = msg.signed.as_ref().expect("signed");
            let sig = dir.path().join(format!("{name}.p7s"));
            let content = dir.path().join(format!("{name}.content"));
            std::fs::write(&sig, signed.signature_der.as_ref().expect("smime.p7s")).unwrap();
            std::fs::write(&content, &signed.content).unwrap();
            let out = gpgsm
                .cmd()
                .arg("--verify")
                .arg(&sig)
                .arg(&content)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.contains("Good signature"),
                "gpgsm {label}: {err}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 14, "14 messages per profile");
}

// ---- mutations of generated messages ------------------------------------------------------------

fn accettazione() -> Vec<u8> {
    let p = provider(&pki().signer, TextForm::Plain, SignatureStyle::Rfc5751);
    build::accettazione(&p, &certification()).unwrap().raw
}

fn replace_once(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(raw.to_vec()).unwrap();
    assert!(s.contains(from), "{from} not in the message");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn one_byte_changed_in_the_signed_body_fails_integrity() {
    let raw = accettazione();
    let bad = replace_once(
        &raw,
        "-- Ricevuta di accettazione --",
        "-- Ricevuta di accettaziOne --",
    );
    assert_eq!(bad.len(), raw.len());
    let r = verify_bytes("m", &bad, &trusted());
    assert_eq!(verdict(&r, "signature.integrity"), Verdict::Fail);
    assert_eq!(r.status, "fail");
    // The unchanged message passes: the byte is what fails.
    let r = verify_bytes("m", &raw, &trusted());
    assert_eq!(verdict(&r, "signature.integrity"), Verdict::Pass);
}

#[test]
fn a_certificate_from_another_ca_fails_the_chain() {
    let p = provider(&pki().foreign, TextForm::Plain, SignatureStyle::Rfc5751);
    let raw = build::accettazione(&p, &certification()).unwrap().raw;
    let r = verify_bytes("m", &raw, &trusted());
    assert_eq!(verdict(&r, "signature.integrity"), Verdict::Pass);
    assert_eq!(
        verdict(&r, "signature.chain"),
        Verdict::Fail,
        "{:#?}",
        r.checks
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.eml");
    std::fs::write(&f, &raw).unwrap();
    let (code, _) = cli(&["--trust", ca_pem().to_str().unwrap()], &f);
    assert_eq!(code, 1);
}

#[test]
fn removing_smime_p7s_fails_presence() {
    let raw = String::from_utf8(accettazione()).unwrap();
    // Cut at the delimiter line before the signature part and close the multipart there.
    let at = raw.find("smime.p7s").expect("signature part");
    let delim = raw[..at].rfind("\r\n--").expect("delimiter");
    let line_end = delim + 2 + raw[delim + 2..].find("\r\n").unwrap();
    let boundary = &raw[delim + 4..line_end];
    let bad = format!("{}\r\n--{boundary}--\r\n", &raw[..delim]);
    let r = verify_bytes("m", bad.as_bytes(), &trusted());
    assert_eq!(
        verdict(&r, "signature.present"),
        Verdict::Fail,
        "{:#?}",
        r.checks
    );
    assert_eq!(verdict(&r, "signature.integrity"), Verdict::Skip);
    assert_eq!(r.status, "fail");
}

#[test]
fn a_tipo_contradicting_x_ricevuta_fails() {
    let raw = accettazione();
    let bad = replace_once(
        &raw,
        "X-Ricevuta: accettazione",
        "X-Ricevuta: avvenuta-consegna",
    );
    let r = verify_bytes("m", &bad, &trusted());
    assert_eq!(verdict(&r, "daticert.tipo-header"), Verdict::Fail);
    // The headers are outside the signature: it still verifies.
    assert_eq!(verdict(&r, "signature.integrity"), Verdict::Pass);
}

/// The generated acceptance with its daticert.xml (base64) replaced by `xml`.
fn with_daticert(xml: &str) -> Vec<u8> {
    let raw = String::from_utf8(accettazione()).unwrap();
    let name = raw.find("name=\"daticert.xml\"").expect("daticert part");
    let start = name + raw[name..].find("\r\n\r\n").unwrap() + 4;
    let end = start + raw[start..].find("\r\n--").unwrap();
    let b64 = openssl::base64::encode_block(xml.as_bytes());
    format!("{}{b64}{}", &raw[..start], &raw[end..]).into_bytes()
}

#[test]
fn entities_in_a_generated_daticert_are_refused() {
    let external = "<?xml version=\"1.0\"?>\n<!DOCTYPE postacert [\n\
        <!ENTITY ext SYSTEM \"file:///etc/passwd\">\n]>\n\
        <postacert tipo=\"accettazione\" errore=\"nessuno\"><intestazione><mittente>&ext;</mittente>\
        </intestazione></postacert>\n";
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
    for (what, xml) in [
        ("external entity", external),
        ("billion laughs", lol.as_str()),
    ] {
        let r = verify_bytes("m", &with_daticert(xml), &trusted());
        assert_eq!(verdict(&r, "daticert.entities"), Verdict::Fail, "{what}");
        assert_eq!(verdict(&r, "signature.integrity"), Verdict::Fail, "{what}");
        assert!(
            r.checks.iter().all(|c| !c.detail.contains("root:")),
            "{what}: the external entity was never read"
        );
    }
    // The same splice with the original daticert passes: the entities are what fail.
    let good = pec_formats::parse::parse(&accettazione())
        .unwrap()
        .daticert_xml
        .unwrap();
    let r = verify_bytes(
        "m",
        &with_daticert(std::str::from_utf8(&good).unwrap()),
        &trusted(),
    );
    assert_eq!(verdict(&r, "daticert.entities"), Verdict::Pass);
    assert_eq!(verdict(&r, "daticert.dtd"), Verdict::Pass);
}

#[test]
fn truncated_generated_messages_never_panic() {
    let p = provider(&pki().signer, TextForm::Alternative, SignatureStyle::Legacy);
    let dir = tempfile::tempdir().unwrap();
    for (name, _, built) in every_message(&p) {
        let raw = &built.raw;
        let n = raw.len();
        for cut in [1, 40, n / 5, n / 3, n / 2, 2 * n / 3, n - 60, n - 3] {
            let r = verify_bytes(&name, &raw[..cut], &trusted());
            assert!(
                r.status == "error" || !failures(&r).is_empty(),
                "{name} cut at {cut}: status {} without a named fail",
                r.status
            );
        }
        // And through the process, once per kind.
        let f = dir.path().join(format!("{name}.eml"));
        std::fs::write(&f, &raw[..n / 2]).unwrap();
        let (code, _) = cli(&[], &f);
        assert!(code == 1 || code == 2, "{name}: exit {code}");
    }
}

fn check_of<'a>(f: &'a Value, id: &str) -> &'a Value {
    f["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {f:#}"))
}

/// `verify --crl` (RFC 6109 §2.2.2; RFC 5280 §6.3): the provider certificate revoked before the
/// verification time fails with date and reason; before the revocation, or with a CRL not listing
/// it, it passes; a CRL of another CA only warns; without --crl the check is skipped; an
/// unreadable CRL file is a usage error.
#[test]
fn crl_revocation_through_the_cli() {
    use pec_formats::smime::RevocationReason;
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let msg = d.join("accettazione.eml");
    std::fs::write(&msg, accettazione()).unwrap();
    let now = chrono::Utc::now();
    let hours = chrono::Duration::hours;
    let entry =
        p.ca.revoke(
            &p._identity.cert,
            now - hours(1),
            Some(RevocationReason::KeyCompromise),
        )
        .unwrap();
    let revoked =
        p.ca.crl(&[entry], now - hours(1), now + hours(100), 1)
            .unwrap();
    std::fs::write(d.join("revoked.pem"), revoked.to_pem().unwrap()).unwrap();
    let clean = p.ca.crl(&[], now - hours(1), now + hours(100), 2).unwrap();
    std::fs::write(d.join("clean.crl"), clean.to_der().unwrap()).unwrap();
    let other = TestCa::generate("Another CA")
        .unwrap()
        .crl(&[], now - hours(1), now + hours(100), 1)
        .unwrap();
    std::fs::write(d.join("other.pem"), other.to_pem().unwrap()).unwrap();
    let ca = ca_pem();
    let ca = ca.to_str().unwrap();
    let path = |n: &str| d.join(n).to_str().unwrap().to_string();

    let (code, f) = cli(&["--trust", ca, "--crl", &path("revoked.pem")], &msg);
    let rev = check_of(&f, "signature.revocation");
    assert_eq!(rev["verdict"], "fail", "{f:#}");
    let detail = rev["detail"].as_str().unwrap();
    assert!(
        detail.contains("revoked on") && detail.contains("keyCompromise"),
        "{detail}"
    );
    assert_eq!(f["signers"].as_array().unwrap().len(), 1, "{f:#}");
    assert_eq!(f["signers"][0]["verdict"], "fail");
    assert_eq!(f["signers"][0]["digest"], "sha256");
    assert_eq!(code, 1);

    // Two hours ago it was not yet revoked.
    let before = (now - hours(2)).to_rfc3339();
    let (_, f) = cli(
        &[
            "--trust",
            ca,
            "--at",
            &before,
            "--crl",
            &path("revoked.pem"),
        ],
        &msg,
    );
    assert_eq!(
        check_of(&f, "signature.revocation")["verdict"],
        "pass",
        "{f:#}"
    );

    // A DER CRL not listing it, plus another CA's CRL: pass, exit 0.
    let (code, f) = cli(
        &[
            "--trust",
            ca,
            "--crl",
            &path("clean.crl"),
            "--crl",
            &path("other.pem"),
        ],
        &msg,
    );
    assert_eq!(
        check_of(&f, "signature.revocation")["verdict"],
        "pass",
        "{f:#}"
    );
    assert_eq!(f["signers"][0]["verdict"], "pass");
    assert_eq!(code, 0, "{f:#}");

    // Only another CA's CRL: revocation not checked, a warning.
    let (code, f) = cli(&["--trust", ca, "--crl", &path("other.pem")], &msg);
    let rev = check_of(&f, "signature.revocation");
    assert_eq!(rev["verdict"], "warn", "{f:#}");
    assert!(
        rev["detail"]
            .as_str()
            .unwrap()
            .contains("revocation not checked")
    );
    assert_eq!(code, 0);

    // No --crl: skipped.
    let (_, f) = cli(&["--trust", ca], &msg);
    assert_eq!(check_of(&f, "signature.revocation")["verdict"], "skip");

    // An unreadable CRL file: a usage error naming the option, exit 2.
    std::fs::write(d.join("junk.crl"), b"junk").unwrap();
    let out = Command::new(BIN)
        .args(["verify", "--crl", &path("junk.crl")])
        .arg(&msg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--crl") && stderr.contains("junk.crl"),
        "{stderr}"
    );
}

/// RFC 5652 §5.3/§5.4 through the CLI: the acceptance receipt re-signed by two signers with
/// `openssl cms -sign -signer a -signer b` (the outside tool) lists both under `signers` and
/// passes; one wrong signature value fails `signature.integrity`, naming its SignerInfo.
#[test]
fn two_signer_infos_are_each_reported() {
    use base64::Engine as _;
    let p = pki();
    let raw = accettazione();
    let msg = pec_formats::parse::parse(&raw).unwrap();
    let signed = msg.signed.as_ref().unwrap();
    let b64 = |der: &[u8]| {
        base64::engine::general_purpose::STANDARD
            .encode(der)
            .as_bytes()
            .chunks(76)
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    let old = b64(signed.signature_der.as_ref().unwrap());
    let second =
        p.ca.issue_provider("SECONDO PEC S.p.A.", "posta-certificata@pec.example.it")
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (n, key, cert) in [
        ("a", &p._identity.key, &p._identity.cert),
        ("b", &second.key, &second.cert),
    ] {
        std::fs::write(d.join(format!("{n}.pem")), cert.to_pem().unwrap()).unwrap();
        std::fs::write(
            d.join(format!("{n}.key")),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
    }
    std::fs::write(d.join("content"), &signed.content).unwrap();
    run_ok(
        Command::new("openssl").current_dir(d).args([
            "cms", "-sign", "-binary", "-md", "sha256", "-signer", "a.pem", "-inkey", "a.key",
            "-signer", "b.pem", "-inkey", "b.key", "-in", "content", "-outform", "DER", "-out",
            "two.p7s",
        ]),
        "openssl cms -sign with two signers",
    );
    let der = openssl::cms::CmsContentInfo::from_der(&std::fs::read(d.join("two.p7s")).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    let with = |der: &[u8]| replace_once(&raw, &old, &b64(der));
    let two = d.join("two.eml");
    std::fs::write(&two, with(&der)).unwrap();
    let ca = ca_pem();
    let (code, f) = cli(&["--trust", ca.to_str().unwrap()], &two);
    let signers = f["signers"].as_array().unwrap();
    assert_eq!(signers.len(), 2, "{f:#}");
    assert!(signers.iter().all(|s| s["verdict"] == "pass"), "{f:#}");
    assert!(
        signers
            .iter()
            .any(|s| s["subject"].as_str().unwrap().contains("SECONDO PEC"))
    );
    assert_eq!(check_of(&f, "signature.integrity")["verdict"], "pass");
    assert_eq!(code, 0, "{f:#}");

    // RSA-2048 signature values are the only `04 82 01 00` OCTET STRINGs: one per SignerInfo.
    let marker = [0x04, 0x82, 0x01, 0x00];
    let at: Vec<usize> = der
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 2, "two signature values");
    let mut bad = der.clone();
    bad[at[1] + 4 + 255] ^= 0x01;
    std::fs::write(&two, with(&bad)).unwrap();
    let (code, f) = cli(&["--trust", ca.to_str().unwrap()], &two);
    let signers = f["signers"].as_array().unwrap();
    assert_eq!(signers[0]["verdict"], "pass", "{f:#}");
    assert_eq!(signers[1]["verdict"], "fail", "{f:#}");
    let integrity = check_of(&f, "signature.integrity");
    assert_eq!(integrity["verdict"], "fail");
    let detail = integrity["detail"].as_str().unwrap();
    assert!(detail.starts_with("SignerInfo 2 ("), "{detail}");
    assert_eq!(code, 1);
    // The human output has one line per signer.
    let out = Command::new(BIN)
        .args(["verify", "--trust", ca.to_str().unwrap()])
        .arg(&two)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("signer 1: ") && text.contains("signer 2: "),
        "{text}"
    );
    assert!(text.contains("(sha256) fail: integrity: "), "{text}");
}

/// RFC 5652 §5.1 through the CLI: a SignedData with no SignerInfo signs nothing and fails.
#[test]
fn a_signature_with_no_signer_info_fails() {
    use base64::Engine as _;
    let raw = accettazione();
    let msg = pec_formats::parse::parse(&raw).unwrap();
    let old = base64::engine::general_purpose::STANDARD
        .encode(msg.signed.as_ref().unwrap().signature_der.as_ref().unwrap());
    let old = old
        .as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    // ContentInfo { signedData, [0] SignedData { 1, {}, { id-data }, signerInfos {} } }
    let empty: &[u8] = &[
        0x30, 0x23, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02, 0xA0, 0x16,
        0x30, 0x14, 0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x0B, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86,
        0xF7, 0x0D, 0x01, 0x07, 0x01, 0x31, 0x00,
    ];
    let new = base64::engine::general_purpose::STANDARD.encode(empty);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.eml");
    std::fs::write(&file, replace_once(&raw, &old, &new)).unwrap();
    let ca = ca_pem();
    let (code, f) = cli(&["--trust", ca.to_str().unwrap()], &file);
    assert_eq!(
        check_of(&f, "signature.present")["verdict"],
        "pass",
        "{f:#}"
    );
    let integrity = check_of(&f, "signature.integrity");
    assert_eq!(integrity["verdict"], "fail", "{f:#}");
    assert!(
        integrity["detail"]
            .as_str()
            .unwrap()
            .contains("no SignerInfo"),
        "{f:#}"
    );
    assert_eq!(check_of(&f, "signature.digest")["verdict"], "fail");
    assert_eq!(f["signers"].as_array().unwrap().len(), 0);
    assert_eq!(f["status"], "fail");
    assert_eq!(code, 1);
}
