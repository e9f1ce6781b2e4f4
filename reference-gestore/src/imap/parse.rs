//! Reading IMAP commands (RFC 3501 §9) with imap-codec's `CommandCodec`, and mapping the decoded
//! `Command` into the commands this server implements ([`Cmd`]). imap-codec frames the input:
//! it reports a literal announcement (`LiteralFound`) so the session can send the continuation
//! request (RFC 3501 §7.5) or, for `{n+}`, read on at once (RFC 7888). Plus the sequence-set
//! membership the session uses; responses are built in `respond`.

use super::mime::Section;
use super::{Item, Key, Reply};
use chrono::{DateTime, FixedOffset};
use imap_codec::CommandCodec;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{AString, LiteralMode, Vec1};
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Section as CodecSection,
};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_codec::imap_types::status::StatusDataItemName;

/// What the input read so far holds.
#[derive(Debug)]
pub(super) enum Frame {
    /// A whole command: its tag, its name (upper case) and the mapped command, or why its
    /// arguments are not usable here.
    Command {
        tag: String,
        name: &'static str,
        cmd: Result<Cmd, String>,
    },
    /// A literal of `length` bytes follows the line read last (RFC 3501 §4.3); `sync` when the
    /// client waits for a continuation request (RFC 7888 `{n+}` does not).
    Literal { length: u32, sync: bool },
    /// Not a command of the grammar (RFC 3501 §9): the tag if one was readable, and why.
    Invalid { tag: Option<String>, reason: String },
}

/// Decodes `buf` (whole lines, with the literals read so far) as one command.
pub(super) fn frame(buf: &[u8]) -> Frame {
    match CommandCodec::default().decode(buf) {
        Ok((b"", command)) => {
            let Command { tag, body } = command;
            Frame::Command {
                tag: tag.as_ref().to_string(),
                name: body.name(),
                cmd: map(body),
            }
        }
        Ok(_) => Frame::Invalid {
            tag: first_word(buf),
            reason: "data after the end of the command".into(),
        },
        // RFC 3501 §4.3: the literal's octets come after the line that announces it.
        Err(CommandDecodeError::LiteralFound { length, mode, .. }) => Frame::Literal {
            length,
            sync: mode == LiteralMode::Sync,
        },
        // Whole lines were read and no literal is pending: the line ended early.
        Err(CommandDecodeError::Incomplete) => Frame::Invalid {
            tag: first_word(buf),
            reason: "incomplete command".into(),
        },
        Err(CommandDecodeError::Failed) => {
            let name = buf
                .split(|&c| c == b' ' || c == b'\r' || c == b'\n')
                .nth(1)
                .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                .unwrap_or_default();
            let reason = if name.is_empty() {
                "missing command".to_string()
            } else if KNOWN.contains(&name.as_str()) {
                format!("{name}: arguments do not follow the RFC 3501 §9 grammar")
            } else {
                format!("unknown command {name}")
            };
            Frame::Invalid {
                tag: first_word(buf),
                reason,
            }
        }
    }
}

/// The commands this server implements (for the error text of an undecodable command).
const KNOWN: [&str; 27] = [
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "STARTTLS",
    "AUTHENTICATE",
    "LOGIN",
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "STATUS",
    "APPEND",
    "CHECK",
    "CLOSE",
    "EXPUNGE",
    "SEARCH",
    "FETCH",
    "STORE",
    "COPY",
    "UID",
    "IDLE",
    "MOVE",
];

/// The first word of a line, as a tag for a BAD response (RFC 3501 §7.1.3).
pub(super) fn first_word(buf: &[u8]) -> Option<String> {
    let w = buf
        .split(|&c| c == b' ' || c == b'\r' || c == b'\n')
        .next()?;
    let ok = !w.is_empty()
        && w.iter()
            .all(|&c| c.is_ascii_graphic() && !b"(){%*\"\\+".contains(&c));
    ok.then(|| String::from_utf8_lossy(w).into_owned())
}

/// A command this server implements, with its arguments (RFC 3501 §6).
#[derive(Debug)]
pub(super) enum Cmd {
    Capability,
    Noop,
    Check,
    Logout,
    StartTls,
    Login {
        user: String,
        pass: String,
    },
    /// The mechanism upper case; the initial response already base64-decoded (RFC 4959).
    Authenticate {
        mechanism: String,
        initial: Option<Vec<u8>>,
    },
    Select {
        mailbox: String,
        read_only: bool,
    },
    Create(String),
    Delete(String),
    Rename {
        from: String,
        to: String,
    },
    /// SUBSCRIBE and UNSUBSCRIBE: accepted, with no effect.
    Subscribe,
    /// LIST and LSUB.
    List {
        reference: String,
        pattern: String,
    },
    Status {
        mailbox: String,
        items: Vec<&'static str>,
    },
    Append {
        mailbox: String,
        flags: Vec<String>,
        date: Option<DateTime<FixedOffset>>,
        message: Vec<u8>,
    },
    Idle,
    Close,
    Expunge,
    /// RFC 4315 §2.1 UID EXPUNGE.
    UidExpunge(SeqSet),
    Search {
        uid: bool,
        charset: Option<String>,
        key: Key,
    },
    Fetch {
        uid: bool,
        set: SeqSet,
        items: Vec<Item>,
    },
    Store {
        uid: bool,
        set: SeqSet,
        kind: StoreType,
        silent: bool,
        flags: Vec<String>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: String,
    },
    /// RFC 6851 MOVE and UID MOVE.
    Move {
        uid: bool,
        set: SeqSet,
        mailbox: String,
    },
    /// Valid IMAP, but not offered by this server (its capabilities do not announce it).
    Unsupported,
}

fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

fn astring(s: &AString) -> String {
    text(s.as_ref())
}

fn mailbox(m: &Mailbox) -> String {
    match m {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => text(o.as_ref()),
    }
}

/// Flags a client may set: system flags other than `\Recent` are the server's
/// (RFC 3501 §2.3.2), keywords are free.
fn flags(f: &[Flag]) -> Result<Vec<String>, String> {
    f.iter()
        .map(|f| match f {
            Flag::Extension(_) => Err(format!("unknown system flag {f}")),
            _ => Ok(f.to_string()),
        })
        .collect()
}

/// Maps a decoded command to [`Cmd`]; an error names what this server does not take.
fn map(body: CommandBody) -> Result<Cmd, String> {
    Ok(match body {
        CommandBody::Capability => Cmd::Capability,
        CommandBody::Noop => Cmd::Noop,
        CommandBody::Check => Cmd::Check,
        CommandBody::Logout => Cmd::Logout,
        CommandBody::StartTLS => Cmd::StartTls,
        CommandBody::Login { username, password } => Cmd::Login {
            user: astring(&username),
            pass: astring(password.declassify()),
        },
        CommandBody::Authenticate {
            mechanism,
            initial_response,
        } => Cmd::Authenticate {
            mechanism: mechanism.as_ref().to_ascii_uppercase(),
            initial: initial_response.map(|r| r.declassify().to_vec()),
        },
        CommandBody::Select { mailbox: m, .. } => Cmd::Select {
            mailbox: mailbox(&m),
            read_only: false,
        },
        CommandBody::Examine { mailbox: m, .. } => Cmd::Select {
            mailbox: mailbox(&m),
            read_only: true,
        },
        CommandBody::Create { mailbox: m } => Cmd::Create(mailbox(&m)),
        CommandBody::Delete { mailbox: m } => Cmd::Delete(mailbox(&m)),
        CommandBody::Rename { from, to } => Cmd::Rename {
            from: mailbox(&from),
            to: mailbox(&to),
        },
        CommandBody::Subscribe { .. } | CommandBody::Unsubscribe { .. } => Cmd::Subscribe,
        CommandBody::List {
            reference,
            mailbox_wildcard,
        }
        | CommandBody::Lsub {
            reference,
            mailbox_wildcard,
        } => Cmd::List {
            reference: mailbox(&reference),
            pattern: match &mailbox_wildcard {
                ListMailbox::Token(t) => text(t.as_ref()),
                ListMailbox::String(s) => text(s.as_ref()),
            },
        },
        CommandBody::Status {
            mailbox: m,
            item_names,
        } => Cmd::Status {
            mailbox: mailbox(&m),
            items: item_names
                .iter()
                .map(|i| match i {
                    StatusDataItemName::Messages => Ok("MESSAGES"),
                    StatusDataItemName::Recent => Ok("RECENT"),
                    StatusDataItemName::UidNext => Ok("UIDNEXT"),
                    StatusDataItemName::UidValidity => Ok("UIDVALIDITY"),
                    StatusDataItemName::Unseen => Ok("UNSEEN"),
                    other => Err(format!("unknown status item {other:?}")),
                })
                .collect::<Result<_, _>>()?,
        },
        CommandBody::Append {
            mailbox: m,
            flags: f,
            date,
            message,
        } => Cmd::Append {
            mailbox: mailbox(&m),
            flags: flags(&f)?,
            date: date.map(|d| *d.as_ref()),
            message: match message {
                LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
            },
        },
        CommandBody::Idle => Cmd::Idle,
        CommandBody::Close => Cmd::Close,
        CommandBody::Expunge => Cmd::Expunge,
        CommandBody::ExpungeUid { sequence_set } => Cmd::UidExpunge(SeqSet::from(&sequence_set)),
        CommandBody::Search {
            charset,
            criteria,
            uid,
        } => Cmd::Search {
            uid,
            charset: charset.map(|c| c.as_ref().to_string()),
            key: Key::And(
                criteria
                    .as_ref()
                    .iter()
                    .map(search_key)
                    .collect::<Result<_, _>>()?,
            ),
        },
        CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            ..
        } => Cmd::Fetch {
            uid,
            set: SeqSet::from(&sequence_set),
            items: match macro_or_item_names {
                MacroOrMessageDataItemNames::Macro(m) => {
                    m.expand().iter().map(fetch_item).collect::<Result<_, _>>()
                }
                MacroOrMessageDataItemNames::MessageDataItemNames(v) => {
                    v.iter().map(fetch_item).collect()
                }
            }?,
        },
        CommandBody::Store {
            sequence_set,
            kind,
            response,
            flags: f,
            uid,
            ..
        } => Cmd::Store {
            uid,
            set: SeqSet::from(&sequence_set),
            kind,
            silent: response == StoreResponse::Silent,
            flags: flags(&f)?,
        },
        CommandBody::Copy {
            sequence_set,
            mailbox: m,
            uid,
        } => Cmd::Copy {
            uid,
            set: SeqSet::from(&sequence_set),
            mailbox: mailbox(&m),
        },
        CommandBody::Move {
            sequence_set,
            mailbox: m,
            uid,
        } => Cmd::Move {
            uid,
            set: SeqSet::from(&sequence_set),
            mailbox: mailbox(&m),
        },
        _ => Cmd::Unsupported,
    })
}

/// One FETCH item (RFC 3501 §6.4.5).
fn fetch_item(i: &MessageDataItemName) -> Result<Item, String> {
    let section = |peek: bool, text: &str, reply: Reply| Item::Section {
        peek,
        section: Section {
            path: vec![],
            text: text.into(),
            fields: vec![],
        },
        reply,
        partial: None,
    };
    Ok(match i {
        MessageDataItemName::Flags => Item::Flags,
        MessageDataItemName::Uid => Item::Uid,
        MessageDataItemName::Rfc822Size => Item::Size,
        MessageDataItemName::InternalDate => Item::InternalDate,
        MessageDataItemName::Envelope => Item::Envelope,
        MessageDataItemName::Body => Item::Body,
        MessageDataItemName::BodyStructure => Item::BodyStructure,
        // RFC 3501 §6.4.5: RFC822 = BODY[], RFC822.HEADER = BODY.PEEK[HEADER],
        // RFC822.TEXT = BODY[TEXT]; the response keeps the RFC822 name.
        MessageDataItemName::Rfc822 => section(false, "", Reply::Rfc822),
        MessageDataItemName::Rfc822Header => section(true, "HEADER", Reply::Rfc822Header),
        MessageDataItemName::Rfc822Text => section(false, "TEXT", Reply::Rfc822Text),
        MessageDataItemName::BodyExt {
            section,
            partial,
            peek,
        } => {
            let reply = Reply::Body(section.as_ref().map(owned_section).transpose()?);
            Item::Section {
                peek: *peek,
                section: body_section(section.as_ref()),
                // The response names the section without PEEK and with only the origin of a
                // partial (RFC 3501 §7.4.2).
                reply,
                partial: partial.map(|(o, n)| (o as usize, n.get() as usize)),
            }
        }
        other => return Err(format!("fetch item {other:?} is not supported")),
    })
}

/// The decoded `section` as an owned value, for the response to name it as the client did
/// (RFC 3501 §7.4.2 `BODY[section]`).
fn owned_section(s: &CodecSection) -> Result<CodecSection<'static>, String> {
    let fields = |f: &Vec1<AString>| {
        let v = f
            .as_ref()
            .iter()
            .map(|a| AString::try_from(a.as_ref().to_vec()))
            .collect::<Result<Vec<_>, _>>();
        v.ok()
            .and_then(|v| Vec1::try_from(v).ok())
            .ok_or_else(|| "header field names not usable".to_string())
    };
    Ok(match s {
        CodecSection::Part(p) => CodecSection::Part(p.clone()),
        CodecSection::Header(p) => CodecSection::Header(p.clone()),
        CodecSection::HeaderFields(p, f) => CodecSection::HeaderFields(p.clone(), fields(f)?),
        CodecSection::HeaderFieldsNot(p, f) => CodecSection::HeaderFieldsNot(p.clone(), fields(f)?),
        CodecSection::Text(p) => CodecSection::Text(p.clone()),
        CodecSection::Mime(p) => CodecSection::Mime(p.clone()),
    })
}

/// A `section` (RFC 3501 §9) as [`Section`].
fn body_section(s: Option<&CodecSection>) -> Section {
    let part = |p: &imap_codec::imap_types::fetch::Part| -> Vec<usize> {
        p.0.as_ref().iter().map(|n| n.get() as usize).collect()
    };
    let (path, text, fields) = match s {
        None => (vec![], "", vec![]),
        Some(CodecSection::Part(p)) => (part(p), "", vec![]),
        Some(CodecSection::Header(p)) => {
            (p.as_ref().map(part).unwrap_or_default(), "HEADER", vec![])
        }
        Some(CodecSection::HeaderFields(p, f)) => (
            p.as_ref().map(part).unwrap_or_default(),
            "HEADER.FIELDS",
            f.as_ref().iter().map(astring).collect(),
        ),
        Some(CodecSection::HeaderFieldsNot(p, f)) => (
            p.as_ref().map(part).unwrap_or_default(),
            "HEADER.FIELDS.NOT",
            f.as_ref().iter().map(astring).collect(),
        ),
        Some(CodecSection::Text(p)) => (p.as_ref().map(part).unwrap_or_default(), "TEXT", vec![]),
        Some(CodecSection::Mime(p)) => (part(p), "MIME", vec![]),
    };
    Section {
        path,
        text: text.into(),
        fields: fields.iter().map(|f| f.to_ascii_uppercase()).collect(),
    }
}

/// One SEARCH key (RFC 3501 §6.4.4).
fn search_key(k: &SearchKey) -> Result<Key, String> {
    let flag = |f: &str, has: bool| Key::Flag(f.into(), has);
    let header = |h: &str, v: &AString| Key::Header(h.into(), astring(v));
    Ok(match k {
        SearchKey::And(v) => Key::And(
            v.as_ref()
                .iter()
                .map(search_key)
                .collect::<Result<_, _>>()?,
        ),
        SearchKey::SequenceSet(s) => Key::Seq(SeqSet::from(s)),
        SearchKey::Uid(s) => Key::Uid(SeqSet::from(s)),
        SearchKey::All => Key::All,
        SearchKey::Seen => flag("\\Seen", true),
        SearchKey::Unseen => flag("\\Seen", false),
        SearchKey::Answered => flag("\\Answered", true),
        SearchKey::Unanswered => flag("\\Answered", false),
        SearchKey::Deleted => flag("\\Deleted", true),
        SearchKey::Undeleted => flag("\\Deleted", false),
        SearchKey::Flagged => flag("\\Flagged", true),
        SearchKey::Unflagged => flag("\\Flagged", false),
        SearchKey::Draft => flag("\\Draft", true),
        SearchKey::Undraft => flag("\\Draft", false),
        // RFC 3501 §6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
        SearchKey::Recent => flag("\\Recent", true),
        SearchKey::New => Key::And(vec![flag("\\Recent", true), flag("\\Seen", false)]),
        SearchKey::Old => flag("\\Recent", false),
        SearchKey::Keyword(a) => Key::Flag(a.as_ref().to_string(), true),
        SearchKey::Unkeyword(a) => Key::Flag(a.as_ref().to_string(), false),
        SearchKey::From(v) => header("FROM", v),
        SearchKey::To(v) => header("TO", v),
        SearchKey::Cc(v) => header("CC", v),
        SearchKey::Bcc(v) => header("BCC", v),
        SearchKey::Subject(v) => header("SUBJECT", v),
        SearchKey::Header(f, v) => Key::Header(astring(f).to_ascii_uppercase(), astring(v)),
        SearchKey::Body(v) => Key::Body(astring(v)),
        SearchKey::Text(v) => Key::Text(astring(v)),
        SearchKey::Since(d) => Key::Since(*d.as_ref()),
        SearchKey::Before(d) => Key::Before(*d.as_ref()),
        SearchKey::On(d) => Key::On(*d.as_ref()),
        SearchKey::Larger(n) => Key::Larger(i64::from(*n)),
        SearchKey::Smaller(n) => Key::Smaller(i64::from(*n)),
        SearchKey::Not(k) => Key::Not(Box::new(search_key(k)?)),
        SearchKey::Or(a, b) => Key::Or(Box::new(search_key(a)?), Box::new(search_key(b)?)),
        other => return Err(format!("search key {other:?} is not supported")),
    })
}

/// A sequence set (RFC 3501 §9 `sequence-set`); `None` stands for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(Option<u32>, Option<u32>)>);

impl From<&SequenceSet> for SeqSet {
    fn from(s: &SequenceSet) -> SeqSet {
        let n = |v: &SeqOrUid| match v {
            SeqOrUid::Value(n) => Some(n.get()),
            SeqOrUid::Asterisk => None,
        };
        SeqSet(
            s.0.as_ref()
                .iter()
                .map(|q| match q {
                    Sequence::Single(a) => (n(a), n(a)),
                    Sequence::Range(a, b) => (n(a), n(b)),
                })
                .collect(),
        )
    }
}

impl SeqSet {
    /// Whether `n` is in the set, `*` being `max` (the largest number in use, 0 when the
    /// mailbox is empty, RFC 3501 §9 `seq-number`).
    pub fn contains(&self, n: u32, max: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.unwrap_or(max), b.unwrap_or(max));
            // "*:3" is the same as "3:*" (RFC 3501 §9 `seq-range`).
            a.min(b) <= n && n <= a.max(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a FETCH response names a section item: the encoded item before its data.
    fn label(reply: &Reply) -> String {
        let item = super::super::section_item(reply, None, b"");
        let wire = super::super::fetch_data(1, vec![item]);
        let s = String::from_utf8(wire).unwrap();
        s["* 1 FETCH (".len()..s.len() - " {0}\r\n)\r\n".len()].to_string()
    }

    fn command(input: &[u8]) -> (String, &'static str, Cmd) {
        match frame(input) {
            Frame::Command { tag, name, cmd } => (tag, name, cmd.unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fetch_items_keep_sections_partials_and_labels() {
        let (tag, name, cmd) =
            command(b"a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From TO)]<0.10>)\r\n");
        assert_eq!((tag.as_str(), name), ("a1", "FETCH"));
        let Cmd::Fetch { uid, set, items } = cmd else {
            panic!("{cmd:?}")
        };
        assert!(!uid);
        assert_eq!(set, SeqSet(vec![(Some(1), None)]));
        assert_eq!(items[0], Item::Flags);
        let Item::Section {
            peek,
            section,
            reply,
            partial,
        } = &items[1]
        else {
            panic!("{items:?}")
        };
        assert!(*peek);
        assert_eq!(section.text, "HEADER.FIELDS");
        assert_eq!(section.fields, ["FROM", "TO"]);
        assert_eq!(label(reply), "BODY[HEADER.FIELDS (From TO)]");
        assert_eq!(*partial, Some((0, 10)));
        let (_, _, cmd) = command(b"a2 UID FETCH 5 (BODY[2.1.MIME] RFC822.HEADER)\r\n");
        let Cmd::Fetch { uid, items, .. } = cmd else {
            panic!("{cmd:?}")
        };
        assert!(uid);
        let Item::Section { section, reply, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(
            (section.path.as_slice(), label(reply).as_str()),
            (&[2, 1][..], "BODY[2.1.MIME]")
        );
        assert!(
            matches!(&items[1], Item::Section { peek: true, reply, .. } if label(reply) == "RFC822.HEADER")
        );
        // The FAST macro expands (RFC 3501 §6.4.5).
        let (_, _, cmd) = command(b"a3 FETCH 2 FAST\r\n");
        let Cmd::Fetch { items, .. } = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(items, [Item::Flags, Item::InternalDate, Item::Size]);
    }

    #[test]
    fn strings_literals_and_continuations() {
        let (_, _, cmd) = command(b"a2 LOGIN \"al\\\"ice\" {3}\r\np w\r\n");
        assert!(matches!(cmd, Cmd::Login { user, pass } if user == "al\"ice" && pass == "p w"));
        // RFC 3501 §7.5: a synchronising literal needs a continuation first; RFC 7888 `{n+}`
        // does not.
        assert!(matches!(
            frame(b"a APPEND INBOX {12}\r\n"),
            Frame::Literal {
                length: 12,
                sync: true
            }
        ));
        assert!(matches!(
            frame(b"a APPEND INBOX (\\Seen) {3+}\r\n"),
            Frame::Literal {
                length: 3,
                sync: false
            }
        ));
        let (_, _, cmd) =
            command(b"a APPEND INBOX (\\Seen k) \"05-Dec-2025 10:00:00 +0100\" {3}\r\nx\r\n\r\n");
        let Cmd::Append {
            mailbox,
            flags,
            date,
            message,
        } = cmd
        else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            (mailbox.as_str(), message.as_slice()),
            ("INBOX", &b"x\r\n"[..])
        );
        assert_eq!(flags, ["\\Seen", "k"]);
        assert_eq!(date.unwrap().to_rfc3339(), "2025-12-05T10:00:00+01:00");
    }

    #[test]
    fn bad_input_is_invalid_with_its_tag() {
        for (input, tag, why) in [
            (
                &b"a4 FETCH 1 (FLAGS\r\n"[..],
                Some("a4"),
                "FETCH: arguments",
            ),
            (
                b"a5 FETCH 1 BODY[BOGUS]\r\n",
                Some("a5"),
                "FETCH: arguments",
            ),
            (b"a6 FROB\r\n", Some("a6"), "unknown command FROB"),
            (b"a7\r\n", Some("a7"), "missing command"),
            (b"\r\n", None, "missing command"),
        ] {
            match frame(input) {
                Frame::Invalid { tag: t, reason } => {
                    assert_eq!(t.as_deref(), tag);
                    assert!(reason.starts_with(why), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A bare LF ends a line too (imap-codec `quirk_crlf_relaxed`), as it did before.
        assert!(matches!(command(b"n NOOP\n").2, Cmd::Noop));
        assert!(matches!(
            frame(b"a LOGIN u {2}\n"),
            Frame::Literal {
                length: 2,
                sync: true
            }
        ));
        // Flags a client may not set (RFC 3501 §2.3.2).
        let Frame::Command { cmd, .. } = frame(b"s STORE 2 +FLAGS (\\Recent)\r\n") else {
            panic!()
        };
        assert_eq!(cmd.unwrap_err(), "unknown system flag \\Recent");
    }

    #[test]
    fn uidplus_move_and_recent_keys() {
        // RFC 4315 §2.1 UID EXPUNGE; RFC 6851 MOVE and UID MOVE.
        let (_, name, cmd) = command(b"e UID EXPUNGE 3:5,7\r\n");
        assert_eq!(name, "EXPUNGE");
        let Cmd::UidExpunge(set) = cmd else {
            panic!("{cmd:?}")
        };
        assert!(set.contains(4, 9) && set.contains(7, 9) && !set.contains(6, 9));
        let (_, name, cmd) = command(b"m UID MOVE 2 Archivio\r\n");
        assert_eq!(name, "MOVE");
        assert!(
            matches!(cmd, Cmd::Move { uid: true, ref mailbox, .. } if mailbox == "Archivio"),
            "{cmd:?}"
        );
        let (_, _, cmd) = command(b"m MOVE 1:* INBOX\r\n");
        assert!(matches!(cmd, Cmd::Move { uid: false, .. }), "{cmd:?}");
        // RFC 3501 §6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
        let (_, _, cmd) = command(b"q SEARCH NEW OLD\r\n");
        let Cmd::Search {
            key: Key::And(keys),
            ..
        } = cmd
        else {
            panic!("{cmd:?}")
        };
        let Key::And(new) = &keys[0] else {
            panic!("{keys:?}")
        };
        assert!(matches!(&new[0], Key::Flag(f, true) if f == "\\Recent"));
        assert!(matches!(&new[1], Key::Flag(f, false) if f == "\\Seen"));
        assert!(matches!(&keys[1], Key::Flag(f, false) if f == "\\Recent"));
    }

    #[test]
    fn search_keys_and_sequence_sets() {
        let (_, _, cmd) =
            command(b"q SEARCH CHARSET UTF-8 2,4:5 OR SUBJECT x NOT SEEN SINCE 1-Feb-1994\r\n");
        let Cmd::Search { charset, key, .. } = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(charset.as_deref(), Some("UTF-8"));
        let Key::And(keys) = key else { panic!() };
        let Key::Seq(s) = &keys[0] else {
            panic!("{keys:?}")
        };
        assert!(s.contains(2, 20) && s.contains(5, 20) && !s.contains(3, 20));
        assert!(matches!(&keys[1], Key::Or(..)));
        assert!(matches!(&keys[2], Key::Since(d) if d.to_string() == "1994-02-01"));
        // "*:3" is the same as "3:*" (RFC 3501 §9); `*` of an empty mailbox matches nothing.
        let (_, _, cmd) = command(b"u UID SEARCH UID *:3\r\n");
        let Cmd::Search { uid: true, key, .. } = cmd else {
            panic!("{cmd:?}")
        };
        let Key::And(keys) = key else { panic!() };
        let Key::Uid(s) = &keys[0] else {
            panic!("{keys:?}")
        };
        assert!(s.contains(4, 5) && !s.contains(2, 5));
    }
}
