//! The offline checks of one PEC message, written from the rules (RFC 6109; digest §4–§7, §14, §15),
//! not from the project's builders. Reading and cryptography come from `pec_formats::{parse, smime}`;
//! the daticert is read with our own DTD validator ([`crate::dtd`]).

use crate::dtd::{self, Element, XmlError};
use crate::mime;
use crate::report::{CheckResult, FileReport, SignerSummary, SignerVerdict, Verdict};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use openssl::nid::Nid;
use openssl::x509::{X509, X509NameRef};
use pec_formats::kind::{Kind, Original};
use pec_formats::parse::{PecMessage, parse};
use pec_formats::smime::{
    CrlSet, DigestAlg, Outcome, SignatureReport, SignerReport, TrustStore, VerifyOptions,
    verify_detached_with_crls,
};
use std::path::Path;

/// What the checks verify against.
#[derive(Default)]
pub struct VerifyConfig {
    /// Trust anchors for `signature.chain`; `None` skips that check.
    pub trust: Option<TrustStore>,
    /// The time for chain and validity; `None` = now.
    pub at: Option<DateTime<Utc>>,
}

/// The rule of `signature.revocation`.
const REVOCATION_RULE: &str = "RFC 6109 §2.2.2; RFC 5280 §6.3";

/// One SignerInfo as reported: `fail` on its first failed step (RFC 5652 §5.3; RFC 6109 §2.2.2).
fn signer_verdict(s: &SignerReport) -> SignerVerdict {
    let failed = [
        ("integrity", &s.integrity),
        ("chain", &s.chain),
        ("validity", &s.validity),
        ("revocation", &s.revocation),
    ]
    .into_iter()
    .find_map(|(what, o)| match o {
        Outcome::Fail(why) => Some(format!("{what}: {why}")),
        _ => None,
    });
    SignerVerdict {
        subject: s.subject(),
        digest: s.digest_name.clone(),
        verdict: if failed.is_some() {
            Verdict::Fail
        } else {
            Verdict::Pass
        },
        detail: failed.unwrap_or_else(|| "signature valid".into()),
    }
}

/// Loads trust anchors from a PEM bundle or a folder of PEM files (`.pem`, `.crt`, `.cer`).
pub fn load_trust(path: &Path) -> Result<TrustStore, String> {
    let mut certs = Vec::new();
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("--trust {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "pem" | "crt" | "cer")
                })
            })
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| format!("--trust {}: {e}", f.display()))?;
        let stack = X509::stack_from_pem(&bytes)
            .map_err(|e| format!("--trust {}: not PEM certificates: {e}", f.display()))?;
        certs.extend(stack);
    }
    if certs.is_empty() {
        return Err(format!("--trust {}: no certificate found", path.display()));
    }
    Ok(TrustStore { certs })
}

/// Loads the CRLs of `--crl` files (PEM or DER each).
pub fn load_crls(paths: &[std::path::PathBuf]) -> Result<CrlSet, String> {
    let mut set = CrlSet::default();
    for p in paths {
        set.extend(CrlSet::from_path(p).map_err(|e| format!("--crl {e}"))?);
    }
    Ok(set)
}

/// Runs every check on one input. Never panics on bad input; an unusable input gives a report with
/// status `error`.
pub fn verify_bytes(file: &str, raw: &[u8], cfg: &VerifyConfig) -> FileReport {
    verify_bytes_with_crls(file, raw, cfg, None)
}

/// [`verify_bytes`], also checking the signer certificates against `crls` (`signature.revocation`,
/// RFC 6109 §2.2.2); `None` skips that check.
pub fn verify_bytes_with_crls(
    file: &str,
    raw: &[u8],
    cfg: &VerifyConfig,
    crls: Option<&CrlSet>,
) -> FileReport {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return FileReport::unusable(file, format!("{file}: empty input, not an e-mail message"));
    }
    let msg = match parse(raw) {
        Ok(m) => m,
        Err(e) => return FileReport::unusable(file, format!("{file}: {e}")),
    };
    let mut v = Verifier {
        msg: &msg,
        raw,
        cfg,
        crls,
        out: Vec::new(),
        signer: None,
        digest: None,
        signers: Vec::new(),
    };
    v.run();
    let (checks, signer, digest, signers) = (v.out, v.signer, v.digest, v.signers);
    FileReport {
        file: file.to_string(),
        status: "pass",
        error: None,
        kind: msg.kind.map(|k| k.id().to_string()),
        wrapped: msg.wrapped,
        signer,
        digest,
        signers,
        checks,
    }
    .finish()
}

/// The daticert as read: the tree, or why it could not be read.
enum Dc {
    Absent,
    Unreadable(XmlError),
    Tree(Element),
}

/// One part of the signed `multipart/mixed`, as written.
struct Part {
    media: String,
    filename: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Verifier<'a> {
    msg: &'a PecMessage,
    raw: &'a [u8],
    cfg: &'a VerifyConfig,
    crls: Option<&'a CrlSet>,
    out: Vec<CheckResult>,
    signer: Option<SignerSummary>,
    digest: Option<String>,
    signers: Vec<SignerVerdict>,
}

impl Verifier<'_> {
    fn push(
        &mut self,
        id: &'static str,
        verdict: Verdict,
        rule: &'static str,
        detail: impl Into<String>,
    ) {
        self.out.push(CheckResult {
            id,
            verdict,
            rule,
            detail: detail.into(),
        });
    }

    fn run(&mut self) {
        let kind = self.msg.kind;
        match kind {
            Some(k) => self.push(
                "message.kind",
                Verdict::Pass,
                "RFC 6109 App. A; digest §5.12",
                format!("{} by X-Trasporto/X-Ricevuta", k.italian_name()),
            ),
            None => self.push(
                "message.kind",
                Verdict::Fail,
                "RFC 6109 App. A; digest §5.12",
                "no X-Trasporto or X-Ricevuta naming one PEC kind",
            ),
        }
        if self.msg.wrapped {
            // digest §14.6: mailing lists re-wrap envelopes; only the signed entity counts.
            self.push(
                "message.wrapped",
                Verdict::Warn,
                "digest §14.6",
                "the PEC message was found wrapped inside another message (mailing list or forward); checked the inner one",
            );
        }
        self.signature_checks();
        let dc = match &self.msg.daticert_xml {
            None => Dc::Absent,
            Some(x) => match dtd::parse_tree(x) {
                Ok(t) => Dc::Tree(t),
                Err(e) => Dc::Unreadable(e),
            },
        };
        self.daticert_checks(kind, &dc);
        self.header_checks(kind, &dc);
        self.mime_checks(kind, &dc);
    }

    // ---- signature -------------------------------------------------------------------------

    fn signature_checks(&mut self) {
        const PRESENT: &str = "RFC 6109 §2.1, §4.1; digest §4.1";
        let signed = self.msg.signed.as_ref();
        let (content, der) = match signed {
            Some(s) => match &s.signature_der {
                Some(der) => (s.content.clone(), der.clone()),
                None => {
                    if let Some(ct) = self.undecodable_signature_part() {
                        // The part is there but is not a usable CMS: the signature is altered.
                        self.push(
                            "signature.present",
                            Verdict::Pass,
                            PRESENT,
                            format!("signature part {ct} present"),
                        );
                        self.push(
                            "signature.integrity",
                            Verdict::Fail,
                            "RFC 6109 §2.1, §5; RFC 5652 §5.4",
                            "the signature part is not a base64 DER CMS SignedData: altered or damaged",
                        );
                        return self.skip_signature("signature unusable");
                    }
                    self.push(
                        "signature.present",
                        Verdict::Fail,
                        PRESENT,
                        "multipart/signed without a smime.p7s signature part",
                    );
                    return self.skip_signature("no signature");
                }
            },
            None => {
                self.push(
                    "signature.present",
                    Verdict::Fail,
                    PRESENT,
                    "no multipart/signed entity: the message is not signed",
                );
                return self.skip_signature("no signature");
            }
        };
        self.push(
            "signature.present",
            Verdict::Pass,
            PRESENT,
            format!("detached signature, {} bytes", der.len()),
        );
        let opts = VerifyOptions {
            trust: self.cfg.trust.as_ref(),
            at: self.cfg.at,
        };
        let report = match verify_detached_with_crls(&content, &der, &opts, self.crls) {
            Ok(r) => r,
            Err(e) => {
                self.push(
                    "signature.integrity",
                    Verdict::Fail,
                    "RFC 6109 §2.1, §5; RFC 5652 §5.4",
                    format!("signature unusable: {e}"),
                );
                return self.skip_signature("signature unusable");
            }
        };
        self.signer = report.signer.as_ref().map(summary);
        self.digest = Some(report.digest_name.clone());
        self.signers = report.signers.iter().map(signer_verdict).collect();
        self.outcome(
            "signature.integrity",
            "RFC 6109 §2.1, §5; RFC 5652 §5.4",
            &report.integrity,
            "the signed content matches the signature",
        );
        match self.cfg.trust {
            None => self.push(
                "signature.chain",
                Verdict::Skip,
                "RFC 6109 §2.2.2, §5.5",
                "no --trust given",
            ),
            Some(_) => self.outcome(
                "signature.chain",
                "RFC 6109 §2.2.2, §5.5",
                &report.chain,
                "chain to a trusted anchor",
            ),
        }
        self.outcome(
            "signature.validity",
            "RFC 6109 §2.2.2; RFC 5280 §4.1.2.5",
            &report.validity,
            "signer certificate valid at the chosen time",
        );
        self.revocation_check(&report);
        self.digest_check(&report, signed.and_then(|s| s.micalg.as_deref()));
        self.signer_from(&report);
        self.certificate_profile(&report);
    }

    /// SIG-05: the signer certificate follows the provider profile (RFC 6109 §5.5.2). Deviations
    /// that real providers still show (Aruba's 2014 certificate: Key Usage not critical, Basic
    /// Constraints cA FALSE) are warnings here, so real messages still pass `verify`; the runner
    /// holds the reference gestori to the whole profile (`expect.signer-profile`).
    fn certificate_profile(&mut self, r: &SignatureReport) {
        const RULE: &str = "RFC 6109 §5.5.1, §5.5.2";
        const ID: &str = "signature.certificate-profile";
        let Some(cert) = r.signer.as_ref() else {
            return self.push(ID, Verdict::Skip, RULE, "no signer certificate");
        };
        let from = self.msg.header("From").map(mime::mailbox);
        let address = from.as_ref().map(|f| f.address.as_str());
        let der = match cert.to_der() {
            Ok(d) => d,
            Err(e) => return self.push(ID, Verdict::Fail, RULE, format!("unreadable: {e}")),
        };
        match crate::cert_profile::deviations(&der, address) {
            Err(e) => self.push(ID, Verdict::Fail, RULE, e),
            Ok(d) if d.is_empty() => self.push(
                ID,
                Verdict::Pass,
                RULE,
                "Key Usage digitalSignature (critical), AKI, SKI, rfc822Name SAN, no Basic Constraints",
            ),
            Ok(d) => {
                let verdict = if d.iter().all(|x| x.tolerated) {
                    Verdict::Warn
                } else {
                    Verdict::Fail
                };
                self.push(ID, verdict, RULE, crate::cert_profile::describe(&d));
            }
        }
    }

    /// The media type of a second part of a top-level multipart/signed that the parser could not
    /// decode as a signature (RFC 5751 §3.5: the second body part is the signature).
    fn undecodable_signature_part(&self) -> Option<String> {
        if self.msg.wrapped {
            return None;
        }
        let (h, body) = mime::split_entity(&self.msg.raw);
        let ct = mime::header(&h, "Content-Type")?;
        if mime::media_type(Some(ct)) != "multipart/signed" {
            return None;
        }
        let boundary = mime::param(ct, "boundary")?;
        let parts = mime::multipart_parts(body, &boundary);
        let sig = part_of(parts.get(1)?);
        matches!(
            sig.media.as_str(),
            "application/pkcs7-signature" | "application/x-pkcs7-signature"
        )
        .then_some(sig.media)
    }

    fn skip_signature(&mut self, why: &str) {
        for (id, rule) in [
            ("signature.integrity", "RFC 6109 §2.1, §5; RFC 5652 §5.4"),
            ("signature.chain", "RFC 6109 §2.2.2, §5.5"),
            ("signature.validity", "RFC 6109 §2.2.2; RFC 5280 §4.1.2.5"),
            ("signature.revocation", REVOCATION_RULE),
            ("signature.digest", "digest §4.1, §14.4"),
            ("signature.signer-from", "RFC 6109 §2.1; digest §4.2"),
            ("signature.certificate-profile", "RFC 6109 §5.5.1, §5.5.2"),
        ] {
            if !self.out.iter().any(|c| c.id == id) {
                self.push(id, Verdict::Skip, rule, why);
            }
        }
    }

    fn outcome(&mut self, id: &'static str, rule: &'static str, o: &Outcome, pass: &str) {
        match o {
            Outcome::Pass => self.push(id, Verdict::Pass, rule, pass),
            Outcome::Fail(why) => self.push(id, Verdict::Fail, rule, why.clone()),
            Outcome::NotChecked(why) => self.push(id, Verdict::Skip, rule, why.clone()),
        }
    }

    /// RFC 6109 §2.2.2 ("verifying the [CRL]"): with `--crl`, a signer revoked before the chosen
    /// time fails, a CRL not signed by the issuer is refused (fail), and no CRL of the issuer is a
    /// warning; without `--crl` the check is skipped.
    fn revocation_check(&mut self, r: &SignatureReport) {
        const ID: &str = "signature.revocation";
        if self.crls.is_none() {
            return self.push(ID, Verdict::Skip, REVOCATION_RULE, "no --crl given");
        }
        match &r.revocation {
            Outcome::Pass => self.push(
                ID,
                Verdict::Pass,
                REVOCATION_RULE,
                "not revoked at the chosen time by its issuer's CRL",
            ),
            Outcome::Fail(why) => self.push(ID, Verdict::Fail, REVOCATION_RULE, why.clone()),
            Outcome::NotChecked(why) => self.push(ID, Verdict::Warn, REVOCATION_RULE, why.clone()),
        }
    }

    fn digest_check(&mut self, r: &SignatureReport, micalg: Option<&str>) {
        const RULE: &str = "digest §4.1, §14.4; RFC 5751 §3.4.3.2";
        if r.signers.is_empty() {
            // RFC 5652 §5.1: no SignerInfo, so no digest was used.
            return self.push(
                "signature.digest",
                Verdict::Fail,
                RULE,
                "the signature has no SignerInfo, hence no digest",
            );
        }
        let name = r.digest_name.to_ascii_lowercase();
        let (verdict, mut detail) = match r.digest {
            // digest §4.1: a conformant verifier must accept SHA-1; real providers still send it.
            Some(DigestAlg::Sha1) => (
                Verdict::Warn,
                "SHA-1: accepted, real providers send it".to_string(),
            ),
            Some(DigestAlg::Sha256 | DigestAlg::Sha384 | DigestAlg::Sha512) => {
                (Verdict::Pass, name.clone())
            }
            None => (
                Verdict::Fail,
                format!("unexpected digest algorithm `{}`", r.digest_name),
            ),
        };
        // micalg must name the digest actually used (RFC 5751 §3.4.3.2).
        if let (Some(m), Some(d)) = (micalg, r.digest) {
            let expected = match d {
                DigestAlg::Sha1 => "sha1",
                DigestAlg::Sha256 => "sha-256",
                DigestAlg::Sha384 => "sha-384",
                DigestAlg::Sha512 => "sha-512",
            };
            if !m.trim().eq_ignore_ascii_case(expected) {
                detail.push_str(&format!(
                    "; micalg=`{m}` does not name it (expected `{expected}`)"
                ));
                if verdict == Verdict::Pass {
                    return self.push("signature.digest", Verdict::Warn, RULE, detail);
                }
            }
        }
        self.push("signature.digest", verdict, RULE, detail);
    }

    fn signer_from(&mut self, r: &SignatureReport) {
        const RULE: &str = "RFC 6109 §2.1; digest §4.2";
        let from = self.msg.header("From").map(mime::mailbox);
        let email = self.signer.as_ref().and_then(|s| s.email.clone());
        match (r.signer.as_ref(), from, email) {
            (None, _, _) => self.push(
                "signature.signer-from",
                Verdict::Fail,
                RULE,
                "no signer certificate embedded in the signature",
            ),
            (Some(_), None, _) => self.push(
                "signature.signer-from",
                Verdict::Fail,
                RULE,
                "no From: header",
            ),
            (Some(_), Some(_), None) => self.push(
                "signature.signer-from",
                Verdict::Fail,
                RULE,
                "the signer certificate carries no e-mail address",
            ),
            (Some(_), Some(f), Some(e)) => {
                // Clients verify the signature against From, so From is the provider's address.
                if f.address.eq_ignore_ascii_case(&e) {
                    self.push(
                        "signature.signer-from",
                        Verdict::Pass,
                        RULE,
                        format!("From {} = certificate e-mail", f.address),
                    );
                } else {
                    self.push(
                        "signature.signer-from",
                        Verdict::Fail,
                        RULE,
                        format!("From {} ≠ certificate e-mail {e}", f.address),
                    );
                }
            }
        }
    }

    // ---- daticert --------------------------------------------------------------------------

    fn daticert_checks(&mut self, kind: Option<Kind>, dc: &Dc) {
        const PRESENT: &str = "RFC 6109 §4.3.3, §3.2.2; digest §5.12";
        match (kind, dc) {
            (None, Dc::Absent) => {
                self.push("daticert.present", Verdict::Skip, PRESENT, "kind unknown")
            }
            (None, _) => self.push(
                "daticert.present",
                Verdict::Skip,
                PRESENT,
                "kind unknown; a daticert.xml is present",
            ),
            (Some(k), d) => {
                let want = k.daticert_tipo().is_some();
                let has = !matches!(d, Dc::Absent);
                let (v, detail) = match (want, has) {
                    (true, true) => (Verdict::Pass, "daticert.xml present".to_string()),
                    (true, false) => (
                        Verdict::Fail,
                        format!("a {} must carry daticert.xml", k.italian_name()),
                    ),
                    // RFC 6109 §3.2.2: the anomaly envelope holds only the text and the received message.
                    (false, true) => (
                        Verdict::Fail,
                        format!(
                            "a {} must not carry daticert.xml at top level",
                            k.italian_name()
                        ),
                    ),
                    (false, false) => (Verdict::Pass, "no daticert.xml, as required".to_string()),
                };
                self.push("daticert.present", v, PRESENT, detail);
            }
        }
        const DTD: &str = "RFC 6109 §4.4; daticert.dtd";
        const ENT: &str = "digest §6.2, §14.7";
        let tree = match dc {
            Dc::Absent => {
                for (id, rule) in [
                    ("daticert.dtd", DTD),
                    ("daticert.entities", ENT),
                    ("daticert.tipo-header", "RFC 6109 App. A; daticert.dtd"),
                    ("daticert.identificativo", "RFC 6109 §2.2.1; digest §4.4"),
                    ("daticert.msgid", "RFC 6109 §2.1.1.1, §4.4; digest §4.4"),
                    ("daticert.date-zone", "RFC 6109 §4.1–§4.2; digest §10"),
                ] {
                    self.push(id, Verdict::Skip, rule, "no daticert.xml");
                }
                return;
            }
            Dc::Unreadable(XmlError::Entity(e)) => {
                self.push(
                    "daticert.dtd",
                    Verdict::Fail,
                    DTD,
                    "not validated: the document declares or references entities",
                );
                self.push(
                    "daticert.entities",
                    Verdict::Fail,
                    ENT,
                    format!("{e}; refused, never expanded"),
                );
                return self.skip_daticert_fields("daticert.xml refused");
            }
            Dc::Unreadable(e) => {
                self.push("daticert.dtd", Verdict::Fail, DTD, e.to_string());
                self.push(
                    "daticert.entities",
                    Verdict::Pass,
                    ENT,
                    "no entity declaration",
                );
                return self.skip_daticert_fields("daticert.xml not well-formed");
            }
            Dc::Tree(t) => t,
        };
        let errs = dtd::validate(tree);
        if errs.is_empty() {
            self.push(
                "daticert.dtd",
                Verdict::Pass,
                DTD,
                "valid against the daticert DTD",
            );
        } else {
            self.push("daticert.dtd", Verdict::Fail, DTD, errs.join("; "));
        }
        self.push(
            "daticert.entities",
            Verdict::Pass,
            ENT,
            "no entity declaration",
        );
        let dati = tree.child("dati");
        let text = |name: &str| dati.and_then(|d| d.child_text(name)).map(str::to_string);

        // daticert.tipo-header: the signed tipo names the same kind as the unsigned headers.
        const TIPO: &str = "RFC 6109 App. A; daticert.dtd";
        let tipo = tree.attr("tipo").map(|t| t.trim().to_string());
        match (kind.and_then(|k| k.daticert_tipo()), &tipo) {
            (_, None) => self.push(
                "daticert.tipo-header",
                Verdict::Fail,
                TIPO,
                "postacert has no tipo",
            ),
            (None, Some(t)) => self.push(
                "daticert.tipo-header",
                Verdict::Skip,
                TIPO,
                format!("tipo=\"{t}\" but the headers name no kind with a daticert"),
            ),
            (Some(want), Some(t)) => {
                let h = self.kind_headers();
                if want.as_str() == t.as_str() {
                    self.push(
                        "daticert.tipo-header",
                        Verdict::Pass,
                        TIPO,
                        format!("tipo=\"{t}\" matches {h}"),
                    );
                } else {
                    self.push(
                        "daticert.tipo-header",
                        Verdict::Fail,
                        TIPO,
                        format!("tipo=\"{t}\" contradicts {h} (expected \"{want}\")"),
                    );
                }
            }
        }

        // daticert.identificativo (RFC 6109 §2.2.1; digest §4.4).
        const IDENT: &str = "RFC 6109 §2.2.1; digest §4.4";
        let ident = text("identificativo");
        let own = self
            .msg
            .header("Message-ID")
            .map(|m| mime::bare_msgid(m).to_string());
        match (&ident, kind) {
            (None, _) => self.push("daticert.identificativo", Verdict::Fail, IDENT, "no identificativo"),
            (Some(i), _) if !i.contains('@') => {
                self.push("daticert.identificativo", Verdict::Fail, IDENT, format!("`{i}` is not of the form id@domain"))
            }
            (Some(i), Some(Kind::BustaTrasporto)) => match &own {
                // The transport envelope's Message-ID is the PEC msgid itself.
                Some(m) if m == i => self.push("daticert.identificativo", Verdict::Pass, IDENT, format!("{i} = Message-ID of the envelope")),
                Some(m) => self.push("daticert.identificativo", Verdict::Fail, IDENT, format!("{i} ≠ Message-ID of the envelope {m}")),
                None => self.push("daticert.identificativo", Verdict::Fail, IDENT, "the envelope has no Message-ID"),
            },
            (Some(i), _) => match &own {
                // A notice has its own Message-ID (RFC 5322 §3.6.4 uniqueness); identificativo
                // names the transport envelope.
                Some(m) if m == i => self.push(
                    "daticert.identificativo",
                    Verdict::Fail,
                    IDENT,
                    format!("the notice's own Message-ID equals identificativo {i}; it must name the transport envelope"),
                ),
                _ => self.push("daticert.identificativo", Verdict::Pass, IDENT, format!("{i} (envelope msgid, distinct from this notice's Message-ID)")),
            },
        }

        // daticert.msgid vs X-Riferimento-Message-ID (RFC 6109 §2.1.1.1, §4.4).
        const MSGID: &str = "RFC 6109 §2.1.1.1, §4.4; digest §4.4";
        let xref = self
            .msg
            .header("X-Riferimento-Message-ID")
            .map(|s| s.trim().to_string());
        match (text("msgid"), xref) {
            (Some(m), Some(x)) if mime::bare_msgid(&m) == mime::bare_msgid(&x) => {
                let v = if m.starts_with('<') {
                    Verdict::Pass
                } else {
                    Verdict::Warn
                };
                self.push(
                    "daticert.msgid",
                    v,
                    MSGID,
                    format!("{m} = X-Riferimento-Message-ID"),
                )
            }
            (Some(m), Some(x)) => self.push(
                "daticert.msgid",
                Verdict::Fail,
                MSGID,
                format!("msgid {m} ≠ X-Riferimento-Message-ID {x}"),
            ),
            (Some(m), None) => self.push(
                "daticert.msgid",
                Verdict::Fail,
                MSGID,
                format!("msgid {m} but no X-Riferimento-Message-ID header"),
            ),
            (None, Some(x)) => self.push(
                "daticert.msgid",
                Verdict::Warn,
                MSGID,
                format!("no <msgid> (optional) though X-Riferimento-Message-ID is {x}"),
            ),
            (None, None) => self.push(
                "daticert.msgid",
                Verdict::Pass,
                MSGID,
                "no client Message-ID on either side",
            ),
        }

        self.date_zone(dati);
    }

    fn skip_daticert_fields(&mut self, why: &str) {
        for (id, rule) in [
            ("daticert.tipo-header", "RFC 6109 App. A; daticert.dtd"),
            ("daticert.identificativo", "RFC 6109 §2.2.1; digest §4.4"),
            ("daticert.msgid", "RFC 6109 §2.1.1.1, §4.4; digest §4.4"),
            ("daticert.date-zone", "RFC 6109 §4.1–§4.2; digest §10"),
        ] {
            self.push(id, Verdict::Skip, rule, why);
        }
    }

    fn kind_headers(&self) -> String {
        match (
            self.msg.header("X-Trasporto"),
            self.msg.header("X-Ricevuta"),
        ) {
            (Some(t), _) => format!("X-Trasporto: {t}"),
            (None, Some(r)) => format!("X-Ricevuta: {r}"),
            (None, None) => "the headers".into(),
        }
    }

    /// `zona` is the offset of Italian legal time at the instant given (DTD comment; RFC 6109 §4.2),
    /// and the instant is the Date: of the message (one time value per transaction, RFC 6109 §4.1).
    fn date_zone(&mut self, dati: Option<&Element>) {
        const RULE: &str = "RFC 6109 §4.1–§4.2; digest §10";
        let data = dati.and_then(|d| d.child("data"));
        let Some(data) = data else {
            return self.push("daticert.date-zone", Verdict::Fail, RULE, "no <data>");
        };
        let zona = data.attr("zona").unwrap_or("").trim();
        let giorno = data.child_text("giorno").unwrap_or("");
        let ora = data.child_text("ora").unwrap_or("");
        let Some(offset_secs) = parse_zona(zona) else {
            return self.push(
                "daticert.date-zone",
                Verdict::Fail,
                RULE,
                format!("zona \"{zona}\" is not [+|-]hhmm"),
            );
        };
        let Ok(local) =
            NaiveDateTime::parse_from_str(&format!("{giorno} {ora}"), "%d/%m/%Y %H:%M:%S")
        else {
            return self.push(
                "daticert.date-zone",
                Verdict::Fail,
                RULE,
                format!("giorno \"{giorno}\" / ora \"{ora}\" are not gg/mm/aaaa hh:mm:ss"),
            );
        };
        let instant = Utc.from_utc_datetime(&(local - Duration::seconds(offset_secs)));
        let expected = rome_offset_secs(instant);
        if expected != offset_secs {
            return self.push(
                "daticert.date-zone",
                Verdict::Fail,
                RULE,
                format!(
                    "{giorno} {ora} zona {zona}: Italian legal time then was {}",
                    fmt_zona(expected)
                ),
            );
        }
        let detail = format!("{giorno} {ora} ({zona}) is Italian legal time");
        match self
            .msg
            .header("Date")
            .map(|d| DateTime::parse_from_rfc2822(d.trim()))
        {
            Some(Ok(d)) if (d.with_timezone(&Utc) - instant).num_seconds().abs() > 1 => self.push(
                "daticert.date-zone",
                Verdict::Warn,
                RULE,
                format!("{detail}, but Date: is {d} (one time value per transaction)"),
            ),
            _ => self.push("daticert.date-zone", Verdict::Pass, RULE, detail),
        }
    }

    // ---- headers ---------------------------------------------------------------------------

    fn header_checks(&mut self, kind: Option<Kind>, dc: &Dc) {
        let tree = match dc {
            Dc::Tree(t) => Some(t),
            _ => None,
        };
        let Some(k) = kind else {
            for (id, rule) in [
                ("headers.subject-prefix", "RFC 6109 App. A; digest §5.12"),
                ("headers.from", "RFC 6109 §2.1; digest §4.2"),
                ("headers.x-riferimento", "RFC 6109 §2.1.1.1, §2.2.1"),
                ("headers.destinatari", "RFC 6109 §2.1, §4.4; digest §6.1"),
                ("headers.verifica-sicurezza", "RFC 6109 §3.1.3, §3.2.4"),
                ("headers.x-mittente", "RFC 6109 §3.2.3"),
            ] {
                self.push(id, Verdict::Skip, rule, "kind unknown");
            }
            return;
        };

        // headers.subject-prefix (digest §5.12). The RFC's timeout prefix has two spaces, an
        // artefact accepted here.
        const SUBJ: &str = "RFC 6109 App. A; digest §5.12";
        let subject = self.msg.header("Subject").unwrap_or("").to_string();
        let prefix = k.subject_prefix();
        let alt = prefix.replace("SUP. ", "SUP.  ");
        let has_prefix = |s: &str| s.starts_with(prefix) || s.starts_with(&alt);
        // digest §14.6: mailing lists and filters put tags such as `[Osst-users] [SPAM]` before
        // the prefix. The Subject is not signed, so a tagged prefix is worth knowing, not a fault.
        let untagged = strip_subject_tags(&subject);
        if has_prefix(&subject) {
            self.push(
                "headers.subject-prefix",
                Verdict::Pass,
                SUBJ,
                format!("\"{}\"", prefix.trim_end()),
            );
        } else if untagged.len() < subject.len() && has_prefix(untagged) {
            self.push(
                "headers.subject-prefix",
                Verdict::Warn,
                "RFC 6109 App. A; digest §5.12, §14.6",
                format!(
                    "\"{}\" follows tags added on the way: \"{}\"",
                    prefix.trim_end(),
                    subject[..subject.len() - untagged.len()].trim_end()
                ),
            );
        } else {
            self.push(
                "headers.subject-prefix",
                Verdict::Fail,
                SUBJ,
                format!("Subject \"{subject}\" does not start with \"{prefix}\""),
            );
        }

        // headers.from (RFC 6109 §2.1; digest §4.2).
        const FROM: &str = "RFC 6109 §2.1; digest §4.2";
        match self.msg.header("From").map(mime::mailbox) {
            None => self.push("headers.from", Verdict::Fail, FROM, "no From:"),
            Some(f) if k.is_envelope() => {
                let mittente = tree
                    .and_then(|t| t.child("intestazione"))
                    .and_then(|i| i.child_text("mittente"));
                match f.name.as_deref().and_then(|n| n.strip_prefix("Per conto di:")) {
                    None => self.push("headers.from", Verdict::Fail, FROM, format!("an envelope's From must be \"Per conto di: <sender>\" <provider address>, found {:?}", f.name)),
                    Some(who) => match mittente {
                        Some(m) if !m.eq_ignore_ascii_case(who.trim()) => self.push(
                            "headers.from",
                            Verdict::Fail,
                            FROM,
                            format!("\"Per conto di: {}\" but daticert mittente is {m}", who.trim()),
                        ),
                        _ => self.push("headers.from", Verdict::Pass, FROM, format!("\"Per conto di: {}\" <{}>", who.trim(), f.address)),
                    },
                }
            }
            Some(f) => match f.name.as_deref() {
                None => self.push(
                    "headers.from",
                    Verdict::Pass,
                    FROM,
                    format!("bare service address {}", f.address),
                ),
                Some(n) if n.starts_with("Per conto di") => self.push(
                    "headers.from",
                    Verdict::Fail,
                    FROM,
                    format!("a notice's From is the bare service address, not \"{n}\""),
                ),
                Some(n) => self.push(
                    "headers.from",
                    Verdict::Warn,
                    FROM,
                    format!("display name \"{n}\" on a notice (real ones send the bare address)"),
                ),
            },
        }

        // headers.x-riferimento (RFC 6109 §2.1.1.1 notices; §2.2.1 envelope).
        const XREF: &str = "RFC 6109 §2.1.1.1, §2.2.1";
        match (self.msg.header("X-Riferimento-Message-ID"), k) {
            (Some(x), _) if x.trim().starts_with('<') && x.trim().ends_with('>') => self.push(
                "headers.x-riferimento",
                Verdict::Pass,
                XREF,
                x.trim().to_string(),
            ),
            (Some(x), _) => self.push(
                "headers.x-riferimento",
                Verdict::Warn,
                XREF,
                format!("{x} has no angle brackets"),
            ),
            (None, Kind::BustaAnomalia) => self.push(
                "headers.x-riferimento",
                Verdict::Skip,
                XREF,
                "an anomaly envelope copies the received headers",
            ),
            (None, _) => self.push(
                "headers.x-riferimento",
                Verdict::Fail,
                XREF,
                "no X-Riferimento-Message-ID",
            ),
        }

        self.destinatari(k, tree);

        // headers.verifica-sicurezza (RFC 6109 §3.1.3, §3.2.4; DTD errore comments).
        const VS: &str = "RFC 6109 §3.1.3, §3.2.4; daticert.dtd";
        let errore = tree.map(|t| t.attr("errore").unwrap_or("nessuno").trim().to_string());
        let header = self
            .msg
            .header("X-VerificaSicurezza")
            .map(|s| s.trim().to_string());
        match (k.verifica_sicurezza(), errore.as_deref(), header) {
            (true, Some("virus"), _) => self.push(
                "headers.verifica-sicurezza",
                Verdict::Pass,
                VS,
                "X-VerificaSicurezza: errore with errore=\"virus\"",
            ),
            (true, Some(e), _) => self.push(
                "headers.verifica-sicurezza",
                Verdict::Fail,
                VS,
                format!("X-VerificaSicurezza: errore but daticert errore=\"{e}\", not \"virus\""),
            ),
            (true, None, _) => self.push(
                "headers.verifica-sicurezza",
                Verdict::Skip,
                VS,
                "no readable daticert",
            ),
            (false, _, Some(h)) => self.push(
                "headers.verifica-sicurezza",
                Verdict::Fail,
                VS,
                format!("X-VerificaSicurezza: {h} on a {}", k.italian_name()),
            ),
            (false, Some("virus"), None)
                if matches!(k, Kind::NonAccettazione | Kind::MancataConsegna) =>
            {
                self.push(
                    "headers.verifica-sicurezza",
                    Verdict::Fail,
                    VS,
                    "daticert errore=\"virus\" but no X-VerificaSicurezza: errore",
                )
            }
            (false, _, None) => self.push(
                "headers.verifica-sicurezza",
                Verdict::Pass,
                VS,
                "absent, as for this kind",
            ),
        }

        // headers.x-mittente (RFC 6109 §3.2.3).
        const XM: &str = "RFC 6109 §3.2.3";
        let xm = self
            .msg
            .header("X-Mittente")
            .map(|s| mime::mailbox(s).address);
        let mittente = tree
            .and_then(|t| t.child("intestazione"))
            .and_then(|i| i.child_text("mittente"))
            .map(str::to_string);
        match (k, xm) {
            (Kind::RilevazioneVirus, None) => self.push(
                "headers.x-mittente",
                Verdict::Fail,
                XM,
                "no X-Mittente on a virus detection notice",
            ),
            (Kind::RilevazioneVirus, Some(x)) => match mittente {
                Some(m) if !m.eq_ignore_ascii_case(&x) => self.push(
                    "headers.x-mittente",
                    Verdict::Fail,
                    XM,
                    format!("X-Mittente {x} ≠ daticert mittente {m}"),
                ),
                _ => self.push("headers.x-mittente", Verdict::Pass, XM, x),
            },
            (_, Some(x)) => self.push(
                "headers.x-mittente",
                Verdict::Warn,
                XM,
                format!("X-Mittente {x} on a {}", k.italian_name()),
            ),
            (_, None) => self.push(
                "headers.x-mittente",
                Verdict::Skip,
                XM,
                "not a virus detection notice",
            ),
        }
    }

    /// daticert destinatari = the original's To + Cc (RFC 6109 §2.1, §4.4): the envelope copies them
    /// unchanged; a notice carrying the original has them in postacert.eml.
    fn destinatari(&mut self, k: Kind, tree: Option<&Element>) {
        const RULE: &str = "RFC 6109 §2.1, §4.4; digest §6.1";
        let Some(intestazione) = tree.and_then(|t| t.child("intestazione")) else {
            return self.push(
                "headers.destinatari",
                Verdict::Skip,
                RULE,
                "no readable daticert",
            );
        };
        let (headers, whence): (Vec<(String, String)>, &str) = if k.is_envelope() {
            (self.msg.headers.clone(), "the envelope's To/Cc")
        } else if let Some(p) = &self.msg.postacert {
            (mime::split_entity(p).0, "postacert.eml To/Cc")
        } else {
            return self.push(
                "headers.destinatari",
                Verdict::Skip,
                RULE,
                "a notice without the original: To/Cc of the original unknown",
            );
        };
        let mut want: Vec<String> = Vec::new();
        for (n, v) in &headers {
            if n.eq_ignore_ascii_case("To") || n.eq_ignore_ascii_case("Cc") {
                want.extend(mime::addresses(v));
            }
        }
        let mut have: Vec<String> = intestazione
            .children_named("destinatari")
            .map(|d| mime::mailbox(&d.text).address.to_ascii_lowercase())
            .collect();
        want.sort();
        want.dedup();
        have.sort();
        have.dedup();
        if want == have {
            self.push(
                "headers.destinatari",
                Verdict::Pass,
                RULE,
                format!("{} = {whence}", have.join(", ")),
            );
        } else {
            self.push(
                "headers.destinatari",
                Verdict::Fail,
                RULE,
                format!(
                    "daticert [{}] ≠ {whence} [{}]",
                    have.join(", "),
                    want.join(", ")
                ),
            );
        }
    }

    // ---- MIME ------------------------------------------------------------------------------

    fn mime_checks(&mut self, kind: Option<Kind>, dc: &Dc) {
        const LAYOUT: &str = "RFC 6109 §2.1, §4.3, §4.3.1; digest §4.1, §4.3";
        let mut problems = Vec::new();
        let ct = self.msg.header("Content-Type");
        // digest §14.6: a list may re-wrap the signed entity; then that entity is what is judged
        // (message.wrapped says so), not the list's multipart/mixed around it.
        let (top, protocol) = match &self.msg.signed {
            Some(s) if self.msg.wrapped && !s.opaque => {
                ("multipart/signed".to_string(), s.protocol.clone())
            }
            _ => (
                mime::media_type(ct),
                ct.and_then(|c| mime::param(c, "protocol")),
            ),
        };
        if top != "multipart/signed" {
            problems.push(format!("top-level type is {top}, not multipart/signed"));
        } else {
            match protocol.map(|p| p.to_ascii_lowercase()) {
                Some(p)
                    if p == "application/pkcs7-signature"
                        || p == "application/x-pkcs7-signature" => {}
                other => problems.push(format!(
                    "multipart/signed protocol {other:?} is not application/(x-)pkcs7-signature"
                )),
            }
        }
        let parts = self.signed_parts(&mut problems);
        if let Some(first) = parts.as_ref().and_then(|p| p.first()) {
            match first.media.as_str() {
                "text/plain" => {}
                "multipart/alternative" => {
                    let subs = sub_parts(first);
                    let types: Vec<String> = subs.iter().map(|p| p.media.clone()).collect();
                    // RFC 6109 §4.3.1: two sub-parts, text/plain and text/html.
                    if !(types.iter().any(|t| t == "text/plain")
                        && types.iter().any(|t| t == "text/html"))
                    {
                        problems.push(format!(
                            "multipart/alternative holds [{}], not text/plain + text/html",
                            types.join(", ")
                        ));
                    }
                }
                other => problems.push(format!(
                    "the first part is {other}, not the text (text/plain or multipart/alternative)"
                )),
            }
        }
        if problems.is_empty() {
            self.push(
                "mime.layout",
                Verdict::Pass,
                LAYOUT,
                "multipart/signed over multipart/mixed, text part first",
            );
        } else {
            self.push("mime.layout", Verdict::Fail, LAYOUT, problems.join("; "));
        }

        self.mime_parts(kind, dc, parts.as_deref());
        self.charset(parts.as_deref());
        self.msgid_swap(kind, dc);

        // mime.lf-normalised (digest §14.8).
        const LF: &str = "digest §14.8; RFC 5322 §2.1";
        if mime::has_bare_lf(self.raw) {
            self.push(
                "mime.lf-normalised",
                Verdict::Warn,
                LF,
                "the file has bare LF line ends; normalised to CRLF before verification",
            );
        } else {
            self.push("mime.lf-normalised", Verdict::Pass, LF, "CRLF line ends");
        }
    }

    /// The parts of the signed multipart/mixed as written, or `None` when there is none.
    fn signed_parts(&self, problems: &mut Vec<String>) -> Option<Vec<Part>> {
        let Some(signed) = &self.msg.signed else {
            problems.push("no signed entity".into());
            return None;
        };
        let (h, body) = mime::split_entity(&signed.content);
        let ct = mime::header(&h, "Content-Type");
        let media = mime::media_type(ct);
        if media != "multipart/mixed" {
            problems.push(format!("the signed entity is {media}, not multipart/mixed"));
            return None;
        }
        let Some(boundary) = ct.and_then(|c| mime::param(c, "boundary")) else {
            problems.push("multipart/mixed without a boundary".into());
            return None;
        };
        Some(
            mime::multipart_parts(body, &boundary)
                .into_iter()
                .map(part_of)
                .collect(),
        )
    }

    /// mime.parts: daticert.xml and postacert.eml by kind (digest §5.12, second table).
    fn mime_parts(&mut self, kind: Option<Kind>, dc: &Dc, parts: Option<&[Part]>) {
        const RULE: &str = "RFC 6109 §4.3.2–§4.3.3, §3.2.2, §3.3.2; digest §5.12";
        let Some(k) = kind else {
            return self.push("mime.parts", Verdict::Skip, RULE, "kind unknown");
        };
        let (n_dati, n_post, n_all, listing) = match parts {
            Some(ps) => (
                ps.iter().filter(|p| named(p, "daticert.xml")).count(),
                ps.iter().filter(|p| p.media == "message/rfc822").count(),
                ps.len(),
                ps.iter()
                    .map(|p| match &p.filename {
                        Some(f) => format!("{} ({f})", p.media),
                        None => p.media.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => {
                let ps = &self.msg.parts;
                (
                    ps.iter()
                        .filter(|p| {
                            p.filename
                                .as_deref()
                                .is_some_and(|f| f.eq_ignore_ascii_case("daticert.xml"))
                        })
                        .count(),
                    ps.iter()
                        .filter(|p| p.content_type == "message/rfc822")
                        .count(),
                    ps.len(),
                    ps.iter()
                        .map(|p| p.content_type.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
        };
        let mut problems = Vec::new();
        if let Some(ps) = parts {
            for p in ps.iter().filter(|p| named(p, "daticert.xml")) {
                if p.media != "application/xml" {
                    problems.push(format!("daticert.xml is {}, not application/xml", p.media));
                }
            }
            for p in ps.iter().filter(|p| p.media == "message/rfc822") {
                if !named(p, "postacert.eml") {
                    problems.push(format!(
                        "the message/rfc822 part is named {:?}, not postacert.eml",
                        p.filename
                    ));
                }
            }
        }
        match (k.daticert_tipo().is_some(), n_dati) {
            (true, 1) | (false, 0) => {}
            (true, n) => problems.push(format!("{n} daticert.xml parts, expected 1")),
            (false, n) => problems.push(format!(
                "{n} daticert.xml parts on a {}, expected none",
                k.italian_name()
            )),
        }
        let ricevuta = match dc {
            Dc::Tree(t) => t
                .child("dati")
                .and_then(|d| d.child("ricevuta"))
                .and_then(|r| r.attr("tipo"))
                .map(|s| s.trim().to_string()),
            _ => None,
        };
        match k.original() {
            Original::Always if n_post != 1 => problems.push(format!(
                "{n_post} postacert.eml parts, a {} carries exactly one",
                k.italian_name()
            )),
            Original::Never if n_post != 0 => problems.push(format!(
                "a {} must not carry the original",
                k.italian_name()
            )),
            Original::ByReceiptType if ricevuta.as_deref() == Some("sintetica") && n_post != 0 => {
                problems.push("a sintetica delivery receipt must not carry the original".into())
            }
            Original::ByReceiptType if n_post > 1 => {
                problems.push(format!("{n_post} postacert.eml parts"))
            }
            _ => {}
        }
        // RFC 6109 §3.2.2: the anomaly envelope holds the text and the received message only.
        if k == Kind::BustaAnomalia && n_all > 2 {
            problems.push(format!("an anomaly envelope holds only the text and the received message, found {n_all} parts"));
        }
        if problems.is_empty() {
            self.push("mime.parts", Verdict::Pass, RULE, listing);
        } else {
            self.push(
                "mime.parts",
                Verdict::Fail,
                RULE,
                format!("{} (parts: {listing})", problems.join("; ")),
            );
        }
    }

    /// mime.charset: the human-readable text is ISO-8859-1 (RFC 6109 §4.3.1).
    fn charset(&mut self, parts: Option<&[Part]>) {
        const RULE: &str = "RFC 6109 §4.3.1";
        let Some(first) = parts.and_then(|p| p.first()) else {
            return self.push("mime.charset", Verdict::Skip, RULE, "no signed text part");
        };
        let texts: Vec<Part> = if first.media == "multipart/alternative" {
            sub_parts(first)
                .into_iter()
                .filter(|p| p.media.starts_with("text/"))
                .collect()
        } else {
            vec![Part {
                media: first.media.clone(),
                filename: None,
                headers: first.headers.clone(),
                body: Vec::new(),
            }]
        };
        let mut verdict = Verdict::Pass;
        let mut found = Vec::new();
        for t in &texts {
            let cs = mime::header(&t.headers, "Content-Type")
                .and_then(|c| mime::param(c, "charset"))
                .unwrap_or_else(|| "us-ascii".into());
            let cs_l = cs.to_ascii_lowercase();
            let v = match cs_l.as_str() {
                "iso-8859-1" | "iso_8859-1" | "latin1" => Verdict::Pass,
                // US-ASCII is a subset of Latin-1: the text reads the same.
                "us-ascii" => Verdict::Warn,
                _ => Verdict::Fail,
            };
            if v == Verdict::Fail || (v == Verdict::Warn && verdict == Verdict::Pass) {
                verdict = v;
            }
            found.push(format!("{} charset={cs}", t.media));
        }
        let detail = if verdict == Verdict::Pass {
            found.join(", ")
        } else {
            format!("{} (ISO-8859-1 required)", found.join(", "))
        };
        self.push("mime.charset", verdict, RULE, detail);
    }

    /// postacert.msgid-swap: the original's Message-ID is replaced by the PEC msgid and the client's
    /// moves to X-Riferimento-Message-ID (RFC 6109 §2.2.1; digest §4.4, §14.9).
    fn msgid_swap(&mut self, kind: Option<Kind>, dc: &Dc) {
        const RULE: &str = "RFC 6109 §2.2.1; digest §4.4, §14.9";
        let Some(post) = &self.msg.postacert else {
            return self.push(
                "postacert.msgid-swap",
                Verdict::Skip,
                RULE,
                "no postacert.eml",
            );
        };
        if kind == Some(Kind::BustaAnomalia) || kind.is_none() {
            return self.push(
                "postacert.msgid-swap",
                Verdict::Skip,
                RULE,
                "not a certified original",
            );
        }
        let (ph, _) = mime::split_entity(post);
        let pid = mime::header(&ph, "Message-ID").map(|m| mime::bare_msgid(m).to_string());
        let pref =
            mime::header(&ph, "X-Riferimento-Message-ID").map(|m| mime::bare_msgid(m).to_string());
        let ident = match dc {
            Dc::Tree(t) => t
                .child("dati")
                .and_then(|d| d.child_text("identificativo"))
                .map(str::to_string),
            _ => None,
        };
        let mut problems = Vec::new();
        match (&pid, &ident) {
            (None, _) => problems.push("postacert.eml has no Message-ID".to_string()),
            (Some(p), Some(i)) if p != i => {
                problems.push(format!("postacert Message-ID {p} ≠ identificativo {i}"))
            }
            _ => {}
        }
        if kind == Some(Kind::BustaTrasporto) {
            let own = self
                .msg
                .header("Message-ID")
                .map(|m| mime::bare_msgid(m).to_string());
            if pid.is_some() && own != pid {
                problems.push(format!(
                    "postacert Message-ID {pid:?} ≠ envelope Message-ID {own:?}"
                ));
            }
        }
        let xref = self
            .msg
            .header("X-Riferimento-Message-ID")
            .map(|m| mime::bare_msgid(m).to_string());
        match (&pref, &xref) {
            (None, Some(_)) => {
                problems.push("postacert.eml has no X-Riferimento-Message-ID".into())
            }
            (Some(p), Some(x)) if p != x => {
                problems.push(format!("postacert X-Riferimento-Message-ID {p} ≠ {x}"))
            }
            _ => {}
        }
        if problems.is_empty() {
            self.push(
                "postacert.msgid-swap",
                Verdict::Pass,
                RULE,
                format!("Message-ID {} = identificativo", pid.unwrap_or_default()),
            );
        } else {
            self.push(
                "postacert.msgid-swap",
                Verdict::Fail,
                RULE,
                problems.join("; "),
            );
        }
    }
}

/// `subject` without the leading `[tag]` groups that lists and filters add (digest §14.6).
fn strip_subject_tags(subject: &str) -> &str {
    let mut s = subject.trim_start();
    while let Some(rest) = s.strip_prefix('[') {
        match rest.find(']') {
            Some(end) => s = rest[end + 1..].trim_start(),
            None => break,
        }
    }
    s
}

/// Whether a part carries file name `name` (case-insensitive).
fn named(p: &Part, name: &str) -> bool {
    p.filename
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case(name))
}

fn part_of(bytes: &[u8]) -> Part {
    let (headers, body) = mime::split_entity(bytes);
    let ct = mime::header(&headers, "Content-Type");
    let media = mime::media_type(ct);
    let filename = ct.and_then(|c| mime::param(c, "name")).or_else(|| {
        mime::header(&headers, "Content-Disposition").and_then(|d| mime::param(d, "filename"))
    });
    Part {
        media,
        filename,
        headers: headers.clone(),
        body: body.to_vec(),
    }
}

fn sub_parts(p: &Part) -> Vec<Part> {
    let boundary =
        mime::header(&p.headers, "Content-Type").and_then(|c| mime::param(c, "boundary"));
    match boundary {
        Some(b) => mime::multipart_parts(&p.body, &b)
            .into_iter()
            .map(part_of)
            .collect(),
        None => Vec::new(),
    }
}

fn summary(cert: &X509) -> SignerSummary {
    let email = cert
        .subject_alt_names()
        .and_then(|names| names.iter().find_map(|n| n.email().map(str::to_string)))
        .or_else(|| {
            cert.subject_name()
                .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
                .next()
                .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        });
    SignerSummary {
        subject: dn(cert.subject_name()),
        email,
        issuer: dn(cert.issuer_name()),
    }
}

fn dn(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = String::from_utf8_lossy(e.data().as_slice());
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[+|-]hhmm` (the DTD comment on `zona`) in seconds east of UTC.
fn parse_zona(z: &str) -> Option<i64> {
    let b = z.as_bytes();
    if b.len() != 5 || !(b[0] == b'+' || b[0] == b'-') || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let h: i64 = z[1..3].parse().ok()?;
    let m: i64 = z[3..5].parse().ok()?;
    let s = h * 3600 + m * 60;
    Some(if b[0] == b'-' { -s } else { s })
}

fn fmt_zona(secs: i64) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
}

/// The offset of Italian legal time (CET/CEST) at `t`, in seconds, by the EU rule: summer time
/// from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October
/// (RFC 6109 §4.2; digest §10). Written here so the check does not rely on the library under test.
pub fn rome_offset_secs(t: DateTime<Utc>) -> i64 {
    let y = t.year();
    let start = last_sunday(y, 3)
        .and_hms_opt(1, 0, 0)
        .map(|d| Utc.from_utc_datetime(&d));
    let end = last_sunday(y, 10)
        .and_hms_opt(1, 0, 0)
        .map(|d| Utc.from_utc_datetime(&d));
    match (start, end) {
        (Some(s), Some(e)) if t >= s && t < e => 7200,
        _ => 3600,
    }
}

fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let mut d = NaiveDate::from_ymd_opt(year, month, 31).unwrap_or(NaiveDate::MIN);
    while d.weekday() != Weekday::Sun {
        d = d.pred_opt().unwrap_or(NaiveDate::MIN);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rome_time_switches_on_the_last_sundays() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(rome_offset_secs(at("2014-11-14T17:26:32Z")), 3600);
        assert_eq!(rome_offset_secs(at("2021-05-14T10:02:08Z")), 7200);
        assert_eq!(rome_offset_secs(at("2025-03-30T00:59:59Z")), 3600);
        assert_eq!(rome_offset_secs(at("2025-03-30T01:00:00Z")), 7200);
        assert_eq!(rome_offset_secs(at("2025-10-26T00:59:59Z")), 7200);
        assert_eq!(rome_offset_secs(at("2025-10-26T01:00:00Z")), 3600);
        assert_eq!(parse_zona("+0100"), Some(3600));
        assert_eq!(parse_zona("+01:00"), None);
        assert_eq!(fmt_zona(-5400), "-0130");
    }
}
