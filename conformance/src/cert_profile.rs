//! The provider signing certificate profile of RFC 6109 §5.5.2 (requirement SIG-05), read from the
//! certificate's DER with a small reader of our own: the `openssl` crate does not expose whether an
//! extension is critical, and the check must not rely on the library under test.
//!
//! RFC 6109 §5.5.2: Key Usage (2.5.29.15) with digitalSignature, critical; Authority Key Identifier
//! (2.5.29.35) with keyIdentifier, not critical; Subject Key Identifier (2.5.29.14), not critical;
//! Subject Alternative Name (2.5.29.17) with an rfc822Name, not critical; no Basic Constraints
//! (2.5.29.19); any other extension not critical. §5.5.1: the mail address is in the SAN.

/// One way a certificate departs from the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deviation {
    /// What is wrong, naming the extension.
    pub what: String,
    /// Seen in real provider certificates still in use (Aruba's 2014 signing certificate, in
    /// `fixtures/reference`): `verify` reports it as a warning, the runner as a failure.
    pub tolerated: bool,
}

const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const AKI: &[u8] = &[0x55, 0x1d, 0x23];
const SKI: &[u8] = &[0x55, 0x1d, 0x0e];
const SAN: &[u8] = &[0x55, 0x1d, 0x11];
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// One DER element: its tag and its contents.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads one DER element (X.690 §8.1) and returns it with the rest of the input.
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers never appear in a certificate
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None; // indefinite or absurd lengths are not DER
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((
        Tlv {
            tag,
            body: &rest[..len],
        },
        &rest[len..],
    ))
}

/// The elements inside a constructed element.
fn children(body: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (t, r) = read_tlv(rest)?;
        out.push(t);
        rest = r;
    }
    Some(out)
}

/// One extension: OID contents, critical flag, extnValue contents.
struct Extension<'a> {
    oid: &'a [u8],
    critical: bool,
    value: &'a [u8],
}

/// The extensions of a certificate (RFC 5280 §4.1: tbsCertificate `[3] EXPLICIT Extensions`).
fn extensions(der: &[u8]) -> Result<Vec<Extension<'_>>, String> {
    let bad = || "the certificate is not readable DER".to_string();
    let (cert, _) = read_tlv(der).ok_or_else(bad)?;
    let tbs = *children(cert.body)
        .ok_or_else(bad)?
        .first()
        .ok_or_else(bad)?;
    let tbs = children(tbs.body).ok_or_else(bad)?;
    let Some(explicit) = tbs.iter().find(|t| t.tag == 0xa3) else {
        return Ok(Vec::new()); // a v1/v2 certificate: no extension at all
    };
    let (seq, _) = read_tlv(explicit.body).ok_or_else(bad)?;
    let mut out = Vec::new();
    for e in children(seq.body).ok_or_else(bad)? {
        let f = children(e.body).ok_or_else(bad)?;
        let oid = f.first().filter(|t| t.tag == 0x06).ok_or_else(bad)?.body;
        // critical BOOLEAN DEFAULT FALSE (RFC 5280 §4.1), then extnValue OCTET STRING.
        let critical = f
            .iter()
            .find(|t| t.tag == 0x01)
            .is_some_and(|b| b.body.iter().any(|&x| x != 0));
        let value = f.iter().rfind(|t| t.tag == 0x04).ok_or_else(bad)?.body;
        out.push(Extension {
            oid,
            critical,
            value,
        });
    }
    Ok(out)
}

/// The deviations of a provider signing certificate (DER) from RFC 6109 §5.5.2; empty when it
/// follows the profile. `address`, when given, must be one of its rfc822Name SAN entries
/// (RFC 6109 §5.5.1). An unreadable certificate is an error.
pub fn deviations(der: &[u8], address: Option<&str>) -> Result<Vec<Deviation>, String> {
    let exts = extensions(der)?;
    let find = |oid: &[u8]| exts.iter().find(|e| e.oid == oid);
    let mut out = Vec::new();
    let mut dev = |what: String, tolerated: bool| out.push(Deviation { what, tolerated });
    // RFC 6109 §5.5.2: Key Usage with digitalSignature (bit 0), critical.
    match find(KEY_USAGE) {
        None => dev("no Key Usage extension (2.5.29.15)".into(), false),
        Some(e) => {
            let bits = read_tlv(e.value).filter(|(t, _)| t.tag == 0x03);
            let digital_signature =
                bits.is_some_and(|(t, _)| t.body.get(1).is_some_and(|b| b & 0x80 != 0));
            if !digital_signature {
                dev("Key Usage without digitalSignature".into(), false);
            }
            if !e.critical {
                // Aruba's 2014 signing certificate: Key Usage not critical.
                dev("Key Usage not marked critical".into(), true);
            }
        }
    }
    // RFC 6109 §5.5.2: Authority Key Identifier with keyIdentifier ([0]), not critical.
    match find(AKI) {
        None => dev("no Authority Key Identifier (2.5.29.35)".into(), false),
        Some(e) => {
            let has_id = read_tlv(e.value)
                .and_then(|(s, _)| children(s.body))
                .is_some_and(|c| c.iter().any(|t| t.tag == 0x80 && !t.body.is_empty()));
            if !has_id {
                dev(
                    "Authority Key Identifier without keyIdentifier".into(),
                    false,
                );
            }
            if e.critical {
                dev("Authority Key Identifier marked critical".into(), false);
            }
        }
    }
    // RFC 6109 §5.5.2: Subject Key Identifier, not critical.
    match find(SKI) {
        None => dev("no Subject Key Identifier (2.5.29.14)".into(), false),
        Some(e) => {
            if !read_tlv(e.value).is_some_and(|(t, _)| t.tag == 0x04 && !t.body.is_empty()) {
                dev("Subject Key Identifier without keyIdentifier".into(), false);
            }
            if e.critical {
                dev("Subject Key Identifier marked critical".into(), false);
            }
        }
    }
    // RFC 6109 §5.5.1, §5.5.2: Subject Alternative Name with an rfc822Name ([1]), not critical.
    match find(SAN) {
        None => dev(
            "no Subject Alternative Name (2.5.29.17) with an rfc822Name".into(),
            false,
        ),
        Some(e) => {
            let mails: Vec<String> = read_tlv(e.value)
                .and_then(|(s, _)| children(s.body))
                .unwrap_or_default()
                .iter()
                .filter(|t| t.tag == 0x81)
                .map(|t| String::from_utf8_lossy(t.body).into_owned())
                .collect();
            if mails.is_empty() {
                dev(
                    "Subject Alternative Name without an rfc822Name".into(),
                    false,
                );
            } else if let Some(a) = address
                && !mails.iter().any(|m| m.eq_ignore_ascii_case(a.trim()))
            {
                dev(
                    format!(
                        "the rfc822Name SAN [{}] does not hold the provider address {a}",
                        mails.join(", ")
                    ),
                    false,
                );
            }
            if e.critical {
                dev("Subject Alternative Name marked critical".into(), false);
            }
        }
    }
    // RFC 6109 §5.5.2: Basic Constraints MUST NOT be present.
    if let Some(e) = find(BASIC_CONSTRAINTS) {
        let ca = read_tlv(e.value)
            .and_then(|(s, _)| children(s.body))
            .is_some_and(|c| {
                c.first()
                    .is_some_and(|t| t.tag == 0x01 && t.body.iter().any(|&x| x != 0))
            });
        if ca {
            dev("Basic Constraints present with cA TRUE".into(), false);
        } else {
            // Aruba's 2014 signing certificate carries Basic Constraints cA FALSE.
            dev("Basic Constraints present (cA FALSE)".into(), true);
        }
    }
    // RFC 6109 §5.5.2: other extensions MUST NOT be marked critical.
    for e in &exts {
        if e.critical && ![KEY_USAGE, AKI, SKI, SAN, BASIC_CONSTRAINTS].contains(&e.oid) {
            dev(
                format!("extension {} marked critical", oid_text(e.oid)),
                false,
            );
        }
    }
    Ok(out)
}

/// Dotted text of an OID's contents (X.690 §8.19), for messages.
fn oid_text(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut v: u64 = 0;
    for (i, &b) in oid.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() && i < 8 {
                let first = (v / 40).min(2);
                parts.push(first.to_string());
                parts.push((v - first * 40).to_string());
            } else {
                parts.push(v.to_string());
            }
            v = 0;
        }
    }
    parts.join(".")
}

/// The deviations as one line: `a; b (tolerated: …)`.
pub fn describe(devs: &[Deviation]) -> String {
    devs.iter()
        .map(|d| {
            if d.tolerated {
                format!("{} (seen in real providers)", d.what)
            } else {
                d.what.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
    use openssl::x509::{X509, X509NameBuilder};
    use std::path::Path;

    fn fixture(name: &str) -> X509 {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/reference")
            .join(name);
        X509::stack_from_pem(&std::fs::read(p).unwrap())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn the_reference_provider_certificate_follows_the_profile() {
        let ca = pec_formats::pki::TestCa::generate("Test CA").unwrap();
        let id = ca
            .issue_provider("Gestore A", "posta-certificata@pec.a.test")
            .unwrap();
        let der = id.cert.to_der().unwrap();
        assert_eq!(
            deviations(&der, Some("posta-certificata@pec.a.test")).unwrap(),
            vec![]
        );
        let d = deviations(&der, Some("posta-certificata@pec.b.test")).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].what.contains("posta-certificata@pec.b.test"), "{d:?}");
    }

    #[test]
    fn real_certificates_namirial_follows_aruba_deviates_in_tolerated_ways() {
        let n = fixture("namirial-2023_pec-signing-cert.pem");
        let d = deviations(
            &n.to_der().unwrap(),
            Some("posta-certificata@sicurezzapostale.it"),
        );
        assert_eq!(d.unwrap(), vec![]);
        let a = fixture("aruba-2014_pec-signing-cert_and_digitpa-ca1.pem");
        let d = deviations(&a.to_der().unwrap(), Some("posta-certificata@pec.aruba.it")).unwrap();
        let text = describe(&d);
        assert!(d.iter().all(|x| x.tolerated), "{text}");
        assert!(text.contains("Key Usage not marked critical"), "{text}");
        assert!(
            text.contains("Basic Constraints present (cA FALSE)"),
            "{text}"
        );
    }

    /// A certificate that breaks the profile: CA basic constraints, Key Usage without
    /// digitalSignature and not critical, no AKI, no SAN.
    #[test]
    fn a_certificate_breaking_the_profile_names_what_is_missing() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "Posta Certificata Rotta")
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().key_encipherment().build().unwrap())
            .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let d = deviations(&cert.to_der().unwrap(), None).unwrap();
        let text = describe(&d);
        for want in [
            "Key Usage without digitalSignature",
            "Key Usage not marked critical",
            "no Authority Key Identifier",
            "no Subject Alternative Name",
            "Basic Constraints present with cA TRUE",
        ] {
            assert!(text.contains(want), "missing `{want}` in: {text}");
        }
        assert!(!text.contains("Subject Key Identifier"), "{text}");
        assert!(d.iter().any(|x| !x.tolerated));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(deviations(b"", None).is_err());
        assert!(deviations(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], None).is_err());
        assert!(deviations(&[0x30, 0x03, 0x30, 0x01], None).is_err());
        assert_eq!(oid_text(&[0x55, 0x1d, 0x0f]), "2.5.29.15");
    }
}
