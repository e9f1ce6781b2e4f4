//! Builders for every PEC envelope, receipt and notice (RFC 6109 §3; digest §4–§5).
//!
//! Each builder takes the provider that emits the message, the certification data of the
//! transaction, and what the kind needs; it returns the complete signed message, CRLF line ends,
//! ready to hand to SMTP. THIS FILE IS A SKELETON: the types and signatures are the contract other
//! modules code against; the bodies are being written.

use crate::daticert::{Daticert, Destinatario};
use crate::kind::{Errore, TimeoutPhase, TipoDestinatario, TipoRicevuta};
use crate::smime::{Signer, SmimeError};
use chrono::{DateTime, Utc};

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

/// A new identificativo `<alnum and dots>@<domain>`, unique (RFC 6109 §2.2.1).
pub fn new_identificativo(_domain: &str) -> String {
    todo!()
}

/// A new Message-ID (without angle brackets) for a notice of `domain`.
pub fn new_message_id(_domain: &str) -> String {
    todo!()
}

/// True when `rcpt` is in the original's To (or in neither To nor Cc: ambiguous counts as primary,
/// RFC 6109 §3.3.2.1); false when it is only in Cc.
pub fn is_primary_recipient(_original: &[u8], _rcpt: &str) -> bool {
    todo!()
}

/// The original as postacert.eml carries it: its Message-ID replaced by `<identificativo>`, the
/// client's Message-ID moved to `X-Riferimento-Message-ID` (RFC 6109 §2.2.1); nothing else changed.
pub fn postacert_original(_original: &[u8], _identificativo: &str) -> Result<Vec<u8>, BuildError> {
    todo!()
}

impl Certification {
    /// The certification data of a submission accepted at the access point: sender from MAIL FROM,
    /// recipients from RCPT TO with their kind from `kind_of`, the rest from the original's headers.
    pub fn from_submission(
        _original: &[u8],
        _mail_from: &str,
        _rcpts: &[String],
        _kind_of: &dyn Fn(&str) -> TipoDestinatario,
        _identificativo: String,
        _time: DateTime<Utc>,
    ) -> Result<Certification, BuildError> {
        todo!()
    }

    /// The certification data carried by a received daticert (at the reception and delivery points),
    /// with `time` the time of the new event.
    pub fn from_daticert(_d: &Daticert, _time: DateTime<Utc>) -> Certification {
        todo!()
    }
}

/// Busta di trasporto (RFC 6109 §3.1.5): From "Per conto di", the original's To/Cc/Received/
/// Return-Path/Reply-To copied, Message-ID = identificativo, the original (msgid swapped) inside.
pub fn busta_trasporto(
    _p: &Provider<'_>,
    _c: &Certification,
    _original: &[u8],
) -> Result<Built, BuildError> {
    todo!()
}

/// Ricevuta di accettazione (RFC 6109 §3.1.4), to the sender.
pub fn accettazione(_p: &Provider<'_>, _c: &Certification) -> Result<Built, BuildError> {
    todo!()
}

/// Avviso di non accettazione per eccezioni formali (RFC 6109 §3.1.2), to the sender; `errore="altro"`
/// and `errore-esteso` = `reason`; the text names the reason. Never the original.
pub fn non_accettazione(
    _p: &Provider<'_>,
    _c: &Certification,
    _reason: &str,
) -> Result<Built, BuildError> {
    todo!()
}

/// Avviso di non accettazione per virus (RFC 6109 §3.1.3): `X-VerificaSicurezza: errore`,
/// `errore="virus"`, the text names `virus`.
pub fn non_accettazione_virus(
    _p: &Provider<'_>,
    _c: &Certification,
    _virus: &str,
) -> Result<Built, BuildError> {
    todo!()
}

/// Ricevuta di presa in carico (RFC 6109 §3.2.1), to `to` (the sending provider's receipt mailbox);
/// `ricezione` = the recipients it covers.
pub fn presa_in_carico(
    _p: &Provider<'_>,
    _c: &Certification,
    _ricezione: &[String],
    _to: &str,
) -> Result<Built, BuildError> {
    todo!()
}

/// Busta di anomalia (RFC 6109 §3.2.2): the received message as the only extra part; Received/To/
/// Cc/Return-Path/Message-ID copied; `reason` in the text. `time` is the arrival time.
pub fn busta_anomalia(
    _p: &Provider<'_>,
    _received: &[u8],
    _reason: &str,
    _time: DateTime<Utc>,
) -> Result<Built, BuildError> {
    todo!()
}

/// Avviso di rilevazione virus (RFC 6109 §3.2.3), one per recipient, to `to` (the sending provider's
/// receipt mailbox); `X-Mittente` = the original sender.
pub fn rilevazione_virus(
    _p: &Provider<'_>,
    _c: &Certification,
    _rcpt: &str,
    _virus: &str,
    _to: &str,
) -> Result<Built, BuildError> {
    todo!()
}

/// Avviso di mancata consegna per virus (RFC 6109 §3.2.4), built by the sender's provider from a
/// rilevazione virus, to the sender.
pub fn mancata_consegna_virus(
    _p: &Provider<'_>,
    _c: &Certification,
    _rcpt: &str,
    _virus: &str,
) -> Result<Built, BuildError> {
    todo!()
}

/// Ricevuta di avvenuta consegna (RFC 6109 §3.3.2) for `rcpt`, to the sender, of `variant`;
/// `envelope_original` is the postacert.eml of the transport envelope (needed for completa/breve).
pub fn avvenuta_consegna(
    _p: &Provider<'_>,
    _c: &Certification,
    _rcpt: &str,
    _variant: ReceiptVariant,
    _envelope_original: Option<&[u8]>,
) -> Result<Built, BuildError> {
    todo!()
}

/// Avviso di mancata consegna (RFC 6109 §3.3.3) for `rcpt`, to the sender.
pub fn mancata_consegna(
    _p: &Provider<'_>,
    _c: &Certification,
    _rcpt: &str,
    _errore: Errore,
    _errore_esteso: &str,
) -> Result<Built, BuildError> {
    todo!()
}

/// Avviso di mancata consegna per superamento dei tempi massimi (RFC 6109 §3.1.6), 12h or 24h, for
/// `rcpt`, to the sender.
pub fn mancata_consegna_timeout(
    _p: &Provider<'_>,
    _c: &Certification,
    _rcpt: &str,
    _phase: TimeoutPhase,
) -> Result<Built, BuildError> {
    todo!()
}
