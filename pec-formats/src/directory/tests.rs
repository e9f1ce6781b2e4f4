//! Tests of the provider directory: the RFC 6109 §4.5.10 example, the real providers, lookups,
//! malformed LDIF, round trips and the signed `.p7m`.

use super::*;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder};
use proptest::prelude::*;
use proptest::string::string_regex;
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(rel)
}

fn rfc_example() -> Directory {
    Directory::load(&fixture("directory/rfc6109-example.ldif")).expect("RFC example loads")
}

fn real() -> Directory {
    Directory::load(&fixture("directory/real-providers.ldif")).expect("real providers load")
}

/// The certificates of a PEM file, in order.
fn pem_certs(rel: &str) -> Vec<X509> {
    X509::stack_from_pem(&std::fs::read(fixture(rel)).unwrap()).unwrap()
}

fn aruba_cert() -> X509 {
    pem_certs("reference/aruba-2014_pec-signing-cert_and_digitpa-ca1.pem").remove(0)
}

fn namirial_cert() -> X509 {
    pem_certs("reference/namirial-2023_pec-signing-cert.pem").remove(0)
}

fn ldif_error(text: &str) -> (usize, String) {
    match Directory::from_ldif(text) {
        Err(DirectoryError::Ldif { line, message }) => (line, message),
        other => panic!("expected an LDIF error, got {other:?}"),
    }
}

#[test]
fn reads_the_rfc_example() {
    let d = rfc_example();
    assert_eq!(
        d.location_url(),
        Some("https://igpec.rupa.example.com/igpec.ldif.p7m")
    );
    assert_eq!(d.providers.len(), 3);

    let main = &d.providers[0];
    assert_eq!(main.name, "Anonymous Certified Mail S.p.A.");
    assert_eq!(main.provider_unit(), None);
    assert_eq!(
        main.dn(),
        "providerName=Anonymous Certified Mail S.p.A.,o=postacert"
    );
    assert_eq!(main.other_value("dn"), None, "a canonical dn is not kept");
    // Upper case in the RFC, normalised to lower case.
    assert_eq!(
        main.certificate_hashes,
        vec!["7e7aef1059ae0f454f2643a95f69ec3556009239".to_string()]
    );
    assert_eq!(main.certificates.len(), 1);
    assert_eq!(main.certificates[0].len(), 778);
    assert_eq!(main.mail_receipt, "notifications@anpocert.it.example");
    assert_eq!(
        main.managed_domains,
        vec![
            "mail.anpocert.example.com",
            "cert.company.example.com",
            "costmec.example.com"
        ]
    );
    assert_eq!(
        main.ldif_location_url(),
        Some("http://anpocert.example.com/anpocert.ldif.p7m")
    );
    assert_eq!(
        main.other_value("description"),
        Some("Certified mail services for companies")
    );

    let secondary = &d.providers[1];
    assert_eq!(secondary.name, "Certified Mail S.p.A.");
    assert_eq!(secondary.provider_unit(), Some("Secondary Environment"));
    assert_eq!(secondary.ldif_location_url(), None);
    // The RFC folds the dn without a leading space: it unfolds as printed.
    assert_eq!(
        secondary.dn(),
        "providerUnit=Secondary Environment, providerName=AnonymousCertified Mail S.p.A.,o=postacert"
    );

    let postal = &d.providers[2];
    assert_eq!(postal.name, "Postal Services S.r.l.");
    assert_eq!(postal.certificates[0].len(), 802);
    assert!(
        postal.has_certificate_hash("E0:0F:DD:9D:88:BE:0E:2C:C7:66:B8:93:31:5C:AF:93:D5:70:1A:6A")
    );
}

#[test]
fn rfc_example_round_trips_and_folds() {
    let d = rfc_example();
    let text = d.to_ldif();
    assert!(text.lines().all(|l| l.chars().count() <= 76), "{text}");
    assert_eq!(Directory::from_ldif(&text).unwrap(), d);
}

#[test]
fn rfc_example_lookups_prefer_the_main_record() {
    let d = rfc_example();
    let cert = X509::from_der(&d.providers[0].certificates[0]).unwrap();
    let p = d.provider_for_certificate(&cert).unwrap();
    assert_eq!(p.name, "Anonymous Certified Mail S.p.A.");
    assert_eq!(
        d.mail_receipt_for_certificate(&cert),
        Some("notifications@anpocert.it.example")
    );
    // The secondary environment's own domains find the secondary record.
    assert_eq!(
        d.provider_for_domain("personnel.anpocert.example.com")
            .unwrap()
            .provider_unit(),
        Some("Secondary Environment")
    );
    // The same certificate in two records is one trust anchor.
    assert_eq!(d.trusted_certificates().len(), 2);
}

#[test]
fn real_providers_by_certificate() {
    let d = real();
    assert_eq!(d.providers.len(), 2);
    assert_eq!(
        d.provider_for_certificate(&aruba_cert())
            .map(|p| p.name.as_str()),
        Some("ARUBA PEC S.p.A.")
    );
    assert_eq!(
        d.provider_for_certificate(&namirial_cert())
            .map(|p| p.name.as_str()),
        Some("Namirial S.p.A.")
    );
    assert_eq!(
        d.mail_receipt_for_certificate(&namirial_cert()),
        Some("posta-certificata@sicurezzapostale.it")
    );
    // The issuing CA is not a provider certificate.
    let digitpa = pem_certs("reference/aruba-2014_pec-signing-cert_and_digitpa-ca1.pem").remove(1);
    assert!(d.provider_for_certificate(&digitpa).is_none());
    assert!(d.mail_receipt_for_certificate(&digitpa).is_none());
    // The fingerprints published with the samples (shared/pec-samples/README.md).
    assert_eq!(
        certificate_hash(&aruba_cert()),
        "aaa71bfd2dbc9fe67aa23c9f33aaf3316df1aa66"
    );
    let trusted: Vec<String> = d
        .trusted_certificates()
        .iter()
        .map(|c| certificate_hash(c))
        .collect();
    assert_eq!(
        trusted,
        vec![
            "aaa71bfd2dbc9fe67aa23c9f33aaf3316df1aa66",
            "61a9e2865eeee6c42cb8756b86567337c64cdec3"
        ]
    );
}

#[test]
fn certificate_hash_compared_ignoring_case_and_colons() {
    let mut d = real();
    d.providers[1].certificate_hashes =
        vec!["61:A9:E2:86:5E:EE:E6:C4:2C:B8:75:6B:86:56:73:37:C6:4C:DE:C3".to_string()];
    d.providers[1].certificates.clear();
    assert_eq!(
        d.provider_for_certificate(&namirial_cert())
            .map(|p| p.name.as_str()),
        Some("Namirial S.p.A.")
    );
    // And as read from LDIF.
    let text = d.to_ldif();
    assert!(text.contains("61:A9:E2"));
    let back = Directory::from_ldif(&text).unwrap();
    assert_eq!(
        back.providers[1].certificate_hashes,
        vec!["61a9e2865eeee6c42cb8756b86567337c64cdec3"]
    );
}

#[test]
fn domain_lookups() {
    let d = real();
    assert_eq!(
        d.provider_for_domain("PEC.Aruba.IT")
            .map(|p| p.name.as_str()),
        Some("ARUBA PEC S.p.A.")
    );
    assert_eq!(
        d.provider_for_domain("pec.aruba.it.")
            .map(|p| p.name.as_str()),
        Some("ARUBA PEC S.p.A.")
    );
    assert!(d.provider_for_domain("aruba.it").is_none());
    assert!(
        d.provider_for_domain("x.pec.aruba.it").is_none(),
        "exact domain only"
    );
    assert!(d.provider_for_domain("").is_none());
    assert!(d.provider_for_domain("example.com").is_none());

    assert!(d.is_pec_address("Mario.Rossi@PEC.ARUBA.IT"));
    assert!(d.is_pec_address("<studio@pec.it>"));
    assert!(d.is_pec_address("a@sicurezzapostale.it"));
    assert!(!d.is_pec_address("nobody@example.com"));
    assert!(!d.is_pec_address("pec.aruba.it"));
    assert!(!d.is_pec_address("@pec.aruba.it"));
    assert!(!d.is_pec_address("user@"));

    assert_eq!(
        d.tipo_destinatario("Mario.Rossi@Pec.Aruba.It"),
        TipoDestinatario::Certificato
    );
    assert_eq!(
        d.tipo_destinatario("mario@gmail.example"),
        TipoDestinatario::Esterno
    );

    assert_eq!(
        d.provider_by_name("aruba pec s.p.a.")
            .map(|p| p.mail_receipt.as_str()),
        Some("posta-certificata@pec.aruba.it")
    );
    assert!(d.provider_by_name("Aruba").is_none());
}

#[test]
fn malformed_ldif_names_the_line() {
    let good = "dn: providerName=P,o=postacert\nproviderName: P\nproviderCertificateHash: 0123456789abcdef0123456789abcdef01234567\nmailReceipt: r@p.example\nmanagedDomains: p.example\n";
    assert!(Directory::from_ldif(good).is_ok());
    let cases: &[(&str, usize, &str)] = &[
        (" continued\n", 1, "continuation"),
        (
            "dn: o=postacert\nthis line has no colon\n",
            2,
            "attribute: value",
        ),
        ("objectClass: top\n", 1, "must start with `dn:`"),
        ("version: 2\n", 1, "version"),
        (
            "dn: o=postacert\n\n# c\ndn: o=postacert\n",
            4,
            "second root",
        ),
        ("dn: cn=x,o=postacert\ncn: x\n", 1, "neither the root"),
        ("dn: o=postacert\ndescription:: !!!notbase64\n", 2, "base64"),
        ("dn: o=postacert\ndescription:: /w==\n", 2, "not UTF-8"),
        (
            "dn: o=postacert\ndescription:< file:///etc/passwd\n",
            2,
            "URL",
        ),
        ("dn: o=postacert\nchangetype: add\n", 2, "change records"),
        ("dn: o=postacert\nbad name: x\n", 2, "attribute description"),
        (
            &good.replace("mailReceipt: r@p.example\n", ""),
            1,
            "no mailReceipt",
        ),
        (&good.replace("providerName: P\n", ""), 1, "no providerName"),
        (
            &good.replace("managedDomains: p.example\n", ""),
            1,
            "no managedDomains",
        ),
        (
            &good.replace("0123456789abcdef0123456789abcdef01234567", "xyz"),
            3,
            "40 hex digits",
        ),
        (
            &good.replace("providerName: P\n", "providerName: P\nproviderName: Q\n"),
            3,
            "single-valued",
        ),
        (&good.replace("r@p.example", "<r@p.example>"), 4, "dot-atom"),
        (
            &good.replace(
                "managedDomains: p.example\n",
                "managedDomains: p..example\n",
            ),
            5,
            "dot-atom",
        ),
        (
            &format!("{good}managedDomains: P.EXAMPLE\n"),
            6,
            "appears twice",
        ),
        (
            &format!(
                "{good}\n{}",
                good.replace("=P,", "=Q,").replace(": P\n", ": Q\n")
            ),
            11,
            "already managed by the entry at line 1",
        ),
        (
            &format!("{good}providerCertificate;binary:: AAEC\n"),
            6,
            "not a DER X.509",
        ),
        (
            &format!("{good}dn: providerName=Q,o=postacert\n"),
            6,
            "second `dn:`",
        ),
    ];
    for (text, line, needle) in cases {
        let (got_line, message) = ldif_error(text);
        assert_eq!(got_line, *line, "{text:?}: {message}");
        assert!(
            message.contains(needle),
            "{text:?}: {message:?} lacks {needle:?}"
        );
        let shown = Directory::from_ldif(text).unwrap_err().to_string();
        assert!(
            shown.starts_with(&format!("directory LDIF line {line}: ")),
            "{shown}"
        );
    }
}

#[test]
fn certificate_without_its_hash_is_refused() {
    let der = BASE64.encode(namirial_cert().to_der().unwrap());
    let text = format!(
        "# comment\n#  folded comment\n continued comment\ndn: providerName=P,o=postacert\nproviderName: P\nproviderCertificateHash: 0123456789abcdef0123456789abcdef01234567\nproviderCertificate;binary:: {der}\nmailReceipt: r@p.example\nmanagedDomains: p.example\n"
    );
    let (line, message) = ldif_error(&text);
    assert_eq!(line, 7);
    assert!(
        message.contains("61a9e2865eeee6c42cb8756b86567337c64cdec3"),
        "{message}"
    );
}

#[test]
fn accepts_crlf_version_and_comments() {
    let text = "version: 1\r\n# the root\r\ndn: o=postacert\r\no: postacert\r\nLDIFLocation\r\n URL: https://x.example/i.p7m\r\n\r\n\r\n";
    let d = Directory::from_ldif(text).unwrap();
    assert_eq!(d.location_url(), Some("https://x.example/i.p7m"));
    assert!(d.providers.is_empty());
    assert_eq!(Directory::from_ldif("").unwrap(), Directory::default());
}

#[test]
fn load_names_the_missing_file() {
    let err = Directory::load(Path::new("/nonexistent/igpec.ldif")).unwrap_err();
    assert!(matches!(err, DirectoryError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/igpec.ldif"), "{err}");
}

// ---- round trip over generated directories ----

fn entry_strategy() -> impl Strategy<Value = ProviderEntry> {
    let label = "[a-z0-9]{1,8}";
    let domain = format!("{label}(\\.{label}){{1,2}}");
    let pool = vec![
        aruba_cert().to_der().unwrap(),
        namirial_cert().to_der().unwrap(),
    ];
    (
        "[A-Za-z0-9àé#][^\\p{C}]{0,30}",
        proptest::collection::vec(string_regex(&domain).unwrap(), 1..4),
        string_regex(&format!("[A-Za-z0-9][A-Za-z0-9._+-]{{0,8}}@{domain}")).unwrap(),
        proptest::collection::vec("[0-9a-f]{40}", 0..3),
        proptest::sample::subsequence(pool, 0..=2),
        proptest::option::of("https://[a-z]{1,8}\\.example/[a-z]{1,8}\\.p7m"),
        proptest::option::of("[^\\p{C}]{1,20}"),
        proptest::collection::vec("[^\\p{C}]{0,40}", 0..3),
    )
        .prop_filter_map(
            "an entry needs a hash",
            |(name, managed_domains, mail_receipt, mut hashes, certs, url, unit, descriptions)| {
                hashes.extend(certs.iter().map(|d| der_hash(d)));
                if hashes.is_empty() || mail_receipt.contains("..") || mail_receipt.contains(".@") {
                    return None;
                }
                let mut other = Vec::new();
                if let Some(u) = url {
                    other.push(("LDIFLocationURL".to_string(), u));
                }
                if let Some(u) = unit {
                    other.push(("providerUnit".to_string(), u));
                }
                other.extend(
                    descriptions
                        .into_iter()
                        .map(|d| ("description".to_string(), d)),
                );
                Some(ProviderEntry {
                    name,
                    managed_domains,
                    mail_receipt,
                    certificate_hashes: hashes,
                    certificates: certs,
                    other,
                })
            },
        )
}

fn directory_strategy() -> impl Strategy<Value = Directory> {
    (
        proptest::collection::vec(entry_strategy(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut providers, with_root)| {
            // Domains are unique across the directory.
            for (i, p) in providers.iter_mut().enumerate() {
                for (j, d) in p.managed_domains.iter_mut().enumerate() {
                    *d = format!("d{i}-{j}.{d}");
                }
            }
            let root = if with_root {
                vec![
                    ("objectClass".to_string(), "top".to_string()),
                    ("o".to_string(), "postacert".to_string()),
                    (
                        "LDIFLocationURL".to_string(),
                        "https://index.example/igpec.ldif.p7m".to_string(),
                    ),
                ]
            } else {
                Vec::new()
            };
            Directory { providers, root }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn generated_directories_round_trip(d in directory_strategy()) {
        let text = d.to_ldif();
        let back = Directory::from_ldif(&text);
        prop_assert!(back.is_ok(), "{:?}\n{}", back, text);
        prop_assert_eq!(back.unwrap(), d);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[\\PC\n ]{0,200}") {
        let _ = Directory::from_ldif(&text);
    }
}

// ---- signed p7m ----

struct TestPki {
    ca: X509,
    key: PKey<Private>,
    cert: X509,
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn name(cn: &str) -> openssl::x509::X509Name {
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.build()
}

/// A CA and a directory signing certificate issued by it.
fn test_pki(ca_cn: &str) -> TestPki {
    let ca_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name(ca_cn)).unwrap();
    b.set_issuer_name(&name(ca_cn)).unwrap();
    b.set_pubkey(&ca_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = b.build();

    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name("Indice dei gestori PEC (test)"))
        .unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    TestPki {
        ca,
        key,
        cert: b.build(),
    }
}

#[test]
fn signed_p7m_round_trip_and_refusals() {
    let pki = test_pki("Test CA for the directory");
    let d = real();
    let der = d.sign_p7m(&pki.key, &pki.cert).unwrap();

    // Trusting the CA, or the signing certificate itself.
    assert_eq!(
        Directory::from_signed_p7m(&der, std::slice::from_ref(&pki.ca)).unwrap(),
        d
    );
    assert_eq!(
        Directory::from_signed_p7m(&der, std::slice::from_ref(&pki.cert)).unwrap(),
        d
    );

    // No trust anchor, or another CA: refused as a bad signature.
    for trust in [vec![], vec![test_pki("Another CA").ca]] {
        let err = Directory::from_signed_p7m(&der, &trust).unwrap_err();
        assert!(
            matches!(err, DirectoryError::BadSignature { .. }),
            "{err:?}"
        );
    }

    // One byte of the signed LDIF changed.
    let needle = b"sicurezzapostale.it";
    let at = der
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the LDIF is attached");
    let mut tampered = der.clone();
    tampered[at] = b'S';
    let err = Directory::from_signed_p7m(&tampered, std::slice::from_ref(&pki.ca)).unwrap_err();
    assert!(
        matches!(err, DirectoryError::BadSignature { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("signature is not valid"), "{err}");

    // Not PKCS#7 at all.
    let err = Directory::from_signed_p7m(b"dn: o=postacert\n", std::slice::from_ref(&pki.ca))
        .unwrap_err();
    assert!(matches!(err, DirectoryError::P7m { .. }), "{err:?}");

    // A key that does not belong to the certificate cannot sign.
    let other = test_pki("Third CA");
    assert!(matches!(
        d.sign_p7m(&other.key, &pki.cert),
        Err(DirectoryError::P7m { .. })
    ));

    // load_signed reads the same file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("igpec.ldif.p7m");
    std::fs::write(&path, &der).unwrap();
    assert_eq!(
        Directory::load_signed(&path, std::slice::from_ref(&pki.ca)).unwrap(),
        d
    );
}

#[test]
fn openssl_smime_verifies_the_p7m() {
    let pki = test_pki("Test CA for openssl smime");
    let d = rfc_example();
    let der = d.sign_p7m(&pki.key, &pki.cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p7m = dir.path().join("igpec.ldif.p7m");
    let ca = dir.path().join("ca.pem");
    let out = dir.path().join("igpec.ldif");
    std::fs::write(&p7m, &der).unwrap();
    std::fs::write(&ca, pki.ca.to_pem().unwrap()).unwrap();
    for tool in ["smime", "cms"] {
        let status = std::process::Command::new("openssl")
            .arg(tool)
            .args(["-verify", "-binary", "-inform", "DER", "-in"])
            .arg(&p7m)
            .arg("-CAfile")
            .arg(&ca)
            .arg("-out")
            .arg(&out)
            .output()
            .expect("the openssl command runs");
        assert!(
            status.status.success(),
            "openssl {tool} -verify: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), d.to_ldif());
    }
}
