//! The hashes of a ricevuta di avvenuta consegna breve, checked against the original the runner
//! submitted (`expect.breve_hashes: match_original`). Written from the rule, not from the
//! reference gestore's builder:
//!
//! * RFC 6109 §3.3.2.2: every MIME part with a `name` (Content-Type) or `filename`
//!   (Content-Disposition) parameter is replaced by a text file holding that part's hash; the
//!   hash SHOULD be computed on the base64-encoded part; no PEC machine may alter the encoding.
//! * digest §5.9: SHA-1, 40 hex digits on one line, file name `<name>.hash`.
//! * What exactly is hashed is not settled (digest §5.9 item 3, §17 item 2). We hash the part's
//!   body as transmitted: the base64 text with its CRLF line breaks, up to but not including the
//!   CRLF that belongs to the next boundary delimiter (RFC 2046 §5.1.1). The RFC's own example of
//!   what breaks the hash, a server changing "the base64 line length", only makes sense if the line
//!   breaks are hashed. When a receipt's hash matches another reading instead (decoded bytes,
//!   base64 without line breaks, with the final CRLF) the failure says which.

use crate::craft;
use crate::scenario::Attachment;
use std::collections::BTreeMap;

/// One attachment as the runner sent it.
#[derive(Debug, Clone)]
pub struct SentAttachment {
    /// The file name (`filename=` / `name=`).
    pub name: String,
    /// The decoded content.
    pub content: Vec<u8>,
    /// The body as transmitted: base64 lines with CRLF, without the CRLF before the boundary.
    pub encoded_body: Vec<u8>,
}

/// The attachments of a runner submission, as [`craft::submission`] writes them: base64 in
/// 76-character lines, each ending in CRLF, the next line being the boundary delimiter.
pub fn sent_attachments(attachments: &[Attachment]) -> Vec<SentAttachment> {
    attachments
        .iter()
        .map(|a| {
            let content = craft::attachment_bytes(a);
            let mut encoded_body = craft::base64_lines(&content).into_bytes();
            // RFC 2046 §5.1.1: the CRLF preceding a boundary delimiter belongs to the delimiter.
            if encoded_body.ends_with(b"\r\n") {
                encoded_body.truncate(encoded_body.len() - 2);
            }
            SentAttachment {
                name: a.name.clone(),
                content,
                encoded_body,
            }
        })
        .collect()
}

/// SHA-1 as 40 lower-case hex digits (digest §5.9).
pub fn sha1_hex(bytes: &[u8]) -> String {
    openssl::sha::sha1(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash a breve receipt must carry for `a` (RFC 6109 §3.3.2.2: on the base64-encoded part).
pub fn expected_hash(a: &SentAttachment) -> String {
    sha1_hex(&a.encoded_body)
}

/// Which other reading of "the hash of the part" `got` matches, if any.
fn other_reading(a: &SentAttachment, got: &str) -> Option<&'static str> {
    let mut with_crlf = a.encoded_body.clone();
    with_crlf.extend_from_slice(b"\r\n");
    let no_breaks: Vec<u8> = a
        .encoded_body
        .iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    [
        (sha1_hex(&a.content), "the decoded content"),
        (sha1_hex(&no_breaks), "the base64 text without line breaks"),
        (
            sha1_hex(&with_crlf),
            "the base64 body including the CRLF before the boundary",
        ),
    ]
    .into_iter()
    .find(|(h, _)| h.eq_ignore_ascii_case(got))
    .map(|(_, what)| what)
}

/// The `.hash` parts of a receipt's postacert.eml: (file name, content trimmed).
pub fn hash_parts(postacert: &[u8]) -> Result<Vec<(String, String)>, String> {
    use mail_parser::MimeHeaders;
    let m = mail_parser::MessageParser::default()
        .parse(postacert)
        .ok_or("postacert.eml is not a readable message")?;
    Ok(m.attachments()
        .filter_map(|a| {
            let name = a.attachment_name()?.to_string();
            name.to_ascii_lowercase().ends_with(".hash").then(|| {
                let body = String::from_utf8_lossy(a.contents()).trim().to_string();
                (name, body)
            })
        })
        .collect())
}

/// The Message-ID values of an original (its own and `X-Riferimento-Message-ID`, which carries the
/// client's after the swap of RFC 6109 §3.1.3), without brackets.
pub fn original_ids(postacert: &[u8]) -> Vec<String> {
    ["Message-ID", "X-Riferimento-Message-ID"]
        .iter()
        .flat_map(|h| crate::runner::header_values(postacert, h))
        .map(|v| v.trim().trim_matches(|c| c == '<' || c == '>').to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Compares the receipt's `.hash` parts with the attachments sent: every attachment has exactly one
/// `<name>.hash` with the right SHA-1, and there is no other `.hash` part. `Ok` says what matched;
/// `Err` names each missing, extra or wrong hash.
pub fn compare(postacert: &[u8], sent: &[SentAttachment]) -> Result<String, String> {
    let parts = hash_parts(postacert)?;
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, h) in parts {
        got.entry(name.to_ascii_lowercase()).or_default().push(h);
    }
    let mut problems = Vec::new();
    let mut ok = Vec::new();
    for a in sent {
        let file = format!("{}.hash", a.name);
        let want = expected_hash(a);
        match got.remove(&file.to_ascii_lowercase()).as_deref() {
            None => problems.push(format!("{}: no {file} part", a.name)),
            Some([h]) if h.len() == 40 && h.eq_ignore_ascii_case(&want) => {
                ok.push(format!("{file} = {want}"))
            }
            Some([h]) => problems.push(match other_reading(a, h) {
                Some(what) => format!(
                    "{}: {file} holds `{h}`, the SHA-1 of {what}, not of the base64-encoded part ({want})",
                    a.name
                ),
                None => format!("{}: {file} holds `{h}`, expected {want}", a.name),
            }),
            Some(many) => problems.push(format!(
                "{}: {} parts named {file}",
                a.name,
                many.len()
            )),
        }
    }
    for (name, _) in got {
        problems.push(format!("{name}: a hash part for no attachment sent"));
    }
    if sent.is_empty() && problems.is_empty() {
        return Ok("no attachment sent, no hash part".into());
    }
    if problems.is_empty() {
        Ok(ok.join(", "))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::Draft;
    use reference_gestore::config::ByteSize;

    fn draft() -> Draft {
        Draft {
            from: "alice@pec.a.test".into(),
            to: vec!["bob@pec.b.test".into()],
            subject: "Fattura".into(),
            body: "In allegato.".into(),
            attachments: vec![
                Attachment {
                    name: "fattura.pdf".into(),
                    size: ByteSize(3000),
                    virus: false,
                },
                Attachment {
                    name: "allegato.txt".into(),
                    size: ByteSize(100),
                    virus: false,
                },
            ],
            tipo_ricevuta: Some("breve".into()),
            message_id: "m1@runner.test".into(),
            ..Draft::default()
        }
    }

    /// A postacert.eml with the given `.hash` parts, written by hand.
    fn postacert(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut s = String::from(
            "From: alice@pec.a.test\r\nMessage-ID: <m1@runner.test>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n",
        );
        for (name, h) in parts {
            s += &format!(
                "--b\r\nContent-Type: text/plain; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n{h}\r\n"
            );
        }
        s += "--b--\r\n";
        s.into_bytes()
    }

    #[test]
    fn the_encoded_body_is_what_the_submission_carries_before_the_boundary() {
        let d = draft();
        let raw = craft::submission(&d);
        for a in sent_attachments(&d.attachments) {
            let mut needle = a.encoded_body.clone();
            needle.extend_from_slice(b"\r\n--=_runner_");
            assert!(
                crate::topology::find(&raw, &needle).is_some(),
                "{} not found as sent",
                a.name
            );
            assert_eq!(expected_hash(&a).len(), 40);
        }
    }

    #[test]
    fn matching_hashes_pass_and_one_changed_hash_fails_naming_it() {
        let sent = sent_attachments(&draft().attachments);
        let (h0, h1) = (expected_hash(&sent[0]), expected_hash(&sent[1]));
        let good = postacert(&[("fattura.pdf.hash", &h0), ("allegato.txt.hash", &h1)]);
        let ok = compare(&good, &sent).unwrap();
        assert!(ok.contains(&h0) && ok.contains(&h1), "{ok}");
        // Mutation: one hex digit of one hash changed.
        let mut bad_h1 = h1.clone().into_bytes();
        bad_h1[7] = if bad_h1[7] == b'0' { b'1' } else { b'0' };
        let bad_h1 = String::from_utf8(bad_h1).unwrap();
        let bad = postacert(&[("fattura.pdf.hash", &h0), ("allegato.txt.hash", &bad_h1)]);
        let e = compare(&bad, &sent).unwrap_err();
        assert!(
            e.starts_with("allegato.txt: allegato.txt.hash holds"),
            "{e}"
        );
        assert!(!e.contains("fattura.pdf"), "{e}");
    }

    #[test]
    fn missing_extra_and_other_readings_are_named() {
        let sent = sent_attachments(&draft().attachments);
        let h0 = expected_hash(&sent[0]);
        let e = compare(&postacert(&[("fattura.pdf.hash", &h0)]), &sent).unwrap_err();
        assert_eq!(e, "allegato.txt: no allegato.txt.hash part");
        let h1 = expected_hash(&sent[1]);
        let extra = postacert(&[
            ("fattura.pdf.hash", &h0),
            ("allegato.txt.hash", &h1),
            ("x.doc.hash", &h1),
        ]);
        let e = compare(&extra, &sent).unwrap_err();
        assert!(
            e.contains("x.doc.hash: a hash part for no attachment sent"),
            "{e}"
        );
        let decoded = sha1_hex(&sent[0].content);
        let e = compare(
            &postacert(&[("fattura.pdf.hash", &decoded), ("allegato.txt.hash", &h1)]),
            &sent,
        )
        .unwrap_err();
        assert!(e.contains("the SHA-1 of the decoded content"), "{e}");
        assert!(compare(b"", &sent).is_err());
    }

    /// The reference gestore's builder is the system under test here, never the expectation.
    #[test]
    fn the_reference_breve_builder_agrees_with_the_rule() {
        let d = draft();
        let raw = craft::submission(&d);
        let breve = pec_formats::build::breve_original(&raw).unwrap();
        compare(&breve, &sent_attachments(&d.attachments)).unwrap();
        assert!(original_ids(&breve).contains(&"m1@runner.test".to_string()));
    }
}
