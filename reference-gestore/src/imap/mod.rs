//! The IMAP4rev1 server (RFC 3501) of the mailbox access point, with STARTTLS (RFC 3501 §6.2.1,
//! RFC 2595), implicit TLS (RFC 8314) and IDLE (RFC 2177). Login only over TLS (RFC 6109 §5.3:
//! user↔provider traffic is protected): LOGINDISABLED before.
//!
//! Commands are decoded by imap-codec's `CommandCodec` and mapped to this server's commands
//! ([`parse`]); responses are imap-types values (`Greeting`, `Status`, `Data`, `Code`,
//! `CommandContinuationRequest`, FETCH `MessageDataItem`s with `Envelope`/`BodyStructure`)
//! serialised by imap-codec's `GreetingCodec`/`ResponseCodec` (`respond`): no response bytes
//! are written by hand. Every session sees only the mailbox it logged in to.
//!
//! Extensions: UIDPLUS (RFC 4315), MOVE (RFC 6851), APPENDLIMIT (RFC 7889), LITERAL+ (RFC 7888).
//! Failed logins are slowed down and end the session after a few ([`access::AuthThrottle`]); the
//! literals of one command are bounded ([`AccessConfig::max_command_literals`]).
//!
//! # Why the session loop is not imap-next's `server::Server` (0.3.4)
//!
//! imap-next's sans-I/O server would drive the same codecs, and its AUTHENTICATE flow
//! (`authenticate_continue`/`authenticate_finish`, `*` cancel), its IDLE flow (`idle_accept`,
//! `IdleDoneReceived`) and `crlf_relaxed` fit. What does not fit, concretely:
//! - Literal caps: it has one `max_literal_size` per literal and rejects a larger synchronising
//!   literal with a fixed `BAD` text. This server bounds the sum of a command's literals
//!   (`max_command_literals`), gives APPEND its own cap and answers it with `NO [TOOBIG]`
//!   (RFC 7889 §4), and names the bound in the text; tests check these exact lines.
//! - An over-long non-synchronising literal: imap-next keeps reading and discarding up to
//!   `max_command_size` (default 25 MiB + 64 KiB); this server sends BYE and closes at once
//!   (RFC 7888 §4), and its 64 KiB line bound excludes literal data.
//! - STARTTLS: the server has no STARTTLS state. Dropping the plaintext it has buffered (the
//!   STARTTLS injection rule, RFC 3501 §6.2.1) means building a new `Server`, and
//!   `Server::new` always queues a greeting, which must not follow STARTTLS.
//! - I/O: its `stream::Stream` wraps only a tokio `TcpStream` or `TlsStream<TcpStream>`; the
//!   sessions here run over [`BoxIo`] (in-memory streams in tests, the access point's TLS),
//!   so adopting it still needs an own byte pump around `enqueue_input`/`Io::Output`.
//!
//! Since the responses already are imap-types values, moving to imap-next later changes the
//! read loop only (`read_command`, `idle`, `authenticate`), not what is sent.

pub mod mime;
pub mod parse;
mod respond;

use crate::access::{self, AccessConfig, BoxIo, Login};
use crate::store::{MessageMeta, Store, canonical_folder};
use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, Timelike, Utc};
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::core::{Atom, Charset, NString, QuotedChar, Vec1};
use imap_codec::imap_types::datetime::DateTime as ImapDateTime;
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::fetch::{MessageDataItem, Section as CodecSection};
use imap_codec::imap_types::flag::{Flag, FlagFetch, FlagNameAttribute, FlagPerm, StoreType};
use imap_codec::imap_types::response::{Capability, Code, Data, StatusKind};
use imap_codec::imap_types::status::StatusDataItem;
use mime::{Part, Section};
use parse::{Cmd, Frame, SeqSet};
use respond::other;
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The most octets of the lines of one command (without its literals).
const MAX_LINE: u64 = 64 * 1024;
/// The flags of RFC 3501 §2.3.2 this server knows.
const SYSTEM_FLAGS: [Flag<'static>; 5] = [
    Flag::Answered,
    Flag::Flagged,
    Flag::Deleted,
    Flag::Seen,
    Flag::Draft,
];

/// Runs one IMAP session over `io` until LOGOUT or the client goes away. `tls_active` says the
/// stream is already TLS (implicit TLS listener).
pub async fn session(io: BoxIo, cfg: Arc<AccessConfig>, tls_active: bool) -> std::io::Result<()> {
    let mut s = Session {
        io: BufReader::new(io),
        cfg,
        tls: tls_active,
        user: None,
        sel: None,
        auth_failures: 0,
        closing: false,
    };
    let caps = Code::Capability(s.capabilities());
    let text = format!("{} IMAP4rev1 ready", s.cfg.hostname);
    s.send(&respond::greeting(Some(caps), &text)).await?;
    s.run().await
}

struct Selected {
    name: String,
    uidvalidity: u32,
    read_only: bool,
    msgs: Vec<MessageMeta>,
    /// The UIDs that are `\Recent` for this session (RFC 3501 §2.3.2).
    recent: HashSet<i64>,
}

struct Session {
    io: BufReader<BoxIo>,
    cfg: Arc<AccessConfig>,
    tls: bool,
    user: Option<String>,
    sel: Option<Selected>,
    /// Failed LOGIN/AUTHENTICATE attempts on this connection.
    auth_failures: u32,
    /// Too many failed logins: BYE after this command's response, then close.
    closing: bool,
}

enum Flow {
    Continue,
    Logout,
}

/// A tagged response: `OK`, `NO` or `BAD`, with a response code and text (RFC 3501 §7.1).
struct Done {
    kind: StatusKind,
    code: Option<Code<'static>>,
    text: String,
}

fn done(kind: StatusKind, code: Option<Code<'static>>, t: impl Into<String>) -> Done {
    Done {
        kind,
        code,
        text: t.into(),
    }
}
fn ok(t: impl Into<String>) -> Result<Done, Done> {
    Ok(done(StatusKind::Ok, None, t))
}
fn ok_code(code: Code<'static>, t: impl Into<String>) -> Result<Done, Done> {
    Ok(done(StatusKind::Ok, Some(code), t))
}
fn no(t: impl Into<String>) -> Result<Done, Done> {
    Err(done(StatusKind::No, None, t))
}
fn no_code(code: Code<'static>, t: impl Into<String>) -> Result<Done, Done> {
    Err(done(StatusKind::No, Some(code), t))
}
/// NO with RFC 5530 SERVERBUG: the store failed.
fn server_bug(e: impl std::fmt::Display) -> Result<Done, Done> {
    no_code(other("SERVERBUG"), e.to_string())
}
fn bad(t: impl Into<String>) -> Done {
    done(StatusKind::Bad, None, t)
}

/// The items of a FETCH (RFC 3501 §6.4.5).
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Flags,
    Uid,
    Size,
    InternalDate,
    Envelope,
    Body,
    BodyStructure,
    Section {
        peek: bool,
        section: Section,
        reply: Reply,
        partial: Option<(usize, usize)>,
    },
}

/// How the response names a section item (RFC 3501 §7.4.2): RFC822, RFC822.HEADER and
/// RFC822.TEXT keep their names; BODY[section] repeats the section as the client wrote it.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Body(Option<CodecSection<'static>>),
}

/// A section item of a FETCH response with its data, always a literal; `origin` for a partial
/// (RFC 3501 §7.4.2 `BODY[section]<origin>`).
fn section_item(reply: &Reply, origin: Option<u32>, data: &[u8]) -> MessageDataItem<'static> {
    let data = NString(Some(respond::literal(data)));
    match reply {
        Reply::Rfc822 => MessageDataItem::Rfc822(data),
        Reply::Rfc822Header => MessageDataItem::Rfc822Header(data),
        Reply::Rfc822Text => MessageDataItem::Rfc822Text(data),
        Reply::Body(section) => MessageDataItem::BodyExt {
            section: section.clone(),
            origin,
            data,
        },
    }
}

impl Item {
    fn needs_raw(&self) -> bool {
        matches!(
            self,
            Item::Envelope | Item::Body | Item::BodyStructure | Item::Section { .. }
        )
    }
}

/// A SEARCH key (RFC 3501 §6.4.4).
#[derive(Debug, Clone)]
enum Key {
    All,
    Seq(SeqSet),
    Uid(SeqSet),
    Flag(String, bool),
    Header(String, String),
    Body(String),
    Text(String),
    Since(NaiveDate),
    Before(NaiveDate),
    On(NaiveDate),
    Larger(i64),
    Smaller(i64),
    Not(Box<Key>),
    Or(Box<Key>, Box<Key>),
    And(Vec<Key>),
}

fn key_needs_raw(k: &Key) -> bool {
    match k {
        Key::Header(..) | Key::Body(_) | Key::Text(_) => true,
        Key::Not(k) => key_needs_raw(k),
        Key::Or(a, b) => key_needs_raw(a) || key_needs_raw(b),
        Key::And(v) => v.iter().any(key_needs_raw),
        _ => false,
    }
}

/// Whether `value` contains `needle` case-insensitively, as written or with its RFC 2047 encoded
/// words decoded (real PEC subjects are often encoded).
fn header_matches(value: &str, needle: &str) -> bool {
    contains_ci(value.as_bytes(), needle)
        || contains_ci(mime::decode_words(value).as_bytes(), needle)
}

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let n = needle.to_lowercase();
    String::from_utf8_lossy(hay).to_lowercase().contains(&n)
}

struct Ctx<'a> {
    seq: u32,
    max_seq: u32,
    max_uid: u32,
    m: &'a MessageMeta,
    recent: bool,
    raw: Option<&'a [u8]>,
    part: Option<&'a Part>,
}

fn matches(k: &Key, c: &Ctx) -> bool {
    let date = c.m.internal_date.date_naive();
    match k {
        Key::All => true,
        Key::Seq(s) => s.contains(c.seq, c.max_seq),
        Key::Uid(s) => s.contains(c.m.uid as u32, c.max_uid),
        // RFC 3501 §2.3.2: \Recent is the session's, not stored.
        Key::Flag(f, has) if f.eq_ignore_ascii_case("\\Recent") => c.recent == *has,
        Key::Flag(f, has) => c.m.flags.iter().any(|x| x.eq_ignore_ascii_case(f)) == *has,
        Key::Header(name, v) => c.part.is_some_and(|p| {
            p.headers
                .iter()
                .any(|(n, val)| n.eq_ignore_ascii_case(name) && header_matches(val, v))
        }),
        Key::Body(v) => match (c.raw, c.part) {
            (Some(r), Some(p)) => contains_ci(&r[p.body_start..p.end], v),
            _ => false,
        },
        // RFC 3501 §6.4.4 TEXT: header or body; encoded header words count decoded.
        Key::Text(v) => {
            c.raw.is_some_and(|r| contains_ci(r, v))
                || c.part
                    .is_some_and(|p| p.headers.iter().any(|(_, val)| header_matches(val, v)))
        }
        Key::Since(d) => date >= *d,
        Key::Before(d) => date < *d,
        Key::On(d) => date == *d,
        Key::Larger(n) => c.m.size > *n,
        Key::Smaller(n) => c.m.size < *n,
        Key::Not(k) => !matches(k, c),
        Key::Or(a, b) => matches(a, c) || matches(b, c),
        Key::And(v) => v.iter().all(|k| matches(k, c)),
    }
}

/// A stored flag as imap-types' `Flag`: `\Name` a system flag, anything else a keyword
/// (RFC 3501 §2.3.2); `None` for a name that is not an atom.
fn flag(f: &str) -> Option<Flag<'static>> {
    match f.strip_prefix('\\') {
        Some(name) => Atom::try_from(name.to_string()).ok().map(Flag::system),
        None => Atom::try_from(f.to_string()).ok().map(Flag::keyword),
    }
}

/// The FLAGS of a message as this session sees them: `\Recent` added when it is recent here.
fn flag_list(flags: &[String], recent: bool) -> Vec<FlagFetch<'static>> {
    let mut v: Vec<FlagFetch> = flags
        .iter()
        .filter_map(|f| flag(f))
        .map(FlagFetch::Flag)
        .collect();
    if recent {
        v.push(FlagFetch::Recent);
    }
    v
}

/// A message number or UID as the grammar's `nz-number`; `None` for 0 or out of range.
fn nz(n: impl TryInto<u32>) -> Option<NonZeroU32> {
    n.try_into().ok().and_then(NonZeroU32::new)
}

/// `* n FETCH (items)` (RFC 3501 §7.4.2); nothing when there are no items.
fn fetch_data(seq: usize, items: Vec<MessageDataItem<'static>>) -> Vec<u8> {
    match (nz(seq), Vec1::try_from(items)) {
        (Some(seq), Ok(items)) => respond::data(Data::Fetch { seq, items }),
        _ => Vec::new(),
    }
}

/// A set of UIDs in ascending order as a `uid-set` with ranges (RFC 4315 §3); `None` when
/// empty.
fn uid_set(uids: &[i64]) -> Option<UidSet> {
    let mut out: Vec<UidElement> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j] + 1 {
            j += 1;
        }
        let (a, b) = (nz(uids[i])?, nz(uids[j])?);
        out.push(if i == j {
            UidElement::Single(a)
        } else {
            UidElement::Range(a, b)
        });
        i = j + 1;
    }
    Vec1::try_from(out).ok().map(UidSet)
}

/// INTERNALDATE (RFC 3501 §9 `date-time`): whole seconds, in UTC.
fn internal_date(d: DateTime<Utc>) -> Option<ImapDateTime> {
    let d = d.with_nanosecond(0)?.fixed_offset();
    ImapDateTime::try_from(d).ok()
}

/// Matches a folder name against a LIST pattern: `*` anything, `%` anything but the hierarchy
/// delimiter `/` (RFC 3501 §6.3.8).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != b'/')
            .any(|i| wildcard(rest, &name[i..])),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

impl Session {
    async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(b).await?;
        w.flush().await
    }

    fn store(&self) -> &crate::store::SqlStore {
        &self.cfg.store
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut c = vec![Capability::Imap4Rev1];
        if !self.tls {
            if self.cfg.tls.is_some() {
                c.push(Capability::StartTls);
            }
            // RFC 3501 §6.2.3: no plaintext passwords before TLS.
            c.push(Capability::LoginDisabled);
        } else if self.user.is_none() {
            c.push(Capability::Auth(AuthMechanism::Plain));
        }
        c.extend([
            Capability::Idle,
            Capability::LiteralPlus,
            Capability::UidPlus,
            Capability::Move,
        ]);
        // RFC 7889: the largest APPEND (imap-types has no variant: an atom).
        if let Ok(limit) = Capability::try_from(format!("APPENDLIMIT={}", self.cfg.max_append_size))
        {
            c.push(limit);
        }
        Vec1::try_from(c).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    /// Reads one line (with its CRLF) of at most `max` octets into `buf`; false at end of input.
    async fn read_line(&mut self, buf: &mut Vec<u8>, max: u64) -> std::io::Result<bool> {
        let n = (&mut self.io).take(max).read_until(b'\n', buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if !buf.ends_with(b"\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "command line too long",
            ));
        }
        Ok(true)
    }

    /// Reads one whole command with its literals (RFC 3501 §4.3, §7.5 continuation) and decodes
    /// it; `None` at end of input or when the session must end. Its lines and literals are
    /// bounded: a command over the bounds is refused before its data is read.
    async fn read_command(&mut self) -> std::io::Result<Option<Frame>> {
        let mut buf = Vec::new();
        let mut literals: u64 = 0;
        loop {
            let line_budget = MAX_LINE.saturating_sub(buf.len() as u64 - literals);
            let read = match line_budget {
                0 => Err(std::io::ErrorKind::InvalidData.into()),
                n => self.read_line(&mut buf, n).await,
            };
            match read {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    // The rest of an over-long line cannot be told from the next command.
                    self.send(&respond::bye("command line too long")).await?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            let (length, sync) = match parse::frame(&buf) {
                Frame::Literal { length, sync } => (length, sync),
                f => return Ok(Some(f)),
            };
            literals += u64::from(length);
            let append = buf
                .split(|&c| c == b' ')
                .nth(1)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"));
            let cap = if append {
                // The message, plus room for a mailbox name or flags given as literals.
                self.cfg.max_append_size + self.cfg.max_command_literals
            } else {
                self.cfg.max_command_literals
            };
            // In APPEND a literal over APPENDLIMIT can only be the message (RFC 7889 §4).
            let too_big = append && u64::from(length) > self.cfg.max_append_size;
            if literals > cap || too_big {
                let tag = parse::first_word(&buf);
                let resp = if append {
                    // RFC 7889 §4 / RFC 4469 §5: TOOBIG.
                    let text = format!(
                        "APPEND: the message exceeds the limit of {} octets",
                        self.cfg.max_append_size
                    );
                    respond::status(tag.as_deref(), StatusKind::No, Some(Code::TooBig), &text)
                } else {
                    let text = format!("the literals of this command exceed {cap} octets");
                    respond::status(tag.as_deref(), StatusKind::Bad, None, &text)
                };
                self.send(&resp).await?;
                if !sync {
                    // RFC 7888 §4: a non-synchronising literal is already on its way and cannot be
                    // skipped without reading it: the session ends.
                    self.send(&respond::bye("literal too large")).await?;
                    return Ok(None);
                }
                // RFC 3501 §7.5: refused instead of the continuation; the client sends no more
                // of this command.
                buf.clear();
                literals = 0;
                continue;
            }
            if sync {
                // RFC 3501 §7.5: the command continuation request.
                self.send(&respond::continuation("Ready for literal data"))
                    .await?;
            }
            let at = buf.len();
            buf.resize(at + length as usize, 0);
            self.io.read_exact(&mut buf[at..]).await?;
        }
    }

    async fn run(&mut self) -> std::io::Result<()> {
        loop {
            let Some(frame) = self.read_command().await? else {
                return Ok(());
            };
            let (tag, name, cmd) = match frame {
                Frame::Command { tag, name, cmd } => (tag, name, cmd),
                // RFC 3501 §7.1.3: BAD, tagged when the tag could be read.
                Frame::Invalid { tag, reason } => {
                    let r = respond::status(tag.as_deref(), StatusKind::Bad, None, &reason);
                    self.send(&r).await?;
                    continue;
                }
                Frame::Literal { .. } => {
                    let r = respond::status(None, StatusKind::Bad, None, "unexpected literal");
                    self.send(&r).await?;
                    continue;
                }
            };
            let cmd = match cmd {
                Ok(c) => c,
                Err(e) => {
                    let text = format!("{name}: {e}");
                    let r = respond::status(Some(&tag), StatusKind::Bad, None, &text);
                    self.send(&r).await?;
                    continue;
                }
            };
            match self.command(&tag, name, cmd).await? {
                Flow::Continue => {}
                Flow::Logout => return Ok(()),
            }
        }
    }

    async fn command(&mut self, tag: &str, name: &str, cmd: Cmd) -> std::io::Result<Flow> {
        // UID commands may report expunges (RFC 3501 §7.4.1).
        let uid_cmd = matches!(
            cmd,
            Cmd::Search { uid: true, .. }
                | Cmd::Fetch { uid: true, .. }
                | Cmd::Store { uid: true, .. }
                | Cmd::Copy { uid: true, .. }
                | Cmd::Move { uid: true, .. }
                | Cmd::UidExpunge(_)
        );
        let r = match cmd {
            Cmd::Capability => {
                let c = self.capabilities();
                self.send(&respond::data(Data::Capability(c))).await?;
                ok("CAPABILITY completed")
            }
            Cmd::Check if self.sel.is_none() => Err(bad("no mailbox selected")),
            Cmd::Noop | Cmd::Check => {
                self.refresh().await?;
                ok(format!("{name} completed"))
            }
            Cmd::Logout => {
                let mut out = respond::bye("logging out");
                out.extend(respond::status(
                    Some(tag),
                    StatusKind::Ok,
                    None,
                    "LOGOUT completed",
                ));
                self.send(&out).await?;
                return Ok(Flow::Logout);
            }
            Cmd::StartTls => return self.starttls(tag).await,
            Cmd::Unsupported => Err(bad(format!("{name}: not supported"))),
            Cmd::Login { .. } | Cmd::Authenticate { .. } if self.user.is_some() => {
                Err(bad("already authenticated"))
            }
            Cmd::Login { user, pass } => self.do_login(&user, &pass).await,
            Cmd::Authenticate { mechanism, initial } => {
                self.authenticate(&mechanism, initial).await?
            }
            _ if self.user.is_none() => Err(bad(format!("{name}: log in first"))),
            Cmd::Select { mailbox, read_only } => self.select(&mailbox, read_only).await?,
            Cmd::Create(m) => self.create(&m).await,
            Cmd::Delete(m) => self.delete(&m).await,
            Cmd::Rename { from, to } => self.rename(&from, &to).await,
            Cmd::Subscribe => ok(format!("{name} completed")),
            Cmd::List { reference, pattern } => self.list(&reference, &pattern, name).await?,
            Cmd::Status { mailbox, items } => self.status(&mailbox, &items).await?,
            Cmd::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(&mailbox, flags, date, &message).await?,
            Cmd::Idle => return self.idle(tag).await,
            _ if self.sel.is_none() => Err(bad(format!("{name}: no mailbox selected"))),
            Cmd::Close => self.close().await,
            Cmd::Expunge => self.expunge(None).await?,
            Cmd::UidExpunge(set) => self.expunge(Some(&set)).await?,
            Cmd::Search { uid, charset, key } => self.search(charset, &key, uid).await?,
            Cmd::Fetch { uid, set, items } => self.fetch(&set, items, uid).await?,
            Cmd::Store {
                uid,
                set,
                kind,
                silent,
                flags,
            } => self.store_cmd(&set, kind, silent, &flags, uid).await?,
            Cmd::Copy { uid, set, mailbox } => self.copy(&set, &mailbox, uid, false).await?,
            Cmd::Move { uid, set, mailbox } => self.copy(&set, &mailbox, uid, true).await?,
        };
        if uid_cmd && r.is_ok() {
            self.refresh().await?;
        }
        let (Ok(Done { kind, code, text }) | Err(Done { kind, code, text })) = r;
        let tagged = respond::status(Some(tag), kind, code, &text);
        if self.closing {
            // Too many failed logins: BYE first (RFC 3501 §7.1.5), then the tagged reply, then
            // the connection closes, as the SMTP access point does.
            let mut out = respond::bye("too many failed logins");
            out.extend(tagged);
            self.send(&out).await?;
            return Ok(Flow::Logout);
        }
        self.send(&tagged).await?;
        Ok(Flow::Continue)
    }

    async fn starttls(&mut self, tag: &str) -> std::io::Result<Flow> {
        let Some(tls) = self.cfg.tls.clone().filter(|_| !self.tls) else {
            let r = respond::status(Some(tag), StatusKind::Bad, None, "STARTTLS not available");
            self.send(&r).await?;
            return Ok(Flow::Continue);
        };
        let r = respond::status(Some(tag), StatusKind::Ok, None, "Begin TLS negotiation now");
        self.send(&r).await?;
        // Anything pipelined after STARTTLS is dropped with the buffer (RFC 3501 §6.2.1 / the
        // STARTTLS injection class of bugs).
        let (placeholder, _) = tokio::io::duplex(1);
        let old = std::mem::replace(&mut self.io, BufReader::new(Box::new(placeholder)));
        let io = access::start_tls(old.into_inner(), tls).await?;
        self.io = BufReader::new(io);
        self.tls = true;
        Ok(Flow::Continue)
    }

    async fn do_login(&mut self, user: &str, pass: &str) -> Result<Done, Done> {
        if !self.tls {
            // RFC 3501 §6.2.3 LOGINDISABLED.
            return no_code(other("PRIVACYREQUIRED"), "login is only allowed over TLS");
        }
        match access::login(self.store(), user, pass).await {
            Login::Ok(address) => {
                self.user = Some(address);
                ok_code(Code::Capability(self.capabilities()), "logged in")
            }
            // RFC 5530 §3.
            Login::Disabled => no_code(other("AUTHENTICATIONFAILED"), "mailbox disabled"),
            Login::Failed => {
                // Slow down password guessing; end the session after too many.
                let auth = self.cfg.auth;
                self.closing = auth.fail(&mut self.auth_failures).await;
                no_code(other("AUTHENTICATIONFAILED"), "invalid credentials")
            }
        }
    }

    async fn authenticate(
        &mut self,
        mech: &str,
        initial: Option<Vec<u8>>,
    ) -> std::io::Result<Result<Done, Done>> {
        if mech != "PLAIN" {
            return Ok(no("unsupported authentication mechanism"));
        }
        if !self.tls {
            return Ok(no_code(
                other("PRIVACYREQUIRED"),
                "authentication is only allowed over TLS",
            ));
        }
        // RFC 4959: imap-codec has decoded an initial response; otherwise ask for it.
        let dec = match initial {
            Some(d) => d,
            None => {
                self.send(&respond::empty_challenge()).await?;
                let mut line = Vec::new();
                if !self.read_line(&mut line, MAX_LINE).await? {
                    return Ok(Err(bad("connection closed")));
                }
                let data = line.trim_ascii();
                if data == b"*" {
                    // RFC 3501 §6.2.2: the client cancels.
                    return Ok(Err(bad("authentication cancelled")));
                }
                let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(data) else {
                    return Ok(Err(bad("invalid base64")));
                };
                dec
            }
        };
        // RFC 4616: [authzid] NUL authcid NUL passwd.
        let f: Vec<&[u8]> = dec.split(|&c| c == 0).collect();
        let [authz, user, pass] = f.as_slice() else {
            return Ok(Err(bad("invalid PLAIN message")));
        };
        let (user, pass) = (String::from_utf8_lossy(user), String::from_utf8_lossy(pass));
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user.as_bytes()) {
            return Ok(no_code(
                other("AUTHORIZATIONFAILED"),
                "cannot act as another user",
            ));
        }
        Ok(self.do_login(&user, &pass).await)
    }

    fn me(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }

    async fn select(&mut self, name: &str, read_only: bool) -> std::io::Result<Result<Done, Done>> {
        self.sel = None;
        let me = self.me().to_string();
        let Ok(Some(f)) = self.store().folder(&me, name).await else {
            return Ok(no("no such mailbox"));
        };
        let msgs = self
            .store()
            .messages(&me, &f.name)
            .await
            .unwrap_or_default();
        // RFC 3501 §2.3.2: the messages no earlier session was told of are \Recent here; a
        // read-write session claims them, EXAMINE leaves them for the next.
        let up_to = if read_only {
            0
        } else {
            msgs.last().map_or(0, |m| m.uid)
        };
        let Ok(prev) = self
            .store()
            .claim_recent(&me, &f.name, f.uidvalidity, up_to)
            .await
        else {
            return Ok(server_bug("cannot read the mailbox state"));
        };
        let recent: HashSet<i64> = msgs.iter().map(|m| m.uid).filter(|&u| u > prev).collect();
        // RFC 3501 §6.3.1: FLAGS, PERMANENTFLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT.
        let mut out = respond::data(Data::Flags(SYSTEM_FLAGS.to_vec()));
        let mut perm: Vec<FlagPerm> = SYSTEM_FLAGS.into_iter().map(FlagPerm::Flag).collect();
        perm.push(FlagPerm::Asterisk);
        out.extend(respond::untagged_ok(Code::PermanentFlags(perm), "flags"));
        out.extend(respond::data(Data::Exists(msgs.len() as u32)));
        out.extend(respond::data(Data::Recent(recent.len() as u32)));
        if let Some(i) = msgs
            .iter()
            .position(|m| !m.flags.iter().any(|f| f == "\\Seen"))
            .and_then(|i| nz(i + 1))
        {
            out.extend(respond::untagged_ok(Code::Unseen(i), "first unseen"));
        }
        if let Some(v) = nz(f.uidvalidity) {
            out.extend(respond::untagged_ok(Code::UidValidity(v), "UIDs valid"));
        }
        if let Some(n) = nz(f.uidnext) {
            out.extend(respond::untagged_ok(Code::UidNext(n), "predicted next UID"));
        }
        self.send(&out).await?;
        self.sel = Some(Selected {
            name: f.name,
            uidvalidity: f.uidvalidity,
            read_only,
            msgs,
            recent,
        });
        Ok(if read_only {
            ok_code(Code::ReadOnly, "EXAMINE completed")
        } else {
            ok_code(Code::ReadWrite, "SELECT completed")
        })
    }

    fn folder_arg(name: &str) -> Result<String, Done> {
        let n = name.trim_end_matches('/');
        if n.is_empty() {
            return Err(bad("empty mailbox name"));
        }
        Ok(canonical_folder(n))
    }

    async fn create(&mut self, name: &str) -> Result<Done, Done> {
        let name = Self::folder_arg(name)?;
        if name == "INBOX" {
            return no("INBOX always exists");
        }
        match self.store().create_folder(self.me(), &name).await {
            Ok(true) => ok("CREATE completed"),
            // RFC 5530 §3.
            Ok(false) => no_code(other("ALREADYEXISTS"), "mailbox exists"),
            Err(e) => server_bug(e),
        }
    }

    async fn delete(&mut self, name: &str) -> Result<Done, Done> {
        let name = Self::folder_arg(name)?;
        if name == "INBOX" {
            return no("INBOX cannot be deleted");
        }
        if self.sel.as_ref().is_some_and(|s| s.name == name) {
            self.sel = None;
        }
        match self.store().delete_folder(self.me(), &name).await {
            Ok(true) => ok("DELETE completed"),
            Ok(false) => no_code(other("NONEXISTENT"), "no such mailbox"),
            Err(e) => server_bug(e),
        }
    }

    async fn rename(&mut self, from: &str, to: &str) -> Result<Done, Done> {
        let from = Self::folder_arg(from)?;
        let to = Self::folder_arg(to)?;
        if from == "INBOX" || to == "INBOX" {
            // RFC 3501 §6.3.5 lets RENAME INBOX move its messages; not offered here.
            return no("renaming INBOX is not supported");
        }
        match self.store().rename_folder(self.me(), &from, &to).await {
            Ok(true) => ok("RENAME completed"),
            Ok(false) => no("no such mailbox, or the new name exists"),
            Err(e) => server_bug(e),
        }
    }

    async fn list(
        &mut self,
        reference: &str,
        pattern: &str,
        cmd: &str,
    ) -> std::io::Result<Result<Done, Done>> {
        // RFC 3501 §7.2.2 / §7.2.3: LIST or LSUB data, `/` as the hierarchy delimiter.
        let entry = |items: Vec<FlagNameAttribute<'static>>, name: &str| {
            let (delimiter, mailbox) = (QuotedChar::try_from('/').ok(), respond::mailbox(name));
            respond::data(if cmd == "LSUB" {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            })
        };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: the hierarchy delimiter.
            self.send(&entry(vec![FlagNameAttribute::Noselect], ""))
                .await?;
            return Ok(ok(format!("{cmd} completed")));
        }
        let full = format!("{reference}{pattern}");
        let folders = self.store().folders(self.me()).await.unwrap_or_default();
        let mut out = Vec::new();
        for f in folders {
            let name_for_match = if f.name == "INBOX" && full.len() >= 5 {
                // INBOX matches case-insensitively.
                canonical_folder(&full[..5]) + &full[5..]
            } else {
                full.clone()
            };
            if wildcard(name_for_match.as_bytes(), f.name.as_bytes()) {
                out.extend(entry(vec![], &f.name));
            }
        }
        self.send(&out).await?;
        Ok(ok(format!("{cmd} completed")))
    }

    async fn status(&mut self, name: &str, items: &[&str]) -> std::io::Result<Result<Done, Done>> {
        let name = match Self::folder_arg(name) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let Ok(Some(f)) = self.store().folder(self.me(), &name).await else {
            return Ok(no("no such mailbox"));
        };
        let recent = if !items.contains(&"RECENT") {
            0
        } else if let Some(sel) = self.sel.as_ref().filter(|s| s.name == f.name) {
            sel.recent.len() as i64
        } else {
            // RFC 3501 §6.3.10: the messages a SELECT would now show as \Recent.
            let me = self.me().to_string();
            let prev = self
                .store()
                .claim_recent(&me, &f.name, f.uidvalidity, 0)
                .await
                .unwrap_or(i64::MAX);
            let msgs = self
                .store()
                .messages(&me, &f.name)
                .await
                .unwrap_or_default();
            msgs.iter().filter(|m| m.uid > prev).count() as i64
        };
        let count = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        let mut parts = Vec::new();
        for &i in items {
            // RFC 3501 §7.2.4; UIDNEXT and UIDVALIDITY are nz-numbers, never 0.
            parts.extend(match i {
                "MESSAGES" => Some(StatusDataItem::Messages(count(f.messages))),
                "RECENT" => Some(StatusDataItem::Recent(count(recent))),
                "UIDNEXT" => nz(f.uidnext).map(StatusDataItem::UidNext),
                "UIDVALIDITY" => nz(f.uidvalidity).map(StatusDataItem::UidValidity),
                "UNSEEN" => Some(StatusDataItem::Unseen(count(f.unseen))),
                _ => return Ok(Err(bad(format!("unknown status item {i}")))),
            });
        }
        let status = Data::Status {
            mailbox: respond::mailbox(&f.name),
            items: parts.into(),
        };
        self.send(&respond::data(status)).await?;
        Ok(ok("STATUS completed"))
    }

    async fn append(
        &mut self,
        name: &str,
        flags: Vec<String>,
        date: Option<DateTime<FixedOffset>>,
        message: &[u8],
    ) -> std::io::Result<Result<Done, Done>> {
        let name = match Self::folder_arg(name) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        if message.len() as u64 > self.cfg.max_append_size {
            // RFC 7889 §4: TOOBIG above APPENDLIMIT.
            return Ok(no_code(
                Code::TooBig,
                format!(
                    "APPEND: the message exceeds the limit of {} octets",
                    self.cfg.max_append_size
                ),
            ));
        }
        let date = date.map_or_else(Utc::now, |d| d.with_timezone(&Utc));
        let me = self.me().to_string();
        let Ok(Some(folder)) = self.store().folder(&me, &name).await else {
            // RFC 3501 §6.3.11: TRYCREATE when the target does not exist.
            return Ok(no_code(Code::TryCreate, "no such mailbox"));
        };
        match self.store().append(&me, &name, message, &flags, date).await {
            Ok(uid) => {
                self.refresh().await?;
                // RFC 4315 §3: APPENDUID <uidvalidity> <uid>.
                Ok(match (nz(folder.uidvalidity), nz(uid)) {
                    (Some(uid_validity), Some(uid)) => {
                        ok_code(Code::AppendUid { uid_validity, uid }, "APPEND completed")
                    }
                    _ => ok("APPEND completed"),
                })
            }
            Err(e) => Ok(server_bug(e)),
        }
    }

    /// Brings the selected snapshot up to date and reports what changed: expunges (highest
    /// sequence first, so each number is right when sent), flag changes, new messages
    /// (RFC 3501 §7.4.1, §7.3.1, §7.2.6).
    async fn refresh(&mut self) -> std::io::Result<()> {
        let me = self.me().to_string();
        let Some(sel) = self.sel.as_mut() else {
            return Ok(());
        };
        let Ok(now) = self.cfg.store.messages(&me, &sel.name).await else {
            return Ok(());
        };
        let mut out = Vec::new();
        let live: std::collections::HashMap<i64, &MessageMeta> =
            now.iter().map(|m| (m.uid, m)).collect();
        for i in (0..sel.msgs.len()).rev() {
            if !live.contains_key(&sel.msgs[i].uid) {
                if let Some(n) = nz(i + 1) {
                    out.extend(respond::data(Data::Expunge(n)));
                }
                sel.msgs.remove(i);
            }
        }
        sel.recent.retain(|u| live.contains_key(u));
        for (i, m) in sel.msgs.iter_mut().enumerate() {
            if let Some(n) = live.get(&m.uid)
                && n.flags != m.flags
            {
                m.flags = n.flags.clone();
                let mut items = vec![MessageDataItem::Flags(flag_list(
                    &m.flags,
                    sel.recent.contains(&m.uid),
                ))];
                items.extend(nz(m.uid).map(MessageDataItem::Uid));
                out.extend(fetch_data(i + 1, items));
            }
        }
        let last = sel.msgs.last().map_or(0, |m| m.uid);
        let before = sel.msgs.len();
        sel.msgs
            .extend(now.iter().filter(|m| m.uid > last).cloned());
        if sel.msgs.len() != before {
            // RFC 3501 §2.3.2: new messages are \Recent for the first session told of them.
            let newest = sel.msgs.last().map_or(0, |m| m.uid);
            let up_to = if sel.read_only { 0 } else { newest };
            let prev = self
                .cfg
                .store
                .claim_recent(&me, &sel.name, sel.uidvalidity, up_to)
                .await
                .unwrap_or(newest);
            sel.recent.extend(
                sel.msgs[before..]
                    .iter()
                    .map(|m| m.uid)
                    .filter(|&u| u > prev),
            );
            out.extend(respond::data(Data::Exists(sel.msgs.len() as u32)));
            out.extend(respond::data(Data::Recent(sel.recent.len() as u32)));
        }
        if !out.is_empty() {
            self.send(&out).await?;
        }
        Ok(())
    }

    async fn idle(&mut self, tag: &str) -> std::io::Result<Flow> {
        let mut changes = self.store().changes();
        changes.borrow_and_update();
        self.refresh().await?;
        self.send(&respond::continuation("idling")).await?;
        let mut line = Vec::new();
        loop {
            enum Ev {
                Read(std::io::Result<usize>),
                Changed(bool),
            }
            let ev = {
                // At most one octet over the bound is buffered: a line without end is refused.
                let room = (MAX_LINE + 1).saturating_sub(line.len() as u64);
                let mut limited = (&mut self.io).take(room);
                tokio::select! {
                    r = limited.read_until(b'\n', &mut line) => Ev::Read(r),
                    r = changes.changed() => Ev::Changed(r.is_ok()),
                }
            };
            match ev {
                Ev::Read(r) => {
                    let n = r?;
                    if line.len() as u64 > MAX_LINE {
                        self.send(&respond::bye("line too long during IDLE"))
                            .await?;
                        return Ok(Flow::Logout);
                    }
                    if n == 0 {
                        return Ok(Flow::Logout);
                    }
                    if !line.ends_with(b"\n") {
                        continue;
                    }
                    // RFC 2177: DONE ends the IDLE.
                    let resp = if line.trim_ascii().eq_ignore_ascii_case(b"DONE") {
                        respond::status(Some(tag), StatusKind::Ok, None, "IDLE terminated")
                    } else {
                        respond::status(Some(tag), StatusKind::Bad, None, "expected DONE")
                    };
                    self.send(&resp).await?;
                    return Ok(Flow::Continue);
                }
                Ev::Changed(true) => self.refresh().await?,
                // The store is gone: nothing more will change; wait for DONE only.
                Ev::Changed(false) => changes = self.store().changes(),
            }
        }
    }

    async fn close(&mut self) -> Result<Done, Done> {
        // RFC 3501 §6.4.2: CLOSE expunges silently unless read-only.
        if let Some(sel) = self.sel.take()
            && !sel.read_only
        {
            let uids: Vec<i64> = sel
                .msgs
                .iter()
                .filter(|m| m.flags.iter().any(|f| f == "\\Deleted"))
                .map(|m| m.uid)
                .collect();
            if let Err(e) = self
                .store()
                .delete_messages(self.me(), &sel.name, &uids)
                .await
            {
                return server_bug(e);
            }
        }
        ok("CLOSE completed")
    }

    /// EXPUNGE, or with `only` UID EXPUNGE (RFC 4315 §2.1): only the \Deleted messages whose
    /// UIDs are in the set.
    async fn expunge(&mut self, only: Option<&SeqSet>) -> std::io::Result<Result<Done, Done>> {
        let me = self.me().to_string();
        let Some(sel) = self.sel.as_ref() else {
            return Ok(Err(bad("no mailbox selected")));
        };
        if sel.read_only {
            return Ok(no("mailbox is read-only"));
        }
        let max_uid = sel.msgs.last().map_or(0, |m| m.uid as u32);
        // The store's current flags decide, so a \Deleted set by another session counts too.
        let uids: Vec<i64> = self
            .cfg
            .store
            .messages(&me, &sel.name)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.flags.iter().any(|f| f == "\\Deleted"))
            .filter(|m| only.is_none_or(|s| s.contains(m.uid as u32, max_uid)))
            .map(|m| m.uid)
            .collect();
        if let Err(e) = self.cfg.store.delete_messages(&me, &sel.name, &uids).await {
            return Ok(server_bug(e));
        }
        self.refresh().await?;
        Ok(ok("EXPUNGE completed"))
    }

    /// The 0-based indexes of the selected messages a set names, by sequence number or by UID.
    fn resolve(&self, set: &SeqSet, uid: bool) -> Result<Vec<usize>, Done> {
        let msgs = &self
            .sel
            .as_ref()
            .ok_or_else(|| bad("no mailbox selected"))?
            .msgs;
        let max_uid = msgs.last().map_or(0, |m| m.uid as u32);
        Ok((0..msgs.len())
            .filter(|&i| {
                if uid {
                    set.contains(msgs[i].uid as u32, max_uid)
                } else {
                    set.contains(i as u32 + 1, msgs.len() as u32)
                }
            })
            .collect())
    }

    async fn search(
        &mut self,
        charset: Option<String>,
        key: &Key,
        uid: bool,
    ) -> std::io::Result<Result<Done, Done>> {
        if let Some(cs) = charset
            && !["US-ASCII", "UTF-8"].contains(&cs.to_ascii_uppercase().as_str())
        {
            // RFC 3501 §6.4.4.
            let allowed = ["US-ASCII", "UTF-8"]
                .into_iter()
                .filter_map(|c| Atom::try_from(c).ok().map(Charset::Atom))
                .collect();
            return Ok(no_code(Code::BadCharset { allowed }, "unsupported charset"));
        }
        let me = self.me().to_string();
        let Some(sel) = self.sel.as_ref() else {
            return Ok(Err(bad("no mailbox selected")));
        };
        let need_raw = key_needs_raw(key);
        let max_uid = sel.msgs.last().map_or(0, |m| m.uid as u32);
        let mut hits = Vec::new();
        for (i, m) in sel.msgs.iter().enumerate() {
            let raw = if need_raw {
                self.cfg
                    .store
                    .message_raw(&me, &sel.name, m.uid)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            let part = raw.as_ref().map(|r| Part::parse(r, 0, r.len(), 0));
            let c = Ctx {
                seq: i as u32 + 1,
                max_seq: sel.msgs.len() as u32,
                max_uid,
                m,
                recent: sel.recent.contains(&m.uid),
                raw: raw.as_deref(),
                part: part.as_ref(),
            };
            if matches(key, &c) {
                hits.extend(if uid { nz(m.uid) } else { nz(i + 1) });
            }
        }
        // RFC 3501 §7.2.5.
        self.send(&respond::data(Data::Search(hits))).await?;
        Ok(ok("SEARCH completed"))
    }

    async fn fetch(
        &mut self,
        set: &SeqSet,
        mut items: Vec<Item>,
        uid: bool,
    ) -> std::io::Result<Result<Done, Done>> {
        if uid && !items.contains(&Item::Uid) {
            // RFC 3501 §6.4.8: UID FETCH always returns the UID.
            items.insert(0, Item::Uid);
        }
        let idx = match self.resolve(set, uid) {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let me = self.me().to_string();
        let need_raw = items.iter().any(Item::needs_raw);
        let sets_seen = items
            .iter()
            .any(|i| matches!(i, Item::Section { peek: false, .. }));
        for i in idx {
            let Some(sel) = self.sel.as_mut() else { break };
            let mut flags_changed = false;
            if sets_seen && !sel.read_only && !sel.msgs[i].flags.iter().any(|f| f == "\\Seen") {
                // RFC 3501 §6.4.5: BODY[...] (not PEEK) sets \Seen.
                sel.msgs[i].flags.push("\\Seen".into());
                let _ = self
                    .cfg
                    .store
                    .set_flags(&me, &sel.name, sel.msgs[i].uid, &sel.msgs[i].flags)
                    .await;
                flags_changed = true;
            }
            let m = sel.msgs[i].clone();
            let recent = sel.recent.contains(&m.uid);
            let raw = if need_raw {
                self.cfg
                    .store
                    .message_raw(&me, &sel.name, m.uid)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let root = need_raw.then(|| Part::parse(&raw, 0, raw.len(), 0));
            let mut all = items.clone();
            if flags_changed && !all.contains(&Item::Flags) {
                all.push(Item::Flags);
            }
            let mut out = Vec::new();
            for it in &all {
                out.extend(match it {
                    Item::Flags => Some(MessageDataItem::Flags(flag_list(&m.flags, recent))),
                    Item::Uid => nz(m.uid).map(MessageDataItem::Uid),
                    Item::Size => Some(MessageDataItem::Rfc822Size(
                        u32::try_from(m.size).unwrap_or(u32::MAX),
                    )),
                    Item::InternalDate => {
                        internal_date(m.internal_date).map(MessageDataItem::InternalDate)
                    }
                    Item::Envelope => root
                        .as_ref()
                        .map(|r| MessageDataItem::Envelope(mime::envelope(r))),
                    Item::Body => root
                        .as_ref()
                        .map(|r| MessageDataItem::Body(mime::body_structure(&raw, r, false))),
                    Item::BodyStructure => root.as_ref().map(|r| {
                        MessageDataItem::BodyStructure(mime::body_structure(&raw, r, true))
                    }),
                    Item::Section {
                        section,
                        reply,
                        partial,
                        ..
                    } => root.as_ref().map(|r| {
                        let data = section.extract(&raw, r);
                        match partial {
                            None => section_item(reply, None, &data),
                            Some((o, n)) => {
                                let s = (*o).min(data.len());
                                let e = o.saturating_add(*n).min(data.len());
                                let origin = u32::try_from(*o).unwrap_or(u32::MAX);
                                section_item(reply, Some(origin), &data[s..e])
                            }
                        }
                    }),
                });
            }
            self.send(&fetch_data(i + 1, out)).await?;
        }
        Ok(ok("FETCH completed"))
    }

    async fn store_cmd(
        &mut self,
        set: &SeqSet,
        kind: StoreType,
        silent: bool,
        flags: &[String],
        uid: bool,
    ) -> std::io::Result<Result<Done, Done>> {
        let idx = match self.resolve(set, uid) {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let me = self.me().to_string();
        let Some(sel) = self.sel.as_mut() else {
            return Ok(Err(bad("no mailbox selected")));
        };
        if sel.read_only {
            return Ok(no("mailbox is read-only"));
        }
        let mut out = Vec::new();
        for i in idx {
            let m = &mut sel.msgs[i];
            let recent = sel.recent.contains(&m.uid);
            let mut new: Vec<String> = match kind {
                StoreType::Replace => flags.to_vec(),
                StoreType::Add => {
                    let mut v = m.flags.clone();
                    v.extend(flags.iter().filter(|f| !m.flags.contains(f)).cloned());
                    v
                }
                StoreType::Remove => m
                    .flags
                    .iter()
                    .filter(|f| !flags.contains(f))
                    .cloned()
                    .collect(),
            };
            new.dedup();
            if new != m.flags {
                if let Err(e) = self.cfg.store.set_flags(&me, &sel.name, m.uid, &new).await {
                    return Ok(server_bug(e));
                }
                m.flags = new;
            }
            if !silent {
                // RFC 3501 §6.4.6: the new flags; UID STORE adds the UID (§6.4.8).
                let mut items = vec![MessageDataItem::Flags(flag_list(&m.flags, recent))];
                if uid {
                    items.extend(nz(m.uid).map(MessageDataItem::Uid));
                }
                out.extend(fetch_data(i + 1, items));
            }
        }
        self.send(&out).await?;
        Ok(ok("STORE completed"))
    }

    /// COPY, or with `mv` MOVE (RFC 6851): the copies, then the originals expunged. Both report
    /// COPYUID (RFC 4315 §3).
    async fn copy(
        &mut self,
        set: &SeqSet,
        to: &str,
        uid: bool,
        mv: bool,
    ) -> std::io::Result<Result<Done, Done>> {
        let name = if mv { "MOVE" } else { "COPY" };
        let to = match Self::folder_arg(to) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let idx = match self.resolve(set, uid) {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let me = self.me().to_string();
        let Ok(Some(dest)) = self.store().folder(&me, &to).await else {
            return Ok(no_code(Code::TryCreate, "no such mailbox"));
        };
        let Some(sel) = self.sel.as_ref() else {
            return Ok(Err(bad("no mailbox selected")));
        };
        if mv && sel.read_only {
            return Ok(no("mailbox is read-only"));
        }
        let from = sel.name.clone();
        let uids: Vec<i64> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        // RFC 6851 §3.3: a MOVE copies and expunges in one store transaction, all or nothing.
        let moved = if mv {
            self.cfg.store.move_messages(&me, &from, &uids, &to).await
        } else {
            self.cfg.store.copy_messages(&me, &from, &uids, &to).await
        };
        let new = match moved {
            Ok(n) => n,
            Err(e) => return Ok(server_bug(e)),
        };
        // RFC 4315 §3: COPYUID <uidvalidity> <source uids> <destination uids>, in the same order;
        // none when nothing was copied, or when a message vanished meanwhile and the pairs are
        // unknown.
        let code = match (nz(dest.uidvalidity), uid_set(&uids), uid_set(&new)) {
            (Some(uid_validity), Some(source), Some(destination)) if new.len() == uids.len() => {
                Some(Code::CopyUid {
                    uid_validity,
                    source,
                    destination,
                })
            }
            _ => None,
        };
        if !mv {
            return Ok(Ok(done(StatusKind::Ok, code, "COPY completed")));
        }
        // RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGE responses.
        if let Some(code) = code {
            self.send(&respond::untagged_ok(code, "moved")).await?;
        }
        self.refresh().await?;
        Ok(ok(format!("{name} completed")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_collapse_runs_in_order() {
        let copyuid = |s: &[i64], d: &[i64]| {
            let code = Code::CopyUid {
                uid_validity: NonZeroU32::MIN,
                source: uid_set(s).unwrap(),
                destination: uid_set(d).unwrap(),
            };
            String::from_utf8(respond::untagged_ok(code, "x")).unwrap()
        };
        assert_eq!(
            copyuid(&[1, 2, 3, 5, 7, 8], &[4]),
            "* OK [COPYUID 1 1:3,5,7:8 4] x\r\n"
        );
        assert!(uid_set(&[]).is_none() && uid_set(&[0]).is_none());
    }

    #[test]
    fn fetch_items_are_written_by_the_codec() {
        // RFC 3501 §9 date-time has whole seconds: an APPEND's now() is cut, not refused.
        let d = "2025-12-01T09:00:00.75Z".parse::<DateTime<Utc>>().unwrap();
        let items = vec![
            MessageDataItem::InternalDate(internal_date(d).unwrap()),
            section_item(&Reply::Rfc822Header, None, b"A: b\r\n\r\n"),
            section_item(&Reply::Body(None), Some(2), b"x\0y"),
        ];
        assert_eq!(
            fetch_data(7, items),
            b"* 7 FETCH (INTERNALDATE \"01-Dec-2025 09:00:00 +0000\" RFC822.HEADER {8}\r\nA: b\r\n\r\n BODY[]<2> {3}\r\nx\x80y)\r\n"
        );
        assert!(fetch_data(0, vec![MessageDataItem::Rfc822Size(1)]).is_empty());
        assert!(fetch_data(1, vec![]).is_empty());
    }

    #[test]
    fn recent_is_shown_and_searched_per_session() {
        let fetch = |flags: &[String], recent| {
            let items = vec![MessageDataItem::Flags(flag_list(flags, recent))];
            String::from_utf8(fetch_data(3, items)).unwrap()
        };
        assert_eq!(
            fetch(&["\\Seen".into(), "$Etichetta".into()], true),
            "* 3 FETCH (FLAGS (\\Seen $Etichetta \\Recent))\r\n"
        );
        assert_eq!(fetch(&[], false), "* 3 FETCH (FLAGS ())\r\n");
        let m = MessageMeta {
            uid: 1,
            flags: vec![],
            size: 1,
            internal_date: Utc::now(),
        };
        let ctx = |recent| Ctx {
            seq: 1,
            max_seq: 1,
            max_uid: 1,
            m: &m,
            recent,
            raw: None,
            part: None,
        };
        let key = Key::Flag("\\RECENT".into(), true);
        assert!(matches(&key, &ctx(true)) && !matches(&key, &ctx(false)));
    }

    #[test]
    fn header_search_matches_decoded_words_case_insensitively() {
        let v = "=?UTF-8?Q?POSTA_CERTIFICATA:_Fattura_n._7?=";
        assert!(header_matches(v, "posta certificata: fattura"));
        assert!(header_matches(v, "UTF-8?Q"), "the raw text still matches");
        assert!(!header_matches(v, "fattura n. 8"));
        let raw = format!("Subject: {v}\r\n\r\ncorpo\r\n");
        let part = Part::parse(raw.as_bytes(), 0, raw.len(), 0);
        let m = MessageMeta {
            uid: 1,
            flags: vec![],
            size: raw.len() as i64,
            internal_date: Utc::now(),
        };
        let ctx = Ctx {
            seq: 1,
            max_seq: 1,
            max_uid: 1,
            m: &m,
            recent: false,
            raw: Some(raw.as_bytes()),
            part: Some(&part),
        };
        for (k, hit) in [
            (
                Key::Header("SUBJECT".into(), "CERTIFICATA: FATTURA".into()),
                true,
            ),
            (Key::Header("FROM".into(), "certificata".into()), false),
            (Key::Text("fattura n. 7".into()), true),
            (Key::Text("CORPO".into()), true),
            (Key::Body("fattura".into()), false),
        ] {
            assert_eq!(matches(&k, &ctx), hit, "{k:?}");
        }
    }
}
