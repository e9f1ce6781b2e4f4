//! The provider directory, *Indice dei gestori di posta elettronica certificata* (RFC 6109 §4.5,
//! §5.6, §8.2; digest §9): read from and written to LDIF (RFC 2849), read from and written to the
//! signed `.p7m` the directory is distributed as, and the lookups a gestore needs.
//!
//! Model: the root entry `dn: o=postacert` is kept as its attribute list ([`Directory::root`]);
//! every other entry is a provider record (main or secondary environment). The five attributes of
//! the `provider` class have their own fields; every other attribute (`LDIFLocationURL`,
//! `providerUnit`, `description`, extra object classes, ...) is kept in [`ProviderEntry::other`] in
//! the order read. The object classes `top` and `provider` are implied and not kept; the `dn` is
//! kept in `other` (as `("dn", value)`) only when it differs from the canonical one
//! ([`ProviderEntry::dn`]), e.g. the RFC's own secondary-environment example.

use crate::hex;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509Ref};
use std::collections::HashMap;
use std::path::Path;

use crate::kind::TipoDestinatario;

/// The base DN of the directory (RFC 6109 §4.5).
pub const BASE_DN: &str = "o=postacert";

/// LDIF lines are folded at this many characters on output (RFC 2849 note 2 allows any width;
/// 76 is the customary one).
const FOLD_WIDTH: usize = 76;

/// One provider record, main or secondary environment (`objectClass: provider`, RFC 6109 §4.5.9).
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
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The signed `.p7m` does not verify: bad signature, altered content, or a signer that does not
    /// chain to the trusted certificates (RFC 6109 §4.5).
    #[error("directory p7m signature is not valid: {message}")]
    BadSignature { message: String },
    /// The `.p7m` cannot be read or written (not DER PKCS#7, content not UTF-8, signing failed).
    #[error("directory p7m: {message}")]
    P7m { message: String },
}

/// The whole directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// Every provider.
    pub providers: Vec<ProviderEntry>,
    /// The attributes of the root entry `dn: o=postacert` (e.g. `objectClass`, `o`,
    /// `LDIFLocationURL`, `description`) in the order read; empty when there is no root entry.
    pub root: Vec<(String, String)>,
}

/// The SHA-1 of a certificate's DER as `providerCertificateHash` holds it: lower-case hex, no
/// colons (RFC 6109 §4.5.1).
pub fn certificate_hash(cert: &X509Ref) -> String {
    match cert.digest(MessageDigest::sha1()) {
        Ok(d) => hex(&d),
        // SHA-1 over DER cannot fail short of OpenSSL being broken; an empty hash matches nothing.
        Err(_) => String::new(),
    }
}

/// The SHA-1 of DER bytes, lower-case hex.
fn der_hash(der: &[u8]) -> String {
    match openssl::hash::hash(MessageDigest::sha1(), der) {
        Ok(d) => hex(&d),
        Err(_) => String::new(),
    }
}

/// A hash as compared: colons removed, lower case (`caseIgnoreIA5Match`, RFC 6109 §4.5.1).
fn normalize_hash(h: &str) -> String {
    h.trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl ProviderEntry {
    /// The value of the first attribute in [`ProviderEntry::other`] named `name` (case-insensitive).
    pub fn other_value(&self, name: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// `providerUnit`: the secondary environment's name; `None` on the main record (RFC 6109 §4.5.7).
    pub fn provider_unit(&self) -> Option<&str> {
        self.other_value("providerUnit")
    }
    /// `LDIFLocationURL`: where the provider publishes its signed record (RFC 6109 §4.5.6).
    pub fn ldif_location_url(&self) -> Option<&str> {
        self.other_value("LDIFLocationURL")
    }
    /// The canonical DN: `providerName=<name>,o=postacert`, or
    /// `providerUnit=<unit>,providerName=<name>,o=postacert` for a secondary environment
    /// (RFC 6109 §4.5, §4.5.7), values escaped as RFC 4514 §2.4 says.
    pub fn canonical_dn(&self) -> String {
        let main = format!("providerName={},{BASE_DN}", escape_dn_value(&self.name));
        match self.provider_unit() {
            Some(unit) => format!("providerUnit={},{main}", escape_dn_value(unit)),
            None => main,
        }
    }
    /// The DN: the one read when it differed from the canonical one, else the canonical one.
    pub fn dn(&self) -> String {
        match self.other_value("dn") {
            Some(dn) => dn.to_string(),
            None => self.canonical_dn(),
        }
    }
    /// True when `hash` (hex, any case, colons allowed) is one of this entry's certificate hashes.
    pub fn has_certificate_hash(&self, hash: &str) -> bool {
        let hash = normalize_hash(hash);
        !hash.is_empty()
            && self
                .certificate_hashes
                .iter()
                .any(|h| normalize_hash(h) == hash)
    }
    /// True when this entry manages `domain` (exact, case-insensitive: RFC 6109 §4.5.5
    /// `caseIgnoreIA5Match`).
    pub fn manages(&self, domain: &str) -> bool {
        let domain = domain.trim().trim_end_matches('.');
        !domain.is_empty()
            && self
                .managed_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// Escapes an attribute value for a DN (RFC 4514 §2.4).
fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One logical LDIF line, unfolded, with the physical line it starts on.
struct Line {
    number: usize,
    text: String,
}

/// One attribute value as read: the attribute description (name and options), the raw value
/// (base64 decoded when written `::`), and its line.
struct Attr {
    description: String,
    value: Vec<u8>,
    line: usize,
}

impl Attr {
    /// The attribute type without options (`providerCertificate;binary` → `providerCertificate`).
    fn base_name(&self) -> &str {
        self.description.split(';').next().unwrap_or("")
    }
    fn is(&self, name: &str) -> bool {
        self.base_name().eq_ignore_ascii_case(name)
    }
    fn text(&self) -> Result<String, DirectoryError> {
        String::from_utf8(self.value.clone()).map_err(|_| {
            ldif_err(
                self.line,
                format!("the value of {} is not UTF-8 text", self.description),
            )
        })
    }
}

/// One LDIF record: its DN and attributes.
struct Record {
    dn: String,
    dn_line: usize,
    attrs: Vec<Attr>,
}

fn ldif_err(line: usize, message: impl Into<String>) -> DirectoryError {
    DirectoryError::Ldif {
        line,
        message: message.into(),
    }
}

/// Splits LDIF text into records of logical lines: comments dropped, folded lines joined, records
/// separated by blank lines (RFC 2849 notes 2 and 3).
fn logical_records(text: &str) -> Result<Vec<Vec<Line>>, DirectoryError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records: Vec<Vec<Line>> = Vec::new();
    let mut current: Vec<Line> = Vec::new();
    // What the previous physical line was, to attach continuation lines to it.
    enum Prev {
        Nothing,
        Value,
        Comment,
    }
    let mut prev = Prev::Nothing;
    for (i, raw) in text.split('\n').enumerate() {
        let number = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix(' ') {
            // RFC 2849 note 2: a line starting with one space continues the previous line.
            match prev {
                Prev::Value => {
                    if let Some(last) = current.last_mut() {
                        last.text.push_str(rest);
                    }
                }
                Prev::Comment => {}
                Prev::Nothing => {
                    return Err(ldif_err(
                        number,
                        "a continuation line (starting with a space) follows no line to continue",
                    ));
                }
            }
        } else if raw.starts_with('#') {
            // RFC 2849 note 3: comments, which may be folded too.
            prev = Prev::Comment;
        } else if raw.is_empty() {
            // RFC 2849: records are separated by one or more blank lines.
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            prev = Prev::Nothing;
        } else {
            current.push(Line {
                number,
                text: raw.to_string(),
            });
            prev = Prev::Value;
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    Ok(records)
}

/// Parses `description: value`, `description:: base64` (RFC 2849 `attrval-spec`).
fn parse_attr(line: &Line) -> Result<Attr, DirectoryError> {
    let Some((description, rest)) = line.text.split_once(':') else {
        return Err(ldif_err(
            line.number,
            format!("expected `attribute: value`, found {:?}", line.text),
        ));
    };
    let valid_name = {
        let mut parts = description.split(';');
        let name = parts.next().unwrap_or("");
        let name_ok = (name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            || (!name.is_empty() && name.chars().all(|c| c.is_ascii_digit() || c == '.'));
        name_ok
            && parts
                .all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if !valid_name {
        return Err(ldif_err(
            line.number,
            format!("{description:?} is not an attribute description"),
        ));
    }
    let value = if let Some(b64) = rest.strip_prefix(':') {
        // RFC 2849 `value-spec`: `::` then BASE64-UTF8-STRING.
        let b64: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        BASE64.decode(b64.as_bytes()).map_err(|e| {
            ldif_err(
                line.number,
                format!("the base64 value of {description} is not valid base64: {e}"),
            )
        })?
    } else if rest.starts_with('<') {
        return Err(ldif_err(
            line.number,
            format!("{description}: values by URL (`:<`) are not supported"),
        ));
    } else {
        // RFC 2849 `value-spec`: FILL (spaces) then SAFE-STRING.
        rest.trim_start_matches(' ').as_bytes().to_vec()
    };
    Ok(Attr {
        description: description.to_string(),
        value,
        line: line.number,
    })
}

/// Parses LDIF text into records (RFC 2849 content records only).
fn parse_records(text: &str) -> Result<Vec<Record>, DirectoryError> {
    let mut out = Vec::new();
    for (index, lines) in logical_records(text)?.into_iter().enumerate() {
        let mut lines = lines.into_iter().peekable();
        // RFC 2849 `version-spec`: optional `version: 1` before the first record.
        if index == 0
            && let Some(first) = lines.peek()
            && first
                .text
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("version:"))
        {
            let v = first.text[8..].trim();
            if v != "1" {
                return Err(ldif_err(
                    first.number,
                    format!("unsupported LDIF version {v:?} (only 1)"),
                ));
            }
            lines.next();
            if lines.peek().is_none() {
                continue;
            }
        }
        let Some(first) = lines.next() else { continue };
        let dn_attr = parse_attr(&first)?;
        if !dn_attr.description.eq_ignore_ascii_case("dn") {
            return Err(ldif_err(
                first.number,
                format!(
                    "an entry must start with `dn:`, found {:?}",
                    dn_attr.description
                ),
            ));
        }
        let dn = dn_attr.text()?;
        let mut attrs = Vec::new();
        for line in lines {
            let attr = parse_attr(&line)?;
            if attr.is("changetype") || attr.is("control") {
                return Err(ldif_err(
                    line.number,
                    "LDIF change records are not supported: the directory is content records",
                ));
            }
            if attr.is("dn") {
                return Err(ldif_err(
                    line.number,
                    "a second `dn:` in one entry (entries are separated by a blank line)",
                ));
            }
            attrs.push(attr);
        }
        out.push(Record {
            dn,
            dn_line: first.number,
            attrs,
        });
    }
    Ok(out)
}

/// True when the DN is the root `o=postacert` (case and spaces ignored).
fn is_root_dn(dn: &str) -> bool {
    let compact: String = dn.chars().filter(|c| !c.is_whitespace()).collect();
    compact.eq_ignore_ascii_case(BASE_DN)
}

/// RFC 5322 `atext`.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// RFC 5322 `dot-atom-text`.
fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|p| !p.is_empty() && p.chars().all(is_atext))
}

/// Builds one provider entry from its record, checking the `provider` class (RFC 6109 §4.5.1–§4.5.9).
fn provider_from_record(rec: Record) -> Result<ProviderEntry, DirectoryError> {
    let mut name: Option<String> = None;
    let mut mail_receipt: Option<String> = None;
    let mut managed_domains = Vec::new();
    let mut certificate_hashes = Vec::new();
    let mut certificates: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut other = Vec::new();
    let mut single_seen: HashMap<String, usize> = HashMap::new();
    for attr in rec.attrs {
        let base = attr.base_name().to_ascii_lowercase();
        // RFC 6109 §4.5.3, §4.5.4, §4.5.6, §4.5.7: SINGLE-VALUE attributes.
        let single = matches!(
            base.as_str(),
            "providername" | "mailreceipt" | "ldiflocationurl" | "providerunit"
        );
        if single && let Some(first) = single_seen.insert(base.clone(), attr.line) {
            return Err(ldif_err(
                attr.line,
                format!(
                    "{} is single-valued but already appears at line {first}",
                    attr.base_name()
                ),
            ));
        }
        match base.as_str() {
            "providername" => {
                let v = attr.text()?;
                if v.trim().is_empty() {
                    return Err(ldif_err(attr.line, "providerName is empty"));
                }
                name = Some(v);
            }
            "mailreceipt" => {
                // RFC 6109 §4.5.4: dot-atom-text "@" dot-atom-text, no brackets, no CFWS.
                let v = attr.text()?;
                let ok = v
                    .split_once('@')
                    .is_some_and(|(l, d)| is_dot_atom(l) && is_dot_atom(d));
                if !ok {
                    return Err(ldif_err(
                        attr.line,
                        format!("mailReceipt {v:?} is not a dot-atom@dot-atom address"),
                    ));
                }
                mail_receipt = Some(v);
            }
            "manageddomains" => {
                // RFC 6109 §4.5.5: dot-atom domains, matched case-insensitively.
                let v = attr.text()?;
                if !is_dot_atom(&v) {
                    return Err(ldif_err(
                        attr.line,
                        format!("managedDomains {v:?} is not a dot-atom domain"),
                    ));
                }
                managed_domains.push(v.to_ascii_lowercase());
            }
            "providercertificatehash" => {
                // RFC 6109 §4.5.1: hex SHA-1, caseIgnoreIA5Match.
                let v = normalize_hash(&attr.text()?);
                if v.len() != 40 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ldif_err(
                        attr.line,
                        format!("providerCertificateHash {v:?} is not 40 hex digits (SHA-1)"),
                    ));
                }
                certificate_hashes.push(v);
            }
            "providercertificate" => {
                // RFC 6109 §4.5.2: a DER certificate, transferred as `providerCertificate;binary`.
                if let Err(e) = X509::from_der(&attr.value) {
                    return Err(ldif_err(
                        attr.line,
                        format!("providerCertificate is not a DER X.509 certificate: {e}"),
                    ));
                }
                certificates.push((attr.value, attr.line));
            }
            "objectclass" => {
                let v = attr.text()?;
                // The implied classes are not kept (see the module doc).
                if !(v.eq_ignore_ascii_case("top") || v.eq_ignore_ascii_case("provider")) {
                    other.push((attr.description, v));
                }
            }
            _ => {
                let v = attr.text()?;
                other.push((attr.description, v));
            }
        }
    }
    // RFC 6109 §4.5.9: MUST providerName, mailReceipt, managedDomains, providerCertificateHash.
    let at = rec.dn_line;
    let who = &rec.dn;
    let name = name.ok_or_else(|| ldif_err(at, format!("entry {who:?} has no providerName")))?;
    let mail_receipt =
        mail_receipt.ok_or_else(|| ldif_err(at, format!("entry {who:?} has no mailReceipt")))?;
    if managed_domains.is_empty() {
        return Err(ldif_err(at, format!("entry {who:?} has no managedDomains")));
    }
    if certificate_hashes.is_empty() {
        return Err(ldif_err(
            at,
            format!("entry {who:?} has no providerCertificateHash"),
        ));
    }
    // RFC 6109 §4.5: each providerCertificate comes with its providerCertificateHash.
    for (der, line) in &certificates {
        let h = der_hash(der);
        if !certificate_hashes.contains(&h) {
            return Err(ldif_err(
                *line,
                format!(
                    "providerCertificate has SHA-1 {h}, which no providerCertificateHash of entry {who:?} lists"
                ),
            ));
        }
    }
    let mut entry = ProviderEntry {
        name,
        managed_domains,
        mail_receipt,
        certificate_hashes,
        certificates: certificates.into_iter().map(|(d, _)| d).collect(),
        other,
    };
    if rec.dn != entry.canonical_dn() {
        entry.other.insert(0, ("dn".to_string(), rec.dn));
    }
    Ok(entry)
}

/// True when an LDIF value must be written base64 (RFC 2849 `SAFE-STRING` and note 8).
fn needs_base64(v: &str) -> bool {
    v.starts_with([' ', ':', '<'])
        || v.ends_with(' ')
        || v.chars()
            .any(|c| !c.is_ascii() || c == '\0' || c == '\r' || c == '\n')
}

/// Appends one folded `description: value` line (RFC 2849 note 2).
fn push_line(out: &mut String, description: &str, value: &str) {
    let line = if needs_base64(value) {
        format!("{description}:: {}", BASE64.encode(value.as_bytes()))
    } else {
        format!("{description}: {value}")
    };
    push_folded(out, &line);
}

fn push_folded(out: &mut String, line: &str) {
    let chars: Vec<char> = line.chars().collect();
    let mut start = 0;
    let mut width = FOLD_WIDTH;
    while start < chars.len() {
        let end = (start + width).min(chars.len());
        if start > 0 {
            out.push(' ');
        }
        out.extend(&chars[start..end]);
        out.push('\n');
        start = end;
        width = FOLD_WIDTH - 1;
    }
    if chars.is_empty() {
        out.push('\n');
    }
}

impl Directory {
    /// Reads LDIF text.
    pub fn from_ldif(text: &str) -> Result<Directory, DirectoryError> {
        let mut dir = Directory::default();
        let mut root_line: Option<usize> = None;
        // Domain → (entry's dn line) for the uniqueness check.
        let mut domain_owner: HashMap<String, usize> = HashMap::new();
        for rec in parse_records(text)? {
            if is_root_dn(&rec.dn) {
                // RFC 6109 §4.5, §4.5.6: the single root `o=postacert`.
                if let Some(first) = root_line {
                    return Err(ldif_err(
                        rec.dn_line,
                        format!("a second root entry o=postacert (the first is at line {first})"),
                    ));
                }
                root_line = Some(rec.dn_line);
                for attr in rec.attrs {
                    let v = attr.text()?;
                    dir.root.push((attr.description, v));
                }
                continue;
            }
            let is_provider = rec.attrs.iter().any(|a| {
                a.is("providerName")
                    || (a.is("objectClass") && a.value.eq_ignore_ascii_case(b"provider"))
            });
            if !is_provider {
                return Err(ldif_err(
                    rec.dn_line,
                    format!(
                        "entry {:?} is neither the root o=postacert nor a provider (no providerName)",
                        rec.dn
                    ),
                ));
            }
            let domain_lines: Vec<(String, usize)> = rec
                .attrs
                .iter()
                .filter(|a| a.is("managedDomains"))
                .map(|a| {
                    (
                        String::from_utf8_lossy(&a.value).to_ascii_lowercase(),
                        a.line,
                    )
                })
                .collect();
            let dn_line = rec.dn_line;
            let entry = provider_from_record(rec)?;
            // A domain in two records would make the certificato/esterno decision and the
            // provider lookup ambiguous (RFC 6109 §2.2.1, §4.5.5).
            for (domain, line) in domain_lines {
                if let Some(first) = domain_owner.insert(domain.clone(), dn_line) {
                    let what = if first == dn_line {
                        "appears twice in this entry".to_string()
                    } else {
                        format!("is already managed by the entry at line {first}")
                    };
                    return Err(ldif_err(line, format!("managedDomains {domain} {what}")));
                }
            }
            dir.providers.push(entry);
        }
        Ok(dir)
    }

    /// Writes LDIF text that [`Directory::from_ldif`] reads back equal.
    pub fn to_ldif(&self) -> String {
        let mut out = String::from("version: 1\n");
        if !self.root.is_empty() {
            out.push('\n');
            push_line(&mut out, "dn", BASE_DN);
            for (n, v) in &self.root {
                push_line(&mut out, n, v);
            }
        }
        for p in &self.providers {
            out.push('\n');
            push_line(&mut out, "dn", &p.dn());
            push_line(&mut out, "objectClass", "top");
            push_line(&mut out, "objectClass", "provider");
            push_line(&mut out, "providerName", &p.name);
            for h in &p.certificate_hashes {
                push_line(&mut out, "providerCertificateHash", h);
            }
            for der in &p.certificates {
                // RFC 6109 §4.5.2: `providerCertificate;binary`, base64 DER.
                push_folded(
                    &mut out,
                    &format!("providerCertificate;binary:: {}", BASE64.encode(der)),
                );
            }
            push_line(&mut out, "mailReceipt", &p.mail_receipt);
            for d in &p.managed_domains {
                push_line(&mut out, "managedDomains", d);
            }
            for (n, v) in &p.other {
                if !n.eq_ignore_ascii_case("dn") {
                    push_line(&mut out, n, v);
                }
            }
        }
        out
    }

    /// Reads an LDIF file.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Directory::from_ldif(&text)
    }

    /// Reads a signed `.p7m` directory file, trusting `trust` (RFC 6109 §4.5).
    pub fn load_signed(path: &Path, trust: &[X509]) -> Result<Directory, DirectoryError> {
        let der = std::fs::read(path).map_err(|source| DirectoryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Directory::from_signed_p7m(&der, trust)
    }

    /// Reads the directory from its distributed form: a DER PKCS#7 signed-data with the UTF-8 LDIF
    /// attached (RFC 6109 §4.5, §4.5.6). The signer must chain to one of `trust` (any of which
    /// may be the signer's own certificate); the signature is checked at the current time.
    pub fn from_signed_p7m(der: &[u8], trust: &[X509]) -> Result<Directory, DirectoryError> {
        let p7 = Pkcs7::from_der(der).map_err(|e| DirectoryError::P7m {
            message: format!("not a DER PKCS#7 structure: {e}"),
        })?;
        let p7m_err = |what: &str, e: openssl::error::ErrorStack| DirectoryError::P7m {
            message: format!("{what}: {e}"),
        };
        let mut store = X509StoreBuilder::new().map_err(|e| p7m_err("trust store", e))?;
        for cert in trust {
            store
                .add_cert(cert.clone())
                .map_err(|e| p7m_err("trust store", e))?;
        }
        // The trusted certificates are anchors even when not self-signed (a provider certificate).
        store
            .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
            .map_err(|e| p7m_err("trust store", e))?;
        let store = store.build();
        let no_extra = Stack::new().map_err(|e| p7m_err("certificate stack", e))?;
        let mut content = Vec::new();
        p7.verify(
            &no_extra,
            &store,
            None,
            Some(&mut content),
            Pkcs7Flags::BINARY,
        )
        .map_err(|e| DirectoryError::BadSignature {
            message: e.to_string(),
        })?;
        let text = String::from_utf8(content).map_err(|e| DirectoryError::P7m {
            message: format!(
                "the signed LDIF is not UTF-8 (RFC 6109 §4.5.6), invalid byte at offset {}",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Directory::from_ldif(&text)
    }

    /// Writes the directory as its distributed form: DER PKCS#7 signed-data, LDIF attached, the
    /// signer's certificate included (RFC 6109 §4.5).
    pub fn sign_p7m(
        &self,
        key: &PKeyRef<Private>,
        cert: &X509Ref,
    ) -> Result<Vec<u8>, DirectoryError> {
        let err = |e: openssl::error::ErrorStack| DirectoryError::P7m {
            message: format!("signing failed: {e}"),
        };
        let no_extra = Stack::new().map_err(err)?;
        let ldif = self.to_ldif();
        // BINARY: the LDIF bytes are signed as they are, no MIME canonicalisation; no DETACHED:
        // the content is inside the structure.
        let p7 =
            Pkcs7::sign(cert, key, &no_extra, ldif.as_bytes(), Pkcs7Flags::BINARY).map_err(err)?;
        p7.to_der().map_err(err)
    }

    /// The URL of the whole signed directory, from the root entry (RFC 6109 §4.5.6).
    pub fn location_url(&self) -> Option<&str> {
        self.root
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("LDIFLocationURL"))
            .map(|(_, v)| v.as_str())
    }

    /// The provider managing `domain` (case-insensitive).
    pub fn provider_for_domain(&self, domain: &str) -> Option<&ProviderEntry> {
        // RFC 6109 §4.5.5: exact match, caseIgnoreIA5Match; no subdomain matching.
        self.providers.iter().find(|p| p.manages(domain))
    }

    /// True when `address`'s domain is a PEC domain.
    pub fn is_pec_address(&self, address: &str) -> bool {
        address_domain(address).is_some_and(|d| self.provider_for_domain(d).is_some())
    }

    /// `certificato` when `address` is in a PEC domain, else `esterno` (RFC 6109 §2.2.1).
    pub fn tipo_destinatario(&self, address: &str) -> TipoDestinatario {
        if self.is_pec_address(address) {
            TipoDestinatario::Certificato
        } else {
            TipoDestinatario::Esterno
        }
    }

    /// The provider whose certificate hash matches `cert`'s SHA-1.
    pub fn provider_for_certificate(&self, cert: &X509) -> Option<&ProviderEntry> {
        // RFC 6109 §3.2 (signature check at the reception point) and §4.5.1.
        let hash = certificate_hash(cert);
        self.preferring_main(|p| p.has_certificate_hash(&hash))
    }

    /// The `mailReceipt` of the provider that owns `cert` (RFC 6109 §4.5.4): where presa in carico
    /// and rilevazione virus go.
    pub fn mail_receipt_for_certificate(&self, cert: &X509) -> Option<&str> {
        self.provider_for_certificate(cert)
            .map(|p| p.mail_receipt.as_str())
    }

    /// The provider named `name` (`providerName`, caseIgnoreMatch: RFC 6109 §4.5.3); the main
    /// record when secondary environments share the name.
    pub fn provider_by_name(&self, name: &str) -> Option<&ProviderEntry> {
        let name = name.trim();
        self.preferring_main(|p| p.name.trim().to_lowercase() == name.to_lowercase())
    }

    /// The first matching main record (no `providerUnit`), else the first matching one.
    fn preferring_main(&self, pred: impl Fn(&ProviderEntry) -> bool) -> Option<&ProviderEntry> {
        let mut matching = self.providers.iter().filter(|p| pred(p));
        let first = matching.clone().next();
        matching.find(|p| p.provider_unit().is_none()).or(first)
    }

    /// Every certificate in the directory, as trust anchors.
    pub fn trusted_certificates(&self) -> Vec<X509> {
        let mut seen = std::collections::HashSet::new();
        self.providers
            .iter()
            .flat_map(|p| p.certificates.iter())
            .filter(|der| seen.insert(der.as_slice()))
            .filter_map(|der| X509::from_der(der).ok())
            .collect()
    }
}

/// The domain of an address (`local@domain`, optionally in angle brackets).
fn address_domain(address: &str) -> Option<&str> {
    let a = address.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(a);
    let (local, domain) = a.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests;
