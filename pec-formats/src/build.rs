//! Builders for every PEC envelope, receipt and notice (RFC 6109 §3; digest §4–§5).
//!
//! Each builder takes the provider that emits the message, the certification data of the
//! transaction, and what the kind needs; it returns the complete signed message, CRLF line ends,
//! ready to hand to SMTP. One private function, `assemble`, writes the headers, the signed
//! `multipart/mixed` and its parts for every kind; each builder only chooses headers, text and parts.

use crate::daticert::{Data, Dati, Daticert, Destinatario, Intestazione};
use crate::hex;
use crate::kind::{
    self, DATICERT_FILENAME, Errore, Kind, POSTACERT_FILENAME, TimeoutPhase, Tipo,
    TipoDestinatario, TipoRicevuta,
};
use crate::smime::{self, Signer, SmimeError};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};
use std::sync::atomic::{AtomicU64, Ordering};

/// The form of the human-readable part (RFC 6109 §4.3.1): plain text, or `multipart/alternative`
/// with text and HTML (as Namirial 2024 sends). A profile setting, since real providers differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextForm {
    /// `text/plain; charset=ISO-8859-1` only (Aruba 2014).
    #[default]
    Plain,
    /// `multipart/alternative` with `text/plain` and `text/html`, both ISO-8859-1, quoted-printable.
    Alternative,
}

/// Options of a provider's builders (profile settings).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The form of the human-readable part.
    pub text_form: TextForm,
    /// The spelling of the `multipart/signed` wrapper (digest §4.1: RFC 5751, or Aruba/Namirial's
    /// `application/x-pkcs7-signature`).
    pub signature_style: smime::SignatureStyle,
}

/// The provider that emits a message.
pub struct Provider<'a> {
    /// The descriptive name (`gestore-emittente` in daticert, e.g. `ARUBA PEC S.p.A.`).
    pub name: String,
    /// The provider's mail domain (service address `posta-certificata@<domain>`, msgid domain).
    pub domain: String,
    /// The signing identity.
    pub signer: &'a Signer,
    /// Profile options.
    pub options: BuildOptions,
}

impl<'a> Provider<'a> {
    /// A provider with default options.
    pub fn new(name: &str, domain: &str, signer: &'a Signer) -> Provider<'a> {
        Provider {
            name: name.to_string(),
            domain: domain.to_string(),
            signer,
            options: BuildOptions::default(),
        }
    }

    /// The service address, `posta-certificata@<domain>`: From of every notice (RFC 6109 §2.1).
    pub fn service_address(&self) -> String {
        format!("posta-certificata@{}", self.domain)
    }
}

/// The certification data of one transaction: everything a daticert.xml of it carries except
/// `tipo`, `errore`, `consegna`, `ricezione`, `errore-esteso`, which each builder sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certification {
    /// `mittente`: the SMTP reverse-path of the original (RFC 6109 §2.1).
    pub mittente: String,
    /// `destinatari`: every RCPT TO, each certificato or esterno, in RCPT order.
    pub destinatari: Vec<Destinatario>,
    /// `risposte`: the original Reply-To, else the sender.
    pub risposte: String,
    /// `oggetto`: the original Subject, decoded.
    pub oggetto: Option<String>,
    /// `msgid`: the client's Message-ID with angle brackets (`None` if the original had none).
    pub msgid: Option<String>,
    /// `identificativo`: the PEC msgid given by the access point (RFC 6109 §2.2.1).
    pub identificativo: String,
    /// `ricevuta/@tipo`: the receipt type asked by `X-TipoRicevuta` (absent → completa).
    pub ricevuta: TipoRicevuta,
    /// The time of the event the message certifies (printed in Italian legal time).
    pub time: DateTime<Utc>,
}

/// Why a message could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The original message cannot be used (no header section, …); says what.
    #[error("original message: {0}")]
    Original(String),
    /// Signing failed.
    #[error(transparent)]
    Smime(#[from] SmimeError),
}

/// A built message.
#[derive(Debug, Clone)]
pub struct Built {
    /// The whole message, CRLF line ends.
    pub raw: Vec<u8>,
    /// Its own `Message-ID` without angle brackets (for envelopes: the identificativo).
    pub message_id: String,
    /// The daticert.xml it carries (`None` for the anomaly envelope).
    pub daticert: Option<Daticert>,
}

/// The delivery receipt variant for one recipient (RFC 6109 §3.3.2 table; digest §5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptVariant {
    /// The whole original as postacert.eml.
    Completa,
    /// The original with each named attachment replaced by its SHA-1 `.hash` part.
    Breve,
    /// daticert only.
    Sintetica,
}

/// The variant owed to a recipient: Cc recipients always get sintetica; primary (To, or ambiguous)
/// recipients get what the sender asked for (RFC 6109 §3.3.2.1–3).
pub fn receipt_variant(requested: TipoRicevuta, primary: bool) -> ReceiptVariant {
    match (requested, primary) {
        (_, false) | (TipoRicevuta::Sintetica, true) => ReceiptVariant::Sintetica,
        (TipoRicevuta::Completa, true) => ReceiptVariant::Completa,
        (TipoRicevuta::Breve, true) => ReceiptVariant::Breve,
    }
}

// ---------------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------------

/// A per-process counter, so two identifiers made in the same millisecond never collide even if
/// the random source failed.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<ms-timestamp>.<counter><random hex>`: letters, digits and dots only (RFC 6109 §2.2.1).
fn unique_local_part() -> String {
    let ms = Utc::now().timestamp_millis();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{ms}.{n:04x}{}", random_hex(8))
}

/// `n` random bytes as lower-case hex (OpenSSL's CSPRNG; a time-derived fallback never panics).
fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if openssl::rand::rand_bytes(&mut buf).is_err() {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    hex(&buf)
}

/// A new identificativo `<alnum and dots>@<domain>`, unique (RFC 6109 §2.2.1).
/// Shape `opec<ms-timestamp>.<hex>@<domain>`, modelled on Aruba's `opec275.…@pec.aruba.it`;
/// consumers must treat it as opaque (digest §4.4).
pub fn new_identificativo(domain: &str) -> String {
    format!("opec{}@{domain}", unique_local_part())
}

/// A new Message-ID (without angle brackets) for a notice of `domain`. Always different from
/// every identificativo: notices carry their own Message-ID (digest §4.4).
pub fn new_message_id(domain: &str) -> String {
    format!("ric{}@{domain}", unique_local_part())
}

// ---------------------------------------------------------------------------------------------
// Reading the original: raw header fields (copied byte for byte) and parsed values
// ---------------------------------------------------------------------------------------------

/// One header field of a message as written: its name and its whole text (folded lines
/// included, CRLF-terminated).
struct RawField {
    name: String,
    raw: Vec<u8>,
}

impl RawField {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value unfolded and trimmed (`Message-ID: <a@b>` → `<a@b>`).
    fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let v = text.split_once(':').map(|(_, v)| v).unwrap_or("");
        v.replace("\r\n", "").replace('\n', "").trim().to_string()
    }
}

/// `msg` with every line ending CRLF (a bare LF becomes CRLF; CRLF is left alone): what SMTP
/// carries and what the signature covers.
fn to_crlf(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 40);
    for (i, &b) in msg.iter().enumerate() {
        if b == b'\n' && (i == 0 || msg[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Splits a CRLF message into its header fields and the offset of its body (after the blank
/// line; the end of the input when there is no body). Errors name what is wrong.
fn split_header(msg: &[u8]) -> Result<(Vec<RawField>, usize), BuildError> {
    let mut fields: Vec<RawField> = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < msg.len() {
        line_no += 1;
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(msg.len());
        let line = &msg[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return nonempty(fields, end);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some(f) => f.raw.extend_from_slice(line),
                None => {
                    return Err(BuildError::Original(
                        "the first line is a continuation line, not a header field".into(),
                    ));
                }
            }
        } else {
            let colon = line.iter().position(|&b| b == b':');
            let name = colon.map(|c| &line[..c]).filter(|n| {
                !n.is_empty() && n.iter().all(|&b| (33..=126).contains(&b) && b != b':')
            });
            match name {
                Some(n) => fields.push(RawField {
                    name: String::from_utf8_lossy(n).into_owned(),
                    raw: line.to_vec(),
                }),
                None => {
                    return Err(BuildError::Original(format!(
                        "line {line_no} of the header section is not a header field"
                    )));
                }
            }
        }
        pos = end;
    }
    // A message without a body: the header section runs to the end.
    if let Some(f) = fields.last_mut()
        && !f.raw.ends_with(b"\n")
    {
        f.raw.extend_from_slice(b"\r\n");
    }
    nonempty(fields, msg.len())
}

fn nonempty(fields: Vec<RawField>, body: usize) -> Result<(Vec<RawField>, usize), BuildError> {
    if fields.is_empty() {
        return Err(BuildError::Original("no header section".into()));
    }
    Ok((fields, body))
}

fn parse(msg: &[u8]) -> Result<Message<'_>, BuildError> {
    MessageParser::default()
        .parse(msg)
        .ok_or_else(|| BuildError::Original("not a parseable RFC 5322 message".into()))
}

/// Every address of the given address headers, lower-cased.
fn addresses<'a, 'x: 'a>(list: impl Iterator<Item = &'a Address<'x>>) -> Vec<String> {
    list.flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// The bare address inside `<…>` of a path such as `<a@b>` (Return-Path, MAIL FROM).
fn strip_angles(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(t)
}

/// True when `rcpt` is in the original's To (or in neither To nor Cc: ambiguous counts as primary,
/// RFC 6109 §3.3.2.1); false when it is only in Cc.
pub fn is_primary_recipient(original: &[u8], rcpt: &str) -> bool {
    let Ok(msg) = parse(original) else {
        return true; // unreadable headers: ambiguous, so primary (RFC 6109 §3.3.2.1)
    };
    let rcpt = strip_angles(rcpt).to_ascii_lowercase();
    if addresses(msg.all_to()).contains(&rcpt) {
        return true;
    }
    !addresses(msg.all_cc()).contains(&rcpt)
}

/// The original as postacert.eml carries it: its Message-ID replaced by `<identificativo>`, the
/// client's Message-ID moved to `X-Riferimento-Message-ID` (RFC 6109 §2.2.1); nothing else changed.
/// Bare LF line ends become CRLF (the wire form). An `X-Riferimento-Message-ID` the client wrote
/// itself is dropped: only the access point sets it (RFC 6109 §2.1.1.1). Without an original
/// Message-ID, `Message-ID: <identificativo>` is appended to the header section.
pub fn postacert_original(original: &[u8], identificativo: &str) -> Result<Vec<u8>, BuildError> {
    let msg = to_crlf(original);
    let (fields, body) = split_header(&msg)?;
    let mut out = Vec::with_capacity(msg.len() + 128);
    let new_id = format!("Message-ID: <{identificativo}>\r\n");
    let mut swapped = false;
    for f in &fields {
        if f.is("Message-ID") && !swapped {
            out.extend_from_slice(new_id.as_bytes());
            out.extend_from_slice(
                format!("{}: {}\r\n", kind::X_RIFERIMENTO_MESSAGE_ID, f.value()).as_bytes(),
            );
            swapped = true;
        } else if f.is("Message-ID") || f.is(kind::X_RIFERIMENTO_MESSAGE_ID) {
            // A second Message-ID, or a client-set reference: dropped (RFC 6109 §2.2.1).
        } else {
            out.extend_from_slice(&f.raw);
        }
    }
    if !swapped {
        out.extend_from_slice(new_id.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&msg[body..]);
    Ok(out)
}

impl Certification {
    /// The certification data of a submission accepted at the access point: sender from MAIL FROM,
    /// recipients from RCPT TO with their kind from `kind_of`, the rest from the original's headers.
    pub fn from_submission(
        original: &[u8],
        mail_from: &str,
        rcpts: &[String],
        kind_of: &dyn Fn(&str) -> TipoDestinatario,
        identificativo: String,
        time: DateTime<Utc>,
    ) -> Result<Certification, BuildError> {
        let msg = to_crlf(original);
        let (fields, _) = split_header(&msg)?;
        if rcpts.is_empty() {
            return Err(BuildError::Original("no RCPT TO recipient".into()));
        }
        let parsed = parse(&msg)?;
        let mittente = strip_angles(mail_from).to_string();
        // digest §6.1: `risposte` = the original Reply-To, else the sender (the DTD requires it).
        let risposte = parsed
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string)
            .unwrap_or_else(|| mittente.clone());
        // RFC 6109 §3.1.5: X-TipoRicevuta from the original; absent (or unknown) → completa.
        let ricevuta = fields
            .iter()
            .find(|f| f.is(kind::X_TIPO_RICEVUTA))
            .and_then(|f| f.value().parse::<TipoRicevuta>().ok())
            .unwrap_or(TipoRicevuta::Completa);
        Ok(Certification {
            mittente,
            // RFC 6109 §2.1: recipients from the SMTP envelope, in RCPT order.
            destinatari: rcpts
                .iter()
                .map(|r| {
                    let a = strip_angles(r);
                    Destinatario {
                        tipo: kind_of(a),
                        indirizzo: a.to_string(),
                    }
                })
                .collect(),
            risposte,
            oggetto: parsed.subject().map(str::to_string),
            msgid: fields
                .iter()
                .find(|f| f.is("Message-ID"))
                .map(|f| f.value())
                .filter(|v| !v.is_empty()),
            identificativo,
            ricevuta,
            time,
        })
    }

    /// The certification data carried by a received daticert (at the reception and delivery points),
    /// with `time` the time of the new event.
    pub fn from_daticert(d: &Daticert, time: DateTime<Utc>) -> Certification {
        Certification {
            mittente: d.intestazione.mittente.clone(),
            destinatari: d.intestazione.destinatari.clone(),
            risposte: d.intestazione.risposte.clone(),
            oggetto: d.intestazione.oggetto.clone(),
            msgid: d.dati.msgid.clone(),
            identificativo: d.dati.identificativo.clone(),
            ricevuta: d.dati.ricevuta.unwrap_or(TipoRicevuta::Completa),
            time,
        }
    }

    /// The daticert of this transaction for `tipo`/`errore`, without the per-kind elements.
    fn daticert(&self, p: &Provider<'_>, tipo: Tipo, errore: Errore) -> Daticert {
        Daticert {
            tipo,
            errore,
            intestazione: Intestazione {
                mittente: self.mittente.clone(),
                destinatari: self.destinatari.clone(),
                risposte: self.risposte.clone(),
                oggetto: self.oggetto.clone(),
            },
            dati: Dati {
                gestore_emittente: p.name.clone(),
                data: data_of(self.time),
                identificativo: self.identificativo.clone(),
                msgid: self.msgid.clone(),
                ricevuta: None,
                consegna: None,
                ricezione: Vec::new(),
                errore_esteso: None,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time as PEC prints it
// ---------------------------------------------------------------------------------------------

/// `<data zona="+0100"><giorno>gg/mm/aaaa</giorno><ora>hh:mm:ss</ora></data>` (RFC 6109 §4.4).
fn data_of(t: DateTime<Utc>) -> Data {
    Data::from_instant(t)
}

/// The `Date:` header: the event time in Italian legal time, RFC 5322 form (digest §5, §10).
fn rfc5322_date(t: DateTime<Utc>) -> String {
    crate::time::rfc5322_date(t)
}

/// `Il giorno 14/11/2014 alle ore 18:26:32 (+0100)`, as the real texts say it (digest §5.1).
fn text_time(t: DateTime<Utc>) -> String {
    format!("Il giorno {}", crate::time::text_time(t))
}

// ---------------------------------------------------------------------------------------------
// Header writing: folding and RFC 2047
// ---------------------------------------------------------------------------------------------

/// `Name: value` CRLF, folded at spaces so lines stay within 78 characters where the value
/// allows (RFC 5322 §2.2.3); a value with non-ASCII becomes RFC 2047 UTF-8 encoded-words.
fn header(name: &str, value: &str) -> Vec<u8> {
    let value = value.replace(['\r', '\n'], " ");
    // RFC 2047 §5(1): the ASCII words before the first non-ASCII one stay literal (so the
    // subject prefix is readable as is), the rest becomes encoded-words. In Subject a literal
    // word that contains `=?` could read as an encoded-word and be decoded by the recipient
    // (RFC 2047 §6.1), changing the oggetto: from it on, the text is encoded too.
    let looks_encoded = |w: &str| name.eq_ignore_ascii_case("Subject") && w.contains("=?");
    let value = match value
        .split(' ')
        .position(|w| !w.is_ascii() || looks_encoded(w))
    {
        None => value,
        Some(first) => {
            let words: Vec<&str> = value.split(' ').collect();
            let literal = words[..first].join(" ");
            let encoded = encoded_words(&words[first..].join(" "));
            if literal.is_empty() {
                encoded
            } else {
                format!("{literal} {encoded}")
            }
        }
    };
    let mut out = String::with_capacity(name.len() + value.len() + 8);
    out.push_str(name);
    out.push(':');
    let mut line_len = out.len();
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 && !word.is_empty() && line_len + 1 + word.len() > 78 && line_len > name.len() + 1
        {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// RFC 2047 `=?UTF-8?B?…?=` words of at most 36 bytes (60 characters encoded, so `Subject: ` and
/// one word fit in 78) of text each, split on char boundaries.
fn encoded_words(value: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in value.chars() {
        if chunk.len() + ch.len_utf8() > 36 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(ch);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `"display"` as an RFC 5322 quoted-string.
fn quoted(display: &str) -> String {
    let escaped = display.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// A MIME parameter `name="value"`, RFC 2231 `name*=UTF-8''…` when the value is not ASCII.
fn mime_param(name: &str, value: &str) -> String {
    if value.is_ascii() && !value.contains(['\r', '\n']) {
        return format!("{name}={}", quoted(value));
    }
    let enc: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{name}*=UTF-8''{enc}")
}

// ---------------------------------------------------------------------------------------------
// Body encodings
// ---------------------------------------------------------------------------------------------

/// The text in ISO-8859-1 (RFC 6109 §4.3.1); a character outside it becomes `?`.
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// Quoted-printable (RFC 2045 §6.7), lines of at most 76 characters, CRLF line ends.
fn quoted_printable(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 11 / 10);
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    for (n, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut len = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let printable = (b'!'..=b'~').contains(&b) && b != b'=';
            let blank = (b == b' ' || b == b'\t') && !last; // trailing blanks are encoded
            let literal = printable || blank;
            let piece = if literal {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            // A soft break keeps every line within 76 characters, the `=` included.
            let room = if last { 76 } else { 75 };
            if len + piece.len() > room {
                out.extend_from_slice(b"=\r\n");
                len = 0;
            }
            out.extend_from_slice(&piece);
            len += piece.len();
        }
        if n + 1 < lines.len() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Base64 in lines of 76 characters, CRLF line ends (RFC 2045 §6.8).
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(b64.len() + b64.len() / 38 + 2);
    for chunk in b64.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------------------------------------
// MIME parts and the shared assembler
// ---------------------------------------------------------------------------------------------

/// A new boundary that occurs in none of `contents`.
fn boundary(contents: &[&[u8]]) -> String {
    loop {
        let b = format!("----=_PEC_{}", random_hex(12));
        if !contents
            .iter()
            .any(|c| c.windows(b.len()).any(|w| w == b.as_bytes()))
        {
            return b;
        }
    }
}

/// A multipart body: preamble, each part between delimiters, the close delimiter.
fn multipart(boundary: &str, preamble: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    if !preamble.is_empty() {
        out.extend_from_slice(preamble.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for part in parts {
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// `text/plain` (or `text/html`), ISO-8859-1, quoted-printable (RFC 6109 §4.3.1).
fn text_part(subtype: &str, text: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(
        format!("Content-Type: text/{subtype}; charset=\"iso-8859-1\"\r\n").as_bytes(),
    );
    p.extend_from_slice(b"Content-Disposition: inline\r\n");
    p.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    p.extend_from_slice(&quoted_printable(&latin1(text)));
    p
}

/// The human-readable part in the provider's [`TextForm`] (RFC 6109 §4.3.1): the HTML says the
/// same as the text, references no resource and has no active content.
fn readable_part(form: TextForm, text: &str) -> Vec<u8> {
    match form {
        TextForm::Plain => text_part("plain", text),
        TextForm::Alternative => {
            let mut html = String::from(
                "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"></head><body>\n",
            );
            for line in text.lines() {
                html.push_str(&html_escape(line));
                html.push_str("<br>\n");
            }
            html.push_str("</body></html>\n");
            let plain = text_part("plain", text);
            let html = text_part("html", &html);
            let b = boundary(&[plain.as_slice(), html.as_slice()]);
            let mut p = format!("Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n")
                .into_bytes();
            p.extend_from_slice(&multipart(&b, "", &[plain, html]));
            p
        }
    }
}

/// `daticert.xml`: `application/xml`, inline, base64 (RFC 6109 §4.3.3; real samples).
fn daticert_part(d: &Daticert) -> Vec<u8> {
    let mut p = format!(
        "Content-Type: application/xml; name=\"{DATICERT_FILENAME}\"\r\n\
         Content-Disposition: inline; filename=\"{DATICERT_FILENAME}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    p.extend_from_slice(&base64_lines(d.to_xml().as_bytes()));
    p
}

/// `postacert.eml`: `message/rfc822`, inline, carried unchanged (RFC 6109 §4.3.2): 7bit, or 8bit
/// when it holds 8-bit bytes (no PEC hop may re-encode it, RFC 6109 §5.3).
fn postacert_part(original: &[u8]) -> Vec<u8> {
    let cte = if original.is_ascii() { "7bit" } else { "8bit" };
    let mut p = format!(
        "Content-Type: message/rfc822; name=\"{POSTACERT_FILENAME}\"\r\n\
         Content-Disposition: inline; filename=\"{POSTACERT_FILENAME}\"\r\n\
         Content-Transfer-Encoding: {cte}\r\n\r\n"
    )
    .into_bytes();
    p.extend_from_slice(original);
    p
}

/// What one message is made of.
struct Parts<'a> {
    /// The top-level header fields, each complete with CRLF, in order (without MIME-Version and
    /// Content-Type, which the assembler adds).
    headers: Vec<Vec<u8>>,
    /// The human-readable text.
    text: String,
    /// The daticert.xml (absent only on the anomaly envelope, RFC 6109 §3.2.2).
    daticert: Option<Daticert>,
    /// The message carried as postacert.eml, CRLF line ends.
    original: Option<&'a [u8]>,
    /// The message's own Message-ID, without brackets.
    message_id: String,
}

/// The one assembler: `multipart/signed` over `multipart/mixed` with text, daticert.xml,
/// postacert.eml in the real order (digest §4.1, §4.3), signed with the provider's key.
fn assemble(p: &Provider<'_>, parts: Parts<'_>) -> Result<Built, BuildError> {
    let mut children = vec![readable_part(p.options.text_form, &parts.text)];
    if let Some(d) = &parts.daticert {
        children.push(daticert_part(d));
    }
    if let Some(o) = parts.original {
        children.push(postacert_part(o));
    }
    let refs: Vec<&[u8]> = children.iter().map(Vec::as_slice).collect();
    let b = boundary(&refs);
    let mut inner = header(
        "Content-Type",
        &format!("multipart/mixed; boundary=\"{b}\""),
    );
    inner.extend_from_slice(b"\r\n");
    inner.extend_from_slice(&multipart(
        &b,
        "This is a multi-part message in MIME format.",
        &children,
    ));
    // RFC 6109 §2.1, §4.1: S/MIME multipart/signed, the signer certificate embedded.
    let opts = smime::SignOptions {
        style: p.options.signature_style,
        signing_time: None,
    };
    let signed = smime::sign_with(p.signer, &inner, &opts)?;
    let mut raw = Vec::with_capacity(signed.body.len() + 2048);
    for h in &parts.headers {
        raw.extend_from_slice(h);
    }
    raw.extend_from_slice(b"MIME-Version: 1.0\r\n");
    raw.extend_from_slice(&header("Content-Type", &signed.content_type));
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(&signed.body);
    Ok(Built {
        raw,
        message_id: parts.message_id,
        daticert: parts.daticert,
    })
}

// ---------------------------------------------------------------------------------------------
// Texts (Italian, modelled on the real Aruba and Namirial ones; digest §5)
// ---------------------------------------------------------------------------------------------

fn oggetto(c: &Certification) -> &str {
    c.oggetto.as_deref().unwrap_or("")
}

/// `<address> ("posta certificata"|"posta ordinaria")` per recipient (digest §5.2).
fn recipients_with_kind(c: &Certification) -> String {
    c.destinatari
        .iter()
        .map(|d| {
            let k = match d.tipo {
                TipoDestinatario::Certificato => "posta certificata",
                TipoDestinatario::Esterno => "posta ordinaria",
            };
            format!("{} (\"{k}\")\n", d.indirizzo)
        })
        .collect()
}

/// The opening common to the notices: when, which message, from whom, to whom.
fn intro(c: &Certification, verb: &str, to: &str) -> String {
    format!(
        "{} {verb} con Oggetto\n\"{}\" inviato da \"{}\"\n{to}",
        text_time(c.time),
        oggetto(c),
        c.mittente
    )
}

fn to_one(rcpt: &str) -> String {
    format!("ed indirizzato a \"{rcpt}\"\n")
}

fn to_all(c: &Certification) -> String {
    format!("ed indirizzato a:\n{}", recipients_with_kind(c))
}

fn identificativo_line(c: &Certification) -> String {
    format!("Identificativo del messaggio: {}\n", c.identificativo)
}

const DATICERT_LINE: &str =
    "L'allegato daticert.xml contiene informazioni di servizio sulla trasmissione.\n";

// ---------------------------------------------------------------------------------------------
// Headers shared by kinds
// ---------------------------------------------------------------------------------------------

/// `Subject: <prefix><subject>`; prefixes are never stripped (digest §5.1, §5.12).
fn subject(kind: Kind, original: &str) -> Vec<u8> {
    header("Subject", &format!("{}{original}", kind.subject_prefix()))
}

/// `From: "Per conto di: <sender>" <posta-certificata@<dom>>` (RFC 6109 §2.1; digest §4.2).
fn per_conto_di(p: &Provider<'_>, sender: &str) -> Vec<u8> {
    header(
        "From",
        &format!(
            "{} <{}>",
            quoted(&format!("Per conto di: {sender}")),
            p.service_address()
        ),
    )
}

/// `To:` a bare address; the null reverse-path gets an empty group (RFC 5322 §3.4).
fn to_header(to: &str) -> Vec<u8> {
    let to = strip_angles(to);
    if to.is_empty() {
        header("To", "undisclosed-recipients:;")
    } else {
        header("To", to)
    }
}

/// What a receipt or notice adds to the common headers.
struct Notice<'a> {
    kind: Kind,
    /// The `To:` address.
    to: &'a str,
    /// Kind-specific header fields (`X-Mittente`).
    extra: Vec<Vec<u8>>,
    text: String,
    daticert: Daticert,
    original: Option<&'a [u8]>,
}

/// A receipt or notice: headers of digest §5.2–§5.11 (`From` = service address, `To` = `to`,
/// own Message-ID, `X-Ricevuta`, `X-Riferimento-Message-ID`, `X-VerificaSicurezza` on the two
/// virus notices), then the shared assembler.
fn notice(p: &Provider<'_>, c: &Certification, n: Notice<'_>) -> Result<Built, BuildError> {
    let Notice {
        kind,
        to,
        extra,
        text,
        daticert,
        original,
    } = n;
    let message_id = new_message_id(&p.domain);
    let mut headers = vec![
        header("Date", &rfc5322_date(c.time)),
        subject(kind, oggetto(c)),
        header("From", &p.service_address()),
        to_header(to),
        header("Message-ID", &format!("<{message_id}>")),
    ];
    if let Some(r) = kind.x_ricevuta() {
        headers.push(header(kind::X_RICEVUTA, r.as_str())); // RFC 6109 Appendix A
    }
    if kind.verifica_sicurezza() {
        // RFC 6109 §3.1.3, §3.2.4
        headers.push(header(
            kind::X_VERIFICA_SICUREZZA,
            kind::VERIFICA_SICUREZZA_ERRORE,
        ));
    }
    headers.extend(extra);
    if let Some(m) = &c.msgid {
        headers.push(header(kind::X_RIFERIMENTO_MESSAGE_ID, m)); // RFC 6109 §2.1.1.1
    }
    assemble(
        p,
        Parts {
            headers,
            text,
            daticert: Some(daticert),
            original,
            message_id,
        },
    )
}

/// The raw header fields of `fields` named `names`, in their original order.
fn copied(fields: &[RawField], names: &[&str]) -> Vec<Vec<u8>> {
    fields
        .iter()
        .filter(|f| names.iter().any(|n| f.is(n)))
        .map(|f| f.raw.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The eleven kinds
// ---------------------------------------------------------------------------------------------

/// Busta di trasporto (RFC 6109 §3.1.5): From "Per conto di", the original's To/Cc/Received/
/// Return-Path/Reply-To copied, Message-ID = identificativo, the original (msgid swapped) inside.
pub fn busta_trasporto(
    p: &Provider<'_>,
    c: &Certification,
    original: &[u8],
) -> Result<Built, BuildError> {
    let original = to_crlf(original);
    let (fields, _) = split_header(&original)?;
    let inner = postacert_original(&original, &c.identificativo)?;
    // RFC 6109 §3.1.5: trace fields copied unchanged, first as in the real envelopes.
    let mut headers = copied(&fields, &["Return-Path", "Received"]);
    headers.push(header(
        kind::X_TRASPORTO,
        kind::Trasporto::PostaCertificata.as_str(),
    ));
    headers.push(header("Date", &rfc5322_date(c.time)));
    headers.push(subject(Kind::BustaTrasporto, oggetto(c)));
    headers.push(per_conto_di(p, &c.mittente));
    let reply_to = copied(&fields, &["Reply-To"]);
    if reply_to.is_empty() {
        headers.push(header("Reply-To", &c.mittente)); // inserted only if not present
    } else {
        headers.extend(reply_to);
    }
    headers.push(header("Message-ID", &format!("<{}>", c.identificativo)));
    if let Some(m) = &c.msgid {
        headers.push(header(kind::X_RIFERIMENTO_MESSAGE_ID, m));
    }
    headers.push(header(kind::X_TIPO_RICEVUTA, c.ricevuta.as_str()));
    headers.extend(copied(&fields, &["To", "Cc"]));

    let mut d = c.daticert(p, Tipo::PostaCertificata, Errore::Nessuno);
    d.dati.ricevuta = Some(c.ricevuta); // digest §6.2
    let rcpts: String = c
        .destinatari
        .iter()
        .map(|d| format!("{}\n", d.indirizzo))
        .collect();
    let text = format!(
        "--Questo è un Messaggio di Posta Certificata--\n\n\
         {} il messaggio con Oggetto\n\"{}\" è stato inviato dal mittente \"{}\"\n\
         e indirizzato a:\n{rcpts}\
         Il messaggio originale è incluso in allegato, per aprirlo cliccare sul file \"postacert.eml\".\n\
         {DATICERT_LINE}\
         L'identificativo univoco di questo messaggio è: {}\n",
        text_time(c.time),
        oggetto(c),
        c.mittente,
        c.identificativo
    );
    assemble(
        p,
        Parts {
            headers,
            text,
            daticert: Some(d),
            original: Some(&inner),
            message_id: c.identificativo.clone(),
        },
    )
}

/// Ricevuta di accettazione (RFC 6109 §3.1.4), to the sender.
pub fn accettazione(p: &Provider<'_>, c: &Certification) -> Result<Built, BuildError> {
    // digest §6.2: Aruba's accettazione has no <ricevuta> and no <consegna>.
    let d = c.daticert(p, Tipo::Accettazione, Errore::Nessuno);
    let text = format!(
        "-- Ricevuta di accettazione --\n\n{}è stato accettato dal sistema ed inoltrato.\n{}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_all(c)),
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::Accettazione,
            to: &c.mittente,
            extra: vec![],
            text,
            daticert: d,
            original: None,
        },
    )
}

/// Avviso di non accettazione per eccezioni formali (RFC 6109 §3.1.2), to the sender; `errore="altro"`
/// and `errore-esteso` = `reason`; the text names the reason. Never the original.
pub fn non_accettazione(
    p: &Provider<'_>,
    c: &Certification,
    reason: &str,
) -> Result<Built, BuildError> {
    let mut d = c.daticert(p, Tipo::NonAccettazione, Errore::Altro);
    d.dati.errore_esteso = Some(reason.to_string());
    let text = format!(
        "-- Avviso di non accettazione --\n\n{}non è stato accettato dal sistema a causa del seguente errore:\n{reason}\n{}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_all(c)),
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::NonAccettazione,
            to: &c.mittente,
            extra: vec![],
            text,
            daticert: d,
            original: None,
        },
    )
}

/// Avviso di non accettazione per virus (RFC 6109 §3.1.3): `X-VerificaSicurezza: errore`,
/// `errore="virus"`, the text names `virus`.
pub fn non_accettazione_virus(
    p: &Provider<'_>,
    c: &Certification,
    virus: &str,
) -> Result<Built, BuildError> {
    let mut d = c.daticert(p, Tipo::NonAccettazione, Errore::Virus);
    d.dati.errore_esteso = Some(format!("virus: {virus}"));
    let text = format!(
        "-- Avviso di non accettazione per virus --\n\n{}contiene un problema di sicurezza: è stato rilevato il virus \"{virus}\".\n\
         Il messaggio non è stato accettato.\n{}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_all(c)),
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::NonAccettazioneVirus,
            to: &c.mittente,
            extra: vec![],
            text,
            daticert: d,
            original: None,
        },
    )
}

/// Ricevuta di presa in carico (RFC 6109 §3.2.1), to `to` (the sending provider's receipt mailbox);
/// `ricezione` = the recipients it covers.
pub fn presa_in_carico(
    p: &Provider<'_>,
    c: &Certification,
    ricezione: &[String],
    to: &str,
) -> Result<Built, BuildError> {
    let mut d = c.daticert(p, Tipo::PresaInCarico, Errore::Nessuno);
    d.dati.ricezione = ricezione.to_vec();
    let covered: String = ricezione.iter().map(|r| format!("{r}\n")).collect();
    let text = format!(
        "-- Ricevuta di presa in carico --\n\n{}è stato preso in carico dal gestore \"{}\" per i destinatari:\n{covered}{}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_all(c)),
        p.name,
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::PresaInCarico,
            to,
            extra: vec![],
            text,
            daticert: d,
            original: None,
        },
    )
}

/// Busta di anomalia (RFC 6109 §3.2.2): the received message as the only extra part; Received/To/
/// Cc/Return-Path/Message-ID copied; `reason` in the text. `time` is the arrival time.
pub fn busta_anomalia(
    p: &Provider<'_>,
    received: &[u8],
    reason: &str,
    time: DateTime<Utc>,
) -> Result<Built, BuildError> {
    let received = to_crlf(received);
    let (fields, _) = split_header(&received)?;
    let parsed = parse(&received)?;
    // The original sender: From, else the reverse-path in Return-Path.
    let sender = parsed
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_string)
        .or_else(|| {
            fields
                .iter()
                .find(|f| f.is("Return-Path"))
                .map(|f| strip_angles(&f.value()).to_string())
        })
        .unwrap_or_default();
    let subj = parsed.subject().unwrap_or("").to_string();
    let mut rcpts = addresses(parsed.all_to());
    rcpts.extend(addresses(parsed.all_cc()));

    // RFC 6109 §3.2.2: Received/To/Cc/Return-Path/Message-ID inherited unmodified.
    let mut headers = copied(&fields, &["Return-Path", "Received"]);
    headers.push(header(kind::X_TRASPORTO, kind::Trasporto::Errore.as_str()));
    headers.push(header("Date", &rfc5322_date(time)));
    headers.push(subject(Kind::BustaAnomalia, &subj));
    headers.push(per_conto_di(p, &sender));
    let reply_to = copied(&fields, &["Reply-To"]);
    if reply_to.is_empty() {
        headers.push(header("Reply-To", &sender)); // inserted only if not present
    } else {
        headers.extend(reply_to);
    }
    let message_id = match fields.iter().find(|f| f.is("Message-ID")) {
        Some(f) => {
            headers.push(f.raw.clone());
            strip_angles(&f.value()).to_string()
        }
        None => {
            // No Message-ID to inherit: the envelope still needs one (RFC 5322 §3.6.4).
            let id = new_message_id(&p.domain);
            headers.push(header("Message-ID", &format!("<{id}>")));
            id
        }
    };
    headers.extend(copied(&fields, &["To", "Cc"]));
    let list: String = rcpts.iter().map(|r| format!("{r}\n")).collect();
    let text = format!(
        "-- Anomalia nel messaggio --\n\n{} è stato ricevuto\nil messaggio \"{subj}\" proveniente da \"{sender}\"\n\
         ed indirizzato a:\n{list}\
         Tali dati non sono stati certificati per il seguente errore:\n{reason}\n\
         Il messaggio originale è incluso in allegato.\n",
        text_time(time)
    );
    assemble(
        p,
        Parts {
            headers,
            text,
            daticert: None, // RFC 6109 §3.2.2: no other MIME part
            original: Some(&received),
            message_id,
        },
    )
}

/// Avviso di rilevazione virus (RFC 6109 §3.2.3), one per recipient, to `to` (the sending provider's
/// receipt mailbox); `X-Mittente` = the original sender.
pub fn rilevazione_virus(
    p: &Provider<'_>,
    c: &Certification,
    rcpt: &str,
    virus: &str,
    to: &str,
) -> Result<Built, BuildError> {
    let mut d = c.daticert(p, Tipo::RilevazioneVirus, Errore::Virus);
    d.dati.consegna = Some(rcpt.to_string()); // digest §6.1 [ANALYSIS]
    d.dati.errore_esteso = Some(format!("virus: {virus}"));
    let text = format!(
        "-- Avviso di rilevazione virus --\n\n{}contiene un problema di sicurezza: è stato rilevato il virus \"{virus}\".\n\
         Il messaggio non è stato consegnato.\n{}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_one(rcpt)),
        identificativo_line(c)
    );
    let extra = vec![header(kind::X_MITTENTE, &c.mittente)]; // RFC 6109 §3.2.3
    notice(
        p,
        c,
        Notice {
            kind: Kind::RilevazioneVirus,
            to,
            extra,
            text,
            daticert: d,
            original: None,
        },
    )
}

/// Avviso di mancata consegna per virus (RFC 6109 §3.2.4), built by the sender's provider from a
/// rilevazione virus, to the sender.
pub fn mancata_consegna_virus(
    p: &Provider<'_>,
    c: &Certification,
    rcpt: &str,
    virus: &str,
) -> Result<Built, BuildError> {
    let mut d = c.daticert(p, Tipo::ErroreConsegna, Errore::Virus);
    d.dati.consegna = Some(rcpt.to_string());
    d.dati.errore_esteso = Some(format!("virus: {virus}"));
    let text = format!(
        "-- Avviso di mancata consegna per virus --\n\n{}contiene un problema di sicurezza: è stato rilevato il virus \"{virus}\".\n\
         Il messaggio non è stato consegnato.\n{}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_one(rcpt)),
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::MancataConsegnaVirus,
            to: &c.mittente,
            extra: vec![],
            text,
            daticert: d,
            original: None,
        },
    )
}

/// Ricevuta di avvenuta consegna (RFC 6109 §3.3.2) for `rcpt`, to the sender, of `variant`;
/// `envelope_original` is the postacert.eml of the transport envelope (needed for completa/breve).
pub fn avvenuta_consegna(
    p: &Provider<'_>,
    c: &Certification,
    rcpt: &str,
    variant: ReceiptVariant,
    envelope_original: Option<&[u8]>,
) -> Result<Built, BuildError> {
    let (tipo, carried, note) = match variant {
        ReceiptVariant::Completa => (
            TipoRicevuta::Completa,
            Some(to_crlf(need_original(envelope_original)?)),
            "Il messaggio originale è incluso in allegato (file \"postacert.eml\").\n",
        ),
        ReceiptVariant::Breve => (
            TipoRicevuta::Breve,
            Some(breve_original(need_original(envelope_original)?)?),
            "Il messaggio originale è incluso in allegato (file \"postacert.eml\"); ciascun suo \
             allegato è sostituito dal file \"<nome>.hash\" con la sua impronta SHA-1.\n",
        ),
        ReceiptVariant::Sintetica => (TipoRicevuta::Sintetica, None, ""),
    };
    let mut d = c.daticert(p, Tipo::AvvenutaConsegna, Errore::Nessuno);
    d.dati.ricevuta = Some(tipo); // digest §5.9: ricevuta and consegna kept
    d.dati.consegna = Some(rcpt.to_string());
    let text = format!(
        "-- Ricevuta di avvenuta consegna del messaggio indirizzato a {rcpt} --\n\n{}\
         è stato correttamente consegnato al destinatario.\n{}{note}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_one(rcpt)),
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::AvvenutaConsegna,
            to: &c.mittente,
            extra: vec![],
            text,
            daticert: d,
            original: carried.as_deref(),
        },
    )
}

fn need_original(o: Option<&[u8]>) -> Result<&[u8], BuildError> {
    o.ok_or_else(|| {
        BuildError::Original(
            "a completa or breve receipt needs the envelope's postacert.eml, none given".into(),
        )
    })
}

/// Avviso di mancata consegna (RFC 6109 §3.3.3) for `rcpt`, to the sender.
pub fn mancata_consegna(
    p: &Provider<'_>,
    c: &Certification,
    rcpt: &str,
    errore: Errore,
    errore_esteso: &str,
) -> Result<Built, BuildError> {
    let mut d = c.daticert(p, Tipo::ErroreConsegna, errore);
    d.dati.consegna = Some(rcpt.to_string()); // digest §6.2
    d.dati.errore_esteso = Some(errore_esteso.to_string());
    let text = format!(
        "-- Avviso di mancata consegna --\n\n{}non è stato consegnato: è stato rilevato il seguente errore:\n{errore_esteso}\n\
         Il messaggio è stato rifiutato dal sistema.\n{}{DATICERT_LINE}",
        intro(c, "il messaggio", &to_one(rcpt)),
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::MancataConsegna,
            to: &c.mittente,
            extra: vec![],
            text,
            daticert: d,
            original: None,
        },
    )
}

/// Avviso di mancata consegna per superamento dei tempi massimi (RFC 6109 §3.1.6), 12h or 24h, for
/// `rcpt`, to the sender.
pub fn mancata_consegna_timeout(
    p: &Provider<'_>,
    c: &Certification,
    rcpt: &str,
    phase: TimeoutPhase,
) -> Result<Built, BuildError> {
    // digest §5.11: 4.x.x while delivery may still happen; the final one 5.4.1, which clients
    // (PagoPA) read as the negative close of the transaction. [ANALYSIS]
    let (esteso, sentence) = match phase {
        TimeoutPhase::Preavviso12h => (
            format!("4.4.7 - {} - mancata consegna entro 12 ore", p.name),
            "non è stato consegnato nelle prime 12 ore dall'invio.\n\
             La consegna potrebbe ancora avvenire; se non avverrà entro le successive 12 ore\n\
             sarà inviato un ulteriore avviso.\n",
        ),
        TimeoutPhase::Finale24h => (
            format!("5.4.1 - {} - mancata consegna entro 24 ore", p.name),
            "non è stato consegnato entro 24 ore dall'invio.\n\
             La transazione è chiusa con esito negativo.\n",
        ),
    };
    let mut d = c.daticert(p, Tipo::PreavvisoErroreConsegna, Errore::Altro);
    d.dati.consegna = Some(rcpt.to_string()); // RFC 6109 §4.4 comment
    d.dati.errore_esteso = Some(esteso);
    let text = format!(
        "-- Avviso di mancata consegna per superamento dei tempi massimi --\n\n{}{sentence}{}{DATICERT_LINE}",
        intro(c, "si comunica che il messaggio", &to_one(rcpt)),
        identificativo_line(c)
    );
    notice(
        p,
        c,
        Notice {
            kind: Kind::MancataConsegnaTimeout,
            to: &c.mittente,
            extra: vec![],
            text,
            daticert: d,
            original: None,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Breve: attachments replaced by their SHA-1
// ---------------------------------------------------------------------------------------------

/// The original as a breve receipt carries it (RFC 6109 §3.3.2.2; digest §5.9): the MIME tree kept
/// byte for byte, except that every named leaf part (a `name=` or `filename=` parameter) and every
/// attached `message/rfc822` becomes a `text/plain` part `<name>.hash` holding the SHA-1 of the
/// part, 40 lower-case hex digits on one line. Inside `multipart/signed` only the first part is
/// walked (the signature stays, and no longer verifies); `application/(x-)pkcs7-mime` is left
/// whole, so breve equals completa for opaque S/MIME.
///
/// The hashed bytes [UNCONFIRMED, digest §5.9 item 3]: the part's body **as transmitted**, still
/// transfer-encoded (for base64: the base64 text with its CRLF line breaks), from the first byte
/// after the part's blank line up to, not including, the CRLF that belongs to the next boundary
/// delimiter. Chosen because the RFC says the hash SHOULD be computed on the base64 form and that
/// no hop may re-encode, and because the recipient's provider then never has to decode.
pub fn breve_original(original: &[u8]) -> Result<Vec<u8>, BuildError> {
    let original = to_crlf(original);
    split_header(&original)?;
    let msg = parse(&original)?;
    let mut spans = Vec::new();
    breve_spans(&msg, 0, &mut spans);
    spans.sort_by_key(|s| s.0);
    let mut out = Vec::with_capacity(original.len());
    let mut at = 0;
    for (start, body, end, name) in spans {
        if start < at || end > original.len() || body > end {
            continue; // overlapping or out of range: leave as is, never panic
        }
        out.extend_from_slice(&original[at..start]);
        out.extend_from_slice(&hash_part(&name, &original[body..end]));
        at = end;
    }
    out.extend_from_slice(&original[at..]);
    Ok(out)
}

/// The SHA-1 of a part's encoded body as [`breve_original`] writes it: 40 lower-case hex digits.
pub fn breve_hash(encoded_body: &[u8]) -> String {
    hex(&openssl::sha::sha1(encoded_body))
}

/// `(header start, body start, end, name)` of every part to replace, walking from part `id`.
fn breve_spans(msg: &Message<'_>, id: usize, out: &mut Vec<(usize, usize, usize, String)>) {
    let Some(part) = msg.parts.get(id) else {
        return;
    };
    let opaque = part.is_content_type("application", "pkcs7-mime")
        || part.is_content_type("application", "x-pkcs7-mime");
    match &part.body {
        PartType::Multipart(children) => {
            let signed = part.is_content_type("multipart", "signed");
            let walk = if signed {
                &children[..children.len().min(1)]
            } else {
                &children[..]
            };
            for &child in walk {
                breve_spans(msg, child as usize, out);
            }
        }
        _ if id == 0 || opaque => {} // the message itself is not an attachment
        PartType::Message(_) => {
            let name = part.attachment_name().unwrap_or("messaggio.eml");
            out.push(span(part, name));
        }
        _ => {
            if let Some(name) = part.attachment_name() {
                out.push(span(part, name));
            }
        }
    }
}

fn span(part: &mail_parser::MessagePart<'_>, name: &str) -> (usize, usize, usize, String) {
    (
        part.raw_header_offset() as usize,
        part.raw_body_offset() as usize,
        part.raw_end_offset() as usize,
        name.to_string(),
    )
}

/// The `text/plain` part `<name>.hash` that replaces an attachment (RFC 6109 §3.3.2.2).
fn hash_part(name: &str, encoded_body: &[u8]) -> Vec<u8> {
    let file = format!("{name}.hash");
    format!(
        "Content-Type: text/plain; charset=\"us-ascii\"; {}\r\n\
         Content-Disposition: attachment; {}\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n{}",
        mime_param("name", &file),
        mime_param("filename", &file),
        breve_hash(encoded_body)
    )
    .into_bytes()
}
