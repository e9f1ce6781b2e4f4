//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463, RFC 2034).

use std::fmt;

/// One SMTP reply: a three-digit code, an optional enhanced status code and text (lines separated
/// by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 200..=599 (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code `class.subject.detail` (RFC 3463), if any.
    pub enhanced: Option<[u16; 3]>,
    /// The text; several lines become a multiline reply.
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code.
    pub fn new(code: u16, enhanced: [u16; 3], text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply without enhanced status code (greeting, 334 challenges).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    /// `250 2.0.0 text`.
    pub fn ok(text: impl Into<String>) -> Self {
        Reply::new(250, [2, 0, 0], text)
    }

    /// `250 2.1.0 text`: sender accepted (RFC 3463 §3.2).
    pub fn sender_ok(text: impl Into<String>) -> Self {
        Reply::new(250, [2, 1, 0], text)
    }

    /// `250 2.1.5 text`: recipient accepted (RFC 3463 §3.2).
    pub fn recipient_ok(text: impl Into<String>) -> Self {
        Reply::new(250, [2, 1, 5], text)
    }

    /// `451 4.3.0 text`: temporary failure, try again later.
    pub fn temporary(text: impl Into<String>) -> Self {
        Reply::new(451, [4, 3, 0], text)
    }

    /// `550 5.1.1 text`: no such mailbox (RFC 3463 §3.2).
    pub fn no_such_user(text: impl Into<String>) -> Self {
        Reply::new(550, [5, 1, 1], text)
    }

    /// `554 5.7.1 text`: refused by policy.
    pub fn refused(text: impl Into<String>) -> Self {
        Reply::new(554, [5, 7, 1], text)
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: the server waits for more (354, 334).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply on the wire, CRLF-terminated, multiline as `code-text` lines (RFC 5321 §4.2.1).
    /// Codes outside 200..=599 become 451 4.3.0, CR and LF in text never reach the wire.
    pub fn to_wire(&self) -> Vec<u8> {
        let (code, enhanced) = if (200..600).contains(&self.code) {
            (self.code, self.enhanced)
        } else {
            (451, Some([4, 3, 0]))
        };
        let lines: Vec<&str> = self.text.split('\n').collect();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let line: String = line.chars().filter(|c| *c != '\r').collect();
            let enhanced = match enhanced {
                Some([c, s, d]) => format!("{c}.{s}.{d} "),
                None => String::new(),
            };
            out.extend_from_slice(format!("{code}{sep}{enhanced}{line}").trim_end().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Parses the lines of one reply (without line terminators), as received by a client.
    /// The enhanced code is recognised when it starts the first line and its class matches.
    pub fn parse_lines(lines: &[String]) -> Result<Reply, String> {
        let first = lines.first().ok_or("empty reply")?;
        let code = reply_code(first)?;
        let mut enhanced = None;
        let mut text = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if reply_code(line)? != code {
                return Err(format!("reply line {:?} changes the code {code}", line));
            }
            let rest = line.get(4..).unwrap_or("");
            let rest = match parse_enhanced(rest, code) {
                Some((e, after)) => {
                    if i == 0 {
                        enhanced = Some(e);
                    }
                    if enhanced == Some(e) { after } else { rest }
                }
                None => rest,
            };
            text.push(rest.to_string());
        }
        Ok(Reply {
            code,
            enhanced,
            text: text.join("\n"),
        })
    }
}

fn reply_code(line: &str) -> Result<u16, String> {
    let digits = line
        .get(..3)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
    match (digits, line.as_bytes().get(3)) {
        (Some(d), None | Some(b' ' | b'-')) => {
            let code: u16 = d.parse().map_err(|_| format!("bad reply line {line:?}"))?;
            if (200..600).contains(&code) {
                Ok(code)
            } else {
                Err(format!("reply code out of range in {line:?}"))
            }
        }
        _ => Err(format!("malformed reply line {line:?}")),
    }
}

fn parse_enhanced(text: &str, code: u16) -> Option<([u16; 3], &str)> {
    let (token, after) = match text.split_once(' ') {
        Some((t, a)) => (t, a),
        None => (text, ""),
    };
    let mut parts = token.split('.');
    let mut e = [0u16; 3];
    for slot in &mut e {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    // RFC 3463 §2: the class matches the first digit of the reply code.
    if parts.next().is_some() || e[0] != code / 100 {
        return None;
    }
    Some((e, after))
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some([c, s, d]) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text.replace('\n', " / "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_and_parse_round_trip() {
        let r = Reply::new(250, [2, 1, 5], "one\ntwo");
        assert_eq!(r.to_wire(), b"250-2.1.5 one\r\n250 2.1.5 two\r\n");
        let lines = vec!["250-2.1.5 one".to_string(), "250 2.1.5 two".to_string()];
        assert_eq!(Reply::parse_lines(&lines).unwrap(), r);
    }

    #[test]
    fn bad_codes_and_injection_are_neutralised() {
        let r = Reply::new(999, [9, 9, 9], "x\r\n250 ok");
        assert_eq!(r.to_wire(), b"451-4.3.0 x\r\n451 4.3.0 250 ok\r\n");
        assert!(Reply::parse_lines(&["25x ok".into()]).is_err());
        assert!(Reply::parse_lines(&["250-a".into(), "251 b".into()]).is_err());
        let r = Reply::parse_lines(&["220 host ready".into()]).unwrap();
        assert_eq!((r.code, r.enhanced), (220, None));
        // A class that does not match the code is text, not an enhanced code.
        let r = Reply::parse_lines(&["250 5.1.1 x".into()]).unwrap();
        assert_eq!(r.enhanced, None);
    }
}
