//! Just enough RFC 5322 / RFC 2045–2046 reading for the checks to look at the signed entity as it is
//! written: header fields, parameters, multipart bodies and address lists. Lenient, never panics.

/// Splits an entity into its unfolded header fields and its body (RFC 5322 §2.2.3, §2.1).
pub fn split_entity(bytes: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(bytes.len());
        let line = &bytes[pos..end];
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return (headers, &bytes[end..]);
        }
        if text.starts_with([' ', '\t']) {
            // Folded continuation (RFC 5322 §2.2.3).
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(text.trim());
            }
        } else if let Some((name, value)) = text.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        } else {
            // Not a header line: the header section ended without a blank line.
            return (headers, &bytes[pos..]);
        }
        pos = end;
    }
    (headers, &bytes[bytes.len()..])
}

/// The first header field named `name`, case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The media type of a Content-Type value, lower case (`text/plain` when absent: RFC 2045 §5.2).
pub fn media_type(content_type: Option<&str>) -> String {
    match content_type {
        Some(v) => v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
        None => "text/plain".to_string(),
    }
}

/// A parameter of a structured header value (`name=value` or `name="value"`; RFC 2045 §5.1).
pub fn param(value: &str, name: &str) -> Option<String> {
    let mut rest = value;
    // Skip the media type / disposition token.
    let i = rest.find(';')?;
    rest = &rest[i + 1..];
    loop {
        let trimmed = rest.trim_start();
        let eq = trimmed.find('=')?;
        let key = trimmed[..eq].trim();
        let after = trimmed[eq + 1..].trim_start();
        let (val, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            let remaining = &q[end.min(q.len())..];
            (out, remaining)
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(val);
        }
        let next = remaining.find(';')?;
        rest = &remaining[next + 1..];
    }
}

/// The body parts of a multipart body (RFC 2046 §5.1.1): the bytes between delimiter lines.
pub fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(body.len());
        let line = &body[pos..end];
        let trimmed = trim_line(line);
        if trimmed.starts_with(delim.as_bytes()) {
            let tail = &trimmed[delim.len()..];
            let is_close = tail.starts_with(b"--");
            if is_close || tail.iter().all(|b| *b == b' ' || *b == b'\t') {
                if let Some(s) = start {
                    // The CRLF before a delimiter belongs to the delimiter.
                    let mut e = pos;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    parts.push(&body[s..e]);
                }
                if is_close {
                    return parts;
                }
                start = Some(end);
            }
        }
        pos = end;
    }
    // No close delimiter (a truncated message): the last part runs to the end (RFC 2046 §5.1.1
    // requires the close delimiter; readers are lenient).
    if let Some(s) = start
        && s < body.len()
    {
        parts.push(&body[s..]);
    }
    parts
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut e = line.len();
    while e > 0 && (line[e - 1] == b'\n' || line[e - 1] == b'\r') {
        e -= 1;
    }
    &line[..e]
}

/// Splits an address list on commas outside quotes, angle brackets and comments (RFC 5322 §3.4).
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle, mut comment, mut escaped) = (false, false, 0u32, false);
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            ',' if !quoted && !angle && comment == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One mailbox: the display name (unquoted) and the address (RFC 5322 §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, if any, without quotes.
    pub name: Option<String>,
    /// The addr-spec.
    pub address: String,
}

/// Parses one mailbox (`Name <a@b>` or `a@b`).
pub fn mailbox(value: &str) -> Mailbox {
    let v = value.trim();
    if let (Some(lt), Some(gt)) = (v.rfind('<'), v.rfind('>'))
        && lt < gt
    {
        let address = v[lt + 1..gt].trim().to_string();
        let name = v[..lt].trim();
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or(name);
        let name = name.replace("\\\"", "\"");
        let name = name.trim().to_string();
        return Mailbox {
            name: (!name.is_empty()).then_some(name),
            address,
        };
    }
    // A bare addr-spec, perhaps with a trailing comment.
    let address = v.split('(').next().unwrap_or(v).trim().to_string();
    Mailbox {
        name: None,
        address,
    }
}

/// The addresses of an address-list header value, lower case.
pub fn addresses(value: &str) -> Vec<String> {
    split_list(value)
        .iter()
        .map(|m| mailbox(m).address.to_ascii_lowercase())
        .collect()
}

/// A Message-ID without its angle brackets and surrounding space.
pub fn bare_msgid(v: &str) -> &str {
    let t = v.trim();
    t.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(t)
        .trim()
}

/// True when `raw` has a LF not preceded by CR (digest §14.8).
pub fn has_bare_lf(raw: &[u8]) -> bool {
    raw.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_quoted_and_bare() {
        let ct = r#"multipart/signed; protocol="application/x-pkcs7-signature"; micalg=sha1; boundary="--a;b""#;
        assert_eq!(param(ct, "micalg").as_deref(), Some("sha1"));
        assert_eq!(param(ct, "boundary").as_deref(), Some("--a;b"));
        assert_eq!(
            param(ct, "protocol").as_deref(),
            Some("application/x-pkcs7-signature")
        );
        assert_eq!(param(ct, "charset"), None);
        assert_eq!(media_type(Some(ct)), "multipart/signed");
    }

    #[test]
    fn mailboxes_and_lists() {
        let m = mailbox(r#""Per conto di: a@pec.it" <posta-certificata@pec.aruba.it>"#);
        assert_eq!(m.name.as_deref(), Some("Per conto di: a@pec.it"));
        assert_eq!(m.address, "posta-certificata@pec.aruba.it");
        assert_eq!(
            addresses(r#""x, y" <A@b.it>, c@d.it"#),
            vec!["a@b.it", "c@d.it"]
        );
        assert_eq!(bare_msgid(" <a@b> "), "a@b");
    }

    #[test]
    fn multipart_split() {
        let body = b"pre\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n";
        let parts = multipart_parts(body, "b");
        assert_eq!(parts, vec![&b"A: 1\r\n\r\none"[..], &b"\r\ntwo"[..]]);
        let (h, b) = split_entity(parts[0]);
        assert_eq!(header(&h, "a"), Some("1"));
        assert_eq!(b, b"one");
    }
}
