//! The IMAP4rev1 server (RFC 3501) of the mailbox access point, with STARTTLS (RFC 3501 §6.2.1,
//! RFC 2595), implicit TLS (RFC 8314) and IDLE (RFC 2177). Login only over TLS (RFC 6109 §5.3:
//! user↔provider traffic is protected): LOGINDISABLED before.
//!
//! The command parser is hand-written ([`parse`]): imap-codec/imap-next were not in the build's
//! dependency graph, and a small tokenizer over whole commands (literals inline) is enough for the
//! commands this server implements. Every session sees only the mailbox it logged in to.

pub mod mime;
pub mod parse;

use crate::access::{self, AccessConfig, BoxIo, Login};
use crate::store::{MessageMeta, Store, canonical_folder};
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use mime::{Part, Section};
use parse::{SeqSet, Tok, string};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The longest command line (without literals) accepted.
const MAX_LINE: u64 = 64 * 1024;
/// The largest literal accepted (APPEND of a big message).
const MAX_LITERAL: usize = 128 * 1024 * 1024;
/// The flags of RFC 3501 §2.3.2 this server knows.
const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/// Runs one IMAP session over `io` until LOGOUT or the client goes away. `tls_active` says the
/// stream is already TLS (implicit TLS listener).
pub async fn session(io: BoxIo, cfg: Arc<AccessConfig>, tls_active: bool) -> std::io::Result<()> {
    let mut s = Session {
        io: BufReader::new(io),
        cfg,
        tls: tls_active,
        user: None,
        sel: None,
    };
    let caps = s.capabilities();
    s.send(
        format!(
            "* OK [CAPABILITY {caps}] {} IMAP4rev1 ready\r\n",
            s.cfg.hostname
        )
        .as_bytes(),
    )
    .await?;
    s.run().await
}

struct Selected {
    name: String,
    read_only: bool,
    msgs: Vec<MessageMeta>,
}

struct Session {
    io: BufReader<BoxIo>,
    cfg: Arc<AccessConfig>,
    tls: bool,
    user: Option<String>,
    sel: Option<Selected>,
}

enum Flow {
    Continue,
    Logout,
}

/// A tagged response: `OK`, `NO` or `BAD` with text.
struct Done(&'static str, String);

fn ok(t: impl Into<String>) -> Result<Done, Done> {
    Ok(Done("OK", t.into()))
}
fn no(t: impl Into<String>) -> Result<Done, Done> {
    Err(Done("NO", t.into()))
}
fn bad(t: impl Into<String>) -> Done {
    Done("BAD", t.into())
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
        label: String,
        partial: Option<(usize, usize)>,
    },
}

impl Item {
    fn needs_raw(&self) -> bool {
        matches!(
            self,
            Item::Envelope | Item::Body | Item::BodyStructure | Item::Section { .. }
        )
    }
}

fn fetch_items(t: &Tok) -> Result<Vec<Item>, String> {
    let one = |a: &str| -> Result<Vec<Item>, String> {
        let up = a.to_ascii_uppercase();
        Ok(match up.as_str() {
            "ALL" => vec![Item::Flags, Item::InternalDate, Item::Size, Item::Envelope],
            "FAST" => vec![Item::Flags, Item::InternalDate, Item::Size],
            "FULL" => vec![
                Item::Flags,
                Item::InternalDate,
                Item::Size,
                Item::Envelope,
                Item::Body,
            ],
            "FLAGS" => vec![Item::Flags],
            "UID" => vec![Item::Uid],
            "RFC822.SIZE" => vec![Item::Size],
            "INTERNALDATE" => vec![Item::InternalDate],
            "ENVELOPE" => vec![Item::Envelope],
            "BODY" => vec![Item::Body],
            "BODYSTRUCTURE" => vec![Item::BodyStructure],
            // RFC 3501 §6.4.5: RFC822 = BODY[], RFC822.HEADER = BODY.PEEK[HEADER],
            // RFC822.TEXT = BODY[TEXT]; the response keeps the RFC822 name.
            "RFC822" => vec![Item::Section {
                peek: false,
                section: Section::parse("").map_err(|e| e.to_string())?,
                label: "RFC822".into(),
                partial: None,
            }],
            "RFC822.HEADER" => vec![Item::Section {
                peek: true,
                section: Section::parse("HEADER")?,
                label: "RFC822.HEADER".into(),
                partial: None,
            }],
            "RFC822.TEXT" => vec![Item::Section {
                peek: false,
                section: Section::parse("TEXT")?,
                label: "RFC822.TEXT".into(),
                partial: None,
            }],
            _ => {
                let (peek, rest) = if let Some(r) = up.strip_prefix("BODY.PEEK[") {
                    (true, r)
                } else if let Some(r) = up.strip_prefix("BODY[") {
                    (false, r)
                } else {
                    return Err(format!("unknown fetch item {a}"));
                };
                let close = rest.rfind(']').ok_or("missing ']'")?;
                let spec = &rest[..close];
                let tail = &rest[close + 1..];
                let partial = if tail.is_empty() {
                    None
                } else {
                    let inner = tail
                        .strip_prefix('<')
                        .and_then(|t| t.strip_suffix('>'))
                        .ok_or_else(|| format!("bad partial {tail}"))?;
                    let (o, n) = inner.split_once('.').ok_or("bad partial")?;
                    Some((
                        o.parse().map_err(|_| "bad partial")?,
                        n.parse().map_err(|_| "bad partial")?,
                    ))
                };
                // The response names the section as asked, with only the origin of a partial.
                let orig = &a[a.find('[').unwrap_or(0)..];
                let spec_orig = &orig[1..orig.rfind(']').unwrap_or(1)];
                vec![Item::Section {
                    peek,
                    section: Section::parse(spec)?,
                    label: format!("BODY[{spec_orig}]"),
                    partial,
                }]
            }
        })
    };
    match t {
        Tok::Atom(a) => one(a),
        Tok::List(l) => {
            let mut out = Vec::new();
            for i in l {
                match i {
                    Tok::Atom(a) => out.extend(one(a)?),
                    _ => return Err("bad fetch item".into()),
                }
            }
            Ok(out)
        }
        Tok::Str(_) => Err("bad fetch item".into()),
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

fn search_keys(toks: &[Tok]) -> Result<Key, String> {
    let mut i = 0;
    let mut keys = Vec::new();
    while i < toks.len() {
        keys.push(search_key(toks, &mut i)?);
    }
    Ok(Key::And(keys))
}

fn search_key(t: &[Tok], i: &mut usize) -> Result<Key, String> {
    let tok = t.get(*i).ok_or("missing search key")?;
    *i += 1;
    let arg = |i: &mut usize| -> Result<String, String> {
        let v = t
            .get(*i)
            .and_then(Tok::astring)
            .ok_or("missing search argument")?;
        *i += 1;
        Ok(v)
    };
    let name = match tok {
        Tok::List(l) => return search_keys(l),
        Tok::Str(_) => return Err("unexpected string in SEARCH".into()),
        Tok::Atom(a) => a.to_ascii_uppercase(),
    };
    let flag = |f: &str, has: bool| Ok(Key::Flag(f.into(), has));
    match name.as_str() {
        "ALL" => Ok(Key::All),
        "SEEN" => flag("\\Seen", true),
        "UNSEEN" => flag("\\Seen", false),
        "ANSWERED" => flag("\\Answered", true),
        "UNANSWERED" => flag("\\Answered", false),
        "DELETED" => flag("\\Deleted", true),
        "UNDELETED" => flag("\\Deleted", false),
        "FLAGGED" => flag("\\Flagged", true),
        "UNFLAGGED" => flag("\\Flagged", false),
        "DRAFT" => flag("\\Draft", true),
        "UNDRAFT" => flag("\\Draft", false),
        // No message is ever \Recent here (one session per mailbox is not guaranteed, so
        // none claims it): RECENT and NEW match nothing, OLD everything.
        "RECENT" | "NEW" => Ok(Key::Not(Box::new(Key::All))),
        "OLD" => Ok(Key::All),
        "KEYWORD" => Ok(Key::Flag(arg(i)?, true)),
        "UNKEYWORD" => Ok(Key::Flag(arg(i)?, false)),
        "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => Ok(Key::Header(name.clone(), arg(i)?)),
        "HEADER" => {
            let f = arg(i)?;
            Ok(Key::Header(f.to_ascii_uppercase(), arg(i)?))
        }
        "BODY" => Ok(Key::Body(arg(i)?)),
        "TEXT" => Ok(Key::Text(arg(i)?)),
        "SINCE" => Ok(Key::Since(parse::date(&arg(i)?)?)),
        "BEFORE" => Ok(Key::Before(parse::date(&arg(i)?)?)),
        "ON" => Ok(Key::On(parse::date(&arg(i)?)?)),
        "LARGER" => Ok(Key::Larger(arg(i)?.parse().map_err(|_| "bad LARGER")?)),
        "SMALLER" => Ok(Key::Smaller(arg(i)?.parse().map_err(|_| "bad SMALLER")?)),
        "UID" => Ok(Key::Uid(SeqSet::parse(&arg(i)?)?)),
        "NOT" => Ok(Key::Not(Box::new(search_key(t, i)?))),
        "OR" => {
            let a = search_key(t, i)?;
            let b = search_key(t, i)?;
            Ok(Key::Or(Box::new(a), Box::new(b)))
        }
        _ => match SeqSet::parse(&name) {
            Ok(s) => Ok(Key::Seq(s)),
            Err(_) => Err(format!("unknown search key {name}")),
        },
    }
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

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let n = needle.to_lowercase();
    String::from_utf8_lossy(hay).to_lowercase().contains(&n)
}

struct Ctx<'a> {
    seq: u32,
    max_seq: u32,
    max_uid: u32,
    m: &'a MessageMeta,
    raw: Option<&'a [u8]>,
    part: Option<&'a Part>,
}

fn matches(k: &Key, c: &Ctx) -> bool {
    let date = c.m.internal_date.date_naive();
    match k {
        Key::All => true,
        Key::Seq(s) => s.contains(c.seq, c.max_seq),
        Key::Uid(s) => s.contains(c.m.uid as u32, c.max_uid),
        Key::Flag(f, has) => c.m.flags.iter().any(|x| x.eq_ignore_ascii_case(f)) == *has,
        Key::Header(name, v) => c.part.is_some_and(|p| {
            p.headers
                .iter()
                .any(|(n, val)| n.eq_ignore_ascii_case(name) && contains_ci(val.as_bytes(), v))
        }),
        Key::Body(v) => match (c.raw, c.part) {
            (Some(r), Some(p)) => contains_ci(&r[p.body_start..p.end], v),
            _ => false,
        },
        Key::Text(v) => c.raw.is_some_and(|r| contains_ci(r, v)),
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

fn flag_list(flags: &[String]) -> String {
    format!("({})", flags.join(" "))
}

fn internal_date(d: DateTime<Utc>) -> String {
    // RFC 3501 §9 date-time.
    d.format("\"%d-%b-%Y %H:%M:%S +0000\"").to_string()
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

fn parse_flags(toks: &[Tok]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Atom(a) => out.push(a.clone()),
            Tok::List(l) => out.extend(parse_flags(l)?),
            Tok::Str(_) => return Err("bad flag".into()),
        }
    }
    // Only flags a client may set: \Recent is the server's (RFC 3501 §2.3.2).
    for f in &out {
        if f.starts_with('\\')
            && !SYSTEM_FLAGS
                .split(' ')
                .any(|s| s.eq_ignore_ascii_case(f.as_str()))
        {
            return Err(format!("unknown system flag {f}"));
        }
    }
    Ok(out)
}

/// A flag name in the spelling of RFC 3501 (`\seen` → `\Seen`).
fn normal_flag(f: &str) -> String {
    SYSTEM_FLAGS
        .split(' ')
        .find(|s| s.eq_ignore_ascii_case(f))
        .map_or_else(|| f.to_string(), str::to_string)
}

impl Session {
    async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(b).await?;
        w.flush().await
    }

    fn store(&self) -> &crate::store::SqliteStore {
        &self.cfg.store
    }

    fn capabilities(&self) -> String {
        let mut c = vec!["IMAP4rev1"];
        if !self.tls {
            if self.cfg.tls.is_some() {
                c.push("STARTTLS");
            }
            // RFC 3501 §6.2.3: no plaintext passwords before TLS.
            c.push("LOGINDISABLED");
        } else if self.user.is_none() {
            c.push("AUTH=PLAIN");
        }
        c.extend(["IDLE", "LITERAL+"]);
        c.join(" ")
    }

    /// Reads one line (with its CRLF) into `buf`; false at end of input.
    async fn read_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        let n = (&mut self.io).take(MAX_LINE).read_until(b'\n', buf).await?;
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

    /// Reads one whole command with its literals (RFC 3501 §4.3, §7.5 continuation).
    async fn read_command(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        loop {
            let start = buf.len();
            if !self.read_line(&mut buf).await? {
                return Ok(None);
            }
            let Some((n, plus)) = parse::literal_suffix(&buf[start..]) else {
                break;
            };
            if n > MAX_LITERAL {
                self.send(b"* BYE literal too large\r\n").await?;
                return Ok(None);
            }
            if !plus {
                self.send(b"+ Ready for literal data\r\n").await?;
            }
            let at = buf.len();
            buf.resize(at + n, 0);
            self.io.read_exact(&mut buf[at..]).await?;
        }
        // Only the final line ending goes: a literal may itself end with CRLF.
        if buf.ends_with(b"\n") {
            buf.pop();
        }
        if buf.ends_with(b"\r") {
            buf.pop();
        }
        Ok(Some(buf))
    }

    async fn run(&mut self) -> std::io::Result<()> {
        loop {
            let Some(line) = self.read_command().await? else {
                return Ok(());
            };
            let toks = match parse::tokenize(&line) {
                Ok(t) => t,
                Err(e) => {
                    let tag = line
                        .split(|&c| c == b' ')
                        .next()
                        .filter(|t| !t.is_empty())
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_else(|| "*".into());
                    self.send(format!("{tag} BAD {e}\r\n").as_bytes()).await?;
                    continue;
                }
            };
            let (tag, cmd) = match (toks.first(), toks.get(1)) {
                (Some(Tok::Atom(t)), Some(Tok::Atom(c))) => (t.clone(), c.to_ascii_uppercase()),
                (Some(Tok::Atom(t)), _) => {
                    self.send(format!("{t} BAD missing command\r\n").as_bytes())
                        .await?;
                    continue;
                }
                _ => {
                    self.send(b"* BAD missing tag\r\n").await?;
                    continue;
                }
            };
            match self.command(&tag, &cmd, &toks[2..]).await? {
                Flow::Continue => {}
                Flow::Logout => return Ok(()),
            }
        }
    }

    async fn command(&mut self, tag: &str, cmd: &str, args: &[Tok]) -> std::io::Result<Flow> {
        let r = match cmd {
            "CAPABILITY" => {
                let c = self.capabilities();
                self.send(format!("* CAPABILITY {c}\r\n").as_bytes())
                    .await?;
                ok("CAPABILITY completed")
            }
            "NOOP" | "CHECK" => {
                if cmd == "CHECK" && self.sel.is_none() {
                    Err(bad("no mailbox selected"))
                } else {
                    self.refresh().await?;
                    ok(format!("{cmd} completed"))
                }
            }
            "LOGOUT" => {
                self.send(b"* BYE logging out\r\n").await?;
                self.send(format!("{tag} OK LOGOUT completed\r\n").as_bytes())
                    .await?;
                return Ok(Flow::Logout);
            }
            "STARTTLS" => return self.starttls(tag).await,
            "LOGIN" | "AUTHENTICATE" if self.user.is_some() => Err(bad("already authenticated")),
            "LOGIN" => self.login_cmd(args).await,
            "AUTHENTICATE" => self.authenticate(args).await?,
            _ if self.user.is_none() => Err(bad(format!("{cmd}: log in first"))),
            "SELECT" | "EXAMINE" => self.select(args, cmd == "EXAMINE").await?,
            "CREATE" => self.create(args).await,
            "DELETE" => self.delete(args).await,
            "RENAME" => self.rename(args).await,
            "SUBSCRIBE" | "UNSUBSCRIBE" => ok(format!("{cmd} completed")),
            "LIST" | "LSUB" => self.list(args, cmd).await?,
            "STATUS" => self.status(args).await?,
            "APPEND" => self.append(args).await?,
            "IDLE" => return self.idle(tag).await,
            _ if self.sel.is_none() => Err(bad(format!("{cmd}: no mailbox selected"))),
            "CLOSE" => self.close().await,
            "EXPUNGE" => self.expunge().await?,
            "SEARCH" => self.search(args, false).await?,
            "FETCH" => self.fetch(args, false).await?,
            "STORE" => self.store_cmd(args, false).await?,
            "COPY" => self.copy(args, false).await?,
            "UID" => {
                let sub = args.first().and_then(Tok::atom_upper).unwrap_or_default();
                let r = match sub.as_str() {
                    "SEARCH" => self.search(&args[1..], true).await?,
                    "FETCH" => self.fetch(&args[1..], true).await?,
                    "STORE" => self.store_cmd(&args[1..], true).await?,
                    "COPY" => self.copy(&args[1..], true).await?,
                    _ => Err(bad(format!("UID {sub}: not supported"))),
                };
                if r.is_ok() {
                    // UID commands may report expunges (RFC 3501 §7.4.1).
                    self.refresh().await?;
                }
                r
            }
            _ => Err(bad(format!("unknown command {cmd}"))),
        };
        let (Ok(Done(kind, text)) | Err(Done(kind, text))) = r;
        self.send(format!("{tag} {kind} {text}\r\n").as_bytes())
            .await?;
        Ok(Flow::Continue)
    }

    async fn starttls(&mut self, tag: &str) -> std::io::Result<Flow> {
        let Some(tls) = self.cfg.tls.clone().filter(|_| !self.tls) else {
            self.send(format!("{tag} BAD STARTTLS not available\r\n").as_bytes())
                .await?;
            return Ok(Flow::Continue);
        };
        self.send(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes())
            .await?;
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
            return no("[PRIVACYREQUIRED] login is only allowed over TLS");
        }
        match access::login(self.store(), user, pass).await {
            Login::Ok(address) => {
                self.user = Some(address);
                let c = self.capabilities();
                ok(format!("[CAPABILITY {c}] logged in"))
            }
            Login::Disabled => no("[AUTHENTICATIONFAILED] mailbox disabled"),
            Login::Failed => no("[AUTHENTICATIONFAILED] invalid credentials"),
        }
    }

    async fn login_cmd(&mut self, args: &[Tok]) -> Result<Done, Done> {
        let (Some(u), Some(p)) = (
            args.first().and_then(Tok::astring),
            args.get(1).and_then(Tok::astring),
        ) else {
            return Err(bad("LOGIN needs a user name and a password"));
        };
        self.do_login(&u, &p).await
    }

    async fn authenticate(&mut self, args: &[Tok]) -> std::io::Result<Result<Done, Done>> {
        let mech = args.first().and_then(Tok::atom_upper).unwrap_or_default();
        if mech != "PLAIN" {
            return Ok(no("unsupported authentication mechanism"));
        }
        if !self.tls {
            return Ok(no(
                "[PRIVACYREQUIRED] authentication is only allowed over TLS",
            ));
        }
        let data = match args.get(1).and_then(Tok::astring) {
            Some(d) => d,
            None => {
                self.send(b"+ \r\n").await?;
                let mut line = Vec::new();
                if !self.read_line(&mut line).await? {
                    return Ok(Err(bad("connection closed")));
                }
                String::from_utf8_lossy(&line).trim().to_string()
            }
        };
        if data == "*" {
            return Ok(Err(bad("authentication cancelled")));
        }
        // RFC 4616: [authzid] NUL authcid NUL passwd.
        let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(data.as_bytes()) else {
            return Ok(Err(bad("invalid base64")));
        };
        let f: Vec<&[u8]> = dec.split(|&c| c == 0).collect();
        let [authz, user, pass] = f.as_slice() else {
            return Ok(Err(bad("invalid PLAIN message")));
        };
        let (user, pass) = (String::from_utf8_lossy(user), String::from_utf8_lossy(pass));
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user.as_bytes()) {
            return Ok(no("[AUTHORIZATIONFAILED] cannot act as another user"));
        }
        Ok(self.do_login(&user, &pass).await)
    }

    fn me(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }

    async fn select(
        &mut self,
        args: &[Tok],
        read_only: bool,
    ) -> std::io::Result<Result<Done, Done>> {
        self.sel = None;
        let Some(name) = args.first().and_then(Tok::astring) else {
            return Ok(Err(bad("missing mailbox name")));
        };
        let me = self.me().to_string();
        let Ok(Some(f)) = self.store().folder(&me, &name).await else {
            return Ok(no("no such mailbox"));
        };
        let msgs = self
            .store()
            .messages(&me, &f.name)
            .await
            .unwrap_or_default();
        let mut out = format!(
            "* FLAGS ({SYSTEM_FLAGS})\r\n* OK [PERMANENTFLAGS ({SYSTEM_FLAGS} \\*)] flags\r\n* {} EXISTS\r\n* 0 RECENT\r\n",
            msgs.len()
        );
        if let Some(i) = msgs
            .iter()
            .position(|m| !m.flags.iter().any(|f| f == "\\Seen"))
        {
            out += &format!("* OK [UNSEEN {}] first unseen\r\n", i + 1);
        }
        out += &format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] predicted next UID\r\n",
            f.uidvalidity, f.uidnext
        );
        self.send(out.as_bytes()).await?;
        self.sel = Some(Selected {
            name: f.name,
            read_only,
            msgs,
        });
        Ok(ok(if read_only {
            "[READ-ONLY] EXAMINE completed"
        } else {
            "[READ-WRITE] SELECT completed"
        }))
    }

    fn folder_arg(args: &[Tok], i: usize) -> Result<String, Done> {
        let n = args
            .get(i)
            .and_then(Tok::astring)
            .ok_or_else(|| bad("missing mailbox name"))?;
        let n = n.trim_end_matches('/').to_string();
        if n.is_empty() {
            return Err(bad("empty mailbox name"));
        }
        Ok(canonical_folder(&n))
    }

    async fn create(&mut self, args: &[Tok]) -> Result<Done, Done> {
        let name = Self::folder_arg(args, 0)?;
        if name == "INBOX" {
            return no("INBOX always exists");
        }
        match self.store().create_folder(self.me(), &name).await {
            Ok(true) => ok("CREATE completed"),
            Ok(false) => no("[ALREADYEXISTS] mailbox exists"),
            Err(e) => no(format!("[SERVERBUG] {e}")),
        }
    }

    async fn delete(&mut self, args: &[Tok]) -> Result<Done, Done> {
        let name = Self::folder_arg(args, 0)?;
        if name == "INBOX" {
            return no("INBOX cannot be deleted");
        }
        if self.sel.as_ref().is_some_and(|s| s.name == name) {
            self.sel = None;
        }
        match self.store().delete_folder(self.me(), &name).await {
            Ok(true) => ok("DELETE completed"),
            Ok(false) => no("[NONEXISTENT] no such mailbox"),
            Err(e) => no(format!("[SERVERBUG] {e}")),
        }
    }

    async fn rename(&mut self, args: &[Tok]) -> Result<Done, Done> {
        let from = Self::folder_arg(args, 0)?;
        let to = Self::folder_arg(args, 1)?;
        if from == "INBOX" || to == "INBOX" {
            // RFC 3501 §6.3.5 lets RENAME INBOX move its messages; not offered here.
            return no("renaming INBOX is not supported");
        }
        match self.store().rename_folder(self.me(), &from, &to).await {
            Ok(true) => ok("RENAME completed"),
            Ok(false) => no("no such mailbox, or the new name exists"),
            Err(e) => no(format!("[SERVERBUG] {e}")),
        }
    }

    async fn list(&mut self, args: &[Tok], cmd: &str) -> std::io::Result<Result<Done, Done>> {
        let (Some(reference), Some(pattern)) = (
            args.first().and_then(Tok::astring),
            args.get(1).and_then(Tok::astring),
        ) else {
            return Ok(Err(bad("LIST needs a reference and a pattern")));
        };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: the hierarchy delimiter.
            self.send(format!("* {cmd} (\\Noselect) \"/\" \"\"\r\n").as_bytes())
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
                out.extend_from_slice(format!("* {cmd} () \"/\" ").as_bytes());
                string(&mut out, f.name.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        self.send(&out).await?;
        Ok(ok(format!("{cmd} completed")))
    }

    async fn status(&mut self, args: &[Tok]) -> std::io::Result<Result<Done, Done>> {
        let name = match Self::folder_arg(args, 0) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let Some(Tok::List(items)) = args.get(1) else {
            return Ok(Err(bad("STATUS needs a list of items")));
        };
        let Ok(Some(f)) = self.store().folder(self.me(), &name).await else {
            return Ok(no("no such mailbox"));
        };
        let mut parts = Vec::new();
        for i in items {
            let i = i.atom_upper().unwrap_or_default();
            let v = match i.as_str() {
                "MESSAGES" => f.messages,
                "RECENT" => 0,
                "UIDNEXT" => f.uidnext,
                "UIDVALIDITY" => f.uidvalidity as i64,
                "UNSEEN" => f.unseen,
                _ => return Ok(Err(bad(format!("unknown status item {i}")))),
            };
            parts.push(format!("{i} {v}"));
        }
        let mut out = b"* STATUS ".to_vec();
        string(&mut out, f.name.as_bytes());
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        self.send(&out).await?;
        Ok(ok("STATUS completed"))
    }

    async fn append(&mut self, args: &[Tok]) -> std::io::Result<Result<Done, Done>> {
        let name = match Self::folder_arg(args, 0) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let mut rest = &args[1..];
        let mut flags = Vec::new();
        if let Some(Tok::List(l)) = rest.first() {
            match parse_flags(l) {
                Ok(f) => flags = f.iter().map(|f| normal_flag(f)).collect(),
                Err(e) => return Ok(Err(bad(e))),
            }
            rest = &rest[1..];
        }
        let mut date = Utc::now();
        if rest.len() == 2 {
            match rest[0].astring().map(|s| parse::date_time(&s)) {
                Some(Ok(d)) => date = d.with_timezone(&Utc),
                _ => return Ok(Err(bad("bad APPEND date-time"))),
            }
            rest = &rest[1..];
        }
        let [Tok::Str(message)] = rest else {
            return Ok(Err(bad("APPEND needs a message literal")));
        };
        let me = self.me().to_string();
        if !matches!(self.store().folder(&me, &name).await, Ok(Some(_))) {
            // RFC 3501 §6.3.11: TRYCREATE when the target does not exist.
            return Ok(no("[TRYCREATE] no such mailbox"));
        }
        match self.store().append(&me, &name, message, &flags, date).await {
            Ok(_) => {
                self.refresh().await?;
                Ok(ok("APPEND completed"))
            }
            Err(e) => Ok(no(format!("[SERVERBUG] {e}"))),
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
        let mut out = String::new();
        let live: std::collections::HashMap<i64, &MessageMeta> =
            now.iter().map(|m| (m.uid, m)).collect();
        for i in (0..sel.msgs.len()).rev() {
            if !live.contains_key(&sel.msgs[i].uid) {
                out += &format!("* {} EXPUNGE\r\n", i + 1);
                sel.msgs.remove(i);
            }
        }
        for (i, m) in sel.msgs.iter_mut().enumerate() {
            if let Some(n) = live.get(&m.uid)
                && n.flags != m.flags
            {
                m.flags = n.flags.clone();
                out += &format!(
                    "* {} FETCH (FLAGS {} UID {})\r\n",
                    i + 1,
                    flag_list(&m.flags),
                    m.uid
                );
            }
        }
        let last = sel.msgs.last().map_or(0, |m| m.uid);
        let before = sel.msgs.len();
        sel.msgs
            .extend(now.iter().filter(|m| m.uid > last).cloned());
        if sel.msgs.len() != before {
            out += &format!("* {} EXISTS\r\n* 0 RECENT\r\n", sel.msgs.len());
        }
        if !out.is_empty() {
            self.send(out.as_bytes()).await?;
        }
        Ok(())
    }

    async fn idle(&mut self, tag: &str) -> std::io::Result<Flow> {
        let mut changes = self.store().changes();
        changes.borrow_and_update();
        self.refresh().await?;
        self.send(b"+ idling\r\n").await?;
        let mut line = Vec::new();
        loop {
            enum Ev {
                Read(std::io::Result<usize>),
                Changed(bool),
            }
            let ev = tokio::select! {
                r = self.io.read_until(b'\n', &mut line) => Ev::Read(r),
                r = changes.changed() => Ev::Changed(r.is_ok()),
            };
            match ev {
                Ev::Read(r) => {
                    if r? == 0 {
                        return Ok(Flow::Logout);
                    }
                    if line.len() as u64 > MAX_LINE {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "line too long during IDLE",
                        ));
                    }
                    if !line.ends_with(b"\n") {
                        continue;
                    }
                    // RFC 2177: DONE ends the IDLE.
                    let resp = if line.trim_ascii().eq_ignore_ascii_case(b"DONE") {
                        format!("{tag} OK IDLE terminated\r\n")
                    } else {
                        format!("{tag} BAD expected DONE\r\n")
                    };
                    self.send(resp.as_bytes()).await?;
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
                return no(format!("[SERVERBUG] {e}"));
            }
        }
        ok("CLOSE completed")
    }

    async fn expunge(&mut self) -> std::io::Result<Result<Done, Done>> {
        let me = self.me().to_string();
        let Some(sel) = self.sel.as_ref() else {
            return Ok(Err(bad("no mailbox selected")));
        };
        if sel.read_only {
            return Ok(no("mailbox is read-only"));
        }
        // The store's current flags decide, so a \Deleted set by another session counts too.
        let uids: Vec<i64> = self
            .cfg
            .store
            .messages(&me, &sel.name)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.flags.iter().any(|f| f == "\\Deleted"))
            .map(|m| m.uid)
            .collect();
        if let Err(e) = self.cfg.store.delete_messages(&me, &sel.name, &uids).await {
            return Ok(no(format!("[SERVERBUG] {e}")));
        }
        self.refresh().await?;
        Ok(ok("EXPUNGE completed"))
    }

    /// The 0-based indexes of the selected messages a set names, by sequence number or by UID.
    fn resolve(&self, set: &str, uid: bool) -> Result<Vec<usize>, Done> {
        let set = SeqSet::parse(set).map_err(bad)?;
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

    async fn search(&mut self, args: &[Tok], uid: bool) -> std::io::Result<Result<Done, Done>> {
        let mut args = args;
        if args.first().and_then(Tok::atom_upper).as_deref() == Some("CHARSET") {
            let cs = args.get(1).and_then(Tok::astring).unwrap_or_default();
            if !["US-ASCII", "UTF-8"].contains(&cs.to_ascii_uppercase().as_str()) {
                return Ok(no("[BADCHARSET (US-ASCII UTF-8)] unsupported charset"));
            }
            args = &args[2..];
        }
        let key = match search_keys(args) {
            Ok(k) => k,
            Err(e) => return Ok(Err(bad(e))),
        };
        let me = self.me().to_string();
        let Some(sel) = self.sel.as_ref() else {
            return Ok(Err(bad("no mailbox selected")));
        };
        let need_raw = key_needs_raw(&key);
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
                raw: raw.as_deref(),
                part: part.as_ref(),
            };
            if matches(&key, &c) {
                hits.push(if uid { m.uid } else { i as i64 + 1 });
            }
        }
        let mut out = String::from("* SEARCH");
        for h in hits {
            out += &format!(" {h}");
        }
        out += "\r\n";
        self.send(out.as_bytes()).await?;
        Ok(ok("SEARCH completed"))
    }

    async fn fetch(&mut self, args: &[Tok], uid: bool) -> std::io::Result<Result<Done, Done>> {
        let (Some(set), Some(items)) = (args.first().and_then(Tok::astring), args.get(1)) else {
            return Ok(Err(bad("FETCH needs a set and items")));
        };
        let mut items = match fetch_items(items) {
            Ok(i) => i,
            Err(e) => return Ok(Err(bad(e))),
        };
        if uid && !items.contains(&Item::Uid) {
            // RFC 3501 §6.4.8: UID FETCH always returns the UID.
            items.insert(0, Item::Uid);
        }
        let idx = match self.resolve(&set, uid) {
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
            let mut out = format!("* {} FETCH (", i + 1).into_bytes();
            let mut first = true;
            let mut all = items.clone();
            if flags_changed && !all.contains(&Item::Flags) {
                all.push(Item::Flags);
            }
            for it in &all {
                if !first {
                    out.push(b' ');
                }
                first = false;
                match it {
                    Item::Flags => {
                        out.extend_from_slice(format!("FLAGS {}", flag_list(&m.flags)).as_bytes())
                    }
                    Item::Uid => out.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
                    Item::Size => {
                        out.extend_from_slice(format!("RFC822.SIZE {}", m.size).as_bytes())
                    }
                    Item::InternalDate => out.extend_from_slice(
                        format!("INTERNALDATE {}", internal_date(m.internal_date)).as_bytes(),
                    ),
                    Item::Envelope => {
                        out.extend_from_slice(b"ENVELOPE ");
                        if let Some(r) = &root {
                            mime::envelope(&mut out, r);
                        }
                    }
                    Item::Body | Item::BodyStructure => {
                        let ext = *it == Item::BodyStructure;
                        out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                        if let Some(r) = &root {
                            mime::body_structure(&mut out, &raw, r, ext);
                        }
                    }
                    Item::Section {
                        section,
                        label,
                        partial,
                        ..
                    } => {
                        let Some(r) = &root else { continue };
                        let data = section.extract(&raw, r);
                        match partial {
                            None => {
                                out.extend_from_slice(label.as_bytes());
                                out.push(b' ');
                                literal(&mut out, &data);
                            }
                            Some((o, n)) => {
                                let s = (*o).min(data.len());
                                let e = o.saturating_add(*n).min(data.len());
                                out.extend_from_slice(format!("{label}<{o}> ").as_bytes());
                                literal(&mut out, &data[s..e]);
                            }
                        }
                    }
                }
            }
            out.extend_from_slice(b")\r\n");
            self.send(&out).await?;
        }
        Ok(ok("FETCH completed"))
    }

    async fn store_cmd(&mut self, args: &[Tok], uid: bool) -> std::io::Result<Result<Done, Done>> {
        let (Some(set), Some(op)) = (
            args.first().and_then(Tok::astring),
            args.get(1).and_then(Tok::atom_upper),
        ) else {
            return Ok(Err(bad("STORE needs a set, an operation and flags")));
        };
        let silent = op.ends_with(".SILENT");
        let mode = match op.trim_end_matches(".SILENT") {
            "FLAGS" => 0,
            "+FLAGS" => 1,
            "-FLAGS" => 2,
            _ => return Ok(Err(bad(format!("unknown STORE operation {op}")))),
        };
        let flags: Vec<String> = match parse_flags(&args[2..]) {
            Ok(f) => f.iter().map(|f| normal_flag(f)).collect(),
            Err(e) => return Ok(Err(bad(e))),
        };
        let idx = match self.resolve(&set, uid) {
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
        let mut out = String::new();
        for i in idx {
            let m = &mut sel.msgs[i];
            let mut new: Vec<String> = match mode {
                0 => flags.clone(),
                1 => {
                    let mut v = m.flags.clone();
                    v.extend(flags.iter().filter(|f| !m.flags.contains(f)).cloned());
                    v
                }
                _ => m
                    .flags
                    .iter()
                    .filter(|f| !flags.contains(f))
                    .cloned()
                    .collect(),
            };
            new.dedup();
            if new != m.flags {
                if let Err(e) = self.cfg.store.set_flags(&me, &sel.name, m.uid, &new).await {
                    return Ok(no(format!("[SERVERBUG] {e}")));
                }
                m.flags = new;
            }
            if !silent {
                out += &format!("* {} FETCH (FLAGS {}", i + 1, flag_list(&m.flags));
                if uid {
                    out += &format!(" UID {}", m.uid);
                }
                out += ")\r\n";
            }
        }
        self.send(out.as_bytes()).await?;
        Ok(ok("STORE completed"))
    }

    async fn copy(&mut self, args: &[Tok], uid: bool) -> std::io::Result<Result<Done, Done>> {
        let Some(set) = args.first().and_then(Tok::astring) else {
            return Ok(Err(bad("COPY needs a set and a mailbox")));
        };
        let to = match Self::folder_arg(args, 1) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let idx = match self.resolve(&set, uid) {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let me = self.me().to_string();
        if !matches!(self.store().folder(&me, &to).await, Ok(Some(_))) {
            return Ok(no("[TRYCREATE] no such mailbox"));
        }
        let Some(sel) = self.sel.as_ref() else {
            return Ok(Err(bad("no mailbox selected")));
        };
        let uids: Vec<i64> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        match self
            .cfg
            .store
            .copy_messages(&me, &sel.name, &uids, &to)
            .await
        {
            Ok(_) => Ok(ok("COPY completed")),
            Err(e) => Ok(no(format!("[SERVERBUG] {e}"))),
        }
    }
}

fn literal(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
}
