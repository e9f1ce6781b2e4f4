//! The builders of every PEC kind (RFC 6109 §3; digest §4–§5), checked with an independent parser
//! (mail-parser), the reference DTD (xmllint) and OpenSSL's own S/MIME verifier.

use chrono::{DateTime, TimeZone, Utc};
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use pec_formats::build::{
    self, Built, Certification, Provider, ReceiptVariant, TextForm, breve_hash, breve_original,
    is_primary_recipient, postacert_original, receipt_variant,
};
use pec_formats::daticert::{Daticert, Destinatario};
use pec_formats::kind::{Errore, TimeoutPhase, Tipo, TipoDestinatario, TipoRicevuta};
use pec_formats::pki::{ProviderIdentity, TestCa};
use pec_formats::smime::{DigestAlg, SignatureStyle, Signer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ID: &str = "opec1700000000000.0001aabbccdd@pec.example.it";
const SENDER: &str = "mario.rossi@pec.example.it";
const TO_CERT: &str = "ufficio@pec.other.example";
const TO_EXT: &str = "info@example.com";
const CC: &str = "protocollo@pec.other.example";

/// The attachment's encoded body exactly as transmitted (without the CRLF before the boundary).
const PDF_B64: &str =
    "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK\r\nJSVFT0YK";

/// A client's submission: folded To, Cc, an encoded subject, X-TipoRicevuta, a PDF and an
/// attached message.
fn original() -> Vec<u8> {
    format!(
        "Received: from client.example (client.example [192.0.2.1])\r\n\
         \tby smtp.pec.example.it with ESMTPSA id ABC123;\r\n\
         \tMon, 3 Mar 2025 10:00:00 +0100\r\n\
         From: Mario Rossi <{SENDER}>\r\n\
         To: Ufficio <{TO_CERT}>,\r\n\
         \x20Info <{TO_EXT}>\r\n\
         Cc: {CC}\r\n\
         Subject: =?UTF-8?Q?Diffida_=C3=A8_urgente?=\r\n\
         Date: Mon, 3 Mar 2025 10:00:00 +0100\r\n\
         Message-ID: <client-1234@host.example>\r\n\
         X-TipoRicevuta: breve\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"=_orig_b1\"\r\n\
         \r\n\
         --=_orig_b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Testo della diffida.\r\n\
         --=_orig_b1\r\n\
         Content-Type: application/pdf; name=\"contratto.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"contratto.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {PDF_B64}\r\n\
         --=_orig_b1\r\n\
         Content-Type: message/rfc822\r\n\
         Content-Disposition: attachment; filename=\"prima.eml\"\r\n\
         \r\n\
         From: a@example.com\r\n\
         Subject: prima\r\n\
         \r\n\
         Corpo.\r\n\
         --=_orig_b1--\r\n"
    )
    .into_bytes()
}

fn time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0).unwrap()
}

struct Pki {
    _ca: TestCa,
    _identity: ProviderIdentity,
    signer: Signer,
    dir: tempfile::TempDir,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = TestCa::generate("PEC Test CA").expect("CA");
        let identity = ca
            .issue_provider("EXAMPLE PEC S.p.A.", "posta-certificata@pec.example.it")
            .expect("provider certificate");
        let signer = identity.signer(DigestAlg::Sha256);
        let dir = tempfile::tempdir().expect("tempdir");
        ca.write_to(dir.path()).expect("write CA");
        Pki {
            _ca: ca,
            _identity: identity,
            signer,
            dir,
        }
    })
}

fn provider(form: TextForm) -> Provider<'static> {
    let mut p = Provider::new("EXAMPLE PEC S.p.A.", "pec.example.it", &pki().signer);
    p.options.text_form = form;
    p
}

fn certification() -> Certification {
    let rcpts = [TO_CERT, TO_EXT, CC].map(String::from);
    let kind_of = |a: &str| {
        if a.to_ascii_lowercase().ends_with("@example.com") {
            TipoDestinatario::Esterno
        } else {
            TipoDestinatario::Certificato
        }
    };
    Certification::from_submission(&original(), SENDER, &rcpts, &kind_of, ID.into(), time())
        .expect("certification")
}

fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default().parse(raw).expect("parseable")
}

fn hdr<'a>(m: &'a Message<'a>, name: &'a str) -> Option<&'a str> {
    m.header_raw(name).map(str::trim)
}

fn children<'a>(m: &'a Message<'a>, part: &MessagePart<'_>) -> Vec<&'a MessagePart<'a>> {
    match &part.body {
        PartType::Multipart(ids) => ids.iter().map(|&i| &m.parts[i as usize]).collect(),
        _ => panic!("not a multipart"),
    }
}

/// The parts of the signed `multipart/mixed`, checking the signed wrapper on the way.
fn mixed<'a>(m: &'a Message<'a>) -> Vec<&'a MessagePart<'a>> {
    let root = &m.parts[0];
    assert!(
        root.is_content_type("multipart", "signed"),
        "top level is multipart/signed"
    );
    let top = children(m, root);
    assert_eq!(top.len(), 2, "signed content and signature");
    assert!(top[0].is_content_type("multipart", "mixed"));
    assert_eq!(top[1].attachment_name(), Some("smime.p7s"));
    children(m, top[0])
}

fn ctype(p: &MessagePart<'_>) -> String {
    let ct = p.content_type().expect("content type");
    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
}

fn body<'a>(m: &'a Message<'a>, p: &MessagePart<'_>) -> &'a [u8] {
    &m.raw_message()[p.raw_body_offset() as usize..p.raw_end_offset() as usize]
}

/// The text part checked as ISO-8859-1 quoted-printable; returns the decoded text.
fn check_text(p: &MessagePart<'_>) -> String {
    assert_eq!(ctype(p), "text/plain");
    let ct = p.content_type().unwrap();
    assert_eq!(ct.attribute("charset"), Some("iso-8859-1"));
    assert_eq!(p.content_transfer_encoding(), Some("quoted-printable"));
    p.text_contents().expect("text").to_string()
}

fn check_daticert(p: &MessagePart<'_>, built: &Built) -> Daticert {
    assert_eq!(ctype(p), "application/xml");
    assert_eq!(
        p.content_type().unwrap().attribute("name"),
        Some("daticert.xml")
    );
    assert!(p.content_disposition().unwrap().is_inline());
    assert_eq!(p.content_transfer_encoding(), Some("base64"));
    let xml = p.contents();
    dtd_valid(xml);
    let d = Daticert::from_xml(xml).expect("daticert reads back");
    assert_eq!(Some(&d), built.daticert.as_ref());
    d
}

fn dtd_valid(xml: &[u8]) {
    let dtd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reference/daticert.dtd");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), xml).unwrap();
    let out = Command::new("xmllint")
        .args(["--nonet", "--noout", "--dtdvalid"])
        .arg(&dtd)
        .arg(file.path())
        .output()
        .expect("xmllint runs");
    assert!(
        out.status.success(),
        "daticert not DTD-valid: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(xml)
    );
}

fn openssl_verifies(raw: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), raw).unwrap();
    let ca: PathBuf = pki().dir.path().join("ca.pem");
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-CAfile"])
        .arg(&ca)
        .arg("-in")
        .arg(file.path())
        .args(["-out", "/dev/null"])
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl smime -verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Common checks of every receipt and notice (digest §5.2–§5.11).
fn check_notice(built: &Built, prefix: &str, x_ricevuta: &str, to: &str) -> String {
    assert!(
        !built.raw.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "CRLF only"
    );
    let m = parse(&built.raw);
    assert_eq!(
        m.subject(),
        Some(format!("{prefix}Diffida è urgente").as_str())
    );
    assert_eq!(hdr(&m, "From"), Some("posta-certificata@pec.example.it"));
    assert_eq!(hdr(&m, "To"), Some(to));
    assert_eq!(hdr(&m, "X-Ricevuta"), Some(x_ricevuta));
    assert_eq!(
        hdr(&m, "X-Riferimento-Message-ID"),
        Some("<client-1234@host.example>")
    );
    assert_eq!(hdr(&m, "Date"), Some("Mon, 03 Mar 2025 10:00:00 +0100"));
    assert_eq!(m.message_id(), Some(built.message_id.as_str()));
    assert_ne!(built.message_id, ID, "a notice has its own Message-ID");
    assert!(hdr(&m, "X-Trasporto").is_none());
    openssl_verifies(&built.raw);
    m.header_raw("X-VerificaSicurezza")
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A notice with text + daticert only: returns the daticert.
fn text_and_daticert(built: &Built) -> (String, Daticert) {
    let m = parse(&built.raw);
    let parts = mixed(&m);
    assert_eq!(parts.len(), 2, "text and daticert only, never the original");
    (check_text(parts[0]), check_daticert(parts[1], built))
}

// ---------------------------------------------------------------------------------------------
// Normalisation for snapshots: ids, boundaries, dates and the signature are redacted.
// ---------------------------------------------------------------------------------------------

fn normalise(built: &Built) -> String {
    let mut s = String::from_utf8_lossy(&built.raw).into_owned();
    s = s.replace(&built.message_id, "[MESSAGE-ID]");
    let mut n = 0;
    let mut at = 0;
    while let Some(i) = s[at..].find("boundary=") {
        let start = at + i + "boundary=".len();
        let rest = &s[start..];
        let value: String = match rest.strip_prefix('"') {
            Some(q) => q.chars().take_while(|&c| c != '"').collect(),
            None => rest
                .chars()
                .take_while(|&c| !matches!(c, ';' | ' ' | '\r' | '\n'))
                .collect(),
        };
        at = start;
        if value.is_empty() || value.starts_with("[BOUNDARY") {
            continue;
        }
        n += 1;
        s = s.replace(&value, &format!("[BOUNDARY-{n}]"));
    }
    let mut out = Vec::new();
    let mut in_sig = false;
    for line in s.split("\r\n") {
        if line.starts_with("Date:") {
            out.push("Date: [DATE]".to_string());
            continue;
        }
        if line.contains("filename=\"smime.p7s\"") {
            in_sig = true;
        } else if in_sig && line.starts_with("--") {
            in_sig = false;
        } else if in_sig && !line.is_empty() && !line.contains(':') {
            if out.last().map(String::as_str) != Some("[SIGNATURE]") {
                out.push("[SIGNATURE]".into());
            }
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------------------------
// The kinds
// ---------------------------------------------------------------------------------------------

#[test]
fn busta_trasporto_has_the_envelope_headers_parts_and_msgid_swap() {
    let p = provider(TextForm::Plain);
    let c = certification();
    let built = build::busta_trasporto(&p, &c, &original()).unwrap();
    assert_eq!(built.message_id, ID);
    let m = parse(&built.raw);
    assert_eq!(hdr(&m, "X-Trasporto"), Some("posta-certificata"));
    assert_eq!(m.subject(), Some("POSTA CERTIFICATA: Diffida è urgente"));
    let from = m.from().unwrap().first().unwrap();
    assert_eq!(
        from.name(),
        Some("Per conto di: mario.rossi@pec.example.it")
    );
    assert_eq!(from.address(), Some("posta-certificata@pec.example.it"));
    assert_eq!(
        hdr(&m, "Reply-To"),
        Some(SENDER),
        "inserted: the original had none"
    );
    assert_eq!(m.message_id(), Some(ID));
    assert_eq!(
        hdr(&m, "X-Riferimento-Message-ID"),
        Some("<client-1234@host.example>")
    );
    assert_eq!(hdr(&m, "X-TipoRicevuta"), Some("breve"));
    assert_eq!(hdr(&m, "Date"), Some("Mon, 03 Mar 2025 10:00:00 +0100"));
    // RFC 6109 §3.1.5: To, Cc, Received copied byte for byte (the folded To included).
    let raw = String::from_utf8_lossy(&built.raw);
    assert!(raw.contains(&format!("To: Ufficio <{TO_CERT}>,\r\n Info <{TO_EXT}>\r\n")));
    assert!(raw.contains(&format!("\r\nCc: {CC}\r\n")));
    assert!(raw.starts_with("Received: from client.example (client.example [192.0.2.1])\r\n\tby"));
    assert!(
        raw.contains("\r\nSubject: POSTA CERTIFICATA: Diffida =?UTF-8?B?"),
        "prefix stays literal"
    );

    let parts = mixed(&m);
    assert_eq!(parts.len(), 3);
    let text = check_text(parts[0]);
    assert!(
        text.contains("Il giorno 03/03/2025 alle ore 10:00:00 (+0100)"),
        "{text}"
    );
    let qp = body(&m, parts[0]);
    assert!(qp.is_ascii(), "quoted-printable is 7-bit");
    assert!(
        qp.split(|&b| b == b'\n').all(|l| l.len() <= 77),
        "QP lines ≤ 76 + CR"
    );
    assert!(text.contains(ID) && text.contains(TO_EXT));
    let d = check_daticert(parts[1], &built);
    assert_eq!(d.tipo, Tipo::PostaCertificata);
    assert_eq!(d.errore, Errore::Nessuno);
    assert_eq!(d.dati.ricevuta, Some(TipoRicevuta::Breve));
    assert_eq!(d.dati.identificativo, ID);
    assert_eq!(d.dati.msgid.as_deref(), Some("<client-1234@host.example>"));
    assert_eq!(d.dati.data.zona, "+0100");
    assert_eq!(d.intestazione.oggetto.as_deref(), Some("Diffida è urgente"));
    assert_eq!(d.intestazione.destinatari.len(), 3);
    assert_eq!(
        d.intestazione.destinatari[1].tipo,
        TipoDestinatario::Esterno
    );

    assert_eq!(ctype(parts[2]), "message/rfc822");
    assert_eq!(parts[2].attachment_name(), Some("postacert.eml"));
    let inner = body(&m, parts[2]);
    assert_eq!(
        inner,
        postacert_original(&original(), ID).unwrap().as_slice()
    );
    let im = parse(inner);
    assert_eq!(im.message_id(), Some(ID), "msgid swapped in postacert.eml");
    assert_eq!(
        hdr(&im, "X-Riferimento-Message-ID"),
        Some("<client-1234@host.example>")
    );
    openssl_verifies(&built.raw);
    insta::assert_snapshot!("busta_trasporto", normalise(&built));
}

#[test]
fn reply_to_of_the_original_is_copied_unchanged() {
    let p = provider(TextForm::Plain);
    let orig = String::from_utf8(original()).unwrap().replace(
        "Cc: ",
        "Reply-To: Segreteria <segreteria@pec.example.it>\r\nCc: ",
    );
    let c = Certification::from_submission(
        orig.as_bytes(),
        SENDER,
        &[TO_CERT.to_string()],
        &|_| TipoDestinatario::Certificato,
        ID.into(),
        time(),
    )
    .unwrap();
    assert_eq!(c.risposte, "segreteria@pec.example.it");
    let built = build::busta_trasporto(&p, &c, orig.as_bytes()).unwrap();
    let raw = String::from_utf8_lossy(&built.raw);
    let head = &raw[..raw.find("\r\n\r\n").unwrap() + 2];
    assert!(head.contains("\r\nReply-To: Segreteria <segreteria@pec.example.it>\r\n"));
    assert_eq!(
        head.matches("\r\nReply-To:").count(),
        1,
        "copied, not inserted"
    );
}

#[test]
fn accettazione_to_the_sender_without_original() {
    let built = build::accettazione(&provider(TextForm::Plain), &certification()).unwrap();
    assert_eq!(
        check_notice(&built, "ACCETTAZIONE: ", "accettazione", SENDER),
        ""
    );
    let (text, d) = text_and_daticert(&built);
    assert!(text.contains("(\"posta ordinaria\")") && text.contains("è stato accettato"));
    assert_eq!(d.tipo, Tipo::Accettazione);
    assert_eq!(d.dati.ricevuta, None);
    assert_eq!(d.dati.consegna, None);
    insta::assert_snapshot!("accettazione", normalise(&built));
}

#[test]
fn non_accettazione_names_the_reason() {
    let reason = "destinatario in Bcc non ammesso";
    let built =
        build::non_accettazione(&provider(TextForm::Plain), &certification(), reason).unwrap();
    assert_eq!(
        check_notice(
            &built,
            "AVVISO DI NON ACCETTAZIONE: ",
            "non-accettazione",
            SENDER
        ),
        ""
    );
    let (text, d) = text_and_daticert(&built);
    assert!(text.contains(reason));
    assert_eq!((d.tipo, d.errore), (Tipo::NonAccettazione, Errore::Altro));
    assert_eq!(d.dati.errore_esteso.as_deref(), Some(reason));
    insta::assert_snapshot!("non_accettazione", normalise(&built));
}

#[test]
fn non_accettazione_virus_has_verifica_sicurezza() {
    let built =
        build::non_accettazione_virus(&provider(TextForm::Plain), &certification(), "EICAR-Test")
            .unwrap();
    let v = check_notice(
        &built,
        "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
        "non-accettazione",
        SENDER,
    );
    assert_eq!(v, "errore");
    let (text, d) = text_and_daticert(&built);
    assert!(text.contains("EICAR-Test"));
    assert_eq!((d.tipo, d.errore), (Tipo::NonAccettazione, Errore::Virus));
    insta::assert_snapshot!("non_accettazione_virus", normalise(&built));
}

#[test]
fn presa_in_carico_goes_to_the_given_mailbox_with_ricezione() {
    let to = "ricevute@pec.example.it";
    let ric = [TO_CERT.to_string(), CC.to_string()];
    let built =
        build::presa_in_carico(&provider(TextForm::Plain), &certification(), &ric, to).unwrap();
    assert_eq!(
        check_notice(&built, "PRESA IN CARICO: ", "presa-in-carico", to),
        ""
    );
    let (_, d) = text_and_daticert(&built);
    assert_eq!(d.tipo, Tipo::PresaInCarico);
    assert_eq!(d.dati.ricezione, ric.to_vec());
    assert_eq!(
        d.intestazione.destinatari.len(),
        3,
        "all recipients of the original"
    );
    insta::assert_snapshot!("presa_in_carico", normalise(&built));
}

#[test]
fn rilevazione_virus_has_x_mittente_and_goes_to_the_given_mailbox() {
    let to = "ricevute@pec.example.it";
    let built = build::rilevazione_virus(
        &provider(TextForm::Plain),
        &certification(),
        TO_CERT,
        "EICAR-Test",
        to,
    )
    .unwrap();
    assert_eq!(
        check_notice(&built, "PROBLEMA DI SICUREZZA: ", "rilevazione-virus", to),
        ""
    );
    let m = parse(&built.raw);
    assert_eq!(hdr(&m, "X-Mittente"), Some(SENDER));
    let (_, d) = text_and_daticert(&built);
    assert_eq!((d.tipo, d.errore), (Tipo::RilevazioneVirus, Errore::Virus));
    assert_eq!(d.dati.consegna.as_deref(), Some(TO_CERT));
    insta::assert_snapshot!("rilevazione_virus", normalise(&built));
}

#[test]
fn mancata_consegna_virus_has_verifica_sicurezza() {
    let built = build::mancata_consegna_virus(
        &provider(TextForm::Plain),
        &certification(),
        TO_CERT,
        "EICAR-Test",
    )
    .unwrap();
    let v = check_notice(
        &built,
        "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
        "errore-consegna",
        SENDER,
    );
    assert_eq!(v, "errore");
    let (_, d) = text_and_daticert(&built);
    assert_eq!((d.tipo, d.errore), (Tipo::ErroreConsegna, Errore::Virus));
    assert_eq!(d.dati.consegna.as_deref(), Some(TO_CERT));
    insta::assert_snapshot!("mancata_consegna_virus", normalise(&built));
}

#[test]
fn mancata_consegna_carries_errore_and_consegna() {
    let esteso = "5.1.1 - EXAMPLE PEC S.p.A. - indirizzo non valido";
    let built = build::mancata_consegna(
        &provider(TextForm::Plain),
        &certification(),
        TO_CERT,
        Errore::NoDest,
        esteso,
    )
    .unwrap();
    let v = check_notice(
        &built,
        "AVVISO DI MANCATA CONSEGNA: ",
        "errore-consegna",
        SENDER,
    );
    assert_eq!(v, "", "no X-VerificaSicurezza on the ordinary notice");
    let (text, d) = text_and_daticert(&built);
    assert!(text.contains(esteso));
    assert_eq!((d.tipo, d.errore), (Tipo::ErroreConsegna, Errore::NoDest));
    assert_eq!(d.dati.consegna.as_deref(), Some(TO_CERT));
    assert_eq!(d.dati.errore_esteso.as_deref(), Some(esteso));
    insta::assert_snapshot!("mancata_consegna", normalise(&built));
}

#[test]
fn timeout_notices_12h_and_24h() {
    let prefix = "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ";
    for (phase, code, name) in [
        (TimeoutPhase::Preavviso12h, "4.4.7", "timeout_12h"),
        (TimeoutPhase::Finale24h, "5.4.1", "timeout_24h"),
    ] {
        let built = build::mancata_consegna_timeout(
            &provider(TextForm::Plain),
            &certification(),
            TO_CERT,
            phase,
        )
        .unwrap();
        check_notice(&built, prefix, "preavviso-errore-consegna", SENDER);
        let (_, d) = text_and_daticert(&built);
        assert_eq!(d.tipo, Tipo::PreavvisoErroreConsegna);
        assert!(d.dati.errore_esteso.as_deref().unwrap().starts_with(code));
        insta::assert_snapshot!(name, normalise(&built));
    }
}

#[test]
fn avvenuta_consegna_completa_carries_the_envelope_original() {
    let c = certification();
    let inner = postacert_original(&original(), ID).unwrap();
    let built = build::avvenuta_consegna(
        &provider(TextForm::Plain),
        &c,
        TO_CERT,
        ReceiptVariant::Completa,
        Some(&inner),
    )
    .unwrap();
    check_notice(&built, "CONSEGNA: ", "avvenuta-consegna", SENDER);
    let m = parse(&built.raw);
    let parts = mixed(&m);
    assert_eq!(parts.len(), 3);
    check_text(parts[0]);
    let d = check_daticert(parts[1], &built);
    assert_eq!(d.tipo, Tipo::AvvenutaConsegna);
    assert_eq!(d.dati.ricevuta, Some(TipoRicevuta::Completa));
    assert_eq!(d.dati.consegna.as_deref(), Some(TO_CERT));
    assert_eq!(body(&m, parts[2]), inner.as_slice());
    insta::assert_snapshot!("avvenuta_consegna_completa", normalise(&built));
}

#[test]
fn avvenuta_consegna_breve_replaces_attachments_by_their_sha1() {
    let c = certification();
    assert!(is_primary_recipient(&original(), TO_CERT));
    assert_eq!(receipt_variant(c.ricevuta, true), ReceiptVariant::Breve);
    let inner = postacert_original(&original(), ID).unwrap();
    let built = build::avvenuta_consegna(
        &provider(TextForm::Plain),
        &c,
        TO_CERT,
        ReceiptVariant::Breve,
        Some(&inner),
    )
    .unwrap();
    check_notice(&built, "CONSEGNA: ", "avvenuta-consegna", SENDER);
    let m = parse(&built.raw);
    let parts = mixed(&m);
    assert_eq!(parts.len(), 3);
    let d = check_daticert(parts[1], &built);
    assert_eq!(d.dati.ricevuta, Some(TipoRicevuta::Breve));
    let breve = parse(body(&m, parts[2]));
    assert_eq!(breve.message_id(), Some(ID));
    let leaves = children(&breve, &breve.parts[0]);
    assert_eq!(leaves.len(), 3);
    assert_eq!(
        leaves[0].text_contents(),
        Some("Testo della diffida."),
        "text kept"
    );
    assert_eq!(leaves[1].attachment_name(), Some("contratto.pdf.hash"));
    assert_eq!(ctype(leaves[1]), "text/plain");
    let expected = hex(&openssl::sha::sha1(PDF_B64.as_bytes()));
    assert_eq!(leaves[1].text_contents(), Some(expected.as_str()));
    assert_eq!(breve_hash(PDF_B64.as_bytes()), expected);
    let msg_body = "From: a@example.com\r\nSubject: prima\r\n\r\nCorpo.";
    assert_eq!(leaves[2].attachment_name(), Some("prima.eml.hash"));
    assert_eq!(
        leaves[2].text_contents(),
        Some(hex(&openssl::sha::sha1(msg_body.as_bytes())).as_str())
    );
    insta::assert_snapshot!("avvenuta_consegna_breve", normalise(&built));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn breve_keeps_the_signature_of_a_signed_original_and_opaque_smime_whole() {
    let signed = "Message-ID: <x@y>\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"s\"\r\n\r\n\
                  --s\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nciao\r\n\
                  --m\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--m--\r\n\
                  \r\n--s\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\r\nSIG\r\n--s--\r\n";
    let out = String::from_utf8(breve_original(signed.as_bytes()).unwrap()).unwrap();
    assert!(out.contains("name=\"a.bin.hash\""));
    assert!(out.contains(&breve_hash(b"AAEC")));
    assert!(
        out.contains("name=\"smime.p7s\"\r\n\r\nSIG\r\n"),
        "signature untouched"
    );
    let opaque = "Content-Type: application/pkcs7-mime; name=\"smime.p7m\"\r\n\r\nAAAA\r\n";
    assert_eq!(
        breve_original(opaque.as_bytes()).unwrap(),
        opaque.as_bytes()
    );
}

#[test]
fn cc_recipients_get_sintetica() {
    let c = certification();
    let primary = is_primary_recipient(&original(), CC);
    assert!(!primary);
    let variant = receipt_variant(c.ricevuta, primary);
    assert_eq!(variant, ReceiptVariant::Sintetica);
    let built =
        build::avvenuta_consegna(&provider(TextForm::Plain), &c, CC, variant, None).unwrap();
    check_notice(&built, "CONSEGNA: ", "avvenuta-consegna", SENDER);
    let (_, d) = text_and_daticert(&built);
    assert_eq!(d.dati.ricevuta, Some(TipoRicevuta::Sintetica));
    assert_eq!(d.dati.consegna.as_deref(), Some(CC));
    insta::assert_snapshot!("avvenuta_consegna_sintetica", normalise(&built));
}

#[test]
fn completa_without_the_original_is_an_error_not_a_panic() {
    let e = build::avvenuta_consegna(
        &provider(TextForm::Plain),
        &certification(),
        TO_CERT,
        ReceiptVariant::Completa,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("postacert.eml"), "{e}");
}

#[test]
fn busta_anomalia_has_only_text_and_the_received_message() {
    let received = original();
    let built = build::busta_anomalia(
        &provider(TextForm::Plain),
        &received,
        "firma non valida",
        time(),
    )
    .unwrap();
    assert_eq!(
        built.message_id, "client-1234@host.example",
        "Message-ID inherited"
    );
    assert!(built.daticert.is_none());
    let m = parse(&built.raw);
    assert_eq!(hdr(&m, "X-Trasporto"), Some("errore"));
    assert!(hdr(&m, "X-Ricevuta").is_none());
    assert_eq!(m.subject(), Some("ANOMALIA MESSAGGIO: Diffida è urgente"));
    let from = m.from().unwrap().first().unwrap();
    assert_eq!(
        from.name(),
        Some("Per conto di: mario.rossi@pec.example.it")
    );
    assert_eq!(from.address(), Some("posta-certificata@pec.example.it"));
    assert_eq!(hdr(&m, "Reply-To"), Some(SENDER));
    assert_eq!(m.message_id(), Some("client-1234@host.example"));
    let raw = String::from_utf8_lossy(&built.raw);
    assert!(raw.contains(&format!("To: Ufficio <{TO_CERT}>,\r\n Info <{TO_EXT}>\r\n")));
    let parts = mixed(&m);
    assert_eq!(
        parts.len(),
        2,
        "text and the received message, nothing else"
    );
    let text = check_text(parts[0]);
    assert!(text.contains("firma non valida"));
    assert_eq!(ctype(parts[1]), "message/rfc822");
    assert_eq!(
        body(&m, parts[1]),
        received.as_slice(),
        "received message unchanged"
    );
    openssl_verifies(&built.raw);
    insta::assert_snapshot!("busta_anomalia", normalise(&built));
}

#[test]
fn alternative_text_form_and_legacy_signature_style() {
    let mut p = provider(TextForm::Alternative);
    p.options.signature_style = SignatureStyle::Legacy;
    let built = build::accettazione(&p, &certification()).unwrap();
    let m = parse(&built.raw);
    let ct = m.parts[0].content_type().unwrap();
    assert_eq!(
        ct.attribute("protocol"),
        Some("application/x-pkcs7-signature")
    );
    let parts = mixed(&m);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].is_content_type("multipart", "alternative"));
    let alt = children(&m, parts[0]);
    assert_eq!(alt.len(), 2);
    let plain = check_text(alt[0]);
    assert_eq!(ctype(alt[1]), "text/html");
    assert_eq!(
        alt[1].content_type().unwrap().attribute("charset"),
        Some("iso-8859-1")
    );
    let html = alt[1].text_contents().unwrap();
    assert!(html.contains("è stato accettato") && plain.contains("è stato accettato"));
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "no active content or resources"
    );
    check_daticert(parts[1], &built);
    openssl_verifies(&built.raw);
}

// ---------------------------------------------------------------------------------------------
// Helpers: recipients, the msgid swap, certification data, folding
// ---------------------------------------------------------------------------------------------

#[test]
fn primary_recipient_by_to_cc_and_ambiguity() {
    let o = original();
    assert!(is_primary_recipient(&o, TO_CERT));
    assert!(
        is_primary_recipient(&o, "INFO@EXAMPLE.COM"),
        "folded To, case-insensitive"
    );
    assert!(is_primary_recipient(&o, "<ufficio@pec.other.example>"));
    assert!(!is_primary_recipient(&o, CC));
    assert!(
        is_primary_recipient(&o, "nessuno@pec.example.it"),
        "in neither: ambiguous → primary"
    );
    let both = b"To: a@x.it\r\nCc: a@x.it,\r\n\tb@x.it\r\n\r\nbody";
    assert!(is_primary_recipient(both, "a@x.it"));
    assert!(!is_primary_recipient(both, "b@x.it"), "folded Cc");
    assert!(is_primary_recipient(b"", "a@x.it"), "unreadable: ambiguous");
}

#[test]
fn postacert_original_swaps_the_message_id() {
    let out = String::from_utf8(postacert_original(&original(), ID).unwrap()).unwrap();
    let orig = String::from_utf8(original()).unwrap();
    let expected = orig.replace(
        "Message-ID: <client-1234@host.example>\r\n",
        &format!("Message-ID: <{ID}>\r\nX-Riferimento-Message-ID: <client-1234@host.example>\r\n"),
    );
    assert_eq!(out, expected, "nothing else changed");
}

#[test]
fn postacert_original_with_folded_or_missing_message_id() {
    let folded = b"Subject: s\r\nMessage-ID:\r\n <a@b.example>\r\n\r\nbody\r\n";
    let out = String::from_utf8(postacert_original(folded, "id@pec.example.it").unwrap()).unwrap();
    assert_eq!(
        out,
        "Subject: s\r\nMessage-ID: <id@pec.example.it>\r\nX-Riferimento-Message-ID: <a@b.example>\r\n\r\nbody\r\n"
    );
    let none = b"Subject: s\nX-Riferimento-Message-ID: <forged@x>\n\nbody\n";
    let out = String::from_utf8(postacert_original(none, "id@pec.example.it").unwrap()).unwrap();
    assert_eq!(
        out,
        "Subject: s\r\nMessage-ID: <id@pec.example.it>\r\n\r\nbody\r\n"
    );
}

#[test]
fn bad_originals_are_errors_naming_the_problem() {
    for (input, what) in [
        (&b""[..], "no header section"),
        (&b"\r\nbody"[..], "no header section"),
        (&b" continuation\r\n\r\n"[..], "continuation"),
        (&b"Subject: a\r\nnot a header\r\n\r\n"[..], "line 2"),
    ] {
        let e = postacert_original(input, ID).unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
        let e = build::busta_anomalia(&provider(TextForm::Plain), input, "x", time()).unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
    }
    let e = Certification::from_submission(
        &original(),
        SENDER,
        &[],
        &|_| TipoDestinatario::Certificato,
        ID.into(),
        time(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("RCPT TO"), "{e}");
}

#[test]
fn certification_from_submission_and_from_daticert() {
    let c = certification();
    assert_eq!(c.mittente, SENDER);
    assert_eq!(c.risposte, SENDER, "no Reply-To: the sender");
    assert_eq!(c.oggetto.as_deref(), Some("Diffida è urgente"));
    assert_eq!(c.msgid.as_deref(), Some("<client-1234@host.example>"));
    assert_eq!(c.ricevuta, TipoRicevuta::Breve);
    assert_eq!(
        c.destinatari[1],
        Destinatario {
            tipo: TipoDestinatario::Esterno,
            indirizzo: TO_EXT.into()
        }
    );
    let no_tipo = b"Subject: x\r\n\r\n";
    let c2 = Certification::from_submission(
        no_tipo,
        "<a@b.it>",
        &["<c@d.it>".to_string()],
        &|_| TipoDestinatario::Certificato,
        ID.into(),
        time(),
    )
    .unwrap();
    assert_eq!(c2.ricevuta, TipoRicevuta::Completa, "absent → completa");
    assert_eq!(c2.mittente, "a@b.it");
    assert_eq!(c2.destinatari[0].indirizzo, "c@d.it");
    assert_eq!(c2.msgid, None);

    let built = build::busta_trasporto(&provider(TextForm::Plain), &c, &original()).unwrap();
    let later = time() + chrono::Duration::seconds(5);
    let back = Certification::from_daticert(built.daticert.as_ref().unwrap(), later);
    assert_eq!(back, Certification { time: later, ..c });
}

#[test]
fn long_and_non_ascii_subjects_are_folded_and_round_trip() {
    let subj = "Una diffida molto lunga con parole accentate: perché è così, più o meno, là e qua \
                e ancora altre parole per superare largamente i settantotto caratteri";
    let mut c = certification();
    c.oggetto = Some(subj.to_string());
    let built = build::accettazione(&provider(TextForm::Plain), &c).unwrap();
    let raw = String::from_utf8_lossy(&built.raw);
    let head = &raw[..raw.find("\r\n\r\n").unwrap()];
    assert!(head.split("\r\n").all(|l| l.len() <= 78), "folded:\n{head}");
    let m = parse(&built.raw);
    assert_eq!(m.subject(), Some(format!("ACCETTAZIONE: {subj}").as_str()));
    let ascii = "word ".repeat(40);
    c.oggetto = Some(ascii.trim().to_string());
    let built = build::accettazione(&provider(TextForm::Plain), &c).unwrap();
    let m = parse(&built.raw);
    assert_eq!(
        m.subject(),
        Some(format!("ACCETTAZIONE: {}", ascii.trim()).as_str())
    );
}

#[test]
fn identifiers_are_unique_and_well_formed() {
    let a = build::new_identificativo("pec.example.it");
    let b = build::new_identificativo("pec.example.it");
    let n = build::new_message_id("pec.example.it");
    assert_ne!(a, b);
    assert_ne!(a, n);
    for id in [&a, &b, &n] {
        let (local, domain) = id.split_once('@').unwrap();
        assert_eq!(domain, "pec.example.it");
        assert!(
            local.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
            "{id}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Arbitrary bytes as the original never panic: an answer or an error naming the problem.
    #[test]
    fn arbitrary_originals_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let _ = postacert_original(&raw, ID);
        let _ = breve_original(&raw);
        let _ = is_primary_recipient(&raw, TO_CERT);
        let _ = Certification::from_submission(
            &raw,
            SENDER,
            &[TO_CERT.to_string()],
            &|_| TipoDestinatario::Certificato,
            ID.into(),
            time(),
        );
    }

    /// Header-like garbage with folding and MIME structure never panics either.
    #[test]
    fn mime_like_originals_never_panic(raw in "(([A-Za-z-]{1,12}: [ -~]{0,40}\r\n)|( [ -~]{0,20}\r\n)|(--b\r\n)|(Content-Type: multipart/mixed; boundary=b\r\n)|(Content-Disposition: attachment; filename=x\r\n)|(\r\n)){0,30}") {
        let _ = postacert_original(raw.as_bytes(), ID);
        let _ = breve_original(raw.as_bytes());
    }
}
