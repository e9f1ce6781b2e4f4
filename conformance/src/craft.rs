//! The messages the runner sends: user submissions (RFC 5322 + MIME, CRLF) and the crafted
//! messages a scenario injects into a gestore's inbound (ordinary mail, unsigned or untrusted or
//! tampered envelopes, a virus inside a valid envelope, a broken daticert). Producing an injected
//! envelope may use the `pec_formats` builders; judging messages never does.

use crate::scenario::Attachment;
use base64::Engine;
use pec_formats::build::{self, Certification, Provider};
use pec_formats::kind::TipoDestinatario;
use pec_formats::smime::{self, Signer};
use std::collections::BTreeMap;

/// A message to submit.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// The From header.
    pub from: String,
    /// To.
    pub to: Vec<String>,
    /// Cc.
    pub cc: Vec<String>,
    /// Bcc (kept as a header: RFC 6109 §3.1.1 wants it empty, negative tests fill it).
    pub bcc: Vec<String>,
    /// Subject.
    pub subject: String,
    /// The text.
    pub body: String,
    /// Generated attachments.
    pub attachments: Vec<Attachment>,
    /// X-TipoRicevuta.
    pub tipo_ricevuta: Option<String>,
    /// More header fields.
    pub headers: BTreeMap<String, String>,
    /// The Message-ID, without brackets.
    pub message_id: String,
}

/// The marker both antivirus engines of the reference gestore detect (a harmless test signature).
pub const VIRUS_MARKER: &str = reference_gestore::antivirus::TEST_MARKER;

/// Deterministic bytes of an attachment (a virus attachment starts with the test marker).
pub fn attachment_bytes(a: &Attachment) -> Vec<u8> {
    let n = a.size.0 as usize;
    let mut out = Vec::with_capacity(n);
    if a.virus {
        out.extend_from_slice(VIRUS_MARKER.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut x: u32 = 0x9e37_79b9 ^ n as u32;
    while out.len() < n {
        // xorshift32: cheap, repeatable filler.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(b'a' + (x % 26) as u8);
    }
    out.truncate(n.max(if a.virus { VIRUS_MARKER.len() + 2 } else { 0 }));
    out
}

/// Base64 in 76-character lines (RFC 2045 §6.8).
pub fn base64_lines(data: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    let mut s = String::with_capacity(b.len() + b.len() / 76 * 2 + 2);
    for chunk in b.as_bytes().chunks(76) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push_str("\r\n");
    }
    s
}

fn date() -> String {
    chrono::Utc::now().to_rfc2822()
}

/// The submission as bytes, CRLF line ends.
pub fn submission(d: &Draft) -> Vec<u8> {
    let mut h = String::new();
    h += &format!("From: {}\r\n", d.from);
    if !d.to.is_empty() {
        h += &format!("To: {}\r\n", d.to.join(", "));
    }
    if !d.cc.is_empty() {
        h += &format!("Cc: {}\r\n", d.cc.join(", "));
    }
    if !d.bcc.is_empty() {
        h += &format!("Bcc: {}\r\n", d.bcc.join(", "));
    }
    h += &format!("Subject: {}\r\nDate: {}\r\n", d.subject, date());
    h += &format!("Message-ID: <{}>\r\nMIME-Version: 1.0\r\n", d.message_id);
    if let Some(t) = &d.tipo_ricevuta {
        h += &format!("X-TipoRicevuta: {t}\r\n");
    }
    for (k, v) in &d.headers {
        h += &format!("{k}: {v}\r\n");
    }
    let body = d.body.replace("\r\n", "\n").replace('\n', "\r\n");
    if d.attachments.is_empty() {
        h += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
        h += &body;
        h += "\r\n";
        return h.into_bytes();
    }
    let boundary = format!("=_runner_{}", d.message_id.replace(['@', '.'], "_"));
    h += &format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n");
    h += &format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    );
    for a in &d.attachments {
        h += &format!(
            "--{boundary}\r\nContent-Type: application/octet-stream; name=\"{n}\"\r\n\
             Content-Disposition: attachment; filename=\"{n}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            n = a.name
        );
        h += &base64_lines(&attachment_bytes(a));
    }
    h += &format!("--{boundary}--\r\n");
    h.into_bytes()
}

/// Plain Internet mail.
pub fn ordinary(from: &str, to: &[String], subject: &str, id: &str) -> Vec<u8> {
    submission(&Draft {
        from: from.into(),
        to: to.to_vec(),
        subject: subject.into(),
        body: "Un messaggio di posta ordinaria.".into(),
        message_id: id.into(),
        ..Draft::default()
    })
}

/// A message that looks like a transport envelope (PEC headers, daticert) but carries no
/// signature (RFC 6109 §2.2.2: it must become an anomaly).
pub fn unsigned_envelope(
    from: &str,
    service: &str,
    to: &[String],
    subject: &str,
    id: &str,
) -> Vec<u8> {
    let original = ordinary(from, to, subject, &format!("orig.{id}"));
    let boundary = format!("=_unsigned_{}", id.replace(['@', '.'], "_"));
    let daticert = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<postacert tipo=\"posta-certificata\" errore=\"nessuno\">\n\
         <intestazione><mittente>{from}</mittente><destinatari tipo=\"certificato\">{to}</destinatari>\
         <risposte>{from}</risposte><oggetto>{subject}</oggetto></intestazione>\n\
         <dati><gestore-emittente>Nessuno</gestore-emittente><data zona=\"+0100\"><giorno>01/01/2026</giorno>\
         <ora>00:00:00</ora></data><identificativo>{id}</identificativo></dati>\n</postacert>\n",
        to = to.first().cloned().unwrap_or_default()
    );
    let mut m = format!(
        "From: \"Per conto di: {from}\" <{service}>\r\nTo: {to}\r\nSubject: POSTA CERTIFICATA: {subject}\r\n\
         Date: {date}\r\nMessage-ID: <{id}>\r\nX-Trasporto: posta-certificata\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n",
        to = to.join(", "),
        date = date()
    );
    m += &format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nMessaggio di posta certificata\r\n"
    );
    m += &format!(
        "--{boundary}\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\n\
         Content-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(daticert.as_bytes())
    );
    m += &format!(
        "--{boundary}\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\n\
         Content-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n"
    );
    let mut raw = m.into_bytes();
    raw.extend_from_slice(&original);
    raw.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    raw
}

/// A transport envelope built and signed by `provider` for an original from `from` to `to`.
pub fn signed_envelope(
    provider: &Provider<'_>,
    from: &str,
    to: &[String],
    original: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let c = Certification::from_submission(
        original,
        from,
        to,
        &|_| TipoDestinatario::Certificato,
        build::new_identificativo(&provider.domain),
        chrono::Utc::now(),
    )?;
    Ok(build::busta_trasporto(provider, &c, original)?.raw)
}

/// A transport envelope signed by `signer` whose daticert.xml is not well-formed (RFC 6109 §4.4;
/// digest §15 B3: it must become an anomaly).
pub fn bad_daticert_envelope(
    signer: &Signer,
    from: &str,
    service: &str,
    to: &[String],
    subject: &str,
    id: &str,
) -> anyhow::Result<Vec<u8>> {
    let daticert = "<?xml version=\"1.0\"?>\r\n<postacert tipo=\"posta-certificata\"><intestazione><mittente>\r\n";
    envelope_with_daticert(signer, from, service, to, subject, id, daticert)
}

/// A daticert.xml whose DOCTYPE names an external DTD at `base` (a URL of the runner's loopback
/// listener), declares an external parameter entity and an external general entity there, and an
/// entity-expansion bomb (billion laughs) used in `<oggetto>` (DC-05; digest §6.2, §14.7). The rest
/// is a well-formed posta-certificata daticert, so refusing the entities is the only reason to
/// reject it.
pub fn hostile_daticert(base: &str, from: &str, to: &[String], subject: &str, id: &str) -> String {
    let base = base.trim_end_matches('/');
    let mut bomb = String::from("  <!ENTITY lol0 \"lol\">\n");
    for i in 1..10 {
        bomb += &format!(
            "  <!ENTITY lol{i} \"{}\">\n",
            format!("&lol{};", i - 1).repeat(10)
        );
    }
    let dest: String = to
        .iter()
        .map(|t| format!("<destinatari tipo=\"certificato\">{t}</destinatari>"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE postacert SYSTEM \"{base}/daticert.dtd\" [\n\
         \x20 <!ENTITY % remote SYSTEM \"{base}/parameter.ent\">\n\
         \x20 %remote;\n\
         \x20 <!ENTITY xxe SYSTEM \"{base}/general.ent\">\n\
         {bomb}]>\n\
         <postacert tipo=\"posta-certificata\" errore=\"nessuno\">\n\
         <intestazione><mittente>{from}</mittente>{dest}<risposte>{from}</risposte>\
         <oggetto>{subject} &lol9; &xxe;</oggetto></intestazione>\n\
         <dati><gestore-emittente>Gestore di prova</gestore-emittente>\
         <data zona=\"+0100\"><giorno>01/01/2026</giorno><ora>00:00:00</ora></data>\
         <identificativo>{id}</identificativo><msgid>&lt;orig.{id}&gt;</msgid>\
         <ricevuta tipo=\"completa\"/></dati>\n</postacert>\n"
    )
}

/// A transport envelope signed by `signer` whose daticert.xml is [`hostile_daticert`].
pub fn hostile_daticert_envelope(
    signer: &Signer,
    from: &str,
    service: &str,
    to: &[String],
    subject: &str,
    id: &str,
    base: &str,
) -> anyhow::Result<Vec<u8>> {
    let daticert = hostile_daticert(base, from, to, subject, id);
    envelope_with_daticert(signer, from, service, to, subject, id, &daticert)
}

/// A valid transport envelope built by `provider` (signed with `signer`, its key) whose
/// daticert.xml names its DTD on `base` (a URL of the runner's loopback listener) in the DOCTYPE,
/// as real providers name theirs (`PUBLIC "..." "https://..."`, digest §6.2), and declares no
/// entity. Readers must deliver it normally and fetch nothing (DC-05; digest §6.2, §14.7).
pub fn remote_doctype_envelope(
    provider: &Provider<'_>,
    signer: &Signer,
    from: &str,
    to: &[String],
    original: &[u8],
    base: &str,
) -> anyhow::Result<Vec<u8>> {
    use crate::topology::find;
    use anyhow::Context;
    let raw = signed_envelope(provider, from, to, original)?;
    let head_end = find(&raw, b"\r\n\r\n").context("envelope without a body")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let ct_at = head
        .to_ascii_lowercase()
        .find("\r\ncontent-type:")
        .context("envelope without Content-Type")?;
    let boundary = head[ct_at..]
        .split("boundary=\"")
        .nth(1)
        .and_then(|b| b.split('"').next())
        .context("multipart/signed without a quoted boundary")?
        .to_string();
    // RFC 1847 §2.1: the signed entity is the first part of the multipart/signed.
    let open = format!("--{boundary}\r\n");
    let first = find(&raw, open.as_bytes()).context("no first part")? + open.len();
    let end = find(&raw[first..], format!("\r\n--{boundary}").as_bytes())
        .context("no second part")?
        + first;
    let inner = &raw[first..end];
    // The daticert part, base64 (as the builder writes it).
    let marker = b"filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    let b64_start = find(inner, marker).context("no base64 daticert.xml part")? + marker.len();
    let b64_end =
        find(&inner[b64_start..], b"\r\n--").context("daticert.xml part not closed")? + b64_start;
    let b64: Vec<u8> = inner[b64_start..b64_end]
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let xml = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64)?)?;
    let remote = format!(
        "<!DOCTYPE postacert PUBLIC \"-//Gestore di prova//DTD posta certificata//IT\" \"{}/daticert.dtd\">",
        base.trim_end_matches('/')
    );
    anyhow::ensure!(
        xml.contains(pec_formats::daticert::DOCTYPE),
        "the built daticert has no DOCTYPE to replace"
    );
    let xml = xml.replace(pec_formats::daticert::DOCTYPE, &remote);
    let encoded = base64::engine::general_purpose::STANDARD.encode(xml.as_bytes());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let mut new_inner = inner[..b64_start].to_vec();
    new_inner.extend_from_slice(lines.join("\r\n").as_bytes());
    new_inner.extend_from_slice(&inner[b64_end..]);
    // RFC 6109 §2.1: signed again with the provider's key, the headers unchanged but the
    // Content-Type (its new boundary).
    let signed = smime::sign(signer, &new_inner)?;
    let ct_end = head[ct_at + 2..]
        .find("\r\n")
        .map(|i| ct_at + 2 + i)
        .unwrap_or(head.len());
    // A folded Content-Type continues on lines starting with white space.
    let mut ct_end = ct_end;
    while head[ct_end..].starts_with("\r\n ") || head[ct_end..].starts_with("\r\n\t") {
        ct_end = head[ct_end + 2..]
            .find("\r\n")
            .map(|i| ct_end + 2 + i)
            .unwrap_or(head.len());
    }
    let mut out = format!(
        "{}\r\nContent-Type: {}{}\r\n\r\n",
        &head[..ct_at],
        signed.content_type,
        &head[ct_end..]
    )
    .into_bytes();
    out.extend_from_slice(&signed.body);
    Ok(out)
}

/// A transport envelope (RFC 6109 §3.1.3 layout: text, daticert.xml, postacert.eml) signed by
/// `signer`, carrying `daticert` as written.
fn envelope_with_daticert(
    signer: &Signer,
    from: &str,
    service: &str,
    to: &[String],
    subject: &str,
    id: &str,
    daticert: &str,
) -> anyhow::Result<Vec<u8>> {
    let original = ordinary(from, to, subject, &format!("orig.{id}"));
    let boundary = format!("=_bad_{}", id.replace(['@', '.'], "_"));
    let daticert = daticert.replace("\r\n", "\n").replace('\n', "\r\n");
    let mut inner = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nMessaggio di posta certificata\r\n\
         --{boundary}\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\n\
         Content-Disposition: inline; filename=\"daticert.xml\"\r\n\r\n\
         {daticert}\
         --{boundary}\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\n\
         Content-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n"
    )
    .into_bytes();
    inner.extend_from_slice(&original);
    inner.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let signed = smime::sign(signer, &inner)?;
    let mut raw = format!(
        "From: \"Per conto di: {from}\" <{service}>\r\nTo: {to}\r\nSubject: POSTA CERTIFICATA: {subject}\r\n\
         Date: {date}\r\nMessage-ID: <{id}>\r\nX-Trasporto: posta-certificata\r\nMIME-Version: 1.0\r\n\
         Content-Type: {ct}\r\n\r\n",
        to = to.join(", "),
        date = date(),
        ct = signed.content_type
    )
    .into_bytes();
    raw.extend_from_slice(&signed.body);
    Ok(raw)
}

/// The message with one letter of its signed content changed (in the body of the first part of
/// the top-level `multipart/signed`, RFC 1847 §2.1): the signature no longer verifies
/// (RFC 6109 §2.2.2). `None` when the message is not a multipart/signed.
pub fn tamper(raw: &[u8]) -> Option<Vec<u8>> {
    use crate::topology::find;
    let head_end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let lower = head.to_ascii_lowercase();
    let at = lower.find("boundary=")? + "boundary=".len();
    let rest = &head[at..];
    let boundary: String = if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next()?.to_string()
    } else {
        rest.split(|c: char| c == ';' || c.is_whitespace())
            .next()?
            .to_string()
    };
    let open = format!("--{boundary}\r\n");
    let first = find(&raw[head_end..], open.as_bytes())? + head_end + open.len();
    let close = format!("\r\n--{boundary}");
    let end = find(&raw[first..], close.as_bytes())? + first;
    let body = find(&raw[first..end], b"\r\n\r\n")? + first + 4;
    let mid = body + (end - body) / 2;
    let pos = raw[mid..end]
        .iter()
        .position(|b| b.is_ascii_lowercase() && *b != b'z')
        .map(|p| p + mid)
        .or_else(|| {
            raw[body..mid]
                .iter()
                .rposition(|b| b.is_ascii_lowercase() && *b != b'z')
                .map(|p| p + body)
        })?;
    let mut out = raw.to_vec();
    out[pos] += 1;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reference_gestore::config::ByteSize;

    #[test]
    fn a_submission_has_the_headers_and_sized_attachments() {
        let d = Draft {
            from: "alice@pec.a.test".into(),
            to: vec!["bob@pec.b.test".into()],
            cc: vec!["carol@pec.b.test".into()],
            subject: "Contratto".into(),
            body: "testo\nriga".into(),
            attachments: vec![Attachment {
                name: "c.pdf".into(),
                size: ByteSize(1000),
                virus: true,
            }],
            tipo_ricevuta: Some("breve".into()),
            message_id: "m1@runner.test".into(),
            ..Draft::default()
        };
        let raw = String::from_utf8(submission(&d)).unwrap();
        assert!(raw.contains("To: bob@pec.b.test\r\nCc: carol@pec.b.test\r\n"));
        assert!(raw.contains("X-TipoRicevuta: breve\r\n"));
        assert!(raw.contains("filename=\"c.pdf\""));
        assert!(!raw.contains("\r\r") && !raw.replace("\r\n", "").contains('\r'));
        let bytes = attachment_bytes(&d.attachments[0]);
        assert_eq!(bytes.len(), 1000);
        assert!(bytes.starts_with(VIRUS_MARKER.as_bytes()));
    }

    #[test]
    fn the_hostile_daticert_points_at_the_listener_and_is_refused_by_both_readers() {
        let to = vec!["bob@pec.b.test".to_string()];
        let x = hostile_daticert(
            "http://127.0.0.1:9/",
            "a@pec.a.test",
            &to,
            "S",
            "id1@pec.a.test",
        );
        assert!(
            x.contains("SYSTEM \"http://127.0.0.1:9/daticert.dtd\" ["),
            "{x}"
        );
        assert!(x.contains("<!ENTITY lol9 \"&lol8;&lol8;"), "{x}");
        assert!(matches!(
            crate::dtd::parse_tree(x.as_bytes()),
            Err(crate::dtd::XmlError::Entity(_))
        ));
        assert!(pec_formats::daticert::Daticert::from_xml(x.as_bytes()).is_err());
        // Without the internal subset the same document reads: only the entities are refused.
        let start = x.find(" [").unwrap();
        let end = x.find("]>").unwrap();
        let plain = format!("{}>{}", &x[..start], &x[end + 2..]).replace(" &lol9; &xxe;", "");
        crate::dtd::parse_tree(plain.as_bytes()).unwrap();
    }

    #[test]
    fn the_remote_doctype_envelope_names_the_listener_verifies_and_declares_no_entity() {
        let ca = pec_formats::pki::TestCa::generate("Test CA").unwrap();
        let ident = ca
            .issue_provider("Gestore A", "posta-certificata@pec.a.test")
            .unwrap();
        let signer = Signer {
            key: ident.key,
            cert: ident.cert,
            chain: vec![],
            digest: pec_formats::smime::DigestAlg::Sha256,
        };
        let p = Provider::new("Gestore A", "pec.a.test", &signer);
        let to = vec!["bob@pec.b.test".to_string()];
        let original = ordinary("alice@pec.a.test", &to, "DTD remoto", "orig.1@pec.a.test");
        let raw = remote_doctype_envelope(
            &p,
            &signer,
            "alice@pec.a.test",
            &to,
            &original,
            "http://127.0.0.1:9/",
        )
        .unwrap();
        let msg = pec_formats::parse::parse(&raw).unwrap();
        let xml = String::from_utf8(msg.daticert_xml.clone().unwrap()).unwrap();
        assert!(
            xml.contains("\"http://127.0.0.1:9/daticert.dtd\">"),
            "{xml}"
        );
        assert!(!xml.contains("<!ENTITY") && !xml.contains(" ["), "{xml}");
        pec_formats::daticert::Daticert::from_xml(xml.as_bytes()).unwrap();
        crate::dtd::parse_tree(xml.as_bytes()).unwrap();
        // The whole message passes the offline checks (the signature was made again).
        let r = crate::checks::verify_bytes("x", &raw, &crate::checks::VerifyConfig::default());
        let failed: Vec<_> = r
            .checks
            .iter()
            .filter(|c| c.verdict == crate::report::Verdict::Fail)
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "signature.integrity" && c.verdict == crate::report::Verdict::Pass)
        );
    }

    #[test]
    fn tampering_changes_exactly_one_byte() {
        let raw = b"Content-Type: multipart/signed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello world\r\n--b\r\nContent-Disposition: attachment; filename=smime.p7s\r\n\r\nAAAA\r\n--b--\r\n";
        let t = tamper(raw).unwrap();
        assert_eq!(t.len(), raw.len());
        let diffs: Vec<usize> = (0..raw.len()).filter(|&i| raw[i] != t[i]).collect();
        assert_eq!(diffs.len(), 1);
        let body = crate::topology::find(raw, b"hello").unwrap();
        assert!((body..body + 11).contains(&diffs[0]), "{}", diffs[0]);
        assert!(tamper(b"Content-Type: text/plain\r\n\r\nhi\r\n").is_none());
    }
}
