//! A test PKI: a test CA and provider signing certificates with the profile of RFC 6109 §5.5
//! (key usage digitalSignature critical, AKI, SKI, SAN rfc822Name with the provider's address, no
//! basic constraints), generated on demand and written to / read from a folder.
//! THIS FILE IS A SKELETON: the signatures are the contract other modules code against.

use crate::smime::{DigestAlg, Signer};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
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

impl TestCa {
    /// Generates a CA named `common_name` (RSA 2048, SHA-256, 10 years).
    pub fn generate(_common_name: &str) -> Result<TestCa, crate::smime::SmimeError> {
        todo!()
    }

    /// Issues a provider certificate: subject `C=IT, O=<provider_name>, CN=Posta Certificata
    /// <provider_name>`, SAN rfc822Name `address` (the provider's service address).
    pub fn issue_provider(
        &self,
        _provider_name: &str,
        _address: &str,
    ) -> Result<ProviderIdentity, crate::smime::SmimeError> {
        todo!()
    }

    /// Issues a TLS server certificate (SAN DNS names and IP addresses from `names`), RSA 2048.
    pub fn issue_tls_server(
        &self,
        _names: &[&str],
    ) -> Result<(PKey<Private>, X509), crate::smime::SmimeError> {
        todo!()
    }

    /// Writes `ca.key` and `ca.pem` into `dir`.
    pub fn write_to(&self, _dir: &Path) -> Result<(), crate::smime::SmimeError> {
        todo!()
    }

    /// Reads what [`TestCa::write_to`] wrote.
    pub fn load_from(_dir: &Path) -> Result<TestCa, crate::smime::SmimeError> {
        todo!()
    }
}

impl ProviderIdentity {
    /// A [`Signer`] for this identity.
    pub fn signer(&self, _digest: DigestAlg) -> Signer {
        todo!()
    }
}
