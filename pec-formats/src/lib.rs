//! The PEC (Posta Elettronica Certificata) message formats, with no sockets and no store.
//!
//! Each module is named after a concept of the technical rules (RFC 6109, the English text of the
//! Italian *regole tecniche*), so a reader who knows PEC finds each rule in one place:
//!
//! - [`kind`]: the eleven message kinds, their header values and subject prefixes (RFC 6109 §3, App. A);
//! - [`daticert`]: the certification data `daticert.xml` (RFC 6109 §4.4, the Italian DTD);
//! - [`time`]: Italian legal local time (CET/CEST) as PEC prints it (RFC 6109 §4.1–4.2);
//! - [`smime`]: signing and verifying `multipart/signed` with OpenSSL (RFC 6109 §2.1, §5);
//! - [`pki`]: a test CA and provider certificates with the RFC 6109 §5.5 profile;
//! - [`build`]: builders for every envelope, receipt and notice;
//! - [`directory`]: the provider directory (Indice dei gestori, RFC 6109 §4.5) in LDIF;
//! - [`parse`]: classify any message, find the signed PEC part, extract its parts.

pub mod build;
pub mod daticert;
pub mod directory;
pub mod kind;
pub mod parse;
pub mod pki;
pub mod smime;
pub mod time;

/// Lower-case hex of `bytes` (certificate hashes, breve hashes, boundaries, chain hashes).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
