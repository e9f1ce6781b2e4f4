//! S/MIME for PEC: every envelope and notice is a `multipart/signed` with a detached CMS/PKCS#7
//! signature carrying the signer's certificate (RFC 6109 §2.1, §4.1). OpenSSL does the cryptography;
//! the multipart/signed wrapper is assembled here over the exact signed bytes, CRLF line ends.
//! THIS FILE IS A SKELETON: the signatures are the contract other modules code against.

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

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

/// Signs a MIME entity (headers + body, CRLF line ends, exactly the bytes to be signed) and wraps it
/// in a `multipart/signed` with a detached `smime.p7s` (RFC 6109 §2.1; RFC 5751 §3.5).
pub fn sign(_signer: &Signer, _inner_entity: &[u8]) -> Result<SignedEntity, SmimeError> {
    todo!("smime::sign")
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
}

/// Verifies a detached signature over `content` (the exact signed bytes, CRLF line ends).
pub fn verify_detached(
    _content: &[u8],
    _p7s_der: &[u8],
    _opts: &VerifyOptions<'_>,
) -> Result<SignatureReport, SmimeError> {
    todo!("smime::verify_detached")
}
