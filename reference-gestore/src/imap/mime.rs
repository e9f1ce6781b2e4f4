//! The MIME structure of a stored message as IMAP shows it: header and body ranges of every part,
//! section addressing (RFC 3501 §6.4.5), ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2). The stored
//! bytes are never changed (RFC 6109 §3.3); parsing is lenient and never fails.

use super::respond::{istring, nstring};
use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::core::{IString, NString, Vec1};
use imap_codec::imap_types::envelope::{Address, Envelope};
use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;

/// One MIME entity of a message.
#[derive(Debug, Clone)]
pub struct Part {
    /// Where its header starts.
    pub start: usize,
    /// Where its body starts (after the blank line).
    pub body_start: usize,
    /// Where it ends.
    pub end: usize,
    /// Its header fields, unfolded: (name, value).
    pub headers: Vec<(String, String)>,
    /// Content type, lower case (`text`).
    pub ctype: String,
    /// Subtype, lower case (`plain`).
    pub subtype: String,
    /// Content-Type parameters.
    pub params: Vec<(String, String)>,
    /// Body parts of a multipart.
    pub children: Vec<Part>,
    /// The message inside a message/rfc822 part.
    pub message: Option<Box<Part>>,
}

/// A header value with its RFC 2047 encoded words decoded (RFC 2047 §6.1, mail-parser's decoder),
/// as SEARCH compares it; the value unchanged when it has none or they cannot be read.
pub fn decode_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    let mut input = Vec::with_capacity(value.len() + 3);
    input.push(b' ');
    input.extend_from_slice(value.as_bytes());
    input.extend_from_slice(b"\r\n");
    // Bad input never panics the session, even if the parser does.
    std::panic::catch_unwind(|| match MessageStream::new(&input).parse_unstructured() {
        HeaderValue::Text(t) => Some(t.trim().to_string()),
        HeaderValue::TextList(l) => Some(l.join(" ").trim().to_string()),
        _ => None,
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| value.to_string())
}

fn header_end(raw: &[u8], start: usize, end: usize) -> (usize, usize) {
    // The header ends at the first empty line (RFC 5322 §2.1).
    let mut i = start;
    while i < end {
        let line_end = raw[i..end]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(end, |p| i + p + 1);
        let line = &raw[i..line_end];
        if line == b"\r\n" || line == b"\n" {
            return (i, line_end);
        }
        i = line_end;
    }
    (end, end)
}

fn parse_headers(block: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(block);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Parses `type/subtype; a=b; c="d"`.
fn content_type(v: &str) -> (String, String, Vec<(String, String)>) {
    let mut parts = split_params(v);
    let first = if parts.is_empty() {
        String::new()
    } else {
        parts.remove(0)
    };
    let (t, s) = first.split_once('/').unwrap_or(("", ""));
    (
        t.trim().to_ascii_lowercase(),
        s.trim().to_ascii_lowercase(),
        params_of(parts),
    )
}

fn split_params(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in v.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                out.last_mut().unwrap_or(&mut String::new()).push(c);
            }
            ';' if !quoted => out.push(String::new()),
            _ => {
                if let Some(l) = out.last_mut() {
                    l.push(c)
                }
            }
        }
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn params_of(parts: Vec<String>) -> Vec<(String, String)> {
    parts
        .into_iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect()
}

impl Part {
    /// Parses the entity in `raw[start..end]`; `default` is the type when there is no
    /// Content-Type (RFC 2045 §5.2: text/plain; multipart/digest parts: message/rfc822).
    pub fn parse(raw: &[u8], start: usize, end: usize, depth: usize) -> Part {
        Self::parse_with(raw, start, end, depth, ("text", "plain"))
    }

    fn parse_with(
        raw: &[u8],
        start: usize,
        end: usize,
        depth: usize,
        default: (&str, &str),
    ) -> Part {
        let (hend, body_start) = header_end(raw, start, end);
        let headers = parse_headers(&raw[start..hend]);
        let ct = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
            .map(|(_, v)| content_type(v));
        let (ctype, subtype, mut params) = match ct {
            Some((t, s, p)) if !t.is_empty() && !s.is_empty() => (t, s, p),
            _ => (default.0.to_string(), default.1.to_string(), vec![]),
        };
        if ctype == "text" && !params.iter().any(|(k, _)| k == "charset") {
            params.push(("charset".into(), "us-ascii".into()));
        }
        let mut p = Part {
            start,
            body_start,
            end,
            headers,
            ctype,
            subtype,
            params,
            children: vec![],
            message: None,
        };
        // A bound on nesting keeps hostile input from exhausting the stack.
        if depth > 20 {
            return p;
        }
        if p.ctype == "multipart" {
            if let Some(b) = p.param("boundary") {
                let child_default = if p.subtype == "digest" {
                    ("message", "rfc822")
                } else {
                    ("text", "plain")
                };
                p.children = split_multipart(raw, body_start, end, b.as_bytes())
                    .into_iter()
                    .map(|(s, e)| Part::parse_with(raw, s, e, depth + 1, child_default))
                    .collect();
            }
        } else if p.ctype == "message" && p.subtype == "rfc822" {
            p.message = Some(Box::new(Part::parse(raw, body_start, end, depth + 1)));
        }
        p
    }

    /// A Content-Type parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The first header field of that name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The part numbered `n` (1-based) under this entity (RFC 3501 §6.4.5): a child of a
    /// multipart, the parts of an encapsulated message, or the body itself for part 1 of a
    /// single-part entity.
    fn child(&self, n: usize) -> Option<&Part> {
        if self.ctype == "multipart" {
            return self.children.get(n.checked_sub(1)?);
        }
        if let Some(m) = &self.message {
            return m.child(n);
        }
        (n == 1).then_some(self)
    }
}

/// The (start, end) of each body part between the delimiters (RFC 2046 §5.1.1). The CRLF before a
/// delimiter belongs to the delimiter.
fn split_multipart(raw: &[u8], start: usize, end: usize, boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut out = Vec::new();
    let mut current: Option<usize> = None;
    let mut i = start;
    while i < end {
        let line_end = raw[i..end]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(end, |p| i + p + 1);
        let line = &raw[i..line_end];
        if let Some(rest) = line.strip_prefix(delim.as_slice()) {
            let rest_trim: &[u8] = rest.trim_ascii();
            let close = rest_trim == b"--";
            if rest_trim.is_empty() || close {
                if let Some(s) = current.take() {
                    let mut e = i;
                    if e >= s + 2 && &raw[e - 2..e] == b"\r\n" {
                        e -= 2;
                    } else if e > s && raw[e - 1] == b'\n' {
                        e -= 1;
                    }
                    out.push((s, e.max(s)));
                }
                if close {
                    return out;
                }
                current = Some(line_end);
            }
        }
        i = line_end;
    }
    if let Some(s) = current {
        out.push((s, end));
    }
    out
}

/// A section specification (RFC 3501 §6.4.5 `section`), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The part numbers.
    pub path: Vec<usize>,
    /// `""`, `HEADER`, `TEXT`, `MIME`, `HEADER.FIELDS`, `HEADER.FIELDS.NOT`.
    pub text: String,
    /// The field names of HEADER.FIELDS(.NOT), upper case.
    pub fields: Vec<String>,
}

impl Section {
    /// Parses the text between the brackets.
    pub fn parse(s: &str) -> Result<Section, String> {
        let (spec, fields) = match s.split_once('(') {
            Some((a, b)) => {
                let b = b
                    .strip_suffix(')')
                    .ok_or_else(|| format!("bad section {s:?}"))?;
                (
                    a.trim(),
                    b.split_whitespace()
                        .map(|f| f.trim_matches('"').to_ascii_uppercase())
                        .collect(),
                )
            }
            None => (s.trim(), vec![]),
        };
        let mut path = Vec::new();
        let mut rest = spec;
        while let Some(first) = rest.split('.').next() {
            let Ok(n) = first.parse::<usize>() else { break };
            if n == 0 {
                return Err(format!("bad section {s:?}"));
            }
            path.push(n);
            rest = rest.get(first.len() + 1..).unwrap_or("");
        }
        let text = rest.to_ascii_uppercase();
        let ok = match text.as_str() {
            "" | "HEADER" | "TEXT" => fields.is_empty(),
            "MIME" => !path.is_empty() && fields.is_empty(),
            "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => !fields.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(format!("bad section {s:?}"));
        }
        Ok(Section { path, text, fields })
    }

    /// The bytes of this section of `raw` (empty when the part does not exist, RFC 3501 §6.4.5).
    pub fn extract(&self, raw: &[u8], root: &Part) -> Vec<u8> {
        let mut part = root;
        for &n in &self.path {
            match part.child(n) {
                Some(p) => part = p,
                None => return Vec::new(),
            }
        }
        // HEADER/TEXT of a numbered part address the encapsulated message.
        let msg = if self.path.is_empty() {
            Some(root)
        } else {
            part.message.as_deref()
        };
        match self.text.as_str() {
            "" if self.path.is_empty() => raw.to_vec(),
            "" => raw[part.body_start..part.end].to_vec(),
            "MIME" => raw[part.start..part.body_start].to_vec(),
            "HEADER" => msg.map_or(Vec::new(), |m| raw[m.start..m.body_start].to_vec()),
            "TEXT" => msg.map_or(Vec::new(), |m| raw[m.body_start..m.end].to_vec()),
            _ => msg.map_or(Vec::new(), |m| self.fields_of(&raw[m.start..m.body_start])),
        }
    }

    fn fields_of(&self, header: &[u8]) -> Vec<u8> {
        let not = self.text == "HEADER.FIELDS.NOT";
        let mut out = Vec::new();
        let mut keep = false;
        for line in header.split_inclusive(|&c| c == b'\n') {
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            if !line.starts_with(b" ") && !line.starts_with(b"\t") {
                let name = line.iter().position(|&c| c == b':').map(|p| {
                    String::from_utf8_lossy(&line[..p])
                        .trim()
                        .to_ascii_uppercase()
                });
                keep = name.is_some_and(|n| self.fields.contains(&n) != not);
            }
            if keep {
                out.extend_from_slice(line);
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// One address of an address list, split as ENVELOPE wants (name, mailbox, host).
fn addresses(v: &str) -> Vec<(Option<String>, String, String)> {
    let mut items = vec![String::new()];
    let (mut quoted, mut angle, mut paren) = (false, false, 0usize);
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            '(' if !quoted => paren += 1,
            ')' if !quoted => paren = paren.saturating_sub(1),
            ',' if !quoted && !angle && paren == 0 => {
                items.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(l) = items.last_mut() {
            l.push(c);
        }
    }
    items
        .iter()
        .filter_map(|item| {
            let item = item.trim();
            let (name, addr) = match (item.find('<'), item.rfind('>')) {
                (Some(a), Some(b)) if a < b => {
                    let name = item[..a].trim().trim_matches('"').trim();
                    (
                        (!name.is_empty()).then(|| name.to_string()),
                        &item[a + 1..b],
                    )
                }
                _ => (None, item),
            };
            let (m, h) = addr.trim().rsplit_once('@')?;
            Some((name, m.to_string(), h.to_string()))
        })
        .collect()
}

/// An address list of ENVELOPE: empty (NIL) when the field is missing or holds no address.
fn address_list(v: Option<&str>) -> Vec<Address<'static>> {
    v.map(addresses)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, m, h)| Address {
            name: nstring(name.as_deref().map(str::as_bytes)),
            adl: NString(None),
            mailbox: nstring(Some(m.as_bytes())),
            host: nstring(Some(h.as_bytes())),
        })
        .collect()
}

/// The ENVELOPE of a message (RFC 3501 §7.4.2).
pub fn envelope(m: &Part) -> Envelope<'static> {
    let h = |n: &str| m.header(n);
    let field = |n: &str| nstring(h(n).map(str::as_bytes));
    let from = h("From");
    Envelope {
        date: field("Date"),
        subject: field("Subject"),
        from: address_list(from),
        // RFC 3501 §7.4.2: Sender and Reply-To default to From.
        sender: address_list(h("Sender").or(from)),
        reply_to: address_list(h("Reply-To").or(from)),
        to: address_list(h("To")),
        cc: address_list(h("Cc")),
        bcc: address_list(h("Bcc")),
        in_reply_to: field("In-Reply-To"),
        message_id: field("Message-ID"),
    }
}

/// A string of BODYSTRUCTURE, upper case as this server has always sent them.
fn upper(s: &str) -> IString<'static> {
    istring(s.to_ascii_uppercase().as_bytes())
}

/// A parameter list: names upper case, values as written; empty is NIL.
fn param_list(params: &[(String, String)]) -> Vec<(IString<'static>, IString<'static>)> {
    params
        .iter()
        .map(|(k, v)| (upper(k), istring(v.as_bytes())))
        .collect()
}

/// BODY (`extended` false) or BODYSTRUCTURE (`extended` true) of an entity (RFC 3501 §7.4.2).
pub fn body_structure(raw: &[u8], p: &Part, extended: bool) -> BodyStructure<'static> {
    // The extension data this server knows: disposition; no MD5, language or location.
    let disposition = || {
        Some(Disposition {
            disposition: disposition(p),
            tail: Some(Language {
                language: vec![],
                tail: Some(Location {
                    location: NString(None),
                    extensions: vec![],
                }),
            }),
        })
    };
    if p.ctype == "multipart" {
        let bodies: Vec<BodyStructure> = p
            .children
            .iter()
            .map(|c| body_structure(raw, c, extended))
            .collect();
        // A multipart without parts is shown as an empty text part, as IMAP needs one.
        let bodies = Vec1::try_from(bodies).unwrap_or_else(|_| Vec1::from(empty_text()));
        return BodyStructure::Multi {
            bodies,
            subtype: upper(&p.subtype),
            extension_data: extended.then(|| MultiPartExtensionData {
                parameter_list: param_list(&p.params),
                tail: disposition(),
            }),
        };
    }
    let enc = p.header("Content-Transfer-Encoding").unwrap_or("7bit");
    let body = &raw[p.body_start..p.end];
    let lines = body.iter().filter(|&&c| c == b'\n').count();
    let lines = u32::try_from(lines).unwrap_or(u32::MAX);
    let basic = BasicFields {
        parameter_list: param_list(&p.params),
        id: nstring(p.header("Content-ID").map(str::as_bytes)),
        description: nstring(p.header("Content-Description").map(str::as_bytes)),
        content_transfer_encoding: upper(enc),
        size: u32::try_from(body.len()).unwrap_or(u32::MAX),
    };
    let specific = match &p.message {
        Some(m) => SpecificFields::Message {
            envelope: Box::new(envelope(m)),
            body_structure: Box::new(body_structure(raw, m, extended)),
            number_of_lines: lines,
        },
        None if p.ctype == "text" => SpecificFields::Text {
            subtype: upper(&p.subtype),
            number_of_lines: lines,
        },
        None => SpecificFields::Basic {
            r#type: upper(&p.ctype),
            subtype: upper(&p.subtype),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: NString(None),
            tail: disposition(),
        }),
    }
}

/// `("TEXT" "PLAIN" NIL NIL NIL "7BIT" 0 0)`.
fn empty_text() -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: upper("7bit"),
                size: 0,
            },
            specific: SpecificFields::Text {
                subtype: upper("plain"),
                number_of_lines: 0,
            },
        },
        extension_data: None,
    }
}

/// The Content-Disposition (RFC 2183) as `body-fld-dsp`; none when the field is missing.
type Dsp = Option<(IString<'static>, Vec<(IString<'static>, IString<'static>)>)>;

fn disposition(p: &Part) -> Dsp {
    let v = p.header("Content-Disposition")?;
    let mut parts = split_params(v);
    let kind = if parts.is_empty() {
        "attachment".to_string()
    } else {
        parts.remove(0)
    };
    Some((upper(&kind), param_list(&params_of(parts))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::fetch::MessageDataItem;
    use imap_codec::imap_types::response::Data;

    /// One FETCH item as the codec writes it (without `* 1 FETCH (` and `)\r\n`).
    fn wire(item: MessageDataItem<'static>) -> String {
        let d = Data::Fetch {
            seq: std::num::NonZeroU32::MIN,
            items: Vec1::from(item),
        };
        let s = String::from_utf8(super::super::respond::data(d)).unwrap();
        s["* 1 FETCH (".len()..s.len() - ")\r\n".len()].to_string()
    }

    const MSG: &[u8] = b"From: \"Alice A\" <alice@pec.a.test>\r\nTo: bob@pec.b.test, Carol <carol@x.test>\r\nSubject: Prova\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nciao\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    #[test]
    fn encoded_words_are_decoded_and_plain_or_broken_values_kept() {
        assert_eq!(
            decode_words("=?UTF-8?Q?POSTA_CERTIFICATA:_Perch=C3=A9?= no"),
            "POSTA CERTIFICATA: Perché no"
        );
        assert_eq!(
            decode_words("=?iso-8859-1?B?QUNDRVRUQVpJT05FOiBjafI=?="),
            "ACCETTAZIONE: ciò"
        );
        assert_eq!(decode_words("Plain =? text"), "Plain =? text");
        assert_eq!(decode_words("=?bogus"), "=?bogus");
    }

    #[test]
    fn sections_address_parts_and_encapsulated_messages() {
        let root = Part::parse(MSG, 0, MSG.len(), 0);
        assert_eq!(root.children.len(), 2);
        let s = |t: &str| Section::parse(t).unwrap().extract(MSG, &root);
        assert_eq!(s("1"), b"ciao");
        assert_eq!(s("1.MIME"), b"Content-Type: text/plain\r\n\r\n");
        assert_eq!(s("2.HEADER"), b"Subject: inner\r\n\r\n");
        assert_eq!(s("2.TEXT"), b"inner body");
        assert_eq!(s("2.1"), b"inner body");
        assert_eq!(s("HEADER.FIELDS (SUBJECT)"), b"Subject: Prova\r\n\r\n");
        assert_eq!(s(""), MSG);
        assert!(s("9").is_empty());
        assert!(Section::parse("BOGUS").is_err());
        assert!(Section::parse("0").is_err());
    }

    #[test]
    fn envelope_and_bodystructure_show_addresses_and_parts() {
        let root = Part::parse(MSG, 0, MSG.len(), 0);
        let e = wire(MessageDataItem::Envelope(envelope(&root)));
        assert!(
            e.starts_with("ENVELOPE (NIL \"Prova\" ((\"Alice A\" NIL \"alice\" \"pec.a.test\"))")
        );
        assert!(
            e.contains("((NIL NIL \"bob\" \"pec.b.test\")(\"Carol\" NIL \"carol\" \"x.test\"))")
        );
        let b = wire(MessageDataItem::Body(body_structure(MSG, &root, false)));
        assert!(b.starts_with(
            "BODY ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 4 0)"
        ));
        assert!(b.ends_with(" \"MIXED\")"), "{b}");
        let b = wire(MessageDataItem::BodyStructure(body_structure(
            MSG, &root, true,
        )));
        assert!(
            b.ends_with(" \"MIXED\" (\"BOUNDARY\" \"b1\") NIL NIL NIL)"),
            "{b}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            &b""[..],
            b"\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
            b"Content-Type: message/rfc822\r\n",
        ] {
            let root = Part::parse(raw, 0, raw.len(), 0);
            wire(MessageDataItem::BodyStructure(body_structure(
                raw, &root, true,
            )));
            wire(MessageDataItem::Envelope(envelope(&root)));
            for s in ["1", "1.2.3", "TEXT", "HEADER", "1.MIME"] {
                Section::parse(s).unwrap().extract(raw, &root);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_messages_and_sections_never_panic(
            raw in proptest::collection::vec(proptest::sample::select(
                b"ab:;=\"\r\n -/<>@,".to_vec()), 0..300),
            boundary in proptest::bool::ANY,
        ) {
            let mut m = if boundary {
                b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n".to_vec()
            } else {
                Vec::new()
            };
            m.extend(raw);
            let root = Part::parse(&m, 0, m.len(), 0);
            wire(MessageDataItem::BodyStructure(body_structure(&m, &root, true)));
            wire(MessageDataItem::Envelope(envelope(&root)));
            for s in ["1", "1.1", "2.MIME", "HEADER.FIELDS (A B)", "TEXT"] {
                Section::parse(s).unwrap().extract(&m, &root);
            }
        }

        #[test]
        fn random_commands_never_panic(line in proptest::collection::vec(
            proptest::sample::select(b"a1 ({}[]<>\"\\*:,.+ \r\nBODY0123".to_vec()), 0..120)) {
            let _ = super::super::parse::frame(&line);
            if let Ok(s) = std::str::from_utf8(&line) {
                let _ = Section::parse(s);
            }
        }
    }
}
