//! S/MIME for PEC: every envelope and notice is a `multipart/signed` with a detached CMS/PKCS#7
//! signature carrying the signer's certificate (RFC 6109 §2.1, §4.1). OpenSSL does the cryptography;
//! the multipart/signed wrapper is assembled here over the exact signed bytes, CRLF line ends.
//!
//! The CMS SignedData is written here with a small DER writer (the `openssl` crate's CMS API cannot
//! choose the digest) and read back with a small DER reader, so every verification step can say
//! exactly what failed. OpenSSL computes digests, signatures and certificate chains.

use crate::hex;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use openssl::asn1::{Asn1Object, Asn1Time};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{CrlStatus, ReasonCode, X509, X509Crl, X509NameRef, X509Ref, X509StoreContext};
use std::path::{Path, PathBuf};

/// The digest of a signature (`micalg`). SHA-256 by default; SHA-1 is still sent by real providers
/// (Aruba 2014, Namirial 2024) and must be accepted and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DigestAlg {
    /// `micalg=sha1`
    Sha1,
    /// `micalg=sha-256`
    #[default]
    Sha256,
    /// `micalg=sha-384`
    Sha384,
    /// `micalg=sha-512`
    Sha512,
}

/// A provider's signing identity.
pub struct Signer {
    /// The private key.
    pub key: PKey<Private>,
    /// The provider certificate (embedded in every signature).
    pub cert: X509,
    /// Intermediate certificates to embed as well.
    pub chain: Vec<X509>,
    /// The digest to sign with.
    pub digest: DigestAlg,
}

/// A `multipart/signed` entity: the value of its `Content-Type` header and the body after the header.
pub struct SignedEntity {
    /// e.g. `multipart/signed; protocol="application/pkcs7-signature"; micalg="sha-256"; boundary="…"`
    pub content_type: String,
    /// The body: preamble, the inner entity byte for byte, the `smime.p7s` part, the closing boundary.
    pub body: Vec<u8>,
}

/// Why signing or verification could not even start (unusable key, unparseable smime.p7s, …).
/// Verification *verdicts* are in [`SignatureReport`], not errors.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    /// The signature part is not a DER CMS/PKCS#7 SignedData.
    #[error("smime.p7s: {0}")]
    BadSignature(String),
    /// Key, certificate or trust material could not be used.
    #[error("{0}")]
    Material(String),
    /// OpenSSL failed.
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

impl DigestAlg {
    /// The `micalg` parameter value (RFC 5751 §3.4.3.2): `sha1`, `sha-256`, `sha-384`, `sha-512`.
    pub fn micalg(self) -> &'static str {
        match self {
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Sha256 => "sha-256",
            DigestAlg::Sha384 => "sha-384",
            DigestAlg::Sha512 => "sha-512",
        }
    }

    /// Reads a `micalg` value, case-insensitive; also accepts the hyphen-less spellings seen in the
    /// wild (`sha256`) and `sha-1`.
    pub fn from_micalg(micalg: &str) -> Option<DigestAlg> {
        let m = micalg.trim().trim_matches('"').to_ascii_lowercase();
        match m.as_str() {
            "sha1" | "sha-1" => Some(DigestAlg::Sha1),
            "sha-256" | "sha256" => Some(DigestAlg::Sha256),
            "sha-384" | "sha384" => Some(DigestAlg::Sha384),
            "sha-512" | "sha512" => Some(DigestAlg::Sha512),
            _ => None,
        }
    }

    /// Reads OpenSSL's short or long name of a digest (`sha1`, `SHA256`, `sha512`, …).
    pub fn from_openssl_name(name: &str) -> Option<DigestAlg> {
        match name.to_ascii_lowercase().replace('-', "").as_str() {
            "sha1" => Some(DigestAlg::Sha1),
            "sha256" => Some(DigestAlg::Sha256),
            "sha384" => Some(DigestAlg::Sha384),
            "sha512" => Some(DigestAlg::Sha512),
            _ => None,
        }
    }

    /// OpenSSL's short name (`sha1`, `sha256`, …).
    pub fn openssl_name(self) -> &'static str {
        match self {
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha384 => "sha384",
            DigestAlg::Sha512 => "sha512",
        }
    }

    /// The OpenSSL digest.
    pub fn message_digest(self) -> MessageDigest {
        match self {
            DigestAlg::Sha1 => MessageDigest::sha1(),
            DigestAlg::Sha256 => MessageDigest::sha256(),
            DigestAlg::Sha384 => MessageDigest::sha384(),
            DigestAlg::Sha512 => MessageDigest::sha512(),
        }
    }

    /// The DER content octets of the digest's OID (RFC 3370 §2.1, RFC 5754 §2).
    fn oid(self) -> &'static [u8] {
        match self {
            DigestAlg::Sha1 => der::OID_SHA1,
            DigestAlg::Sha256 => der::OID_SHA256,
            DigestAlg::Sha384 => der::OID_SHA384,
            DigestAlg::Sha512 => der::OID_SHA512,
        }
    }

    fn from_oid(oid: &[u8]) -> Option<DigestAlg> {
        [
            DigestAlg::Sha1,
            DigestAlg::Sha256,
            DigestAlg::Sha384,
            DigestAlg::Sha512,
        ]
        .into_iter()
        .find(|d| d.oid() == oid)
    }
}

/// How the `multipart/signed` wrapper is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureStyle {
    /// `protocol="application/pkcs7-signature"; micalg="sha-256"` (RFC 5751 §3.5).
    #[default]
    Rfc5751,
    /// `protocol="application/x-pkcs7-signature"; micalg=sha1`, as Aruba (2014) and Namirial (2024)
    /// send it (digest §4.1).
    Legacy,
}

/// Options of [`sign_with`].
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// The header spelling.
    pub style: SignatureStyle,
    /// The signingTime attribute; `None` = now.
    pub signing_time: Option<DateTime<Utc>>,
}

/// Signs a MIME entity (headers + body, CRLF line ends, exactly the bytes to be signed) and wraps it
/// in a `multipart/signed` with a detached `smime.p7s` (RFC 6109 §2.1; RFC 5751 §3.5).
pub fn sign(signer: &Signer, inner_entity: &[u8]) -> Result<SignedEntity, SmimeError> {
    sign_with(signer, inner_entity, &SignOptions::default())
}

/// [`sign`] with a chosen header style and signing time.
pub fn sign_with(
    signer: &Signer,
    inner_entity: &[u8],
    opts: &SignOptions,
) -> Result<SignedEntity, SmimeError> {
    // RFC 5751 §3.1.1: the signed content is canonical, CRLF line ends only.
    if let Some(pos) = bare_line_end(inner_entity) {
        return Err(SmimeError::Material(format!(
            "the entity to sign has a bare CR or LF at byte {pos}; S/MIME signs CRLF line ends (RFC 5751 §3.1.1)"
        )));
    }
    let time = opts.signing_time.unwrap_or_else(Utc::now);
    let p7s = signed_data_der(signer, inner_entity, time)?;

    let mut rnd = [0u8; 16];
    openssl::rand::rand_bytes(&mut rnd)?;
    let boundary = format!("----=_smime_{}", hex(&rnd));
    let (protocol, micalg, sig_type) = match opts.style {
        SignatureStyle::Rfc5751 => (
            "application/pkcs7-signature",
            format!("\"{}\"", signer.digest.micalg()),
            "application/pkcs7-signature",
        ),
        // digest §4.1: the spelling of Aruba and Namirial.
        SignatureStyle::Legacy => (
            "application/x-pkcs7-signature",
            signer.digest.micalg().to_string(),
            "application/x-pkcs7-signature",
        ),
    };
    let content_type = format!(
        "multipart/signed; protocol=\"{protocol}\"; micalg={micalg}; boundary=\"{boundary}\""
    );

    let mut body = Vec::with_capacity(inner_entity.len() + p7s.len() * 2 + 512);
    // digest §4.1: the customary preamble.
    body.extend_from_slice(b"This is an S/MIME signed message\r\n\r\n");
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(inner_entity);
    // RFC 2046 §5.1.1: the CRLF before a boundary belongs to the boundary, not to the signed part.
    body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        format!(
            "Content-Type: {sig_type}; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
        )
        .as_bytes(),
    );
    // RFC 2045 §6.8: base64 lines of at most 76 characters.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&p7s);
    for line in b64.as_bytes().chunks(76) {
        body.extend_from_slice(line);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(SignedEntity { content_type, body })
}

/// A detached CMS SignedData (DER) over `content`, with signingTime now.
pub fn sign_detached(signer: &Signer, content: &[u8]) -> Result<Vec<u8>, SmimeError> {
    signed_data_der(signer, content, Utc::now())
}

/// The position of the first CR not followed by LF or LF not preceded by CR.
fn bare_line_end(b: &[u8]) -> Option<usize> {
    b.iter().enumerate().find_map(|(i, &c)| match c {
        b'\r' if b.get(i + 1) != Some(&b'\n') => Some(i),
        b'\n' if i == 0 || b[i - 1] != b'\r' => Some(i),
        _ => None,
    })
}

/// Writes the ContentInfo/SignedData of RFC 5652 §5 with no eContent (detached), the signer's
/// certificate and chain (RFC 6109 §2.1), and the signed attributes contentType, signingTime and
/// messageDigest (RFC 5652 §5.3, §11; digest §4.1).
fn signed_data_der(
    signer: &Signer,
    content: &[u8],
    time: DateTime<Utc>,
) -> Result<Vec<u8>, SmimeError> {
    use der::*;
    let cert_key = signer.cert.public_key()?;
    if !cert_key.public_eq(&signer.key) {
        return Err(SmimeError::Material(
            "the signing key does not match the signer certificate".into(),
        ));
    }
    let md = signer.digest.message_digest();
    let digest = openssl::hash::hash(md, content)?;

    let digest_alg = tlv(SEQUENCE, &tlv(OID, signer.digest.oid()));
    let mut attrs = [
        attribute(OID_CONTENT_TYPE, &tlv(OID, OID_DATA)),
        attribute(OID_SIGNING_TIME, &time_der(time)),
        attribute(OID_MESSAGE_DIGEST, &tlv(OCTET_STRING, &digest)),
    ];
    // X.690 §11.6: a DER SET OF is sorted by encoding.
    attrs.sort();
    let attrs_content = attrs.concat();
    // RFC 5652 §5.4: the signature covers the attributes encoded as an explicit SET OF.
    let to_sign = tlv(SET, &attrs_content);
    let (sig_alg, signature) = {
        let mut s = openssl::sign::Signer::new(md, &signer.key)?;
        s.update(&to_sign)?;
        let sig = s.sign_to_vec()?;
        let alg = match signer.key.id() {
            openssl::pkey::Id::RSA => [tlv(OID, OID_RSA), tlv(NULL, &[])].concat(),
            openssl::pkey::Id::EC => tlv(OID, ecdsa_oid(signer.digest)),
            other => {
                return Err(SmimeError::Material(format!(
                    "unsupported signing key type {other:?} (RSA or EC expected)"
                )));
            }
        };
        (tlv(SEQUENCE, &alg), sig)
    };
    let serial = signer.cert.serial_number().to_bn()?.to_vec();
    let sid = tlv(
        SEQUENCE,
        &[
            signer.cert.issuer_name().to_der()?,
            integer_unsigned(&serial),
        ]
        .concat(),
    );
    let signer_info = tlv(
        SEQUENCE,
        &[
            tlv(INTEGER, &[1]),
            sid,
            digest_alg.clone(),
            tlv(CTX0, &attrs_content),
            sig_alg,
            tlv(OCTET_STRING, &signature),
        ]
        .concat(),
    );
    let mut certs = vec![signer.cert.to_der()?];
    for c in &signer.chain {
        certs.push(c.to_der()?);
    }
    let signed_data = tlv(
        SEQUENCE,
        &[
            tlv(INTEGER, &[1]),
            tlv(SET, &digest_alg),
            tlv(SEQUENCE, &tlv(OID, OID_DATA)),
            tlv(CTX0, &certs.concat()),
            tlv(SET, &signer_info),
        ]
        .concat(),
    );
    Ok(tlv(
        SEQUENCE,
        &[tlv(OID, OID_SIGNED_DATA), tlv(CTX0, &signed_data)].concat(),
    ))
}

fn attribute(oid: &[u8], value: &[u8]) -> Vec<u8> {
    use der::*;
    tlv(SEQUENCE, &[tlv(OID, oid), tlv(SET, value)].concat())
}

/// RFC 5652 §11.3: UTCTime for 1950–2049, GeneralizedTime otherwise.
pub(crate) fn time_der(t: DateTime<Utc>) -> Vec<u8> {
    use chrono::Datelike;
    if (1950..2050).contains(&t.year()) {
        der::tlv(
            der::UTC_TIME,
            t.format("%y%m%d%H%M%SZ").to_string().as_bytes(),
        )
    } else {
        der::tlv(
            der::GENERALIZED_TIME,
            t.format("%Y%m%d%H%M%SZ").to_string().as_bytes(),
        )
    }
}

fn ecdsa_oid(d: DigestAlg) -> &'static [u8] {
    match d {
        DigestAlg::Sha1 => der::OID_ECDSA_SHA1,
        DigestAlg::Sha256 => der::OID_ECDSA_SHA256,
        DigestAlg::Sha384 => der::OID_ECDSA_SHA384,
        DigestAlg::Sha512 => der::OID_ECDSA_SHA512,
    }
}

/// Certificates trusted as anchors (a PEM bundle, a folder of PEM files, or the provider
/// directory's certificates). An anchor may be an intermediate (partial chains are allowed).
pub struct TrustStore {
    /// The anchors.
    pub certs: Vec<X509>,
}

/// The outcome of one verification step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step passed.
    Pass,
    /// The step failed, and why.
    Fail(String),
    /// The step was not run, and why (e.g. no trust store given).
    NotChecked(String),
}

/// What to verify against.
#[derive(Default)]
pub struct VerifyOptions<'a> {
    /// Anchors for the chain; `None` checks integrity only.
    pub trust: Option<&'a TrustStore>,
    /// The time at which the chain and validity are checked; `None` = now.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every verdict about one detached signature.
pub struct SignatureReport {
    /// The digest in the SignerInfo (`None` if not one we name).
    pub digest: Option<DigestAlg>,
    /// The digest algorithm as OpenSSL names it (e.g. `sha1`, `sha256`).
    pub digest_name: String,
    /// The signed content matches the signature (messageDigest and the signature value).
    pub integrity: Outcome,
    /// The signer certificate embedded in the CMS, if any.
    pub signer: Option<X509>,
    /// Every certificate embedded in the CMS.
    pub embedded: Vec<X509>,
    /// The chain from the signer to an anchor of the trust store, at the chosen time.
    pub chain: Outcome,
    /// The signer certificate is within its validity period at the chosen time.
    pub validity: Outcome,
    /// The signer certificate is not revoked at the chosen time (RFC 6109 §2.2.2; RFC 5280 §6.3);
    /// not checked without CRLs.
    pub revocation: Outcome,
    /// Every SignerInfo, in order (RFC 5652 §5.1). The fields above are over all of them: the
    /// first failure wins, naming the SignerInfo when there are several; `digest`, `digest_name`
    /// and `signer` are the first SignerInfo's.
    pub signers: Vec<SignerReport>,
}

/// Every verdict about one SignerInfo of a SignedData (RFC 5652 §5.3).
pub struct SignerReport {
    /// Its position in signerInfos, from 0.
    pub index: usize,
    /// Its digest (`None` if not one we name).
    pub digest: Option<DigestAlg>,
    /// Its digest algorithm as OpenSSL names it.
    pub digest_name: String,
    /// The certificate it names, if embedded.
    pub signer: Option<X509>,
    /// messageDigest and signature value (RFC 5652 §5.4).
    pub integrity: Outcome,
    /// The chain to the trust store.
    pub chain: Outcome,
    /// The certificate's validity period.
    pub validity: Outcome,
    /// Not revoked at the chosen time by a CRL of its issuer (RFC 5280 §6.3).
    pub revocation: Outcome,
}

impl SignerReport {
    /// The signer's subject, or `(certificate not embedded)`.
    pub fn subject(&self) -> String {
        self.signer
            .as_deref()
            .map(subject_string)
            .unwrap_or_else(|| "(certificate not embedded)".into())
    }

    /// Integrity, chain and validity passed, and revocation did not fail.
    pub fn all_passed(&self) -> bool {
        self.integrity.passed()
            && self.chain.passed()
            && self.validity.passed()
            && !matches!(self.revocation, Outcome::Fail(_))
    }
}

/// Certificate revocation lists (RFC 5280 §5) to check signer certificates against (RFC 6109
/// §2.2.2: "verifying the [CRL] and temporal validity"). Each CRL is only believed once its
/// signature verifies with the key of the certificate issuer it names.
#[derive(Default)]
pub struct CrlSet {
    /// The CRLs.
    pub crls: Vec<X509Crl>,
}

/// The reasonCode of a revoked certificate (RFC 5280 §5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// 0
    Unspecified,
    /// 1
    KeyCompromise,
    /// 2
    CaCompromise,
    /// 3
    AffiliationChanged,
    /// 4
    Superseded,
    /// 5
    CessationOfOperation,
    /// 6
    CertificateHold,
    /// 8 (delta CRLs only)
    RemoveFromCrl,
    /// 9
    PrivilegeWithdrawn,
    /// 10
    AaCompromise,
}

impl RevocationReason {
    const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The CRLReason value (RFC 5280 §5.3.1).
    pub fn code(self) -> i64 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    /// The reason for a CRLReason value, if one RFC 5280 defines.
    pub fn from_code(code: i64) -> Option<RevocationReason> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The ASN.1 name, e.g. `keyCompromise`.
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::RemoveFromCrl => "removeFromCRL",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }
}

impl CrlSet {
    /// Uses these CRLs.
    pub fn from_crls(crls: Vec<X509Crl>) -> CrlSet {
        CrlSet { crls }
    }

    /// Reads every CRL of a PEM text (`-----BEGIN X509 CRL-----` blocks), or one DER CRL. `what`
    /// names the source in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<CrlSet, SmimeError> {
        const BEGIN: &str = "-----BEGIN X509 CRL-----";
        let text = String::from_utf8_lossy(bytes);
        let mut crls = Vec::new();
        if text.contains(BEGIN) {
            for (i, block) in text.split(BEGIN).skip(1).enumerate() {
                let pem = format!("{BEGIN}{block}");
                crls.push(X509Crl::from_pem(pem.as_bytes()).map_err(|e| {
                    SmimeError::Material(format!("{what}: PEM CRL {} unreadable: {e}", i + 1))
                })?);
            }
        } else {
            crls.push(X509Crl::from_der(bytes).map_err(|_| {
                SmimeError::Material(format!("{what}: neither a PEM nor a DER CRL"))
            })?);
        }
        Ok(CrlSet { crls })
    }

    /// Reads a PEM or DER CRL file.
    pub fn from_path(path: &Path) -> Result<CrlSet, SmimeError> {
        let bytes = std::fs::read(path)
            .map_err(|e| SmimeError::Material(format!("{}: {e}", path.display())))?;
        CrlSet::from_bytes(&bytes, &path.display().to_string())
    }

    /// Adds the CRLs of `other`.
    pub fn extend(&mut self, other: CrlSet) {
        self.crls.extend(other.crls);
    }
}

impl TrustStore {
    /// Reads every certificate of a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Result<TrustStore, SmimeError> {
        let certs = X509::stack_from_pem(pem)
            .map_err(|e| SmimeError::Material(format!("trust store PEM: {e}")))?;
        if certs.is_empty() {
            return Err(SmimeError::Material(
                "trust store PEM holds no certificate".into(),
            ));
        }
        Ok(TrustStore { certs })
    }

    /// Reads a PEM (or DER) file, or every `.pem`, `.crt` and `.cer` file of a folder.
    pub fn from_path(path: &Path) -> Result<TrustStore, SmimeError> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| SmimeError::Material(format!("{}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                        ["pem", "crt", "cer"].contains(&x.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut certs = Vec::new();
        for f in &files {
            let bytes = std::fs::read(f)
                .map_err(|e| SmimeError::Material(format!("{}: {e}", f.display())))?;
            match X509::stack_from_pem(&bytes) {
                Ok(found) if !found.is_empty() => certs.extend(found),
                _ => certs.push(X509::from_der(&bytes).map_err(|_| {
                    SmimeError::Material(format!(
                        "{}: neither PEM nor DER certificates",
                        f.display()
                    ))
                })?),
            }
        }
        if certs.is_empty() {
            return Err(SmimeError::Material(format!(
                "{}: no certificate found",
                path.display()
            )));
        }
        Ok(TrustStore { certs })
    }

    /// Uses these certificates as anchors.
    pub fn from_certs(certs: Vec<X509>) -> TrustStore {
        TrustStore { certs }
    }
}

impl Outcome {
    /// `true` for [`Outcome::Pass`].
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass)
    }
}

impl SignatureReport {
    /// Integrity, chain and validity passed for every SignerInfo (at least one), and no
    /// revocation check failed.
    pub fn all_passed(&self) -> bool {
        self.integrity.passed()
            && self.chain.passed()
            && self.validity.passed()
            && !matches!(self.revocation, Outcome::Fail(_))
    }
}

/// Verifies a detached signature over `content` (the exact signed bytes, CRLF line ends). Every
/// SignerInfo is checked (RFC 5652 §5.3, §5.4); revocation is not checked (see
/// [`verify_detached_with_crls`]).
pub fn verify_detached(
    content: &[u8],
    p7s_der: &[u8],
    opts: &VerifyOptions<'_>,
) -> Result<SignatureReport, SmimeError> {
    verify_detached_with_crls(content, p7s_der, opts, None)
}

/// Reads the SignedData, accepting BER too: when our DER reader refuses the input, OpenSSL
/// re-encodes it as DER.
fn parse_any(p7s_der: &[u8]) -> Result<der::SignedData, SmimeError> {
    match der::parse_signed_data(p7s_der) {
        Ok(p) => Ok(p),
        Err(first) => {
            let cms = openssl::cms::CmsContentInfo::from_der(p7s_der)
                .map_err(|_| SmimeError::BadSignature(first.clone()))?;
            let reencoded = cms.to_der()?;
            der::parse_signed_data(&reencoded).map_err(SmimeError::BadSignature)
        }
    }
}

/// [`verify_detached`], also checking each signer certificate against `crls` at the chosen time
/// (RFC 6109 §2.2.2; RFC 5280 §6.3). `None` leaves `revocation` not checked.
pub fn verify_detached_with_crls(
    content: &[u8],
    p7s_der: &[u8],
    opts: &VerifyOptions<'_>,
    crls: Option<&CrlSet>,
) -> Result<SignatureReport, SmimeError> {
    let parsed = parse_any(p7s_der)?;
    let embedded = parsed.certs;
    let at = opts.at.unwrap_or_else(Utc::now);
    let mut signers = Vec::with_capacity(parsed.signers.len());
    for (index, si) in parsed.signers.iter().enumerate() {
        signers.push(verify_signer(
            index, content, si, &embedded, opts.trust, crls, at,
        )?);
    }
    let first = signers.first();
    Ok(SignatureReport {
        digest: first.and_then(|s| s.digest),
        digest_name: first.map(|s| s.digest_name.clone()).unwrap_or_default(),
        integrity: combine(&signers, |s| &s.integrity),
        signer: first.and_then(|s| s.signer.clone()),
        embedded,
        chain: combine(&signers, |s| &s.chain),
        validity: combine(&signers, |s| &s.validity),
        revocation: combine(&signers, |s| &s.revocation),
        signers,
    })
}

/// One verdict over every SignerInfo: the first failure, else the first step not checked, else a
/// pass. RFC 5652 §5.1: a SignedData with no SignerInfo signs nothing, and fails.
fn combine(signers: &[SignerReport], pick: impl Fn(&SignerReport) -> &Outcome) -> Outcome {
    if signers.is_empty() {
        return Outcome::Fail(
            "the SignedData carries no SignerInfo: nothing is signed (RFC 5652 §5.1)".into(),
        );
    }
    let label = |s: &SignerReport, why: &str| {
        if signers.len() == 1 {
            why.to_string()
        } else {
            format!("SignerInfo {} ({}): {why}", s.index + 1, s.subject())
        }
    };
    if let Some((s, why)) = signers.iter().find_map(|s| match pick(s) {
        Outcome::Fail(why) => Some((s, why)),
        _ => None,
    }) {
        return Outcome::Fail(label(s, why));
    }
    if let Some((s, why)) = signers.iter().find_map(|s| match pick(s) {
        Outcome::NotChecked(why) => Some((s, why)),
        _ => None,
    }) {
        return Outcome::NotChecked(label(s, why));
    }
    Outcome::Pass
}

/// Every verdict about one SignerInfo (RFC 5652 §5.3, §5.4, §5.6).
fn verify_signer(
    index: usize,
    content: &[u8],
    si: &der::SignerInfo,
    embedded: &[X509],
    trust: Option<&TrustStore>,
    crls: Option<&CrlSet>,
    at: DateTime<Utc>,
) -> Result<SignerReport, SmimeError> {
    let digest = DigestAlg::from_oid(&si.digest_oid);
    let md = digest
        .map(DigestAlg::message_digest)
        .or_else(|| oid_nid(&si.digest_oid).and_then(MessageDigest::from_nid));
    let digest_name = match (digest, oid_nid(&si.digest_oid)) {
        (Some(d), _) => d.openssl_name().to_string(),
        (None, Some(nid)) => nid
            .short_name()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|_| der::oid_to_string(&si.digest_oid)),
        (None, None) => der::oid_to_string(&si.digest_oid),
    };

    // RFC 5652 §5.3: the signer is named by issuer and serial number, or by subject key identifier.
    let signer = embedded.iter().find(|c| si.sid.matches(c)).cloned();

    let integrity = match md {
        None => Outcome::Fail(format!("unsupported digest algorithm {digest_name}")),
        Some(md) => check_integrity(content, si, md, &digest_name, signer.as_deref())?,
    };
    const NO_CERT: &str = "no signer certificate embedded in the signature";
    let chain = match (trust, &signer) {
        (None, _) => Outcome::NotChecked("no trust store given".into()),
        (Some(_), None) => Outcome::Fail(NO_CERT.into()),
        (Some(trust), Some(cert)) => check_chain(cert, embedded, trust, at)?,
    };
    let validity = match &signer {
        None => Outcome::Fail(NO_CERT.into()),
        Some(cert) => check_validity(cert, at)?,
    };
    let revocation = match (crls, &signer) {
        (None, _) => Outcome::NotChecked("no CRL given".into()),
        (Some(_), None) => Outcome::NotChecked(NO_CERT.into()),
        (Some(crls), Some(cert)) => check_revocation(cert, embedded, trust, crls, at)?,
    };
    Ok(SignerReport {
        index,
        digest,
        digest_name,
        signer,
        integrity,
        chain,
        validity,
        revocation,
    })
}

/// RFC 5652 §5.4, §5.6, §11.2: messageDigest equals the content's digest, and the signature value
/// verifies over the signed attributes (or over the content when there are none).
fn check_integrity(
    content: &[u8],
    si: &der::SignerInfo,
    md: MessageDigest,
    digest_name: &str,
    signer: Option<&X509Ref>,
) -> Result<Outcome, SmimeError> {
    let digest = openssl::hash::hash(md, content)?;
    let signed_bytes: Vec<u8> = match &si.signed_attrs {
        Some(attrs) => {
            match &attrs.message_digest {
                None => {
                    return Ok(Outcome::Fail(
                        "the signed attributes carry no messageDigest".into(),
                    ));
                }
                Some(m) if m.as_slice() != &digest[..] => {
                    return Ok(Outcome::Fail(format!(
                        "messageDigest ({digest_name}) does not match the signed content: the content was changed"
                    )));
                }
                Some(_) => {}
            }
            if let Some(ct) = &attrs.content_type
                && ct.as_slice() != der::OID_DATA
            {
                return Ok(Outcome::Fail(format!(
                    "contentType attribute is {}, not id-data",
                    der::oid_to_string(ct)
                )));
            }
            attrs.set_der.clone()
        }
        None => content.to_vec(),
    };
    let Some(cert) = signer else {
        return Ok(Outcome::Fail(
            "the signer certificate is not embedded: the signature value cannot be checked".into(),
        ));
    };
    let key = cert.public_key()?;
    if !der::signature_alg_supported(&si.signature_oid) {
        return Ok(Outcome::Fail(format!(
            "unsupported signature algorithm {}",
            der::oid_to_string(&si.signature_oid)
        )));
    }
    let mut v = openssl::sign::Verifier::new(md, &key)?;
    v.update(&signed_bytes)?;
    // A malformed signature value is a failed verification, not an error.
    match v.verify(&si.signature) {
        Ok(true) => Ok(Outcome::Pass),
        Ok(false) | Err(_) => Ok(Outcome::Fail(format!(
            "the signature value does not verify with the key of {}",
            subject_string(cert)
        ))),
    }
}

/// RFC 6109 §5.5, digest §8.1: the signer chains to an anchor at the chosen time; an anchor may be
/// an intermediate (partial chain).
fn check_chain(
    cert: &X509Ref,
    embedded: &[X509],
    trust: &TrustStore,
    at: DateTime<Utc>,
) -> Result<Outcome, SmimeError> {
    if trust.certs.is_empty() {
        return Ok(Outcome::Fail("the trust store is empty".into()));
    }
    let mut builder = X509StoreBuilder::new()?;
    for c in &trust.certs {
        builder.add_cert(c.clone())?;
    }
    let mut param = X509VerifyParam::new()?;
    param.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
    param.set_time(at.timestamp());
    builder.set_param(&param)?;
    let store = builder.build();
    let mut untrusted = Stack::new()?;
    for c in embedded {
        untrusted.push(c.clone())?;
    }
    let mut ctx = X509StoreContext::new()?;
    let (ok, err, depth, at_cert) = ctx.init(&store, cert, &untrusted, |c| {
        let ok = c.verify_cert()?;
        Ok((
            ok,
            c.error(),
            c.error_depth(),
            c.current_cert().map(subject_string),
        ))
    })?;
    if ok {
        Ok(Outcome::Pass)
    } else {
        Ok(Outcome::Fail(format!(
            "chain to the trust store at {}: {} (depth {depth}{})",
            at.to_rfc3339(),
            err.error_string(),
            at_cert.map(|s| format!(", {s}")).unwrap_or_default()
        )))
    }
}

/// RFC 5280 §4.1.2.5: the signer certificate is valid at the chosen time.
fn check_validity(cert: &X509Ref, at: DateTime<Utc>) -> Result<Outcome, SmimeError> {
    let t = Asn1Time::from_unix(at.timestamp())?;
    if cert.not_before() > t {
        Ok(Outcome::Fail(format!(
            "signer certificate not yet valid at {}: valid from {}",
            at.to_rfc3339(),
            cert.not_before()
        )))
    } else if cert.not_after() < t {
        Ok(Outcome::Fail(format!(
            "signer certificate expired at {}: valid until {}",
            at.to_rfc3339(),
            cert.not_after()
        )))
    } else {
        Ok(Outcome::Pass)
    }
}

/// An ASN.1 time as RFC 3339 (`2026-12-01T10:00:00+00:00`), or OpenSSL's text if out of range.
fn asn1_rfc3339(t: &openssl::asn1::Asn1TimeRef) -> String {
    use chrono::TimeZone;
    Asn1Time::from_unix(0)
        .and_then(|epoch| epoch.diff(t))
        .ok()
        .and_then(|d| {
            Utc.timestamp_opt(i64::from(d.days) * 86_400 + i64::from(d.secs), 0)
                .single()
        })
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| t.to_string())
}

/// RFC 6109 §2.2.2, RFC 5280 §6.3.3: the signer certificate against every CRL of its issuer, at
/// `at`. A CRL is believed only when its signature verifies with the key that signed the
/// certificate; a certificate revoked after `at` still passes at `at`.
fn check_revocation(
    cert: &X509Ref,
    embedded: &[X509],
    trust: Option<&TrustStore>,
    crls: &CrlSet,
    at: DateTime<Utc>,
) -> Result<Outcome, SmimeError> {
    let issuer_der = cert.issuer_name().to_der()?;
    let issuer = issuer_string(cert);
    let relevant: Vec<&X509Crl> = crls
        .crls
        .iter()
        .filter(|c| c.issuer_name().to_der().is_ok_and(|d| d == issuer_der))
        .collect();
    if relevant.is_empty() {
        return Ok(Outcome::NotChecked(format!(
            "no CRL from the issuer {issuer}: revocation not checked"
        )));
    }
    // The issuer's key: the one that verifies the signer certificate (RFC 5280 §6.3.3 (f)).
    let anchors = trust.map(|t| t.certs.as_slice()).unwrap_or_default();
    let key = anchors
        .iter()
        .chain(embedded)
        .filter(|c| c.subject_name().to_der().is_ok_and(|d| d == issuer_der))
        .filter_map(|c| c.public_key().ok())
        .find(|k| cert.verify(k).unwrap_or(false));
    let Some(key) = key else {
        return Ok(Outcome::NotChecked(format!(
            "the certificate of the issuer {issuer} is neither embedded nor trusted, so its CRL's \
             signature cannot be checked: revocation not checked"
        )));
    };
    let t = Asn1Time::from_unix(at.timestamp())?;
    let owned = cert.to_owned();
    let mut covered = false;
    for crl in relevant {
        let issued = asn1_rfc3339(crl.last_update());
        // RFC 5280 §6.3.3 (f): a CRL not signed by the certificate's issuer is refused.
        if !crl.verify(&key).unwrap_or(false) {
            return Ok(Outcome::Fail(format!(
                "CRL from {issuer} issued {issued} refused: its signature does not verify with the \
                 key of the issuer certificate"
            )));
        }
        // RFC 5280 §5.1.2.5: the CRL speaks for the time up to nextUpdate.
        covered |= crl.last_update() >= t || crl.next_update().is_none_or(|n| n >= t);
        if let CrlStatus::Revoked(entry) = crl.get_by_cert(&owned) {
            let date = entry.revocation_date();
            if date <= t {
                // RFC 5280 §5.3.1: the reasonCode entry extension, when present.
                let reason = match entry
                    .extension::<ReasonCode>()
                    .ok()
                    .flatten()
                    .and_then(|(_, e)| e.get_i64().ok())
                {
                    Some(c) => RevocationReason::from_code(c)
                        .map(|r| r.name().to_string())
                        .unwrap_or_else(|| format!("reason code {c}")),
                    None => "no reason given".into(),
                };
                return Ok(Outcome::Fail(format!(
                    "signer certificate revoked on {} ({reason}) by the CRL of {issuer} issued \
                     {issued}, before the verification time {}",
                    asn1_rfc3339(date),
                    at.to_rfc3339()
                )));
            }
        }
    }
    if !covered {
        return Ok(Outcome::NotChecked(format!(
            "every CRL of {issuer} ends (nextUpdate) before the verification time {}: revocation \
             not checked",
            at.to_rfc3339()
        )));
    }
    Ok(Outcome::Pass)
}

/// The signingTime signed attribute of a detached signature (RFC 5652 §11.3), if present: the time
/// the provider claims to have signed, e.g. to verify a stored message at its own date.
pub fn signing_time(p7s_der: &[u8]) -> Result<Option<DateTime<Utc>>, SmimeError> {
    let parsed = parse_any(p7s_der)?;
    let Some((tag, text)) = parsed
        .signers
        .into_iter()
        .next()
        .and_then(|s| s.signed_attrs)
        .and_then(|a| a.signing_time)
    else {
        return Ok(None);
    };
    parse_der_time(tag, &text)
        .map(Some)
        .ok_or_else(|| SmimeError::BadSignature("unreadable signingTime attribute".into()))
}

/// RFC 5280 §4.1.2.5.1–2: `YYMMDDHHMMSSZ` (50–99 = 19xx) or `YYYYMMDDHHMMSS[.f]Z`.
fn parse_der_time(tag: u8, text: &[u8]) -> Option<DateTime<Utc>> {
    use chrono::TimeZone;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        der::UTC_TIME => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        der::GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let rest = rest.split('.').next()?;
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<u32>().ok();
    Utc.with_ymd_and_hms(year, n(0)?, n(2)?, n(4)?, n(6)?, n(8)?)
        .single()
}

fn oid_nid(oid: &[u8]) -> Option<Nid> {
    let obj = Asn1Object::from_str(&der::oid_to_string(oid)).ok()?;
    let nid = obj.nid();
    (nid != Nid::UNDEF).then_some(nid)
}

/// The SHA-1 fingerprint, lower-case hex without colons (the directory's `providerCertificateHash`,
/// digest §8.1, §9).
pub fn sha1_fingerprint_hex(cert: &X509Ref) -> String {
    cert.digest(MessageDigest::sha1())
        .map(|d| hex(&d))
        .unwrap_or_default()
}

/// The e-mail addresses of a certificate: SAN rfc822Name (RFC 6109 §5.5) and the subject's
/// emailAddress.
pub fn cert_emails(cert: &X509Ref) -> Vec<String> {
    let mut out: Vec<String> = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.email().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for e in cert.subject_name().entries_by_nid(Nid::PKCS9_EMAILADDRESS) {
        if let Ok(s) = e.data().to_string() {
            out.push(s);
        }
    }
    out
}

fn name_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e
                .object()
                .nid()
                .short_name()
                .map(str::to_string)
                .unwrap_or_else(|_| e.object().to_string());
            let val = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The subject as `C=IT, O=…, CN=…` in certificate order.
pub fn subject_string(cert: &X509Ref) -> String {
    name_string(cert.subject_name())
}

/// The issuer as `C=IT, O=…, CN=…` in certificate order.
pub fn issuer_string(cert: &X509Ref) -> String {
    name_string(cert.issuer_name())
}

/// The certificate carries `addr` (case-insensitive) among its e-mail addresses (RFC 6109 §5.5).
pub fn signer_matches_address(cert: &X509Ref, addr: &str) -> bool {
    let addr = addr.trim();
    cert_emails(cert)
        .iter()
        .any(|e| e.trim().eq_ignore_ascii_case(addr))
}

/// A tiny DER writer and reader for the CMS structures of RFC 5652 (X.690 DER).
pub(crate) mod der {
    use openssl::x509::{X509, X509Ref};

    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0]` constructed (IMPLICIT SET OF or EXPLICIT).
    pub const CTX0: u8 = 0xA0;
    const CTX0_PRIM: u8 = 0x80;

    // RFC 5652 §14; RFC 3370; RFC 5754; RFC 5758.
    pub const OID_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01];
    pub const OID_SIGNED_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02];
    pub const OID_CONTENT_TYPE: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x03];
    pub const OID_MESSAGE_DIGEST: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x04];
    pub const OID_SIGNING_TIME: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x05];
    pub const OID_SHA1: &[u8] = &[0x2B, 0x0E, 0x03, 0x02, 0x1A];
    pub const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    pub const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    pub const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
    pub const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    const RSA_ARC: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01];
    pub const OID_ECDSA_SHA1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01];
    pub const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
    pub const OID_ECDSA_SHA384: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03];
    pub const OID_ECDSA_SHA512: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04];

    /// Tag, DER length, content.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    pub fn integer_unsigned(magnitude: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|&b| b == 0).collect();
        let mut content = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend_from_slice(&trimmed);
        tlv(INTEGER, &content)
    }

    /// The dotted form of an OID's content octets.
    pub fn oid_to_string(oid: &[u8]) -> String {
        let mut arcs: Vec<u64> = Vec::new();
        let mut acc: u64 = 0;
        for &b in oid {
            acc = acc.saturating_mul(128) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (acc / 40).min(2);
                    arcs.push(first);
                    arcs.push(acc - first * 40);
                } else {
                    arcs.push(acc);
                }
                acc = 0;
            }
        }
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// One element: its tag, its content, and its whole encoding.
    #[derive(Clone, Copy)]
    pub struct Tlv<'a> {
        pub tag: u8,
        pub content: &'a [u8],
        pub raw: &'a [u8],
    }

    /// Reads one element from the front of `input`; definite lengths only (DER).
    pub fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
        let (&tag, rest) = input.split_first().ok_or("unexpected end of data")?;
        if tag & 0x1F == 0x1F {
            return Err(format!("multi-byte tag 0x{tag:02x} not expected"));
        }
        let (&l0, rest) = rest
            .split_first()
            .ok_or("unexpected end of data in a length")?;
        let (len, rest) = if l0 < 0x80 {
            (l0 as usize, rest)
        } else if l0 == 0x80 {
            return Err("indefinite length (BER) not DER".into());
        } else {
            let n = (l0 & 0x7F) as usize;
            if n > 4 || rest.len() < n {
                return Err("bad length".into());
            }
            let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(format!(
                "element 0x{tag:02x} claims {len} bytes, {} left",
                rest.len()
            ));
        }
        let header = input.len() - rest.len();
        Ok((
            Tlv {
                tag,
                content: &rest[..len],
                raw: &input[..header + len],
            },
            &rest[len..],
        ))
    }

    /// Every element of a constructed element's content.
    pub fn children(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
        let mut out = Vec::new();
        while !content.is_empty() {
            let (t, rest) = read(content)?;
            out.push(t);
            content = rest;
        }
        Ok(out)
    }

    fn expect<'a>(t: Option<&Tlv<'a>>, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        match t {
            Some(t) if t.tag == tag => Ok(*t),
            Some(t) => Err(format!(
                "{what}: expected tag 0x{tag:02x}, found 0x{:02x}",
                t.tag
            )),
            None => Err(format!("{what}: missing")),
        }
    }

    /// How a SignerInfo names its certificate (RFC 5652 §5.3).
    pub enum SignerId {
        IssuerSerial { issuer: Vec<u8>, serial: Vec<u8> },
        KeyId(Vec<u8>),
    }

    impl SignerId {
        pub fn matches(&self, cert: &X509Ref) -> bool {
            match self {
                SignerId::IssuerSerial { issuer, serial } => {
                    cert.issuer_name().to_der().is_ok_and(|d| &d == issuer)
                        && cert
                            .serial_number()
                            .to_bn()
                            .is_ok_and(|bn| bn.to_vec() == trim_zeros(serial))
                }
                SignerId::KeyId(id) => cert
                    .subject_key_id()
                    .is_some_and(|k| k.as_slice() == id.as_slice()),
            }
        }
    }

    fn trim_zeros(b: &[u8]) -> Vec<u8> {
        b.iter().copied().skip_while(|&x| x == 0).collect()
    }

    pub struct SignedAttrs {
        /// The attributes re-tagged as a SET OF: the bytes the signature covers (RFC 5652 §5.4).
        pub set_der: Vec<u8>,
        pub message_digest: Option<Vec<u8>>,
        pub content_type: Option<Vec<u8>>,
        /// The signingTime value: its tag (UTCTime or GeneralizedTime) and its text.
        pub signing_time: Option<(u8, Vec<u8>)>,
    }

    pub struct SignerInfo {
        pub sid: SignerId,
        pub digest_oid: Vec<u8>,
        pub signed_attrs: Option<SignedAttrs>,
        pub signature_oid: Vec<u8>,
        pub signature: Vec<u8>,
    }

    pub struct SignedData {
        pub certs: Vec<X509>,
        /// Every SignerInfo, in order (RFC 5652 §5.1); possibly none.
        pub signers: Vec<SignerInfo>,
    }

    /// RSA (PKCS#1 v1.5, rsaEncryption or shaXWithRSAEncryption) and ECDSA; not RSASSA-PSS.
    pub fn signature_alg_supported(oid: &[u8]) -> bool {
        let pss = [RSA_ARC, &[0x0A]].concat();
        (oid.starts_with(RSA_ARC) && oid != pss.as_slice())
            || oid.starts_with(&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04])
    }

    /// Reads a ContentInfo holding a SignedData and all its SignerInfos (RFC 5652 §3, §5).
    pub fn parse_signed_data(input: &[u8]) -> Result<SignedData, String> {
        let (ci, _) = read(input)?;
        let ci = expect(Some(&ci), SEQUENCE, "ContentInfo")?;
        let items = children(ci.content)?;
        let ct = expect(items.first(), OID, "ContentInfo contentType")?;
        if ct.content != OID_SIGNED_DATA {
            return Err(format!(
                "content type {} is not signedData",
                oid_to_string(ct.content)
            ));
        }
        let explicit = expect(items.get(1), CTX0, "ContentInfo content")?;
        let sd = children(explicit.content)?;
        let sd = expect(sd.first(), SEQUENCE, "SignedData")?;
        let sd = children(sd.content)?;
        expect(sd.first(), INTEGER, "SignedData version")?;
        expect(sd.get(1), SET, "SignedData digestAlgorithms")?;
        expect(sd.get(2), SEQUENCE, "SignedData encapContentInfo")?;
        let mut certs = Vec::new();
        let mut signer_infos = None;
        for t in &sd[3..] {
            match t.tag {
                CTX0 => {
                    for c in children(t.content)? {
                        if c.tag == SEQUENCE {
                            certs.push(
                                X509::from_der(c.raw)
                                    .map_err(|e| format!("embedded certificate: {e}"))?,
                            );
                        }
                    }
                }
                SET => signer_infos = Some(*t),
                _ => {}
            }
        }
        let sis = signer_infos.ok_or("SignedData has no signerInfos")?;
        // RFC 5652 §5.1: signerInfos is a SET OF SignerInfo; every one is read (§5.3).
        let signers = children(sis.content)?
            .iter()
            .enumerate()
            .map(|(i, t)| parse_signer_info(t).map_err(|e| format!("SignerInfo {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignedData { certs, signers })
    }

    /// Reads one SignerInfo (RFC 5652 §5.3).
    fn parse_signer_info(t: &Tlv<'_>) -> Result<SignerInfo, String> {
        let si = expect(Some(t), SEQUENCE, "SignerInfo")?;
        let si = children(si.content)?;
        expect(si.first(), INTEGER, "SignerInfo version")?;
        let sid = match si.get(1) {
            Some(t) if t.tag == SEQUENCE => {
                let parts = children(t.content)?;
                let issuer = expect(parts.first(), SEQUENCE, "SignerInfo issuer")?;
                let serial = expect(parts.get(1), INTEGER, "SignerInfo serialNumber")?;
                SignerId::IssuerSerial {
                    issuer: issuer.raw.to_vec(),
                    serial: serial.content.to_vec(),
                }
            }
            Some(t) if t.tag == CTX0_PRIM => SignerId::KeyId(t.content.to_vec()),
            _ => {
                return Err(
                    "SignerInfo sid: neither issuerAndSerialNumber nor subjectKeyIdentifier".into(),
                );
            }
        };
        let dalg = expect(si.get(2), SEQUENCE, "SignerInfo digestAlgorithm")?;
        let digest_oid = expect(children(dalg.content)?.first(), OID, "digestAlgorithm OID")?
            .content
            .to_vec();
        let mut idx = 3;
        let signed_attrs = match si.get(3) {
            Some(t) if t.tag == CTX0 => {
                idx = 4;
                let mut message_digest = None;
                let mut content_type = None;
                let mut signing_time = None;
                for a in children(t.content)? {
                    let parts = children(a.content)?;
                    let oid = expect(parts.first(), OID, "attribute type")?;
                    let vals = expect(parts.get(1), SET, "attribute values")?;
                    let first_tlv = children(vals.content)?.first().copied();
                    let first = first_tlv.map(|v| v.content.to_vec());
                    if oid.content == OID_SIGNING_TIME {
                        signing_time = first_tlv.map(|v| (v.tag, v.content.to_vec()));
                    } else if oid.content == OID_MESSAGE_DIGEST {
                        message_digest = first;
                    } else if oid.content == OID_CONTENT_TYPE {
                        content_type = first;
                    }
                }
                let mut set_der = t.raw.to_vec();
                set_der[0] = SET;
                Some(SignedAttrs {
                    set_der,
                    message_digest,
                    content_type,
                    signing_time,
                })
            }
            _ => None,
        };
        let salg = expect(si.get(idx), SEQUENCE, "SignerInfo signatureAlgorithm")?;
        let signature_oid = expect(
            children(salg.content)?.first(),
            OID,
            "signatureAlgorithm OID",
        )?
        .content
        .to_vec();
        let signature = expect(si.get(idx + 1), OCTET_STRING, "SignerInfo signature")?
            .content
            .to_vec();
        Ok(SignerInfo {
            sid,
            digest_oid,
            signed_attrs,
            signature_oid,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::TestCa;
    use chrono::{Duration, TimeZone};

    const INNER: &[u8] =
        b"Content-Type: text/plain; charset=\"utf-8\"\r\n\r\nMessaggio di posta certificata\r\n";

    /// Bare LF -> CRLF (the fixtures are stored with LF, SOURCES.md "Handling notes").
    fn crlf(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(b.len() + b.len() / 20);
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(c);
        }
        out
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    /// A test-local splitter of a `multipart/signed` body: the signed part and the decoded p7s.
    fn split_body(boundary: &str, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let open = format!("--{boundary}\r\n");
        let delim = format!("\r\n--{boundary}");
        let start = find(body, open.as_bytes()).expect("first boundary") + open.len();
        let end = start + find(&body[start..], delim.as_bytes()).expect("second boundary");
        let inner = body[start..end].to_vec();
        let rest = &body[end + delim.len() + 2..];
        let close = find(rest, delim.as_bytes()).expect("closing boundary");
        let part = &rest[..close];
        let hdr_end = find(part, b"\r\n\r\n").expect("p7s headers") + 4;
        let b64: Vec<u8> = part[hdr_end..]
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("p7s base64");
        (inner, der)
    }

    fn boundary_of(content_type: &str) -> String {
        let i = content_type.find("boundary=").expect("boundary param") + 9;
        content_type[i..]
            .trim_start_matches('"')
            .split(['"', ';'])
            .next()
            .unwrap()
            .to_string()
    }

    /// Splits a whole message: headers (unfolded Content-Type) then body.
    fn split_message(msg: &[u8]) -> (Vec<u8>, Vec<u8>, String) {
        let msg = crlf(msg);
        let hdr_end = find(&msg, b"\r\n\r\n").expect("header end");
        let headers = String::from_utf8_lossy(&msg[..hdr_end])
            .replace("\r\n\t", " ")
            .replace("\r\n ", " ");
        let ct = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
            .expect("content-type")
            .to_string();
        let (inner, der) = split_body(&boundary_of(&ct), &msg[hdr_end + 4..]);
        (inner, der, ct)
    }

    fn ca_and_provider() -> (TestCa, crate::pki::ProviderIdentity) {
        let ca = TestCa::generate("Test CA").unwrap();
        let id = ca
            .issue_provider("Gestore Prova S.p.A.", "posta-certificata@pec.prova.it")
            .unwrap();
        (ca, id)
    }

    #[test]
    fn sign_then_verify_passes_with_each_digest() {
        let (ca, id) = ca_and_provider();
        let trust = TrustStore::from_certs(vec![ca.cert.clone()]);
        for d in [
            DigestAlg::Sha1,
            DigestAlg::Sha256,
            DigestAlg::Sha384,
            DigestAlg::Sha512,
        ] {
            let signed = sign(&id.signer(d), INNER).unwrap();
            assert!(signed.content_type.starts_with(
                "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg="
            ));
            assert!(
                signed
                    .content_type
                    .contains(&format!("micalg=\"{}\"", d.micalg()))
            );
            assert!(
                signed
                    .body
                    .starts_with(b"This is an S/MIME signed message\r\n")
            );
            let (inner, der) = split_body(&boundary_of(&signed.content_type), &signed.body);
            assert_eq!(inner, INNER, "inner entity byte for byte");
            let opts = VerifyOptions {
                trust: Some(&trust),
                at: None,
            };
            let r = verify_detached(&inner, &der, &opts).unwrap();
            assert_eq!(r.digest, Some(d));
            assert_eq!(r.digest_name, d.openssl_name());
            assert_eq!(r.integrity, Outcome::Pass, "{d:?}");
            assert_eq!(r.chain, Outcome::Pass, "{d:?}");
            assert_eq!(r.validity, Outcome::Pass, "{d:?}");
            assert_eq!(
                sha1_fingerprint_hex(r.signer.as_ref().unwrap()),
                sha1_fingerprint_hex(&id.cert)
            );
            assert_eq!(r.embedded.len(), 1);
        }
    }

    #[test]
    fn base64_lines_are_76_columns_and_crlf() {
        let (_, id) = ca_and_provider();
        let signed = sign(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        let text = String::from_utf8(signed.body.clone()).unwrap();
        assert!(bare_line_end(&signed.body).is_none());
        let p7s = text.split("filename=\"smime.p7s\"\r\n\r\n").nth(1).unwrap();
        let lines: Vec<&str> = p7s.split("\r\n").take_while(|l| !l.is_empty()).collect();
        assert!(lines.len() > 2);
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
        assert!(text.ends_with(&format!("--{}--\r\n", boundary_of(&signed.content_type))));
        assert!(text.contains("Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"));
    }

    #[test]
    fn one_changed_byte_fails_integrity_naming_the_digest() {
        let (ca, id) = ca_and_provider();
        let trust = TrustStore::from_certs(vec![ca.cert.clone()]);
        let der = sign_detached(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        let mut changed = INNER.to_vec();
        let n = changed.len() - 5;
        changed[n] ^= 0x01;
        let r = verify_detached(
            &changed,
            &der,
            &VerifyOptions {
                trust: Some(&trust),
                at: None,
            },
        )
        .unwrap();
        match &r.integrity {
            Outcome::Fail(why) => assert!(why.contains("messageDigest"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        // The certificate is still fine: only integrity fails.
        assert_eq!(r.chain, Outcome::Pass);
    }

    #[test]
    fn a_changed_signature_value_fails_integrity() {
        let (_, id) = ca_and_provider();
        let mut der = sign_detached(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        let n = der.len() - 3; // inside the signature value, the last element
        der[n] ^= 0xFF;
        let r = verify_detached(INNER, &der, &VerifyOptions::default()).unwrap();
        match &r.integrity {
            Outcome::Fail(why) => assert!(why.contains("signature value"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(matches!(r.chain, Outcome::NotChecked(_)));
    }

    #[test]
    fn a_certificate_from_another_ca_fails_the_chain() {
        let (_, id) = ca_and_provider();
        let other = TestCa::generate("Other CA").unwrap();
        let trust = TrustStore::from_certs(vec![other.cert.clone()]);
        let der = sign_detached(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        let r = verify_detached(
            INNER,
            &der,
            &VerifyOptions {
                trust: Some(&trust),
                at: None,
            },
        )
        .unwrap();
        assert_eq!(r.integrity, Outcome::Pass);
        match &r.chain {
            Outcome::Fail(why) => assert!(why.contains("issuer"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn an_expired_certificate_fails_validity_now_and_passes_in_range() {
        let now = Utc::now();
        let ca = TestCa::generate_valid(
            "Old CA",
            now - Duration::days(2000),
            now + Duration::days(2000),
        )
        .unwrap();
        let id = ca
            .issue_provider_valid(
                "Gestore Scaduto",
                "posta-certificata@pec.scaduto.it",
                now - Duration::days(1000),
                now - Duration::days(100),
            )
            .unwrap();
        let trust = TrustStore::from_certs(vec![ca.cert.clone()]);
        let then = now - Duration::days(500);
        let signed = sign_with(
            &id.signer(DigestAlg::Sha256),
            INNER,
            &SignOptions {
                style: SignatureStyle::Rfc5751,
                signing_time: Some(then),
            },
        )
        .unwrap();
        let (inner, der) = split_body(&boundary_of(&signed.content_type), &signed.body);
        assert_eq!(
            signing_time(&der).unwrap().map(|t| t.timestamp()),
            Some(then.timestamp())
        );
        let at_now = verify_detached(
            &inner,
            &der,
            &VerifyOptions {
                trust: Some(&trust),
                at: None,
            },
        )
        .unwrap();
        assert_eq!(at_now.integrity, Outcome::Pass);
        match &at_now.validity {
            Outcome::Fail(why) => assert!(why.contains("expired"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(matches!(at_now.chain, Outcome::Fail(_)));
        let at_then = verify_detached(
            &inner,
            &der,
            &VerifyOptions {
                trust: Some(&trust),
                at: Some(then),
            },
        )
        .unwrap();
        assert!(
            at_then.all_passed(),
            "{:?} {:?}",
            at_then.chain,
            at_then.validity
        );
    }

    #[test]
    fn legacy_style_is_spelled_as_aruba() {
        let (_, id) = ca_and_provider();
        let signed = sign_with(
            &id.signer(DigestAlg::Sha1),
            INNER,
            &SignOptions {
                style: SignatureStyle::Legacy,
                signing_time: None,
            },
        )
        .unwrap();
        assert!(signed.content_type.starts_with(
            "multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=sha1; boundary=\"----=_smime_"
        ));
        let text = String::from_utf8(signed.body).unwrap();
        assert!(
            text.contains("Content-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\n")
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let (ca, id) = ca_and_provider();
        assert!(matches!(
            sign(&id.signer(DigestAlg::Sha256), b"Subject: x\n\nbody\n"),
            Err(SmimeError::Material(m)) if m.contains("bare CR or LF at byte 10")
        ));
        let wrong = Signer {
            key: ca.key.clone(),
            ..id.signer(DigestAlg::Sha256)
        };
        assert!(matches!(sign(&wrong, INNER), Err(SmimeError::Material(_))));
        for junk in [
            &b""[..],
            b"\x30\x03\x02\x01",
            b"not der at all",
            b"\x30\x82\xff\xff\x06",
        ] {
            assert!(matches!(
                verify_detached(INNER, junk, &VerifyOptions::default()),
                Err(SmimeError::BadSignature(_))
            ));
        }
        // Truncations of a real signature never panic.
        let der = sign_detached(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        for n in 0..der.len() {
            let _ = verify_detached(INNER, &der[..n], &VerifyOptions::default());
        }
        assert!(TrustStore::from_pem(b"nothing").is_err());
    }

    #[test]
    fn der_times() {
        let t = |tag, s: &str| parse_der_time(tag, s.as_bytes()).map(|d| d.to_rfc3339());
        assert_eq!(
            t(der::UTC_TIME, "141114172632Z").as_deref(),
            Some("2014-11-14T17:26:32+00:00")
        );
        assert_eq!(
            t(der::UTC_TIME, "991231235959Z").as_deref(),
            Some("1999-12-31T23:59:59+00:00")
        );
        assert_eq!(
            t(der::GENERALIZED_TIME, "20510101000000.5Z").as_deref(),
            Some("2051-01-01T00:00:00+00:00")
        );
        for bad in [
            "",
            "Z",
            "1411141726Z",
            "141314172632Z",
            "14111417263xZ",
            "141114172632",
        ] {
            assert_eq!(t(der::UTC_TIME, bad), None, "{bad:?}");
        }
        // A 2051 signing time is written as GeneralizedTime and read back.
        let when = Utc.with_ymd_and_hms(2051, 3, 4, 5, 6, 7).unwrap();
        assert_eq!(
            parse_der_time(der::GENERALIZED_TIME, &time_der(when)[2..]),
            Some(when)
        );
    }

    #[test]
    fn digest_names_round_trip() {
        for d in [
            DigestAlg::Sha1,
            DigestAlg::Sha256,
            DigestAlg::Sha384,
            DigestAlg::Sha512,
        ] {
            assert_eq!(DigestAlg::from_micalg(d.micalg()), Some(d));
            assert_eq!(DigestAlg::from_openssl_name(d.openssl_name()), Some(d));
            assert_eq!(DigestAlg::from_oid(d.oid()), Some(d));
        }
        assert_eq!(
            DigestAlg::from_micalg("\"SHA-256\""),
            Some(DigestAlg::Sha256)
        );
        assert_eq!(DigestAlg::from_micalg("md5"), None);
        assert_eq!(
            der::oid_to_string(der::OID_SHA256),
            "2.16.840.1.101.3.4.2.1"
        );
    }

    #[test]
    fn certificate_helpers() {
        let (ca, id) = ca_and_provider();
        let fp = sha1_fingerprint_hex(&id.cert);
        assert_eq!(fp.len(), 40);
        assert!(
            fp.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            cert_emails(&id.cert),
            vec!["posta-certificata@pec.prova.it".to_string()]
        );
        assert!(signer_matches_address(
            &id.cert,
            "Posta-Certificata@PEC.prova.it"
        ));
        assert!(!signer_matches_address(&id.cert, "altro@pec.prova.it"));
        assert_eq!(
            subject_string(&id.cert),
            "C=IT, O=Gestore Prova S.p.A., CN=Posta Certificata Gestore Prova S.p.A."
        );
        assert_eq!(issuer_string(&id.cert), subject_string(&ca.cert));
    }

    #[test]
    fn trust_store_from_a_folder() {
        let (ca, id) = ca_and_provider();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.cer"), ca.cert.to_der().unwrap()).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let t = TrustStore::from_path(dir.path()).unwrap();
        assert_eq!(t.certs.len(), 2);
        let der = sign_detached(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        let r = verify_detached(
            INNER,
            &der,
            &VerifyOptions {
                trust: Some(&t),
                at: None,
            },
        )
        .unwrap();
        assert!(r.all_passed());
        assert!(TrustStore::from_path(&dir.path().join("missing.pem")).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(TrustStore::from_path(empty.path()).is_err());
    }

    fn fixture(rel: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The real Aruba 2014 messages: SHA-1 signatures that chain to DigitPA CA1 at their own date
    /// (digest §4.1, §8.1).
    #[test]
    fn real_aruba_messages_verify_with_sha1_and_chain_to_digitpa() {
        let refs = X509::stack_from_pem(&fixture(
            "reference/aruba-2014_pec-signing-cert_and_digitpa-ca1.pem",
        ))
        .unwrap();
        let digitpa: Vec<X509> = refs
            .into_iter()
            .filter(|c| subject_string(c).contains("CN=DigitPA CA1"))
            .collect();
        assert_eq!(digitpa.len(), 1);
        let trust = TrustStore::from_certs(digitpa);
        for (file, date) in [
            ("aruba-2014_busta-trasporto_message1.eml", (2014, 11, 7)),
            ("aruba-2014_ricevuta-accettazione.eml", (2014, 11, 14)),
            (
                "aruba-2014_ricevuta-avvenuta-consegna-completa.eml",
                (2014, 11, 14),
            ),
        ] {
            let (inner, der, ct) = split_message(&fixture(&format!("real/eml/{file}")));
            assert!(ct.contains("micalg=sha1"), "{file}: {ct}");
            let at = Utc
                .with_ymd_and_hms(date.0, date.1, date.2, 12, 0, 0)
                .unwrap();
            let r = verify_detached(
                &inner,
                &der,
                &VerifyOptions {
                    trust: Some(&trust),
                    at: Some(at),
                },
            )
            .unwrap();
            assert_eq!(r.digest, Some(DigestAlg::Sha1), "{file}");
            assert_eq!(r.integrity, Outcome::Pass, "{file}");
            assert_eq!(r.chain, Outcome::Pass, "{file}");
            assert_eq!(r.validity, Outcome::Pass, "{file}");
            let signer = r.signer.unwrap();
            assert_eq!(
                sha1_fingerprint_hex(&signer),
                "aaa71bfd2dbc9fe67aa23c9f33aaf3316df1aa66"
            );
            assert!(signer_matches_address(
                &signer,
                "posta-certificata@pec.aruba.it"
            ));
            // Today the Aruba certificate has expired (2017).
            let now = verify_detached(
                &inner,
                &der,
                &VerifyOptions {
                    trust: Some(&trust),
                    at: None,
                },
            )
            .unwrap();
            assert!(matches!(now.validity, Outcome::Fail(_)), "{file}");
            // One changed byte in the real content fails integrity.
            let mut changed = inner.clone();
            let n = changed.len() / 2;
            changed[n] ^= 0x20;
            let bad = verify_detached(&changed, &der, &VerifyOptions::default()).unwrap();
            assert!(matches!(bad.integrity, Outcome::Fail(_)), "{file}");
        }
    }

    fn tool_present(tool: &str, arg: &str) -> bool {
        let ok = std::process::Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("NOTICE: {tool} not found, outside-oracle check skipped");
        }
        ok
    }

    /// Outside oracle: `openssl cms -verify` accepts our signatures, every digest, and `openssl
    /// smime -verify` accepts the whole multipart.
    #[test]
    fn openssl_cli_accepts_our_signatures() {
        if !tool_present("openssl", "version") {
            return;
        }
        let (ca, id) = ca_and_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.cert.to_pem().unwrap()).unwrap();
        let content = dir.path().join("content");
        std::fs::write(&content, INNER).unwrap();
        for d in [
            DigestAlg::Sha1,
            DigestAlg::Sha256,
            DigestAlg::Sha384,
            DigestAlg::Sha512,
        ] {
            let p7s = dir.path().join("s.p7s");
            std::fs::write(&p7s, sign_detached(&id.signer(d), INNER).unwrap()).unwrap();
            let out = std::process::Command::new("openssl")
                .args([
                    "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any", "-in",
                ])
                .arg(&p7s)
                .arg("-content")
                .arg(&content)
                .arg("-CAfile")
                .arg(&ca_pem)
                .args(["-out", "/dev/null"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{d:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let signed = sign(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        let mut whole = format!(
            "MIME-Version: 1.0\r\nContent-Type: {}\r\n\r\n",
            signed.content_type
        )
        .into_bytes();
        whole.extend_from_slice(&signed.body);
        let msg = dir.path().join("msg.eml");
        std::fs::write(&msg, &whole).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["smime", "-verify", "-purpose", "any", "-in"])
            .arg(&msg)
            .arg("-CAfile")
            .arg(&ca_pem)
            .args(["-out", "/dev/null"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "smime: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And the oracle rejects a changed byte, so the check above can fail.
        let mut bad = INNER.to_vec();
        bad[0] ^= 0x20;
        std::fs::write(&content, &bad).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any", "-in",
            ])
            .arg(dir.path().join("s.p7s"))
            .arg("-content")
            .arg(&content)
            .arg("-CAfile")
            .arg(&ca_pem)
            .args(["-out", "/dev/null"])
            .output()
            .unwrap();
        assert!(!out.status.success());
    }

    /// Signatures made by OpenSSL itself (DER, and BER with indefinite lengths from `-stream`,
    /// with the extra smimeCapabilities attribute) verify here too.
    #[test]
    fn signatures_made_by_openssl_cli_verify() {
        if !tool_present("openssl", "version") {
            return;
        }
        let (ca, id) = ca_and_provider();
        let trust = TrustStore::from_certs(vec![ca.cert.clone()]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("p.pem"), id.cert.to_pem().unwrap()).unwrap();
        std::fs::write(d.join("p.key"), id.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(d.join("content"), INNER).unwrap();
        for (md, stream) in [("sha1", false), ("sha256", true), ("sha512", false)] {
            let mut cmd = std::process::Command::new("openssl");
            cmd.current_dir(d).args([
                "cms", "-sign", "-binary", "-md", md, "-signer", "p.pem", "-inkey", "p.key", "-in",
                "content", "-outform", "DER", "-out", "s.p7s",
            ]);
            if stream {
                cmd.arg("-stream");
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let der = std::fs::read(d.join("s.p7s")).unwrap();
            let r = verify_detached(
                INNER,
                &der,
                &VerifyOptions {
                    trust: Some(&trust),
                    at: None,
                },
            )
            .unwrap();
            assert_eq!(r.digest_name, md);
            assert!(r.all_passed(), "{md}: {:?} {:?}", r.integrity, r.chain);
            let r = verify_detached(b"other\r\n", &der, &VerifyOptions::default()).unwrap();
            assert!(matches!(r.integrity, Outcome::Fail(_)), "{md}");
        }
    }

    /// Outside oracle: `gpgsm --verify` with the test CA as a trusted root.
    #[test]
    fn gpgsm_accepts_our_signature() {
        if !tool_present("gpgsm", "--version") {
            return;
        }
        let (ca, id) = ca_and_provider();
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
        let fp = sha1_fingerprint_hex(&ca.cert).to_ascii_uppercase();
        std::fs::write(h.join("trustlist.txt"), format!("{fp} S\n")).unwrap();
        std::fs::write(h.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(h.join("content"), INNER).unwrap();
        std::fs::write(
            h.join("s.p7s"),
            sign_detached(&id.signer(DigestAlg::Sha256), INNER).unwrap(),
        )
        .unwrap();
        let gpgsm = |args: &[&str]| {
            std::process::Command::new("gpgsm")
                .env("GNUPGHOME", h)
                .arg("--batch")
                .args(args)
                .current_dir(h)
                .output()
                .unwrap()
        };
        let import = gpgsm(&["--import", "ca.pem"]);
        let verify = gpgsm(&["--verify", "s.p7s", "content"]);
        std::fs::write(h.join("content"), b"changed\r\n").unwrap();
        let tampered = gpgsm(&["--verify", "s.p7s", "content"]);
        // End the agent this test started (by its home directory).
        let _ = std::process::Command::new("gpgconf")
            .env("GNUPGHOME", h)
            .args(["--kill", "all"])
            .output();
        assert!(
            import.status.success(),
            "{}",
            String::from_utf8_lossy(&import.stderr)
        );
        let err = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success(), "{err}");
        assert!(err.contains("Good signature"), "{err}");
        assert!(!tampered.status.success());
    }

    /// RFC 5652 §5.3/§5.4: a SignedData made by `openssl cms -sign -signer a -signer b` (the
    /// outside tool) has two SignerInfos; both are checked, and one wrong signature value fails
    /// the whole signature, naming that SignerInfo.
    #[test]
    fn every_signer_info_is_checked() {
        if !tool_present("openssl", "version") {
            return;
        }
        let (ca, a) = ca_and_provider();
        let b = ca
            .issue_provider("Secondo Firmatario", "secondo@pec.prova.it")
            .unwrap();
        let trust = TrustStore::from_certs(vec![ca.cert.clone()]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (n, id) in [("a", &a), ("b", &b)] {
            std::fs::write(d.join(format!("{n}.pem")), id.cert.to_pem().unwrap()).unwrap();
            std::fs::write(
                d.join(format!("{n}.key")),
                id.key.private_key_to_pem_pkcs8().unwrap(),
            )
            .unwrap();
        }
        std::fs::write(d.join("content"), INNER).unwrap();
        let out = std::process::Command::new("openssl")
            .current_dir(d)
            .args([
                "cms", "-sign", "-binary", "-md", "sha256", "-signer", "a.pem", "-inkey", "a.key",
                "-signer", "b.pem", "-inkey", "b.key", "-in", "content", "-outform", "DER", "-out",
                "s.p7s",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Re-encoded as DER so that the signature values can be found byte for byte.
        let ber = std::fs::read(d.join("s.p7s")).unwrap();
        let der = openssl::cms::CmsContentInfo::from_der(&ber)
            .unwrap()
            .to_der()
            .unwrap();
        let opts = VerifyOptions {
            trust: Some(&trust),
            at: None,
        };
        let r = verify_detached(INNER, &der, &opts).unwrap();
        assert_eq!(r.signers.len(), 2);
        assert!(r.all_passed(), "{:?}", r.integrity);
        let subjects: Vec<String> = r.signers.iter().map(SignerReport::subject).collect();
        assert!(subjects.iter().any(|s| s.contains("Secondo Firmatario")));
        assert!(
            r.signers
                .iter()
                .all(|s| s.digest == Some(DigestAlg::Sha256))
        );

        // Flip the last byte of the second SignerInfo's signature value.
        let parsed = der::parse_signed_data(&der).unwrap();
        let sig = &parsed.signers[1].signature;
        let at = find(&der, sig).expect("signature value in the DER");
        let mut bad = der.clone();
        bad[at + sig.len() - 1] ^= 0x01;
        let r = verify_detached(INNER, &bad, &opts).unwrap();
        assert_eq!(r.signers[0].integrity, Outcome::Pass);
        assert!(matches!(r.signers[1].integrity, Outcome::Fail(_)));
        assert!(!r.all_passed());
        let second = r.signers[1].subject();
        match &r.integrity {
            Outcome::Fail(why) => {
                assert!(why.starts_with("SignerInfo 2 ("), "{why}");
                assert!(why.contains(&second), "{why}");
                assert!(why.contains("signature value"), "{why}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // The chain and validity of both signers are still fine.
        assert_eq!(r.chain, Outcome::Pass);
        assert_eq!(r.validity, Outcome::Pass);
    }

    /// RFC 5652 §5.1: a SignedData with an empty signerInfos signs nothing, and fails.
    #[test]
    fn zero_signer_infos_fail() {
        use der::*;
        let empty = tlv(
            SEQUENCE,
            &[
                tlv(OID, OID_SIGNED_DATA),
                tlv(
                    CTX0,
                    &tlv(
                        SEQUENCE,
                        &[
                            tlv(INTEGER, &[1]),
                            tlv(SET, &[]),
                            tlv(SEQUENCE, &tlv(OID, OID_DATA)),
                            tlv(SET, &[]),
                        ]
                        .concat(),
                    ),
                ),
            ]
            .concat(),
        );
        let r = verify_detached(INNER, &empty, &VerifyOptions::default()).unwrap();
        assert!(r.signers.is_empty());
        assert!(r.signer.is_none());
        assert!(!r.all_passed());
        match &r.integrity {
            Outcome::Fail(why) => assert!(why.contains("no SignerInfo"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(signing_time(&empty).unwrap(), None);
    }

    fn with_crls(
        der: &[u8],
        trust: &TrustStore,
        at: DateTime<Utc>,
        crls: Option<&CrlSet>,
    ) -> SignatureReport {
        verify_detached_with_crls(
            INNER,
            der,
            &VerifyOptions {
                trust: Some(trust),
                at: Some(at),
            },
            crls,
        )
        .unwrap()
    }

    /// RFC 6109 §2.2.2, RFC 5280 §6.3: revoked before the verification time fails with the date
    /// and reason; revoked after it passes; a CRL another key signed is refused; no CRL of the
    /// issuer leaves revocation not checked.
    #[test]
    fn revocation_against_crls_at_the_verification_time() {
        use crate::pki::RevokedCert;
        let (ca, id) = ca_and_provider();
        let trust = TrustStore::from_certs(vec![ca.cert.clone()]);
        let der = sign_detached(&id.signer(DigestAlg::Sha256), INNER).unwrap();
        let now = Utc::now();
        let revoked_on = now - Duration::hours(2);
        let entry = ca
            .revoke(&id.cert, revoked_on, Some(RevocationReason::KeyCompromise))
            .unwrap();
        let crl = ca
            .crl(
                std::slice::from_ref(&entry),
                now - Duration::hours(1),
                now + Duration::days(7),
                2,
            )
            .unwrap();
        let crls = CrlSet::from_crls(vec![crl]);

        let r = with_crls(&der, &trust, now, Some(&crls));
        assert_eq!(r.integrity, Outcome::Pass);
        assert!(!r.all_passed());
        match &r.revocation {
            Outcome::Fail(why) => {
                assert!(why.contains("revoked on"), "{why}");
                assert!(why.contains("keyCompromise"), "{why}");
                let day = revoked_on.format("%Y-%m-%dT%H:%M:%S").to_string();
                assert!(why.contains(&day), "{why} / {day}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // Before the revocation date the same CRL lets it pass.
        let before = with_crls(&der, &trust, now - Duration::hours(3), Some(&crls));
        assert_eq!(before.revocation, Outcome::Pass);
        assert!(before.all_passed());

        // A CRL that does not list it passes; without a reason the detail says so.
        let clean = ca
            .crl(&[], now - Duration::hours(1), now + Duration::days(7), 3)
            .unwrap();
        let r = with_crls(&der, &trust, now, Some(&CrlSet::from_crls(vec![clean])));
        assert_eq!(r.revocation, Outcome::Pass);
        let no_reason = RevokedCert {
            reason: None,
            ..entry.clone()
        };
        let crl = ca
            .crl(
                &[no_reason],
                now - Duration::hours(1),
                now + Duration::days(7),
                4,
            )
            .unwrap();
        let r = with_crls(&der, &trust, now, Some(&CrlSet::from_crls(vec![crl])));
        assert!(
            matches!(&r.revocation, Outcome::Fail(w) if w.contains("no reason given")),
            "{:?}",
            r.revocation
        );

        // Same issuer name, another key: the CRL is refused.
        let impostor = TestCa::generate("Test CA").unwrap();
        let forged = impostor
            .crl(&[], now - Duration::hours(1), now + Duration::days(7), 5)
            .unwrap();
        let r = with_crls(&der, &trust, now, Some(&CrlSet::from_crls(vec![forged])));
        match &r.revocation {
            Outcome::Fail(why) => assert!(why.contains("refused"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }

        // A CRL of another CA only: not checked; no CRL given at all: not checked either.
        let other = TestCa::generate("Other CA").unwrap();
        let theirs = other
            .crl(&[], now - Duration::hours(1), now + Duration::days(7), 1)
            .unwrap();
        let r = with_crls(&der, &trust, now, Some(&CrlSet::from_crls(vec![theirs])));
        assert!(
            matches!(&r.revocation, Outcome::NotChecked(w) if w.contains("no CRL from the issuer")),
            "{:?}",
            r.revocation
        );
        assert!(r.all_passed());
        let r = with_crls(&der, &trust, now, None);
        assert!(matches!(r.revocation, Outcome::NotChecked(_)));

        // A CRL whose nextUpdate is before the verification time does not speak for it.
        let stale = ca
            .crl(&[], now - Duration::days(10), now - Duration::days(3), 6)
            .unwrap();
        let r = with_crls(&der, &trust, now, Some(&CrlSet::from_crls(vec![stale])));
        assert!(
            matches!(&r.revocation, Outcome::NotChecked(w) if w.contains("nextUpdate")),
            "{:?}",
            r.revocation
        );
    }

    #[test]
    fn crl_files_pem_der_and_junk() {
        let (ca, _) = ca_and_provider();
        let now = Utc::now();
        let a = ca.crl(&[], now, now + Duration::days(1), 1).unwrap();
        let b = ca.crl(&[], now, now + Duration::days(1), 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("two.pem");
        std::fs::write(&pem, [a.to_pem().unwrap(), b.to_pem().unwrap()].concat()).unwrap();
        assert_eq!(CrlSet::from_path(&pem).unwrap().crls.len(), 2);
        let der = dir.path().join("one.crl");
        std::fs::write(&der, a.to_der().unwrap()).unwrap();
        let mut set = CrlSet::from_path(&der).unwrap();
        set.extend(CrlSet::from_path(&pem).unwrap());
        assert_eq!(set.crls.len(), 3);
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a CRL").unwrap();
        let e = CrlSet::from_path(&junk).err().unwrap().to_string();
        assert!(e.contains("neither a PEM nor a DER CRL"), "{e}");
        let broken = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
        assert!(CrlSet::from_bytes(broken, "x").is_err());
        assert!(CrlSet::from_path(&dir.path().join("missing")).is_err());
        for c in 0..=10 {
            if let Some(r) = RevocationReason::from_code(c) {
                assert_eq!(r.code(), c);
            }
        }
        assert_eq!(RevocationReason::from_code(7), None);
    }
}
