//! The provider directory, *Indice dei gestori di posta elettronica certificata* (RFC 6109 §4.5,
//! §5.6, §8.2; digest §9): read from and written to LDIF, and the lookups a gestore needs.
//! THIS FILE IS A SKELETON: the types and signatures are the contract other modules code against.

use openssl::x509::X509;
use std::path::Path;

/// One provider's entry (`objectClass: providerPECAuthority`-like; RFC 6109 §4.5 attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    /// `providerName`: the descriptive name (the `gestore-emittente` of its daticert).
    pub name: String,
    /// `managedDomains` (1..n): the PEC domains it manages, lower case.
    pub managed_domains: Vec<String>,
    /// `mailReceipt`: the mailbox for presa in carico and virus notices.
    pub mail_receipt: String,
    /// `providerCertificateHash` (SHA-1, lower-case hex, no colons) of each signing certificate.
    pub certificate_hashes: Vec<String>,
    /// `providerCertificate`: the DER certificates, when the entry carries them.
    pub certificates: Vec<Vec<u8>>,
    /// `LDIFLocationURL` and any other attribute, kept as read (name, value).
    pub other: Vec<(String, String)>,
}

/// Why a directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Malformed LDIF; names the line and what is wrong.
    #[error("directory LDIF line {line}: {message}")]
    Ldif { line: usize, message: String },
    /// I/O.
    #[error("directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The whole directory.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Every provider.
    pub providers: Vec<ProviderEntry>,
}

impl Directory {
    /// Reads LDIF text.
    pub fn from_ldif(_text: &str) -> Result<Directory, DirectoryError> {
        todo!()
    }
    /// Writes LDIF text that [`Directory::from_ldif`] reads back equal.
    pub fn to_ldif(&self) -> String {
        todo!()
    }
    /// Reads an LDIF file.
    pub fn load(_path: &Path) -> Result<Directory, DirectoryError> {
        todo!()
    }
    /// The provider managing `domain` (case-insensitive).
    pub fn provider_for_domain(&self, _domain: &str) -> Option<&ProviderEntry> {
        todo!()
    }
    /// True when `address`'s domain is a PEC domain.
    pub fn is_pec_address(&self, _address: &str) -> bool {
        todo!()
    }
    /// The provider whose certificate hash matches `cert`'s SHA-1.
    pub fn provider_for_certificate(&self, _cert: &X509) -> Option<&ProviderEntry> {
        todo!()
    }
    /// Every certificate in the directory, as trust anchors.
    pub fn trusted_certificates(&self) -> Vec<X509> {
        todo!()
    }
}
