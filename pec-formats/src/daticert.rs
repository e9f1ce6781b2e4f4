//! `daticert.xml`, the certification data (RFC 6109 §4.4; the Italian DTD in
//! `fixtures/reference/daticert.dtd`). Writing and reading of every element and attribute.
//!
//! THIS FILE IS A SKELETON: the types are the contract other modules code against; the functions are
//! being written.

use crate::kind::{Errore, Tipo, TipoDestinatario, TipoRicevuta};

/// The whole document: `<!ELEMENT postacert (intestazione, dati)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daticert {
    /// `postacert/@tipo` (#REQUIRED).
    pub tipo: Tipo,
    /// `postacert/@errore` (default `nessuno`).
    pub errore: Errore,
    /// The original message's header data.
    pub intestazione: Intestazione,
    /// The certification data proper.
    pub dati: Dati,
}

/// `<!ELEMENT intestazione (mittente, destinatari+, risposte, oggetto?)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intestazione {
    /// `mittente`: the original sender (the SMTP reverse-path; RFC 6109 §2.1).
    pub mittente: String,
    /// `destinatari` (1..n): every To and Cc recipient, each `certificato` or `esterno`.
    pub destinatari: Vec<Destinatario>,
    /// `risposte`: the original Reply-To, else the sender (required by the DTD).
    pub risposte: String,
    /// `oggetto` (optional): the original subject.
    pub oggetto: Option<String>,
}

/// One `<destinatari tipo="…">address</destinatari>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinatario {
    /// `destinatari/@tipo` (default `certificato`).
    pub tipo: TipoDestinatario,
    /// The address, as written.
    pub indirizzo: String,
}

/// `<!ELEMENT dati (gestore-emittente, data, identificativo, msgid?, ricevuta?, consegna?,
/// ricezione*, errore-esteso?)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dati {
    /// `gestore-emittente`: the certifying provider's descriptive name.
    pub gestore_emittente: String,
    /// `data`: the event time in Italian legal local time.
    pub data: Data,
    /// `identificativo`: the PEC msgid of the transport envelope (opaque).
    pub identificativo: String,
    /// `msgid` (optional): the client's original Message-ID, with its angle brackets
    /// (`<abc@host>`; escaped as `&lt;abc@host&gt;` in the XML).
    pub msgid: Option<String>,
    /// `ricevuta/@tipo` (optional): on transport envelopes and delivery receipts.
    pub ricevuta: Option<TipoRicevuta>,
    /// `consegna` (optional): the one recipient delivery was made or tried to.
    pub consegna: Option<String>,
    /// `ricezione` (0..n): on presa in carico, the recipients the notice covers.
    pub ricezione: Vec<String>,
    /// `errore-esteso` (optional): a short error description.
    pub errore_esteso: Option<String>,
}

/// `<data zona="+hhmm"><giorno>gg/mm/aaaa</giorno><ora>hh:mm:ss</ora></data>`, kept as written so
/// that reading and writing real files is lossless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// `data/@zona`: `[+|-]hhmm`, the offset of local legal time from UTC.
    pub zona: String,
    /// `giorno`: `gg/mm/aaaa`.
    pub giorno: String,
    /// `ora`: `hh:mm:ss`.
    pub ora: String,
}

/// Why a daticert.xml could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DaticertError {
    /// Not well-formed XML, or not a `postacert` document; the message names what and where.
    #[error("daticert.xml: {0}")]
    Invalid(String),
    /// A DOCTYPE with an internal subset declaring entities (billion laughs, external entities):
    /// refused, never expanded and never fetched.
    #[error("daticert.xml: refused entity declaration: {0}")]
    Entity(String),
}

impl Daticert {
    /// Writes the document: XML declaration, `<!DOCTYPE postacert SYSTEM "daticert.dtd">`, 4-space
    /// indentation, LF line ends (as real providers do), valid against the DTD.
    pub fn to_xml(&self) -> String {
        todo!("daticert writer")
    }

    /// Reads a document. Never fetches an external DTD or entity; refuses entity declarations.
    pub fn from_xml(_xml: &[u8]) -> Result<Daticert, DaticertError> {
        todo!("daticert reader")
    }
}
