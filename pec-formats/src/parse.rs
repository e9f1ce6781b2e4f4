//! Reading any message as PEC: classify it by its headers, find the signed PEC part (also when a
//! mailing list or a forwarder wrapped it), and extract its parts. THIS FILE IS A SKELETON: the
//! types and signatures are the contract other modules code against.

use crate::kind::Kind;

/// Why a message could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not an RFC 5322 message (empty, no header section, truncated beyond use…); says what.
    #[error("not a usable e-mail message: {0}")]
    Unusable(String),
}

/// The `multipart/signed` entity that carries the PEC content.
#[derive(Debug, Clone)]
pub struct SignedPart {
    /// The exact signed bytes (the first child entity, headers included, CRLF line ends).
    pub content: Vec<u8>,
    /// The detached signature, DER (the base64-decoded `smime.p7s`), if a signature part exists.
    pub signature_der: Option<Vec<u8>>,
    /// The `protocol` parameter (`application/pkcs7-signature` or `application/x-pkcs7-signature`).
    pub protocol: Option<String>,
    /// The `micalg` parameter (`sha1`, `sha-256`, …).
    pub micalg: Option<String>,
}

/// One part of the signed `multipart/mixed`, in order.
#[derive(Debug, Clone)]
pub struct PartInfo {
    /// `type/subtype`, lower case.
    pub content_type: String,
    /// `name=` of Content-Type or `filename=` of Content-Disposition.
    pub filename: Option<String>,
    /// `inline` / `attachment`, lower case.
    pub disposition: Option<String>,
}

/// A message read as PEC. Every field is `None`/empty when the message lacks it; judging whether
/// that is right for the kind is the conformance checks' job, not the parser's.
#[derive(Debug, Clone)]
pub struct PecMessage {
    /// The whole input, line ends normalised to CRLF.
    pub raw: Vec<u8>,
    /// The header fields of the PEC message (name as written, value unfolded and trimmed), in order.
    /// When the PEC message was wrapped inside another message, these are its own headers.
    pub headers: Vec<(String, String)>,
    /// True when the PEC entity was found inside a wrapper (mailing list, forward).
    pub wrapped: bool,
    /// The kind by `X-Trasporto` / `X-Ricevuta` / `X-VerificaSicurezza` (never by subject).
    pub kind: Option<Kind>,
    /// The signed entity, if any.
    pub signed: Option<SignedPart>,
    /// The parts of the signed multipart/mixed (or of the top-level multipart when unsigned).
    pub parts: Vec<PartInfo>,
    /// The human-readable text, decoded (the text/plain part, also inside multipart/alternative).
    pub text: Option<String>,
    /// The HTML alternative, decoded, if any.
    pub html: Option<String>,
    /// The raw bytes of `daticert.xml`, decoded from its transfer encoding.
    pub daticert_xml: Option<Vec<u8>>,
    /// The raw bytes of `postacert.eml` (the original, or for an anomaly envelope the received message).
    pub postacert: Option<Vec<u8>>,
}

impl PecMessage {
    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header field named `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Converts bare LF (and bare CR) line ends to CRLF, as stored messages need before S/MIME
/// verification (digest §14.8).
pub fn normalize_crlf(_raw: &[u8]) -> Vec<u8> {
    todo!()
}

/// Reads a message as PEC.
pub fn parse(_raw: &[u8]) -> Result<PecMessage, ParseError> {
    todo!()
}
