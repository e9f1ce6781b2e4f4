//! A test PKI: a test CA and provider signing certificates with the profile of RFC 6109 §5.5
//! (key usage digitalSignature critical, AKI, SKI, SAN rfc822Name with the provider's address, no
//! basic constraints), generated on demand and written to / read from a folder.

use crate::smime::{DigestAlg, RevocationReason, Signer, SmimeError, time_der};
use chrono::{DateTime, Duration, Utc};
use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{
    X509, X509Builder, X509Crl, X509CrlBuilder, X509Extension, X509Name, X509NameBuilder,
    X509NameRef, X509Ref, X509Revoked,
};
use std::path::Path;

/// A test certification authority (stands in for AgID CA1 in tests and `dev`).
pub struct TestCa {
    /// The CA key.
    pub key: PKey<Private>,
    /// The self-signed CA certificate.
    pub cert: X509,
}

/// A provider's signing key and certificate, issued by a [`TestCa`].
pub struct ProviderIdentity {
    /// The key.
    pub key: PKey<Private>,
    /// The provider certificate (RFC 6109 §5.5 profile).
    pub cert: X509,
    /// The issuing CA certificate.
    pub ca_cert: X509,
}

/// The default validity: from one day before now (clock skew), for ten years.
fn default_validity() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now();
    (now - Duration::days(1), now + Duration::days(3650))
}

fn new_key() -> Result<PKey<Private>, SmimeError> {
    Ok(PKey::from_rsa(Rsa::generate(2048)?)?)
}

fn name(parts: &[(&str, &str)]) -> Result<X509Name, SmimeError> {
    let mut b = X509NameBuilder::new()?;
    for (k, v) in parts {
        b.append_entry_by_text(k, v)
            .map_err(|e| SmimeError::Material(format!("name {k}={v:?}: {e}")))?;
    }
    Ok(b.build())
}

/// A builder with serial, validity, subject, issuer and public key set.
fn base_builder(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKey<Private>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<X509Builder, SmimeError> {
    if not_after <= not_before {
        return Err(SmimeError::Material(format!(
            "validity ends ({not_after}) before it starts ({not_before})"
        )));
    }
    let mut b = X509Builder::new()?;
    b.set_version(2)?; // X.509 v3
    // RFC 5280 §4.1.2.2: a positive serial of at most 20 octets.
    let mut serial = BigNum::new()?;
    serial.rand(159, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(key)?;
    let (nb, na) = (
        Asn1Time::from_unix(not_before.timestamp())?,
        Asn1Time::from_unix(not_after.timestamp())?,
    );
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    Ok(b)
}

fn read_file(dir: &Path, file: &str) -> Result<Vec<u8>, SmimeError> {
    let p = dir.join(file);
    std::fs::read(&p).map_err(|e| SmimeError::Material(format!("{}: {e}", p.display())))
}

fn write_file(dir: &Path, file: &str, bytes: &[u8], private: bool) -> Result<(), SmimeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SmimeError::Material(format!("{}: {e}", dir.display())))?;
    let p = dir.join(file);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    use std::io::Write;
    opts.open(&p)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| SmimeError::Material(format!("{}: {e}", p.display())))
}

fn load_key(dir: &Path, file: &str) -> Result<PKey<Private>, SmimeError> {
    PKey::private_key_from_pem(&read_file(dir, file)?)
        .map_err(|e| SmimeError::Material(format!("{}: not a PEM private key: {e}", file)))
}

fn load_cert(dir: &Path, file: &str) -> Result<X509, SmimeError> {
    X509::from_pem(&read_file(dir, file)?)
        .map_err(|e| SmimeError::Material(format!("{}: not a PEM certificate: {e}", file)))
}

impl TestCa {
    /// Generates a CA named `common_name` (RSA 2048, SHA-256, 10 years).
    pub fn generate(common_name: &str) -> Result<TestCa, SmimeError> {
        let (nb, na) = default_validity();
        TestCa::generate_valid(common_name, nb, na)
    }

    /// Generates a CA valid from `not_before` to `not_after` (e.g. an expired one for tests).
    pub fn generate_valid(
        common_name: &str,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<TestCa, SmimeError> {
        if common_name.trim().is_empty() {
            return Err(SmimeError::Material("empty CA common name".into()));
        }
        let key = new_key()?;
        let subject = name(&[("C", "IT"), ("O", "PEC Testbed"), ("CN", common_name)])?;
        let mut b = base_builder(&subject, &subject, &key, not_before, not_after)?;
        // RFC 5280 §4.2.1.9, §4.2.1.3: a CA, signing certificates.
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(TestCa {
            key,
            cert: b.build(),
        })
    }

    /// Issues a provider certificate: subject `C=IT, O=<provider_name>, CN=Posta Certificata
    /// <provider_name>`, SAN rfc822Name `address` (the provider's service address).
    pub fn issue_provider(
        &self,
        provider_name: &str,
        address: &str,
    ) -> Result<ProviderIdentity, SmimeError> {
        let (nb, na) = default_validity();
        self.issue_provider_valid(provider_name, address, nb, na)
    }

    /// [`TestCa::issue_provider`] with a chosen validity (e.g. an expired certificate for tests).
    pub fn issue_provider_valid(
        &self,
        provider_name: &str,
        address: &str,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<ProviderIdentity, SmimeError> {
        if provider_name.trim().is_empty() {
            return Err(SmimeError::Material("empty provider name".into()));
        }
        let at = address.find('@');
        if at.is_none_or(|i| i == 0 || i + 1 == address.len())
            || address.contains(char::is_whitespace)
        {
            return Err(SmimeError::Material(format!(
                "provider address {address:?} is not an e-mail address"
            )));
        }
        let key = new_key()?;
        // RFC 6109 §5.5, digest §8.1: the provider name in O and CN; the address not in the DN.
        let subject = name(&[
            ("C", "IT"),
            ("O", provider_name),
            ("CN", &format!("Posta Certificata {provider_name}")),
        ])?;
        let mut b = base_builder(
            &subject,
            self.cert.subject_name(),
            &key,
            not_before,
            not_after,
        )?;
        // RFC 6109 §5.5: keyUsage digitalSignature, critical; no basicConstraints.
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        // Optional, not critical, as in the real Namirial certificate (digest §8.1).
        b.append_extension(ExtendedKeyUsage::new().email_protection().build()?)?;
        // RFC 6109 §5.5: SKI and AKI (keyIdentifier), not critical.
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        // RFC 6109 §5.5: subjectAltName rfc822Name with the provider's address.
        let san = SubjectAlternativeName::new()
            .email(address)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(ProviderIdentity {
            key,
            cert: b.build(),
            ca_cert: self.cert.clone(),
        })
    }

    /// Issues a TLS server certificate for `names` (DNS names or IP addresses, e.g. `localhost`,
    /// `127.0.0.1`) for the servers' TLS (RFC 6109 §5.3). The first name is the subject CN.
    pub fn issue_tls_server(&self, names: &[&str]) -> Result<(PKey<Private>, X509), SmimeError> {
        let first = names
            .first()
            .ok_or_else(|| SmimeError::Material("a TLS certificate needs a name".into()))?;
        let key = new_key()?;
        let subject = name(&[("C", "IT"), ("O", "PEC Testbed"), ("CN", first)])?;
        let (nb, na) = default_validity();
        let mut b = base_builder(&subject, self.cert.subject_name(), &key, nb, na)?;
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        let mut san = SubjectAlternativeName::new();
        for n in names {
            if n.parse::<std::net::IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok((key, b.build()))
    }

    /// Issues a time-stamping authority certificate (RFC 3161 §2.3: extendedKeyUsage timeStamping
    /// only, critical) named `common_name`, for the daily seals of the message log (digest §11).
    pub fn issue_tsa(&self, common_name: &str) -> Result<(PKey<Private>, X509), SmimeError> {
        if common_name.trim().is_empty() {
            return Err(SmimeError::Material("empty TSA common name".into()));
        }
        let key = new_key()?;
        let subject = name(&[("C", "IT"), ("O", "PEC Testbed"), ("CN", common_name)])?;
        let (nb, na) = default_validity();
        let mut b = base_builder(&subject, self.cert.subject_name(), &key, nb, na)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .non_repudiation()
                .build()?,
        )?;
        // RFC 3161 §2.3: "The corresponding certificate MUST contain only one instance of the
        // extended key usage field extension ... with KeyPurposeID having value id-kp-timeStamping.
        // This extension MUST be critical."
        b.append_extension(ExtendedKeyUsage::new().critical().time_stamping().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok((key, b.build()))
    }

    /// Writes `ca.key` and `ca.pem` into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<(), SmimeError> {
        write_file(dir, "ca.key", &self.key.private_key_to_pem_pkcs8()?, true)?;
        write_file(dir, "ca.pem", &self.cert.to_pem()?, false)
    }

    /// Reads what [`TestCa::write_to`] wrote.
    pub fn load_from(dir: &Path) -> Result<TestCa, SmimeError> {
        let key = load_key(dir, "ca.key")?;
        let cert = load_cert(dir, "ca.pem")?;
        if !cert.public_key()?.public_eq(&key) {
            return Err(SmimeError::Material(format!(
                "{}: ca.key does not match ca.pem",
                dir.display()
            )));
        }
        Ok(TestCa { key, cert })
    }
}

/// A certificate a [`TestCa`] revoked, to list in its CRL (RFC 5280 §5.1.2.6).
#[derive(Debug, Clone)]
pub struct RevokedCert {
    /// The certificate's serial number, big-endian magnitude.
    pub serial: Vec<u8>,
    /// The revocationDate.
    pub date: DateTime<Utc>,
    /// The reasonCode entry extension, if any (RFC 5280 §5.3.1).
    pub reason: Option<RevocationReason>,
}

impl RevokedCert {
    /// The revokedCertificates entry: SEQUENCE { userCertificate, revocationDate,
    /// crlEntryExtensions } (RFC 5280 §5.1).
    fn to_x509_revoked(&self) -> Result<X509Revoked, SmimeError> {
        use crate::smime::der::{OCTET_STRING, OID, SEQUENCE, integer_unsigned, tlv};
        // RFC 5280 §5.3.1: id-ce-cRLReasons 2.5.29.21, an ENUMERATED (tag 0x0A).
        const OID_CRL_REASON: &[u8] = &[0x55, 0x1D, 0x15];
        let mut entry = [integer_unsigned(&self.serial), time_der(self.date)].concat();
        if let Some(r) = self.reason {
            let value = tlv(0x0A, &[r.code() as u8]);
            let ext = tlv(
                SEQUENCE,
                &[tlv(OID, OID_CRL_REASON), tlv(OCTET_STRING, &value)].concat(),
            );
            entry.extend(tlv(SEQUENCE, &ext));
        }
        Ok(X509Revoked::from_der(&tlv(SEQUENCE, &entry))?)
    }
}

impl TestCa {
    /// Records that `cert`, issued by this CA, is revoked from `date`, for [`TestCa::crl`].
    pub fn revoke(
        &self,
        cert: &X509Ref,
        date: DateTime<Utc>,
        reason: Option<RevocationReason>,
    ) -> Result<RevokedCert, SmimeError> {
        let ca_key = self.cert.public_key()?;
        let issued_here = cert.issuer_name().to_der()? == self.cert.subject_name().to_der()?
            && cert.verify(&ca_key).unwrap_or(false);
        if !issued_here {
            return Err(SmimeError::Material(format!(
                "cannot revoke {}: not issued by {}",
                crate::smime::subject_string(cert),
                crate::smime::subject_string(&self.cert)
            )));
        }
        Ok(RevokedCert {
            serial: cert.serial_number().to_bn()?.to_vec(),
            date,
            reason,
        })
    }

    /// A CRL v2 signed by this CA (RFC 5280 §5): issued `this_update`, next due `next_update`,
    /// listing `revoked`, with the AKI and cRLNumber extensions RFC 5280 §5.2 requires.
    pub fn crl(
        &self,
        revoked: &[RevokedCert],
        this_update: DateTime<Utc>,
        next_update: DateTime<Utc>,
        number: u32,
    ) -> Result<X509Crl, SmimeError> {
        use crate::smime::der::{SEQUENCE, integer_unsigned, tlv};
        if next_update <= this_update {
            return Err(SmimeError::Material(format!(
                "CRL nextUpdate ({next_update}) is not after thisUpdate ({this_update})"
            )));
        }
        let mut b = X509CrlBuilder::new()?;
        b.set_issuer_name(self.cert.subject_name())?;
        let (last, next) = (
            Asn1Time::from_unix(this_update.timestamp())?,
            Asn1Time::from_unix(next_update.timestamp())?,
        );
        b.set_last_update(&last)?;
        b.set_next_update(&next)?;
        // RFC 5280 §5.2.1: authorityKeyIdentifier { [0] keyIdentifier }, the CA's SKI.
        let ski = self
            .cert
            .subject_key_id()
            .ok_or_else(|| SmimeError::Material("the CA certificate has no SKI".into()))?;
        let aki = tlv(SEQUENCE, &tlv(0x80, ski.as_slice()));
        let ext = |oid: &str, value: &[u8]| -> Result<X509Extension, SmimeError> {
            let oid = Asn1Object::from_str(oid)?;
            let value = Asn1OctetString::new_from_bytes(value)?;
            Ok(X509Extension::new_from_der(&oid, false, &value)?)
        };
        b.append_extension(ext("2.5.29.35", &aki)?)?;
        // RFC 5280 §5.2.3: cRLNumber, not critical.
        b.append_extension(ext("2.5.29.20", &integer_unsigned(&number.to_be_bytes()))?)?;
        for r in revoked {
            b.add_revoked(r.to_x509_revoked()?)?;
        }
        b.sort()?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build()?)
    }
}

impl ProviderIdentity {
    /// A [`Signer`] for this identity.
    pub fn signer(&self, digest: DigestAlg) -> Signer {
        Signer {
            key: self.key.clone(),
            cert: self.cert.clone(),
            chain: Vec::new(),
            digest,
        }
    }

    /// Writes `provider.key`, `provider.pem` and `ca.pem` into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<(), SmimeError> {
        write_file(
            dir,
            "provider.key",
            &self.key.private_key_to_pem_pkcs8()?,
            true,
        )?;
        write_file(dir, "provider.pem", &self.cert.to_pem()?, false)?;
        write_file(dir, "ca.pem", &self.ca_cert.to_pem()?, false)
    }

    /// Reads what [`ProviderIdentity::write_to`] wrote.
    pub fn load_from(dir: &Path) -> Result<ProviderIdentity, SmimeError> {
        let key = load_key(dir, "provider.key")?;
        let cert = load_cert(dir, "provider.pem")?;
        let ca_cert = load_cert(dir, "ca.pem")?;
        if !cert.public_key()?.public_eq(&key) {
            return Err(SmimeError::Material(format!(
                "{}: provider.key does not match provider.pem",
                dir.display()
            )));
        }
        Ok(ProviderIdentity { key, cert, ca_cert })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smime::{cert_emails, sha1_fingerprint_hex, subject_string};

    /// The text of `openssl x509 -text`, or `None` (with a notice) when the tool is absent.
    fn x509_text(cert: &X509) -> Option<String> {
        use std::io::Write;
        let child = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("NOTICE: openssl not found, profile check by the CLI skipped");
            return None;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&cert.to_pem().unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        Some(String::from_utf8(out.stdout).unwrap())
    }

    #[test]
    fn provider_certificate_has_the_rfc6109_profile() {
        let ca = TestCa::generate("PEC Test CA").unwrap();
        let id = ca
            .issue_provider("Gestore Prova", "posta-certificata@pec.prova.it")
            .unwrap();
        assert_eq!(
            subject_string(&id.cert),
            "C=IT, O=Gestore Prova, CN=Posta Certificata Gestore Prova"
        );
        assert_eq!(
            cert_emails(&id.cert),
            vec!["posta-certificata@pec.prova.it"]
        );
        assert!(id.cert.subject_key_id().is_some());
        assert_eq!(
            id.cert.authority_key_id().unwrap().as_slice(),
            ca.cert.subject_key_id().unwrap().as_slice()
        );
        assert!(id.cert.verify(&ca.cert.public_key().unwrap()).unwrap());
        if let Some(text) = x509_text(&id.cert) {
            // RFC 6109 §5.5: keyUsage critical with digitalSignature; no basicConstraints.
            assert!(
                text.contains("X509v3 Key Usage: critical\n                Digital Signature\n"),
                "{text}"
            );
            assert!(!text.contains("Basic Constraints"), "{text}");
            assert!(text.contains("email:posta-certificata@pec.prova.it"));
            assert!(text.contains("Signature Algorithm: sha256WithRSAEncryption"));
        }
        if let Some(text) = x509_text(&ca.cert) {
            assert!(text.contains("CA:TRUE"), "{text}");
        }
    }

    #[test]
    fn bad_names_are_errors() {
        let ca = TestCa::generate("PEC Test CA").unwrap();
        assert!(ca.issue_provider("", "a@b.it").is_err());
        for bad in ["", "nobody", "@pec.it", "a@", "a b@pec.it"] {
            assert!(ca.issue_provider("G", bad).is_err(), "{bad:?}");
        }
        assert!(TestCa::generate(" ").is_err());
        let now = Utc::now();
        assert!(TestCa::generate_valid("X", now, now - Duration::days(1)).is_err());
        assert!(ca.issue_tls_server(&[]).is_err());
    }

    #[test]
    fn ca_and_identity_round_trip_through_a_folder() {
        let ca = TestCa::generate("PEC Test CA").unwrap();
        let dir = tempfile::tempdir().unwrap();
        ca.write_to(dir.path()).unwrap();
        let back = TestCa::load_from(dir.path()).unwrap();
        assert_eq!(
            sha1_fingerprint_hex(&back.cert),
            sha1_fingerprint_hex(&ca.cert)
        );
        assert!(back.key.public_eq(&ca.key));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "ca.key must not be readable by others");
        }

        let id = back
            .issue_provider("Gestore", "posta-certificata@pec.gestore.it")
            .unwrap();
        let pdir = dir.path().join("provider");
        id.write_to(&pdir).unwrap();
        let idb = ProviderIdentity::load_from(&pdir).unwrap();
        assert_eq!(
            sha1_fingerprint_hex(&idb.cert),
            sha1_fingerprint_hex(&id.cert)
        );
        assert_eq!(
            sha1_fingerprint_hex(&idb.ca_cert),
            sha1_fingerprint_hex(&ca.cert)
        );
        let s = idb.signer(DigestAlg::Sha384);
        assert_eq!(s.digest, DigestAlg::Sha384);
        assert!(s.chain.is_empty());

        // A key that does not match its certificate is refused with a clear error.
        std::fs::copy(dir.path().join("ca.key"), pdir.join("provider.key")).unwrap();
        let err = ProviderIdentity::load_from(&pdir)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(TestCa::load_from(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn tls_server_certificate_names_localhost_and_loopback() {
        let ca = TestCa::generate("PEC Test CA").unwrap();
        let (key, cert) = ca.issue_tls_server(&["localhost", "127.0.0.1"]).unwrap();
        assert!(cert.public_key().unwrap().public_eq(&key));
        let sans = cert.subject_alt_names().unwrap();
        assert!(sans.iter().any(|n| n.dnsname() == Some("localhost")));
        assert!(
            sans.iter()
                .any(|n| n.ipaddress() == Some(&[127, 0, 0, 1][..]))
        );
        assert!(cert.verify(&ca.cert.public_key().unwrap()).unwrap());
    }

    /// Outside oracle: `openssl verify -crl_check -CRLfile` rejects the revoked certificate with
    /// our CRL, accepts it with a CRL that does not list it, and `openssl crl -text` reads the
    /// reason.
    #[test]
    fn crls_are_accepted_by_openssl_verify() {
        let ca = TestCa::generate("PEC Test CA").unwrap();
        let id = ca
            .issue_provider("Gestore Prova", "posta-certificata@pec.prova.it")
            .unwrap();
        let now = Utc::now();
        let entry = ca
            .revoke(
                &id.cert,
                now - Duration::hours(1),
                Some(RevocationReason::CessationOfOperation),
            )
            .unwrap();
        let revoked = ca
            .crl(
                &[entry],
                now - Duration::minutes(30),
                now + Duration::days(7),
                7,
            )
            .unwrap();
        let clean = ca
            .crl(&[], now - Duration::minutes(30), now + Duration::days(7), 8)
            .unwrap();
        assert!(revoked.verify(&ca.cert.public_key().unwrap()).unwrap());
        // A certificate of another CA cannot be revoked here.
        let stranger = TestCa::generate("Stranger CA").unwrap();
        let e = stranger
            .revoke(&id.cert, now, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not issued by"), "{e}");
        assert!(ca.crl(&[], now, now, 1).is_err());

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(d.join("p.pem"), id.cert.to_pem().unwrap()).unwrap();
        std::fs::write(d.join("revoked.pem"), revoked.to_pem().unwrap()).unwrap();
        std::fs::write(d.join("clean.pem"), clean.to_pem().unwrap()).unwrap();
        let verify = |crl: &str| {
            std::process::Command::new("openssl")
                .current_dir(d)
                .args([
                    "verify",
                    "-purpose",
                    "any",
                    "-crl_check",
                    "-CAfile",
                    "ca.pem",
                    "-CRLfile",
                    crl,
                    "p.pem",
                ])
                .output()
        };
        let Ok(out) = verify("revoked.pem") else {
            eprintln!("NOTICE: openssl not found, CRL oracle skipped");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("certificate revoked"), "{text}");
        let out = verify("clean.pem").unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = std::process::Command::new("openssl")
            .current_dir(d)
            .args(["crl", "-noout", "-text", "-in", "revoked.pem"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Cessation Of Operation"), "{text}");
        assert!(text.contains("X509v3 CRL Number"), "{text}");
    }
}
