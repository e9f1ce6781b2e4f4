//! Snapshots of the messages the reference gestore emits, one `.snap` per scenario, so any change
//! in what it writes shows up in review. Each scenario of a representative subset (at least one per
//! message kind) runs end to end; every message an `expect` step collected is normalised: volatile
//! values (dates, Message-IDs, identificativi, boundaries, signatures, ports, random ids) are
//! redacted, header order is kept, text parts are decoded, daticert.xml is decoded and indented.
//!
//! Update after a deliberate change: `INSTA_UPDATE=always cargo test -p pec-conformance --test
//! snapshots` (or `cargo insta review`), then review the diff.

use base64::Engine;
use pec_conformance::mime::{header, media_type, multipart_parts, param, split_entity};
use pec_conformance::run_report::{ScenarioResult, Status};
use pec_conformance::runner::run_scenario;
use pec_conformance::scenario::{Scenario, load_requirements};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// At least one scenario per message kind (named in the comment).
const SUBSET: &[&str] = &[
    // accettazione, presa in carico, posta certificata (envelope), avvenuta consegna completa
    "delivery.to-one.completa",
    // avvenuta consegna breve
    "receipt.breve",
    // avvenuta consegna sintetica
    "receipt.sintetica",
    // non accettazione (formal)
    "access.from-mismatch",
    // non accettazione per virus
    "access.virus",
    // busta di anomalia
    "reception.unsigned-anomaly",
    // rilevazione virus, mancata consegna per virus
    "reception.virus",
    // mancata consegna
    "delivery.unknown-mailbox",
    // the 12h preavviso and the 24h notice of mancata consegna
    "timers.neither",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scenario(id: &str) -> Scenario {
    let reqs: BTreeSet<String> = load_requirements(&root().join("requirements.yaml"))
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    Scenario::load(&root().join("scenarios").join(format!("{id}.yaml")), &reqs).unwrap()
}

/// RFC 2045 §6.7 quoted-printable, leniently (a bad escape is kept as written).
fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            let rest = &body[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            let hex = rest
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The body decoded per its Content-Transfer-Encoding (RFC 2045 §6).
fn decode_body(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let cte = header(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    match cte.as_str() {
        "base64" => {
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&clean)
                .unwrap_or_else(|e| format!("[bad base64: {e}]").into_bytes())
        }
        "quoted-printable" => decode_qp(body),
        _ => body.to_vec(),
    }
}

/// Text in its charset: ISO-8859-1 maps bytes to code points (RFC 6109 §4.3.1), else UTF-8.
fn to_text(headers: &[(String, String)], bytes: &[u8]) -> String {
    let charset = header(headers, "Content-Type")
        .and_then(|v| param(v, "charset"))
        .unwrap_or_default()
        .to_ascii_lowercase();
    if charset == "iso-8859-1" || charset == "latin1" {
        bytes.iter().map(|&b| b as char).collect()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// daticert.xml indented, one element per line.
fn pretty_xml(xml: &[u8]) -> String {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut writer = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(e) => {
                if writer.write_event(e).is_err() {
                    return format!("[unwritable XML]\n{}", String::from_utf8_lossy(xml));
                }
            }
            Err(e) => return format!("[bad XML: {e}]\n{}", String::from_utf8_lossy(xml)),
        }
    }
    String::from_utf8_lossy(&writer.into_inner()).into_owned()
}

/// Headers whose whole value is volatile.
fn redacted_header(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "date" => Some("[date]"),
        "received" => Some("[received]"),
        "message-id" | "x-riferimento-message-id" | "in-reply-to" | "references" => {
            Some("[message-id]")
        }
        _ => None,
    }
}

/// One entity, normalised, at `path` ("1", "1.2", …).
fn normalise(entity: &[u8], path: &str, out: &mut String) {
    let (headers, body) = split_entity(entity);
    for (n, v) in &headers {
        let v = redacted_header(n).unwrap_or(v);
        out.push_str(&format!("{n}: {v}\n"));
    }
    let ct = header(&headers, "Content-Type");
    let media = media_type(ct);
    let name = ct
        .and_then(|v| param(v, "name"))
        .or_else(|| header(&headers, "Content-Disposition").and_then(|v| param(v, "filename")))
        .unwrap_or_default();
    out.push('\n');
    if media.starts_with("multipart/") {
        let boundary = ct.and_then(|v| param(v, "boundary")).unwrap_or_default();
        for (i, part) in multipart_parts(body, &boundary).iter().enumerate() {
            let p = format!("{path}.{}", i + 1);
            out.push_str(&format!("----- part {p} -----\n"));
            normalise(part, &p, out);
        }
        out.push_str(&format!("----- end of {path} -----\n"));
    } else if media == "message/rfc822" {
        let inner = decode_body(&headers, body);
        out.push_str(&format!("----- message {path}.m -----\n"));
        normalise(&inner, &format!("{path}.m"), out);
    } else if media.contains("pkcs7-signature") {
        out.push_str("[signature redacted]\n");
    } else if name.eq_ignore_ascii_case("daticert.xml") || media.ends_with("/xml") {
        out.push_str(&pretty_xml(&decode_body(&headers, body)));
        out.push('\n');
    } else if media.starts_with("text/") {
        let text = to_text(&headers, &decode_body(&headers, body));
        for line in text.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    } else {
        let bytes = decode_body(&headers, body);
        let hash: String = openssl::sha::sha256(&bytes)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push_str(&format!("[{} bytes, sha256 {hash}…]\n", bytes.len()));
    }
}

/// Every message the `expect` steps collected, normalised, in step order.
fn collected(r: &ScenarioResult, out_dir: &Path) -> String {
    let mut out = String::new();
    for s in r.steps.iter().filter(|s| s.name == "expect") {
        for e in s.evidence.iter().filter(|e| e.ends_with(".eml")) {
            let file = e.rsplit('/').next().unwrap_or(e);
            let raw = std::fs::read(out_dir.join(e)).unwrap();
            out.push_str(&format!(
                "=============== step {} (line {}): {file} ===============\n",
                s.index + 1,
                s.line
            ));
            normalise(&raw, "1", &mut out);
            out.push('\n');
        }
    }
    out
}

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        // Dates and times in texts and daticert (RFC 6109 §4.1–§4.2 writes local time and zone).
        (r"\b\d{2}/\d{2}/\d{4}\b", "[dd/mm/yyyy]"),
        (r"\b\d{2}:\d{2}:\d{2}\b", "[hh:mm:ss]"),
        (r#"zona="[^"]*""#, r#"zona="[zona]""#),
        (r"\([+-]\d{4}\)", "([zone])"),
        // Identificativi and message ids (RFC 6109 §2.2.1).
        (
            r"<identificativo>[^<]*</identificativo>",
            "<identificativo>[identificativo]</identificativo>",
        ),
        (r"<msgid>[^<]*</msgid>", "<msgid>[msgid]</msgid>"),
        (r"\.[0-9a-f]{8,}@runner\.test", ".[nanos]@runner.test"),
        (r"opec[0-9A-Za-z.@_\-]+", "[identificativo]"),
        // MIME boundaries.
        (r#"boundary="?[^";\s]+"?"#, r#"boundary="[boundary]""#),
        // Loopback ports.
        (r"127\.0\.0\.1\]?:\d+", "127.0.0.1:[port]"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_messages_match_their_snapshots() {
    let out = tempfile::tempdir().unwrap();
    // Three scenarios at a time (each runs its own gestori; most of the time is spent waiting).
    let mut results = Vec::new();
    for pair in SUBSET.chunks(3) {
        let handles: Vec<_> = pair
            .iter()
            .map(|id| {
                let dir = out.path().to_path_buf();
                let s = scenario(id);
                tokio::spawn(run_scenario(s, None, false, dir))
            })
            .collect();
        for (id, h) in pair.iter().zip(handles) {
            results.push((*id, h.await.unwrap()));
        }
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (f, r) in filters() {
        settings.add_filter(f, r);
    }
    settings.bind(|| {
        for (id, r) in &results {
            assert_eq!(r.status, Status::Passed, "{id}: {:?}", r.message);
            let text = collected(r, out.path());
            assert!(
                text.contains("X-Ricevuta") || text.contains("X-Trasporto"),
                "{id}"
            );
            settings_snapshot(id, &text);
        }
    });
}

fn settings_snapshot(id: &str, text: &str) {
    insta::assert_snapshot!(id.to_string(), text);
}
