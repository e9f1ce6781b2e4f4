//! Building IMAP responses as imap-types values and serialising them with imap-codec's
//! `ResponseCodec` / `GreetingCodec` (RFC 3501 §7): every byte the server sends comes from here.
//! The helpers turn this server's strings into the grammar's types without ever failing: text
//! outside `TEXT-CHAR` is replaced, strings that cannot be quoted become literals.

use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::{AString, IString, Literal, NString, Quoted, Tag, Text};
use imap_codec::imap_types::mailbox::{Mailbox, MailboxOther};
use imap_codec::imap_types::response::{
    Bye, Code, CodeOther, CommandContinuationRequest, Data, Greeting, GreetingKind, Response,
    Status, StatusBody, StatusKind, Tagged,
};
use imap_codec::{GreetingCodec, ResponseCodec};

/// The wire form of one response.
pub(super) fn encode(r: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(r).dump()
}

/// Untagged data (RFC 3501 §7.2-§7.4).
pub(super) fn data(d: Data<'_>) -> Vec<u8> {
    encode(&Response::Data(d))
}

/// `s` as `text` (RFC 3501 §9: 1*TEXT-CHAR): CR, LF, NUL and non-ASCII characters become `?`,
/// an empty text becomes `-`.
pub(super) fn text(s: &str) -> Text<'static> {
    let t: String = s
        .chars()
        .map(|c| match c {
            '\0' | '\r' | '\n' => '?',
            c if c.is_ascii() => c,
            _ => '?',
        })
        .collect();
    let t = if t.is_empty() { "-".to_string() } else { t };
    Text::try_from(t).unwrap_or_else(|_| Text::unvalidated("-"))
}

/// A status response (RFC 3501 §7.1): tagged when `tag` is a valid tag, untagged (`*`) otherwise
/// (RFC 3501 §7.1.3 for a BAD whose tag could not be read).
pub(super) fn status(
    tag: Option<&str>,
    kind: StatusKind,
    code: Option<Code<'static>>,
    t: &str,
) -> Vec<u8> {
    let body = StatusBody {
        kind,
        code,
        text: text(t),
    };
    let s = match tag.and_then(|t| Tag::try_from(t.to_string()).ok()) {
        Some(tag) => Status::Tagged(Tagged { tag, body }),
        None => Status::Untagged(body),
    };
    encode(&Response::Status(s))
}

/// An untagged `OK` with a response code (RFC 3501 §7.1.1).
pub(super) fn untagged_ok(code: Code<'static>, t: &str) -> Vec<u8> {
    status(None, StatusKind::Ok, Some(code), t)
}

/// BYE (RFC 3501 §7.1.5).
pub(super) fn bye(t: &str) -> Vec<u8> {
    encode(&Response::Status(Status::Bye(Bye {
        code: None,
        text: text(t),
    })))
}

/// The greeting (RFC 3501 §7.1.1, `greeting`).
pub(super) fn greeting(code: Option<Code<'static>>, t: &str) -> Vec<u8> {
    let g = Greeting {
        kind: GreetingKind::Ok,
        code,
        text: text(t),
    };
    GreetingCodec::default().encode(&g).dump()
}

/// A command continuation request with text (RFC 3501 §7.5).
pub(super) fn continuation(t: &str) -> Vec<u8> {
    let c = CommandContinuationRequest::basic(None, text(t))
        .unwrap_or_else(|_| CommandContinuationRequest::base64(Vec::<u8>::new()));
    encode(&Response::CommandContinuationRequest(c))
}

/// An empty SASL challenge, `+ ` (RFC 3501 §6.2.2, RFC 4616 §2: PLAIN's first challenge).
pub(super) fn empty_challenge() -> Vec<u8> {
    encode(&Response::CommandContinuationRequest(
        CommandContinuationRequest::base64(Vec::<u8>::new()),
    ))
}

/// A response code imap-types has no variant for (RFC 5530 codes, SERVERBUG...): `name` is one
/// of this server's constant atoms.
pub(super) fn other(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

/// A string (RFC 3501 §4.3): quoted when it is short printable ASCII, a literal otherwise.
/// A NUL cannot be in a literal (RFC 3501 §4.3 CHAR8); it is sent as 0x80, as Dovecot does,
/// keeping every length and offset.
pub(super) fn istring(s: &[u8]) -> IString<'static> {
    if s.len() < 1000
        && s.iter().all(|&c| (0x20..0x7f).contains(&c))
        && let Ok(q) = Quoted::try_from(String::from_utf8_lossy(s).into_owned())
    {
        return IString::Quoted(q);
    }
    literal(s)
}

/// A literal (RFC 3501 §4.3), NUL sent as 0x80 (see [`istring`]).
pub(super) fn literal(s: &[u8]) -> IString<'static> {
    let data: Vec<u8> = s.iter().map(|&c| if c == 0 { 0x80 } else { c }).collect();
    match Literal::try_from(data) {
        Ok(l) => IString::Literal(l),
        // Unreachable: only NUL is outside CHAR8, and it was replaced.
        Err(_) => IString::Quoted(Quoted::unvalidated("")),
    }
}

/// An nstring: NIL or [`istring`].
pub(super) fn nstring(s: Option<&[u8]>) -> NString<'static> {
    NString(s.map(istring))
}

/// A mailbox name as LIST and STATUS show it: `INBOX` as the atom, others as strings.
pub(super) fn mailbox(name: &str) -> Mailbox<'static> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Mailbox::Inbox;
    }
    match MailboxOther::try_from(AString::String(istring(name.as_bytes()))) {
        Ok(m) => Mailbox::Other(m),
        Err(_) => Mailbox::Inbox,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_strings_and_tags_never_fail() {
        assert_eq!(
            status(Some("a1"), StatusKind::No, None, "bad\r\nline"),
            b"a1 NO bad??line\r\n"
        );
        // A tag the grammar does not allow gets an untagged response.
        assert_eq!(
            status(Some("a{"), StatusKind::Bad, None, ""),
            b"* BAD -\r\n"
        );
        assert_eq!(
            status(None, StatusKind::Ok, Some(other("SERVERBUG")), "è"),
            b"* OK [SERVERBUG] ?\r\n"
        );
        assert_eq!(bye("logging out"), b"* BYE logging out\r\n");
        assert_eq!(empty_challenge(), b"+ \r\n");
        assert_eq!(continuation("idling"), b"+ idling\r\n");
        assert!(matches!(istring(b"a \"q\""), IString::Quoted(_)));
        let IString::Literal(l) = istring(b"a\0b\r\n") else {
            panic!()
        };
        assert_eq!(l.data(), b"a\x80b\r\n");
        assert!(matches!(mailbox("inbox"), Mailbox::Inbox));
        assert!(matches!(mailbox("Inbox/x"), Mailbox::Other(_)));
    }
}
