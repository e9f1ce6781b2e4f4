//! The IMAP command grammar this server reads (RFC 3501 §9), as a small tokenizer: atoms,
//! quoted strings, literals and parenthesised lists. Bracketed sections inside an atom
//! (`BODY[HEADER.FIELDS (FROM)]`) are kept whole. Plus sequence sets and dates.

use chrono::{DateTime, FixedOffset, NaiveDate};

/// One token of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An atom (also NIL, flags like `\Seen`, fetch items with sections).
    Atom(String),
    /// A quoted string or a literal.
    Str(Vec<u8>),
    /// A parenthesised list.
    List(Vec<Tok>),
}

impl Tok {
    /// An astring (RFC 3501 §9 `astring`) as text; `None` for a list.
    pub fn astring(&self) -> Option<String> {
        match self {
            Tok::Atom(a) => Some(a.clone()),
            Tok::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Tok::List(_) => None,
        }
    }
    /// The atom, upper-cased; `None` otherwise.
    pub fn atom_upper(&self) -> Option<String> {
        match self {
            Tok::Atom(a) => Some(a.to_ascii_uppercase()),
            _ => None,
        }
    }
}

/// Splits a whole command (literals inline, final CRLF removed) into tokens.
pub fn tokenize(input: &[u8]) -> Result<Vec<Tok>, String> {
    let mut pos = 0;
    let toks = list(input, &mut pos, false)?;
    if pos != input.len() {
        return Err("unbalanced ')'".into());
    }
    Ok(toks)
}

fn list(b: &[u8], pos: &mut usize, nested: bool) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    loop {
        while *pos < b.len() && b[*pos] == b' ' {
            *pos += 1;
        }
        if *pos >= b.len() {
            if nested {
                return Err("missing ')'".into());
            }
            return Ok(out);
        }
        match b[*pos] {
            b')' => {
                if !nested {
                    return Ok(out);
                }
                *pos += 1;
                return Ok(out);
            }
            b'(' => {
                *pos += 1;
                out.push(Tok::List(list(b, pos, true)?));
            }
            b'"' => out.push(Tok::Str(quoted(b, pos)?)),
            b'{' => out.push(Tok::Str(literal(b, pos)?)),
            b'\r' | b'\n' => return Err("line break outside a literal".into()),
            _ => out.push(Tok::Atom(atom(b, pos)?)),
        }
    }
}

fn quoted(b: &[u8], pos: &mut usize) -> Result<Vec<u8>, String> {
    *pos += 1;
    let mut s = Vec::new();
    while *pos < b.len() {
        match b[*pos] {
            b'"' => {
                *pos += 1;
                return Ok(s);
            }
            b'\\' if *pos + 1 < b.len() => {
                s.push(b[*pos + 1]);
                *pos += 2;
            }
            b'\r' | b'\n' => return Err("line break in a quoted string".into()),
            c => {
                s.push(c);
                *pos += 1;
            }
        }
    }
    Err("unterminated quoted string".into())
}

fn literal(b: &[u8], pos: &mut usize) -> Result<Vec<u8>, String> {
    let close = b[*pos..]
        .iter()
        .position(|&c| c == b'}')
        .ok_or("unterminated literal length")?;
    let spec = std::str::from_utf8(&b[*pos + 1..*pos + close]).map_err(|_| "bad literal")?;
    let n: usize = spec
        .trim_end_matches('+')
        .parse()
        .map_err(|_| format!("bad literal length {spec:?}"))?;
    let start = *pos + close + 1;
    if b.get(start..start + 2) != Some(b"\r\n") {
        return Err("literal length not followed by CRLF".into());
    }
    let data = b
        .get(start + 2..start + 2 + n)
        .ok_or("literal shorter than announced")?;
    *pos = start + 2 + n;
    Ok(data.to_vec())
}

fn atom(b: &[u8], pos: &mut usize) -> Result<String, String> {
    let start = *pos;
    let mut depth = 0usize;
    while *pos < b.len() {
        let c = b[*pos];
        match c {
            b'[' => depth += 1,
            b']' if depth > 0 => depth -= 1,
            b' ' | b'(' | b')' if depth == 0 => break,
            b'"' | b'{' if depth == 0 => break,
            b'\r' | b'\n' => break,
            _ => {}
        }
        *pos += 1;
    }
    if depth > 0 {
        return Err("unterminated '['".into());
    }
    String::from_utf8(b[start..*pos].to_vec()).map_err(|_| "non-UTF-8 atom".into())
}

/// If a command line ends with a literal announcement `{n}` or `{n+}` (RFC 3501 §4.3, RFC 7888),
/// its length and whether it is non-synchronising.
pub fn literal_suffix(line: &[u8]) -> Option<(usize, bool)> {
    let l = line.strip_suffix(b"\r\n").or(line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&c| c == b'{')?;
    let spec = std::str::from_utf8(&l[open + 1..]).ok()?;
    let (digits, plus) = match spec.strip_suffix('+') {
        Some(d) => (d, true),
        None => (spec, false),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, plus))
}

/// A sequence set (RFC 3501 §9 `sequence-set`); `None` stands for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(Option<u32>, Option<u32>)>);

impl SeqSet {
    /// Parses `1:3,5,7:*`.
    pub fn parse(s: &str) -> Result<SeqSet, String> {
        let num = |p: &str| -> Result<Option<u32>, String> {
            if p == "*" {
                return Ok(None);
            }
            match p.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!("bad sequence number {p:?}")),
            }
        };
        let mut out = Vec::new();
        for part in s.split(',') {
            out.push(match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            });
        }
        Ok(SeqSet(out))
    }

    /// Whether `n` is in the set, `*` being `max`.
    pub fn contains(&self, n: u32, max: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.unwrap_or(max), b.unwrap_or(max));
            a.min(b) <= n && n <= a.max(b)
        })
    }
}

/// A search date `1-Feb-1994` (RFC 3501 §9 `date`), quoted or not.
pub fn date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%d-%b-%Y").map_err(|_| format!("bad date {s:?}"))
}

/// An APPEND date-time `17-Jul-1996 02:44:25 -0700` (RFC 3501 §9 `date-time`).
pub fn date_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z")
        .map_err(|_| format!("bad date-time {s:?}"))
}

/// A string for a response: quoted when it is plain printable ASCII, a literal otherwise
/// (RFC 3501 §4.3).
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 1000 && s.iter().all(|&c| (0x20..0x7f).contains(&c)) {
        out.push(b'"');
        for &c in s {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// An nstring: NIL or [`string`].
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_sections_literals_and_lists() {
        let t = tokenize(b"a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>)").unwrap();
        assert_eq!(t[2], Tok::Atom("1:*".into()));
        assert_eq!(
            t[3],
            Tok::List(vec![
                Tok::Atom("FLAGS".into()),
                Tok::Atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>".into())
            ])
        );
        let t = tokenize(b"a2 LOGIN \"al\\\"ice\" {3}\r\np w").unwrap();
        assert_eq!(t[2], Tok::Str(b"al\"ice".to_vec()));
        assert_eq!(t[3], Tok::Str(b"p w".to_vec()));
        assert!(tokenize(b"a3 LOGIN {10}\r\nshort").is_err());
        assert!(tokenize(b"a4 FETCH 1 (FLAGS").is_err());
        assert!(tokenize(b"a5 FETCH 1 BODY[").is_err());
    }

    #[test]
    fn literal_announcements_and_sequence_sets() {
        assert_eq!(literal_suffix(b"a APPEND x {12}\r\n"), Some((12, false)));
        assert_eq!(literal_suffix(b"a APPEND x {12+}\r\n"), Some((12, true)));
        assert_eq!(literal_suffix(b"a NOOP\r\n"), None);
        assert_eq!(literal_suffix(b"a X {}\r\n"), None);
        let s = SeqSet::parse("2,4:5,9:*").unwrap();
        assert!(s.contains(2, 20) && s.contains(5, 20) && s.contains(15, 20));
        assert!(!s.contains(3, 20) && !s.contains(8, 20));
        assert!(SeqSet::parse("0").is_err() && SeqSet::parse("a:b").is_err());
        // "*:3" is the same as "3:*" (RFC 3501 §9).
        assert!(SeqSet::parse("*:3").unwrap().contains(4, 5));
    }
}
