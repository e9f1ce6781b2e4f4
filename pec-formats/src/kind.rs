//! The PEC message kinds and their fixed vocabulary: header names, header values, subject prefixes,
//! daticert `tipo`/`errore` values and which kinds carry the original message.
//!
//! Sources: RFC 6109 §3.1–§3.3 (one section per kind), Appendix A (header values), §4.4 and the
//! Italian DTD (the `tipo`, `errore` and `ricevuta/@tipo` enumerations); digest §5.12–§5.13.
//! Classification is by header, never by subject (subjects are user-controlled).

use std::fmt;
use std::str::FromStr;

/// `X-Trasporto`: marks the two envelopes (RFC 6109 §3.1.5, §3.2.2).
pub const X_TRASPORTO: &str = "X-Trasporto";
/// `X-Ricevuta`: marks every receipt and notice (RFC 6109 Appendix A).
pub const X_RICEVUTA: &str = "X-Ricevuta";
/// `X-Riferimento-Message-ID`: the client's original Message-ID (RFC 6109 §2.1.1.1, §2.2.1).
pub const X_RIFERIMENTO_MESSAGE_ID: &str = "X-Riferimento-Message-ID";
/// `X-TipoRicevuta`: the delivery receipt type the sender asks for (RFC 6109 §3.3.2). Aruba writes
/// `X-Tiporicevuta`; header names are matched case-insensitively on input, and we emit the RFC spelling.
pub const X_TIPO_RICEVUTA: &str = "X-TipoRicevuta";
/// `X-VerificaSicurezza: errore` on the two virus notices (RFC 6109 §3.1.3, §3.2.4).
pub const X_VERIFICA_SICUREZZA: &str = "X-VerificaSicurezza";
/// `X-Mittente`: the original sender, on the virus detection notice (RFC 6109 §3.2.3).
pub const X_MITTENTE: &str = "X-Mittente";

/// The value of `X-VerificaSicurezza` on virus notices.
pub const VERIFICA_SICUREZZA_ERRORE: &str = "errore";

/// The file name of the certification data part (RFC 6109 §4.3.3 says `certdata.xml`, a translation
/// artefact; every real message and the Italian DTD use `daticert.xml`: digest §0.1).
pub const DATICERT_FILENAME: &str = "daticert.xml";
/// The file name of the original message part (RFC 6109 §4.3.2).
pub const POSTACERT_FILENAME: &str = "postacert.eml";
/// The file name of the detached signature part (RFC 6109 §2.1, real messages).
pub const SMIME_FILENAME: &str = "smime.p7s";

/// Generates a string enum with `as_str`, `Display`, `FromStr` (exact, lower-case, trimmed) and `ALL`.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The exact string used on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                let t = s.trim();
                $(if t.eq_ignore_ascii_case($s) { return Ok($name::$variant); })+
                Err(UnknownValue { what: stringify!($name), value: s.to_string() })
            }
        }
    };
}

/// A value that is not in a PEC enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what} value")]
pub struct UnknownValue {
    /// The enumeration (type name).
    pub what: &'static str,
    /// The value found.
    pub value: String,
}

string_enum! {
    /// `postacert/@tipo` in daticert.xml (Italian DTD). The same strings are the values of
    /// `X-Ricevuta`, plus `posta-certificata` for the transport envelope.
    Tipo {
        Accettazione => "accettazione",
        NonAccettazione => "non-accettazione",
        PresaInCarico => "presa-in-carico",
        AvvenutaConsegna => "avvenuta-consegna",
        PostaCertificata => "posta-certificata",
        ErroreConsegna => "errore-consegna",
        PreavvisoErroreConsegna => "preavviso-errore-consegna",
        RilevazioneVirus => "rilevazione-virus",
    }
}

string_enum! {
    /// `postacert/@errore` in daticert.xml (Italian DTD; default `nessuno`).
    Errore {
        Nessuno => "nessuno",
        /// Wrong recipient (with `tipo="errore-consegna"`).
        NoDest => "no-dest",
        /// Wrong domain (with `tipo="errore-consegna"`).
        NoDominio => "no-dominio",
        /// With `tipo="errore-consegna"` or `tipo="non-accettazione"`.
        Virus => "virus",
        /// Generic error.
        Altro => "altro",
    }
}

string_enum! {
    /// The delivery receipt type: `X-TipoRicevuta` and `ricevuta/@tipo` (RFC 6109 §3.3.2.1–3).
    TipoRicevuta {
        Completa => "completa",
        Breve => "breve",
        Sintetica => "sintetica",
    }
}

string_enum! {
    /// `destinatari/@tipo`: a PEC recipient (`certificato`) or an ordinary one (`esterno`), decided
    /// by a case-insensitive lookup of the domain in the directory's `managedDomains` (RFC 6109 §2.2.1).
    TipoDestinatario {
        Certificato => "certificato",
        Esterno => "esterno",
    }
}

string_enum! {
    /// The values of `X-Trasporto` (RFC 6109 Appendix A).
    Trasporto {
        PostaCertificata => "posta-certificata",
        Errore => "errore",
    }
}

/// Whether a kind carries the original message as `postacert.eml` (digest §5.12, second table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Original {
    /// Always (transport envelope; anomaly envelope, where it is the received message itself).
    Always,
    /// Never (and for some kinds the rules say it MUST NOT be there).
    Never,
    /// Depends on the receipt type and on To/Cc (delivery receipt: completa and breve for primary
    /// recipients, not sintetica; RFC 6109 §3.3.2).
    ByReceiptType,
}

/// The eleven PEC message kinds (RFC 6109 §3.1–§3.3; digest §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Busta di trasporto (RFC 6109 §3.1.5).
    BustaTrasporto,
    /// Busta di anomalia (RFC 6109 §3.2.2).
    BustaAnomalia,
    /// Ricevuta di accettazione (RFC 6109 §3.1.4).
    Accettazione,
    /// Avviso di non accettazione per eccezioni formali (RFC 6109 §3.1.2).
    NonAccettazione,
    /// Avviso di non accettazione per virus (RFC 6109 §3.1.3).
    NonAccettazioneVirus,
    /// Ricevuta di presa in carico (RFC 6109 §3.2.1).
    PresaInCarico,
    /// Ricevuta di avvenuta consegna, completa / breve / sintetica (RFC 6109 §3.3.2).
    AvvenutaConsegna,
    /// Avviso di mancata consegna (RFC 6109 §3.3.3).
    MancataConsegna,
    /// Avviso di mancata consegna per virus (RFC 6109 §3.2.4).
    MancataConsegnaVirus,
    /// Avviso di mancata consegna per superamento dei tempi massimi, 12h preavviso and 24h
    /// (RFC 6109 §3.1.6). Both carry the same headers; see [`TimeoutPhase`].
    MancataConsegnaTimeout,
    /// Avviso di rilevazione virus (RFC 6109 §3.2.3).
    RilevazioneVirus,
}

/// Which of the two timeout notices (RFC 6109 §3.1.6; digest §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Sent at T+12h when neither presa in carico nor delivery has arrived: delivery may still happen.
    Preavviso12h,
    /// Sent between T+22h and T+24h when no delivery has arrived: the transaction closes negatively.
    Finale24h,
}

impl Kind {
    /// All eleven kinds.
    pub const ALL: &'static [Kind] = &[
        Kind::BustaTrasporto,
        Kind::BustaAnomalia,
        Kind::Accettazione,
        Kind::NonAccettazione,
        Kind::NonAccettazioneVirus,
        Kind::PresaInCarico,
        Kind::AvvenutaConsegna,
        Kind::MancataConsegna,
        Kind::MancataConsegnaVirus,
        Kind::MancataConsegnaTimeout,
        Kind::RilevazioneVirus,
    ];

    /// A stable machine name, used in reports, scenarios and JSON.
    pub fn id(self) -> &'static str {
        match self {
            Kind::BustaTrasporto => "posta-certificata",
            Kind::BustaAnomalia => "anomalia",
            Kind::Accettazione => "accettazione",
            Kind::NonAccettazione => "non-accettazione",
            Kind::NonAccettazioneVirus => "non-accettazione-virus",
            Kind::PresaInCarico => "presa-in-carico",
            Kind::AvvenutaConsegna => "avvenuta-consegna",
            Kind::MancataConsegna => "errore-consegna",
            Kind::MancataConsegnaVirus => "errore-consegna-virus",
            Kind::MancataConsegnaTimeout => "preavviso-errore-consegna",
            Kind::RilevazioneVirus => "rilevazione-virus",
        }
    }

    /// Parses [`Kind::id`].
    pub fn from_id(id: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.id().eq_ignore_ascii_case(id.trim()))
    }

    /// The Italian name, as the rules and users say it.
    pub fn italian_name(self) -> &'static str {
        match self {
            Kind::BustaTrasporto => "busta di trasporto",
            Kind::BustaAnomalia => "busta di anomalia",
            Kind::Accettazione => "ricevuta di accettazione",
            Kind::NonAccettazione => "avviso di non accettazione",
            Kind::NonAccettazioneVirus => "avviso di non accettazione per virus",
            Kind::PresaInCarico => "ricevuta di presa in carico",
            Kind::AvvenutaConsegna => "ricevuta di avvenuta consegna",
            Kind::MancataConsegna => "avviso di mancata consegna",
            Kind::MancataConsegnaVirus => "avviso di mancata consegna per virus",
            Kind::MancataConsegnaTimeout => {
                "avviso di mancata consegna per superamento dei tempi massimi"
            }
            Kind::RilevazioneVirus => "avviso di rilevazione virus",
        }
    }

    /// The `X-Trasporto` value, on the two envelopes only (RFC 6109 §3.1.5, §3.2.2).
    pub fn x_trasporto(self) -> Option<Trasporto> {
        match self {
            Kind::BustaTrasporto => Some(Trasporto::PostaCertificata),
            Kind::BustaAnomalia => Some(Trasporto::Errore),
            _ => None,
        }
    }

    /// The `X-Ricevuta` value, on every receipt and notice (RFC 6109 Appendix A).
    pub fn x_ricevuta(self) -> Option<Tipo> {
        match self {
            Kind::BustaTrasporto | Kind::BustaAnomalia => None,
            Kind::Accettazione => Some(Tipo::Accettazione),
            Kind::NonAccettazione | Kind::NonAccettazioneVirus => Some(Tipo::NonAccettazione),
            Kind::PresaInCarico => Some(Tipo::PresaInCarico),
            Kind::AvvenutaConsegna => Some(Tipo::AvvenutaConsegna),
            Kind::MancataConsegna | Kind::MancataConsegnaVirus => Some(Tipo::ErroreConsegna),
            Kind::MancataConsegnaTimeout => Some(Tipo::PreavvisoErroreConsegna),
            Kind::RilevazioneVirus => Some(Tipo::RilevazioneVirus),
        }
    }

    /// Whether the kind carries `X-VerificaSicurezza: errore` (RFC 6109 §3.1.3, §3.2.4).
    pub fn verifica_sicurezza(self) -> bool {
        matches!(
            self,
            Kind::NonAccettazioneVirus | Kind::MancataConsegnaVirus
        )
    }

    /// The daticert `tipo` of this kind; the anomaly envelope has no daticert (RFC 6109 §3.2.2).
    pub fn daticert_tipo(self) -> Option<Tipo> {
        match self {
            Kind::BustaTrasporto => Some(Tipo::PostaCertificata),
            Kind::BustaAnomalia => None,
            other => other.x_ricevuta(),
        }
    }

    /// The subject prefix, prepended to the original subject (digest §5.12). The RFC's
    /// `PER SUP.  TEMPO MASSIMO` with two spaces is a line-justification artefact [UNCONFIRMED];
    /// we emit one space, and the conformance checks accept both.
    pub fn subject_prefix(self) -> &'static str {
        match self {
            Kind::BustaTrasporto => "POSTA CERTIFICATA: ",
            Kind::BustaAnomalia => "ANOMALIA MESSAGGIO: ",
            Kind::Accettazione => "ACCETTAZIONE: ",
            Kind::NonAccettazione => "AVVISO DI NON ACCETTAZIONE: ",
            Kind::NonAccettazioneVirus => "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
            Kind::PresaInCarico => "PRESA IN CARICO: ",
            Kind::AvvenutaConsegna => "CONSEGNA: ",
            Kind::MancataConsegna => "AVVISO DI MANCATA CONSEGNA: ",
            Kind::MancataConsegnaVirus => "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
            Kind::MancataConsegnaTimeout => "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
            Kind::RilevazioneVirus => "PROBLEMA DI SICUREZZA: ",
        }
    }

    /// Whether the kind carries the original as `postacert.eml` (digest §5.12).
    pub fn original(self) -> Original {
        match self {
            Kind::BustaTrasporto | Kind::BustaAnomalia => Original::Always,
            Kind::AvvenutaConsegna => Original::ByReceiptType,
            _ => Original::Never,
        }
    }

    /// Whether the kind is an envelope (busta) rather than a receipt or notice.
    pub fn is_envelope(self) -> bool {
        matches!(self, Kind::BustaTrasporto | Kind::BustaAnomalia)
    }

    /// Whether the kind goes provider to provider, to the sending provider's `mailReceipt`, and is
    /// never shown to users (RFC 6109 §2.1.1.1, §3.2.1, §3.2.3).
    pub fn is_provider_to_provider(self) -> bool {
        matches!(self, Kind::PresaInCarico | Kind::RilevazioneVirus)
    }

    /// Whether the `From:` is `"Per conto di: <sender>" <provider address>` (envelopes) rather than
    /// the bare provider address (receipts and notices) (RFC 6109 §2.1; digest §4.2).
    pub fn from_per_conto_di(self) -> bool {
        self.is_envelope()
    }

    /// Classifies by the top-level PEC headers alone (values trimmed, case-insensitive), as the
    /// rules require: never by subject. `x_verifica_sicurezza` tells the virus variants apart.
    /// Returns `None` when the headers do not name a PEC kind, or name two (both X-Trasporto and
    /// X-Ricevuta present).
    pub fn from_headers(
        x_trasporto: Option<&str>,
        x_ricevuta: Option<&str>,
        x_verifica_sicurezza: Option<&str>,
    ) -> Option<Kind> {
        let virus = x_verifica_sicurezza
            .map(|v| v.trim().eq_ignore_ascii_case(VERIFICA_SICUREZZA_ERRORE))
            .unwrap_or(false);
        match (x_trasporto, x_ricevuta) {
            (Some(_), Some(_)) => None,
            (Some(t), None) => match t.parse::<Trasporto>().ok()? {
                Trasporto::PostaCertificata => Some(Kind::BustaTrasporto),
                Trasporto::Errore => Some(Kind::BustaAnomalia),
            },
            (None, Some(r)) => Some(match r.parse::<Tipo>().ok()? {
                Tipo::Accettazione => Kind::Accettazione,
                Tipo::NonAccettazione if virus => Kind::NonAccettazioneVirus,
                Tipo::NonAccettazione => Kind::NonAccettazione,
                Tipo::PresaInCarico => Kind::PresaInCarico,
                Tipo::AvvenutaConsegna => Kind::AvvenutaConsegna,
                Tipo::ErroreConsegna if virus => Kind::MancataConsegnaVirus,
                Tipo::ErroreConsegna => Kind::MancataConsegna,
                Tipo::PreavvisoErroreConsegna => Kind::MancataConsegnaTimeout,
                Tipo::RilevazioneVirus => Kind::RilevazioneVirus,
                Tipo::PostaCertificata => return None,
            }),
            (None, None) => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_headers() {
        for &k in Kind::ALL {
            let t = k.x_trasporto().map(|t| t.as_str());
            let r = k.x_ricevuta().map(|r| r.as_str());
            let v = k.verifica_sicurezza().then_some(" Errore ");
            assert_eq!(Kind::from_headers(t, r, v), Some(k), "{k:?}");
            assert_eq!(Kind::from_id(k.id()), Some(k));
        }
        assert_eq!(Kind::ALL.len(), 11);
    }

    #[test]
    fn headers_that_name_no_kind_or_two_kinds_are_refused() {
        assert_eq!(Kind::from_headers(None, None, None), None);
        assert_eq!(
            Kind::from_headers(Some("posta-certificata"), Some("accettazione"), None),
            None
        );
        assert_eq!(
            Kind::from_headers(None, Some("posta-certificata"), None),
            None
        );
        assert_eq!(Kind::from_headers(Some("bogus"), None, None), None);
    }

    #[test]
    fn enum_values_parse_case_insensitively_and_reject_unknown() {
        assert_eq!(
            " Completa ".parse::<TipoRicevuta>(),
            Ok(TipoRicevuta::Completa)
        );
        assert_eq!("no-dest".parse::<Errore>(), Ok(Errore::NoDest));
        let e = "sometimes".parse::<TipoRicevuta>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sometimes` is not a valid TipoRicevuta value"
        );
    }
}
