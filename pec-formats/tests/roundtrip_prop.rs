//! Property: build → parse is the identity on the certification data (RFC 6109 §4.4; digest §6).
//! Arbitrary senders, recipient mixes (certificato/esterno, To/Cc), subjects (unicode, long, with
//! text that looks like RFC 2047 encoded-words), msgids, identificativi, receipt types and times go
//! into the transport envelope and every receipt; the parsed daticert and headers give them back.

use chrono::{DateTime, TimeZone, Utc};
use pec_formats::build::{self, Built, Certification, Provider, ReceiptVariant};
use pec_formats::daticert::{Daticert, Destinatario};
use pec_formats::kind::{Errore, Kind, TimeoutPhase, TipoDestinatario, TipoRicevuta};
use pec_formats::parse::parse;
use pec_formats::pki::TestCa;
use pec_formats::smime::{DigestAlg, Signer};
use proptest::prelude::*;
use std::sync::OnceLock;

fn signer() -> &'static Signer {
    static S: OnceLock<Signer> = OnceLock::new();
    S.get_or_init(|| {
        let ca = TestCa::generate("PEC Test CA").unwrap();
        ca.issue_provider("EXAMPLE PEC S.p.A.", "posta-certificata@pec.example.it")
            .unwrap()
            .signer(DigestAlg::Sha256)
    })
}

/// A lower-case address `local@domain` (RFC 5321 dot-atoms, the shapes PEC mailboxes have).
fn address() -> impl Strategy<Value = String> {
    (
        "[a-z0-9][a-z0-9._-]{0,14}[a-z0-9]",
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,8}){1,2}",
    )
        .prop_map(|(l, d)| format!("{l}@{d}"))
}

/// One recipient: its address, certificato or esterno, in To (true) or Cc (false).
fn recipient() -> impl Strategy<Value = (String, bool, bool)> {
    (address(), any::<bool>(), any::<bool>())
}

/// Subjects: unicode words, long ones, and ASCII text that looks like encoded-words.
fn oggetto() -> impl Strategy<Value = Option<String>> {
    let word = prop_oneof![
        "[a-zA-Z0-9,.;:!?()'\"-]{1,12}",
        "[àèéìòùÀÈÉ€ßçñ日本語ΩЖ]{1,6}",
        Just("=?UTF-8?B?SGVsbG8=?=".to_string()),
        Just("=?iso-8859-1?Q?caf=E8?=".to_string()),
        Just("=?".to_string()),
        Just("?=".to_string()),
    ];
    proptest::option::weighted(
        0.9,
        proptest::collection::vec(word, 1..40).prop_map(|w| w.join(" ")),
    )
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2001-01-01 .. 2099-12-31, whole seconds (daticert prints seconds).
    (978_307_200i64..4_102_358_400i64).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

#[derive(Debug, Clone)]
struct Case {
    mittente: String,
    rcpts: Vec<(String, bool, bool)>,
    oggetto: Option<String>,
    msgid: Option<String>,
    identificativo: String,
    ricevuta: TipoRicevuta,
    time: DateTime<Utc>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        address(),
        proptest::collection::vec(recipient(), 1..5),
        oggetto(),
        proptest::option::of(
            "[A-Za-z0-9.$_-]{1,30}@[a-z0-9.-]{1,20}".prop_map(|m| format!("<{m}>")),
        ),
        "[a-z0-9]{1,12}(\\.[a-z0-9]{1,8}){0,4}@pec\\.[a-z]{2,10}\\.it",
        prop_oneof![
            Just(TipoRicevuta::Completa),
            Just(TipoRicevuta::Breve),
            Just(TipoRicevuta::Sintetica)
        ],
        instant(),
    )
        .prop_map(
            |(mittente, mut rcpts, oggetto, msgid, identificativo, ricevuta, time)| {
                rcpts.sort_by(|a, b| a.0.cmp(&b.0));
                rcpts.dedup_by(|a, b| a.0 == b.0);
                Case {
                    mittente,
                    rcpts,
                    oggetto,
                    msgid,
                    identificativo,
                    ricevuta,
                    time,
                }
            },
        )
}

impl Case {
    fn certification(&self) -> Certification {
        Certification {
            mittente: self.mittente.clone(),
            destinatari: self
                .rcpts
                .iter()
                .map(|(a, cert, _)| Destinatario {
                    tipo: if *cert {
                        TipoDestinatario::Certificato
                    } else {
                        TipoDestinatario::Esterno
                    },
                    indirizzo: a.clone(),
                })
                .collect(),
            risposte: self.mittente.clone(),
            oggetto: self.oggetto.clone(),
            msgid: self.msgid.clone(),
            identificativo: self.identificativo.clone(),
            ricevuta: self.ricevuta,
            time: self.time,
        }
    }

    /// The client's message: To/Cc from the recipients, the subject RFC 2047-encoded.
    fn original(&self) -> Vec<u8> {
        let list = |to: bool| {
            self.rcpts
                .iter()
                .filter(|r| r.2 == to)
                .map(|r| r.0.clone())
                .collect::<Vec<_>>()
                .join(",\r\n ")
        };
        let mut h = format!("From: <{}>\r\n", self.mittente);
        let (to, cc) = (list(true), list(false));
        if !to.is_empty() {
            h.push_str(&format!("To: {to}\r\n"));
        }
        if !cc.is_empty() {
            h.push_str(&format!("Cc: {cc}\r\n"));
        }
        if let Some(s) = &self.oggetto {
            let b64 = openssl::base64::encode_block(s.as_bytes());
            h.push_str(&format!("Subject: =?UTF-8?B?{b64}?=\r\n"));
        }
        if let Some(m) = &self.msgid {
            h.push_str(&format!("Message-ID: {m}\r\n"));
        }
        h.push_str(&format!(
            "X-TipoRicevuta: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto.\r\n",
            self.ricevuta.as_str()
        ));
        h.into_bytes()
    }
}

/// Parses `built` and checks the certification data and headers against `c`.
fn check(label: &str, built: &Built, kind: Kind, c: &Certification) -> Result<(), TestCaseError> {
    let msg = parse(&built.raw).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    prop_assert_eq!(msg.kind, Some(kind), "{}", label);
    let xml = msg
        .daticert_xml
        .as_ref()
        .ok_or_else(|| TestCaseError::fail(format!("{label}: no daticert")))?;
    let d = Daticert::from_xml(xml).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    prop_assert_eq!(&d.intestazione.mittente, &c.mittente, "{}", label);
    prop_assert_eq!(&d.intestazione.destinatari, &c.destinatari, "{}", label);
    prop_assert_eq!(&d.intestazione.risposte, &c.risposte, "{}", label);
    prop_assert_eq!(&d.intestazione.oggetto, &c.oggetto, "{}", label);
    prop_assert_eq!(&d.dati.identificativo, &c.identificativo, "{}", label);
    prop_assert_eq!(&d.dati.msgid, &c.msgid, "{}", label);
    prop_assert_eq!(d.dati.data.to_instant().ok(), Some(c.time), "{}", label);
    prop_assert!(d.dati.data.check_zona().is_ok(), "{}", label);
    prop_assert_eq!(Some(&d), built.daticert.as_ref(), "{}", label);
    // Subject = the kind's prefix + oggetto (digest §5.12), RFC 2047-decoded by the parser.
    let want = format!(
        "{}{}",
        kind.subject_prefix(),
        c.oggetto.as_deref().unwrap_or("")
    );
    prop_assert_eq!(
        msg.header("Subject").map(str::trim),
        Some(want.trim()),
        "{}",
        label
    );
    // RFC 6109 §2.1.1.1: X-Riferimento-Message-ID = the client's Message-ID.
    prop_assert_eq!(
        msg.header("X-Riferimento-Message-ID"),
        c.msgid.as_deref(),
        "{}",
        label
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn build_then_parse_gives_back_the_certification_data(case in case()) {
        let p = Provider::new("EXAMPLE PEC S.p.A.", "pec.example.it", signer());
        let c = case.certification();
        let original = case.original();
        let env = build::busta_trasporto(&p, &c, &original).unwrap();
        check("busta-trasporto", &env, Kind::BustaTrasporto, &c)?;
        let env_msg = parse(&env.raw).unwrap();
        let own = format!("<{}>", c.identificativo);
        prop_assert_eq!(env_msg.header("Message-ID"), Some(own.as_str()));
        prop_assert_eq!(env_msg.header("X-TipoRicevuta"), Some(c.ricevuta.as_str()));
        let post = env_msg.postacert.clone().unwrap();

        // The recipient's provider reads the certification data back from the daticert.
        let d = Daticert::from_xml(env_msg.daticert_xml.as_ref().unwrap()).unwrap();
        prop_assert_eq!(&Certification::from_daticert(&d, c.time), &c);

        let rcpt = c.destinatari[0].indirizzo.clone();
        let primary = build::is_primary_recipient(&original, &rcpt);
        prop_assert_eq!(primary, case.rcpts[0].2, "To → primary, Cc only → not");
        let variant = build::receipt_variant(c.ricevuta, primary);
        let built: Vec<(&str, Kind, Built)> = vec![
            ("accettazione", Kind::Accettazione, build::accettazione(&p, &c).unwrap()),
            ("non-accettazione", Kind::NonAccettazione, build::non_accettazione(&p, &c, "errore").unwrap()),
            ("non-accettazione-virus", Kind::NonAccettazioneVirus, build::non_accettazione_virus(&p, &c, "EICAR").unwrap()),
            ("presa-in-carico", Kind::PresaInCarico, build::presa_in_carico(&p, &c, std::slice::from_ref(&rcpt), "ricevute@pec.example.it").unwrap()),
            ("rilevazione-virus", Kind::RilevazioneVirus, build::rilevazione_virus(&p, &c, &rcpt, "EICAR", "ricevute@pec.example.it").unwrap()),
            ("mancata-consegna-virus", Kind::MancataConsegnaVirus, build::mancata_consegna_virus(&p, &c, &rcpt, "EICAR").unwrap()),
            ("avvenuta-consegna", Kind::AvvenutaConsegna, build::avvenuta_consegna(&p, &c, &rcpt, variant, Some(&post)).unwrap()),
            ("mancata-consegna", Kind::MancataConsegna, build::mancata_consegna(&p, &c, &rcpt, Errore::NoDest, "5.1.1 - utente sconosciuto").unwrap()),
            ("timeout", Kind::MancataConsegnaTimeout, build::mancata_consegna_timeout(&p, &c, &rcpt, TimeoutPhase::Finale24h).unwrap()),
        ];
        for (label, kind, b) in &built {
            check(label, b, *kind, &c)?;
        }
        // The delivery receipt names the receipt type it is and the recipient it covers.
        let d = built[6].2.daticert.as_ref().unwrap();
        let tipo = match variant {
            ReceiptVariant::Completa => TipoRicevuta::Completa,
            ReceiptVariant::Breve => TipoRicevuta::Breve,
            ReceiptVariant::Sintetica => TipoRicevuta::Sintetica,
        };
        prop_assert_eq!(d.dati.ricevuta, Some(tipo));
        prop_assert_eq!(d.dati.consegna.as_deref(), Some(rcpt.as_str()));
    }
}
