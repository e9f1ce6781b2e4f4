//! The scenario model: one YAML file per scenario (`scenarios/*.yaml`), read with serde-saphyr and
//! `deny_unknown_fields`, then checked against the requirements catalog (`requirements.yaml`) and
//! for references that cannot resolve (an unknown mailbox, gestore, kind or saved message). Every
//! error names the file, the line and what is wrong.
//!
//! A scenario names a topology of gestori (reference providers the runner starts, or an external
//! target), mailboxes on them, and steps: `submit`, `inject`, `advance_clock`, `wait`, `link`,
//! `expect`, `expect_reply`, `expect_none`, `expect_log`. The catalog's README (`scenarios/README.md`) shows each.

use pec_formats::kind::Kind;
use reference_gestore::config::{ByteSize, OrdinaryMail};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A scenario error: the file, the line (0 when unknown) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct ScenarioError {
    /// The scenario file.
    pub file: PathBuf,
    /// The line, 1-based; 0 when the error is about the whole file.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// A duration written as `250ms`, `5s`, `90m`, `12h`, `2d` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parses `250ms`, `5s`, `90m`, `12h`, `2d`, `1h30m` or a bare number of seconds.
    pub fn parse(s: &str) -> Result<Dur, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if let Ok(n) = t.parse::<u64>() {
            return Ok(Dur(Duration::from_secs(n)));
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("`{s}`: expected a number before `{rest}`"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("`{s}`: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let d = match unit.trim() {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86400)),
                other => {
                    return Err(format!(
                        "`{s}`: unknown unit `{other}` (known: ms, s, m, h, d)"
                    ));
                }
            };
            total = total.saturating_add(d);
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 5s, 90m, 12h")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A stable id, e.g. `delivery.to-one.completa` (also the report file name).
    pub id: String,
    /// One line saying what is tested.
    pub title: String,
    /// Free tags; `slow` scenarios need `--slow` against a real-time target.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The requirement ids (`requirements.yaml`) the scenario covers.
    #[serde(default)]
    pub requirements: Vec<String>,
    /// The gestori by name.
    pub topology: BTreeMap<String, GestoreSpec>,
    /// The form of the provider directory the reference gestori load (default `ldif`).
    #[serde(default)]
    pub directory: DirectoryForm,
    /// The mailboxes by name.
    #[serde(default)]
    pub mailboxes: BTreeMap<String, Spanned<MailboxSpec>>,
    /// What happens, in order.
    pub steps: Vec<Spanned<Step>>,
    /// The file it was read from (set by [`Scenario::load`]).
    #[serde(skip)]
    pub file: PathBuf,
}

/// The provider directory of a topology (RFC 6109 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryForm {
    /// The LDIF file as it is.
    #[default]
    Ldif,
    /// The distributed form: the runner signs the LDIF (a PKCS#7 `.p7m`) with a "directory signer"
    /// certificate of the test CA, and the gestori trust that signer for the directory only.
    Signed,
}

/// One gestore of a topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum GestoreSpec {
    /// A reference gestore the runner starts for this scenario (a process, or in-process).
    Reference(ReferenceSpec),
    /// The gestore under test, described by the `--target` file (the value must be `target`).
    External(String),
}

/// A reference gestore's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    /// Profile overrides (the rest as in the reference defaults).
    #[serde(default)]
    pub profile: ProfileOverrides,
    /// The signing digest: `sha256` (default) or `sha1`, as some real providers still sign.
    pub digest: Option<String>,
}

/// The reference profile settings a scenario may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverrides {
    /// Enable the reserved local parts `test-inesistente` / `test-casella-piena`.
    pub test_addresses: Option<bool>,
    /// `anomaly`, `refuse` or `{forward: address}`.
    pub ordinary_mail: Option<OrdinaryMail>,
    /// `plain` or `alternative`.
    pub text_form: Option<String>,
    /// `rfc5751` or `legacy` (`application/x-pkcs7-signature`).
    pub signature_style: Option<String>,
    /// The 12h/24h limits.
    pub timeouts: Option<TimeoutOverrides>,
    /// The size limit (size × recipients) that gives a non-accettazione.
    pub max_message_size: Option<ByteSize>,
    /// Above this SMTP refuses at DATA.
    pub hard_message_size: Option<ByteSize>,
    /// The most recipients.
    pub max_recipients: Option<usize>,
}

/// The 12h/24h limits of RFC 6109 §3.1.6 (shortened only to test the mechanism).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutOverrides {
    /// The preavviso deadline.
    pub preavviso: Option<Dur>,
    /// The final deadline.
    pub finale: Option<Dur>,
}

/// A mailbox: `alice: A` (user = the name) or `x: { gestore: A, user: test-inesistente }`, or an
/// ordinary (non-PEC) address caught by the runner's ordinary mail sink: `{ ordinary: a@b.test }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxSpec {
    /// A mailbox on a gestore of the topology.
    Pec {
        /// The gestore name.
        gestore: String,
        /// The local part (`service` means the gestore's service address / mailReceipt).
        user: String,
        /// Whether the runner creates the account (false: a mailbox that does not exist).
        exists: bool,
    },
    /// An ordinary address outside PEC, received by the runner's sink.
    Ordinary(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxLong {
    gestore: Option<String>,
    user: Option<String>,
    exists: Option<bool>,
    ordinary: Option<String>,
}

impl<'de> Deserialize<'de> for MailboxSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MailboxSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a gestore name, or {gestore, user}, or {ordinary: address}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MailboxSpec, E> {
                Ok(MailboxSpec::Pec {
                    gestore: v.to_string(),
                    user: String::new(),
                    exists: true,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MailboxSpec, A::Error> {
                let l =
                    MailboxLong::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                match (l.gestore, l.user, l.ordinary) {
                    (Some(g), user, None) => Ok(MailboxSpec::Pec {
                        gestore: g,
                        user: user.unwrap_or_default(),
                        exists: l.exists.unwrap_or(true),
                    }),
                    (None, None, Some(a)) if a.contains('@') && l.exists.is_none() => {
                        Ok(MailboxSpec::Ordinary(a))
                    }
                    _ => Err(serde::de::Error::custom(
                        "a mailbox is {gestore, user} or {ordinary: address}",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Step {
    /// A user submits a message at its gestore's access point.
    Submit(Submit),
    /// The runner delivers a crafted message to a gestore's inbound SMTP.
    Inject(Inject),
    /// Moves the shared clock of the scenario's reference gestori forward.
    AdvanceClock(Dur),
    /// Lets real time pass (bounded by the runner).
    Wait(Dur),
    /// Controls the link between two gestori (down, or dropping some kinds).
    Link(Link),
    /// A message of a kind arrives in a mailbox.
    Expect(Box<Expect>),
    /// The SMTP reply of the last submit or inject.
    ExpectReply(ExpectReply),
    /// No message of a kind arrives.
    ExpectNone(ExpectNone),
    /// A reference gestore's message log holds the events of a message (RFC 6109 §2.3).
    ExpectLog(ExpectLog),
}

impl Step {
    /// The step's name as written in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Submit(_) => "submit",
            Step::Inject(_) => "inject",
            Step::AdvanceClock(_) => "advance_clock",
            Step::Wait(_) => "wait",
            Step::Link(_) => "link",
            Step::Expect(_) => "expect",
            Step::ExpectReply(_) => "expect_reply",
            Step::ExpectNone(_) => "expect_none",
            Step::ExpectLog(_) => "expect_log",
        }
    }
}

/// An attachment of a generated size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The file name.
    pub name: String,
    /// Its size (`20KiB`).
    pub size: ByteSize,
    /// Carry the antivirus test marker (RFC 6109 §5.4 tests).
    #[serde(default)]
    pub virus: bool,
}

/// `submit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The sending mailbox.
    #[serde(rename = "as")]
    pub as_: String,
    /// To: mailbox names or addresses.
    #[serde(default)]
    pub to: Vec<String>,
    /// Cc.
    #[serde(default)]
    pub cc: Vec<String>,
    /// A Bcc header (not allowed by RFC 6109 §3.1.1; for negative tests).
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Subject.
    pub subject: Option<String>,
    /// The text body.
    pub body: Option<String>,
    /// Generated attachments.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// `X-TipoRicevuta`: completa, breve or sintetica.
    pub tipo_ricevuta: Option<String>,
    /// Extra header fields.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The From header, when it must differ from the sender (negative tests).
    pub from: Option<String>,
    /// The SMTP forward-paths, when they must differ from To + Cc + Bcc.
    pub rcpts: Option<Vec<String>>,
}

/// What `inject` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectKind {
    /// Plain Internet mail.
    Ordinary,
    /// PEC headers, no signature.
    Unsigned,
    /// A transport envelope signed by a provider certificate of a CA nobody trusts.
    UntrustedCa,
    /// A saved message with one byte of its signed content changed.
    Tampered,
    /// A valid transport envelope whose original carries a virus.
    Virus,
    /// A signed envelope whose daticert.xml is not valid.
    BadDaticert,
    /// A signed envelope whose daticert.xml names an external DTD and external entities on a
    /// loopback listener the runner opens, and carries an entity-expansion bomb (DC-05).
    HostileDaticert,
    /// A valid transport envelope whose daticert.xml names its DTD on that loopback listener in
    /// the DOCTYPE, as real providers do (digest §6.2), and declares no entity: delivered as usual,
    /// nothing fetched (DC-05).
    RemoteDoctype,
}

/// `inject`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    /// What to send.
    pub kind: InjectKind,
    /// Recipients (mailbox names or addresses); all on one gestore.
    pub to: Vec<String>,
    /// The sender (mailbox name or address). For `virus` and `bad-daticert` its gestore signs.
    pub from: Option<String>,
    /// The saved message to tamper with (`tampered`).
    pub message: Option<String>,
    /// Subject.
    pub subject: Option<String>,
}

/// `link`: the path from one gestore to another goes through the runner, which can take it down
/// (4xx at RCPT: the sender queues and retries) or drop messages of some kinds (answering 250, as if
/// lost after acceptance). The state replaces the previous one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The sending gestore.
    pub from: String,
    /// The receiving gestore.
    pub to: String,
    /// `up` (default) or `down`.
    #[serde(default)]
    pub state: LinkState,
    /// Kinds (ids) to drop while up.
    #[serde(default)]
    pub drop: Vec<String>,
}

/// Whether a link carries mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Mail flows.
    #[default]
    Up,
    /// Every RCPT gets 451.
    Down,
}

/// What must be true of the original inside a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginalSpec {
    /// postacert.eml with the attachments (completa).
    Included,
    /// postacert.eml with attachments replaced by `.hash` parts (breve).
    Hashed,
    /// No postacert.eml (sintetica, and notices without the original).
    Absent,
}

/// `expect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The mailbox.
    pub mailbox: String,
    /// The kind id (`pec_formats::kind::Kind::id`) or `ordinary`.
    pub kind: String,
    /// Only messages about this recipient (a mailbox name): daticert `consegna` (or `ricezione`)
    /// names its address. Selects among several receipts of one kind.
    pub consegna: Option<String>,
    /// How many new messages of the kind (default 1).
    pub count: Option<usize>,
    /// How long to wait (default 10s).
    pub within: Option<Dur>,
    /// Header name → substring of its value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// daticert field (`tipo`, `errore`, `mittente`, `destinatari`, `risposte`, `oggetto`,
    /// `gestore-emittente`, `identificativo`, `msgid`, `ricevuta`, `consegna`, `ricezione`,
    /// `errore-esteso`) → substring; a name mailbox in `{alice}` braces stands for its address.
    #[serde(default)]
    pub daticert: BTreeMap<String, String>,
    /// The receipt type: completa, breve, sintetica.
    pub ricevuta: Option<String>,
    /// The original inside.
    pub original: Option<OriginalSpec>,
    /// The gestore whose certificate signed it.
    pub signed_by: Option<String>,
    /// Shares the identificativo of a saved message.
    pub same_identificativo: Option<String>,
    /// Keep the (first) message under this name.
    pub save: Option<String>,
    /// Check the `.hash` parts of a breve receipt against the original the runner submitted.
    pub breve_hashes: Option<BreveHashes>,
    /// How many connections the listener of the last `hostile-daticert` or `remote-doctype` inject
    /// may have seen
    /// (DC-05: 0, readers fetch nothing).
    pub external_fetches: Option<usize>,
}

/// `expect.breve_hashes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreveHashes {
    /// Each attachment of the submitted original has its `<name>.hash` with the SHA-1 of the
    /// base64-encoded part (RFC 6109 §3.3.2.2), and there is no other `.hash` part.
    MatchOriginal,
}

/// `expect_reply`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectReply {
    /// The reply code (of the data, or of the first refusal).
    pub code: Option<u16>,
    /// A substring of the reply text.
    pub text: Option<String>,
}

/// `expect_none`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectNone {
    /// The mailbox.
    pub mailbox: String,
    /// The kind id, or `any`.
    pub kind: String,
    /// Watch this long (real time; default 1s).
    #[serde(rename = "for")]
    pub for_: Option<Dur>,
    /// Advance the clock first, then watch.
    pub after: Option<After>,
}

/// `expect_log`: the message log (registro, RFC 6109 §2.3) of a reference gestore, read from its
/// store, holds records for the events of one message of the scenario, each with the fields the
/// rule lists, and its hash chain verifies (kept unmodified).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectLog {
    /// The reference gestore whose log is read.
    pub gestore: String,
    /// The message: a saved message whose identificativo the records carry as msgid.
    pub message: Option<String>,
    /// Or the message by its subject (records whose subject is this text).
    pub subject: Option<String>,
    /// The events that must be logged for it, in any order.
    pub events: Vec<LogEvent>,
    /// How long to wait for the records (default 5s).
    pub within: Option<Dur>,
}

/// One expected log event: `accettazione`, or `{ event: accettazione, related: [acc] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// The event type (one of [`LOG_EVENTS`]).
    pub event: String,
    /// Saved messages generated by the event: each one's Message-ID is among the record's related
    /// ids (RFC 6109 §2.3 "message identifiers of related generated messages").
    pub related: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogEventLong {
    event: String,
    #[serde(default)]
    related: Vec<String>,
}

impl<'de> Deserialize<'de> for LogEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LogEvent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event type, or {event, related}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LogEvent, E> {
                Ok(LogEvent {
                    event: v.to_string(),
                    related: Vec::new(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<LogEvent, A::Error> {
                let l =
                    LogEventLong::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(LogEvent {
                    event: l.event,
                    related: l.related,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The event types `expect_log` may name. RFC 6109 §2.3 asks for an "event type (reception,
/// delivery, PEC notification emission, etc.)" without fixing names; these are the operations of
/// RFC 6109 §3, named after the notice or step (the reference gestore's names). `ricezione-<kind>`
/// is the reception of a receipt or notice of that kind from another provider; `invio` is the
/// hand-over of a message (envelope or notice) to another provider, accepted by it.
pub const LOG_EVENTS: &[&str] = &[
    "accettazione",
    "non-accettazione",
    "virus",
    "presa-in-carico",
    "consegna",
    "mancata-consegna",
    "anomalia",
    "rilevazione-virus",
    "inoltro",
    "invio",
    "preavviso-12h",
    "mancata-consegna-24h",
];

/// Whether `expect_log` knows the event type.
pub fn is_known_log_event(e: &str) -> bool {
    LOG_EVENTS.contains(&e)
        || e.strip_prefix("ricezione-")
            .is_some_and(|k| Kind::from_id(k).is_some())
}

/// `expect_none.after`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct After {
    /// How far.
    pub advance_clock: Dur,
}

/// One requirement of `requirements.yaml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// e.g. `ACC-01`.
    pub id: String,
    /// The rule in our words.
    pub text: String,
    /// Where it comes from.
    pub source: String,
    /// must, should, may.
    pub level: String,
}

/// Reads `requirements.yaml`.
pub fn load_requirements(path: &Path) -> Result<Vec<Requirement>, ScenarioError> {
    let err = |line, message| ScenarioError {
        file: path.to_path_buf(),
        line,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
    let reqs: Vec<Requirement> = serde_saphyr::from_str(&text).map_err(|e| {
        let m = e.to_string();
        err(line_of(&m), m)
    })?;
    let mut seen = BTreeSet::new();
    for r in &reqs {
        if !seen.insert(r.id.clone()) {
            return Err(err(0, format!("requirement `{}` is listed twice", r.id)));
        }
    }
    Ok(reqs)
}

/// The line a serde-saphyr message names (`line 12`), or 0.
fn line_of(message: &str) -> u64 {
    let lower = message.to_ascii_lowercase();
    lower
        .find("line ")
        .and_then(|i| {
            let rest = &lower[i + 5..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .unwrap_or(0)
}

/// The kinds `expect` understands: the eleven PEC kinds and `ordinary`.
pub fn is_known_kind(id: &str) -> bool {
    id == "ordinary" || Kind::from_id(id).is_some()
}

impl Scenario {
    /// Parses scenario text and checks it. `requirements` are the known ids.
    pub fn from_yaml(
        file: &Path,
        text: &str,
        requirements: &BTreeSet<String>,
    ) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = serde_saphyr::from_str(text).map_err(|e| {
            let m = e.to_string();
            ScenarioError {
                file: file.to_path_buf(),
                line: line_of(&m),
                message: m,
            }
        })?;
        s.file = file.to_path_buf();
        s.check(text, requirements)?;
        Ok(s)
    }

    /// Reads a scenario file.
    pub fn load(file: &Path, requirements: &BTreeSet<String>) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|e| ScenarioError {
            file: file.to_path_buf(),
            line: 0,
            message: e.to_string(),
        })?;
        Scenario::from_yaml(file, &text, requirements)
    }

    /// Whether the scenario has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The names of the gestori that are external.
    pub fn external_gestori(&self) -> Vec<&str> {
        self.topology
            .iter()
            .filter(|(_, g)| matches!(g, GestoreSpec::External(_)))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn check(&self, text: &str, requirements: &BTreeSet<String>) -> Result<(), ScenarioError> {
        let at = |line: u64, message: String| ScenarioError {
            file: self.file.clone(),
            line,
            message,
        };
        // Lines of top-level keys, for errors about them.
        let key_line = |key: &str| -> u64 {
            text.lines()
                .position(|l| l.starts_with(&format!("{key}:")))
                .map_or(0, |i| i as u64 + 1)
        };
        if self.id.trim().is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(at(
                key_line("id"),
                format!(
                    "id `{}`: use letters, digits, `.`, `_` and `-` only",
                    self.id
                ),
            ));
        }
        for r in &self.requirements {
            if !requirements.contains(r) {
                return Err(at(
                    key_line("requirements"),
                    format!("requirement `{r}` is not in requirements.yaml"),
                ));
            }
        }
        if self.topology.is_empty() {
            return Err(at(
                key_line("topology"),
                "topology: at least one gestore".into(),
            ));
        }
        for (name, g) in &self.topology {
            match g {
                GestoreSpec::External(t) if t != "target" => {
                    return Err(at(
                        key_line("topology"),
                        format!("topology.{name}: `external: {t}` (the only value is `target`)"),
                    ));
                }
                GestoreSpec::Reference(r) => {
                    if let Some(d) = &r.digest
                        && !matches!(d.as_str(), "sha1" | "sha256" | "sha384" | "sha512")
                    {
                        return Err(at(
                            key_line("topology"),
                            format!(
                                "topology.{name}.digest: `{d}` (sha1, sha256, sha384 or sha512)"
                            ),
                        ));
                    }
                    if let Some(f) = &r.profile.signature_style
                        && !matches!(f.as_str(), "rfc5751" | "legacy")
                    {
                        return Err(at(
                            key_line("topology"),
                            format!(
                                "topology.{name}.profile.signature_style: `{f}` (rfc5751 or legacy)"
                            ),
                        ));
                    }
                    if let Some(f) = &r.profile.text_form
                        && !matches!(f.as_str(), "plain" | "alternative")
                    {
                        return Err(at(
                            key_line("topology"),
                            format!(
                                "topology.{name}.profile.text_form: `{f}` (plain or alternative)"
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        if self.external_gestori().len() > 1 {
            return Err(at(
                key_line("topology"),
                "topology: at most one external gestore".into(),
            ));
        }
        for (name, m) in &self.mailboxes {
            if let MailboxSpec::Pec { gestore, .. } = &m.value
                && !self.topology.contains_key(gestore)
            {
                return Err(at(
                    m.referenced.line(),
                    format!("mailbox `{name}`: no gestore `{gestore}` in the topology"),
                ));
            }
        }
        let mut saved: BTreeSet<&str> = BTreeSet::new();
        let mut sent = false;
        let mut hostile = false;
        for step in &self.steps {
            let line = step.referenced.line();
            let e = |m: String| at(line, format!("{}: {m}", step.value.name()));
            let mailbox = |n: &str| -> Result<(), ScenarioError> {
                if self.mailboxes.contains_key(n) {
                    Ok(())
                } else {
                    Err(e(format!("no mailbox `{n}`")))
                }
            };
            // A recipient is a mailbox name or a literal address.
            let rcpt = |n: &str| -> Result<(), ScenarioError> {
                if n.contains('@') { Ok(()) } else { mailbox(n) }
            };
            let gestore = |n: &str| -> Result<(), ScenarioError> {
                if self.topology.contains_key(n) {
                    Ok(())
                } else {
                    Err(e(format!("no gestore `{n}` in the topology")))
                }
            };
            let kind = |k: &str| -> Result<(), ScenarioError> {
                if is_known_kind(k) {
                    Ok(())
                } else {
                    let known: Vec<&str> = Kind::ALL.iter().map(|k| k.id()).collect();
                    Err(e(format!(
                        "unknown kind `{k}` (known: {}, ordinary)",
                        known.join(", ")
                    )))
                }
            };
            match &step.value {
                Step::Submit(s) => {
                    mailbox(&s.as_)?;
                    if !matches!(self.mailboxes[&s.as_].value, MailboxSpec::Pec { .. }) {
                        return Err(e(format!("`{}` is not a PEC mailbox", s.as_)));
                    }
                    for r in s.to.iter().chain(&s.cc).chain(&s.bcc) {
                        rcpt(r)?;
                    }
                    for r in s.rcpts.iter().flatten() {
                        rcpt(r)?;
                    }
                    if s.to.is_empty() && s.cc.is_empty() && s.rcpts.is_none() {
                        return Err(e("no recipient (to, cc or rcpts)".into()));
                    }
                    if let Some(t) = &s.tipo_ricevuta
                        && !matches!(t.as_str(), "completa" | "breve" | "sintetica")
                    {
                        return Err(e(format!(
                            "tipo_ricevuta `{t}` (completa, breve or sintetica)"
                        )));
                    }
                    sent = true;
                }
                Step::Inject(i) => {
                    if i.to.is_empty() {
                        return Err(e("no recipient".into()));
                    }
                    for r in &i.to {
                        mailbox(r)?;
                    }
                    if let Some(f) = &i.from {
                        rcpt(f)?;
                    }
                    let needs_sender_gestore = matches!(
                        i.kind,
                        InjectKind::Virus
                            | InjectKind::BadDaticert
                            | InjectKind::HostileDaticert
                            | InjectKind::RemoteDoctype
                    );
                    if needs_sender_gestore
                        && !i.from.as_ref().is_some_and(|f| {
                            matches!(
                                self.mailboxes.get(f).map(|m| &m.value),
                                Some(MailboxSpec::Pec { .. })
                            )
                        })
                    {
                        return Err(e(
                            "`from` must be a PEC mailbox (its gestore signs the message)".into(),
                        ));
                    }
                    match (&i.kind, &i.message) {
                        (InjectKind::Tampered, None) => {
                            return Err(e("`tampered` needs `message: <saved name>`".into()));
                        }
                        (InjectKind::Tampered, Some(m)) if !saved.contains(m.as_str()) => {
                            return Err(e(format!("no message saved as `{m}` before this step")));
                        }
                        (k, Some(_)) if *k != InjectKind::Tampered => {
                            return Err(e("`message` is only for `tampered`".into()));
                        }
                        _ => {}
                    }
                    hostile |= matches!(
                        i.kind,
                        InjectKind::HostileDaticert | InjectKind::RemoteDoctype
                    );
                    sent = true;
                }
                Step::AdvanceClock(_) | Step::Wait(_) => {}
                Step::Link(l) => {
                    gestore(&l.from)?;
                    gestore(&l.to)?;
                    for k in &l.drop {
                        kind(k)?;
                    }
                }
                Step::Expect(x) => {
                    mailbox(&x.mailbox)?;
                    kind(&x.kind)?;
                    if let Some(c) = &x.consegna {
                        rcpt(c)?;
                    }
                    if let Some(g) = &x.signed_by {
                        gestore(g)?;
                    }
                    if let Some(r) = &x.ricevuta
                        && !matches!(r.as_str(), "completa" | "breve" | "sintetica")
                    {
                        return Err(e(format!("ricevuta `{r}` (completa, breve or sintetica)")));
                    }
                    if let Some(s) = &x.same_identificativo
                        && !saved.contains(s.as_str())
                    {
                        return Err(e(format!("no message saved as `{s}` before this step")));
                    }
                    for f in x.daticert.keys() {
                        if !DATICERT_FIELDS.contains(&f.as_str()) {
                            return Err(e(format!(
                                "daticert field `{f}` (known: {})",
                                DATICERT_FIELDS.join(", ")
                            )));
                        }
                    }
                    if x.count == Some(0) {
                        return Err(e("count: 0 (use expect_none)".into()));
                    }
                    if x.external_fetches.is_some() && !hostile {
                        return Err(e(
                            "external_fetches needs an earlier `inject` of kind hostile-daticert or remote-doctype"
                                .into(),
                        ));
                    }
                    if let Some(s) = &x.save
                        && !saved.insert(s.as_str())
                    {
                        return Err(e(format!("`{s}` is already saved")));
                    }
                }
                Step::ExpectReply(_) => {
                    if !sent {
                        return Err(e("no submit or inject before it".into()));
                    }
                }
                Step::ExpectNone(n) => {
                    mailbox(&n.mailbox)?;
                    if n.kind != "any" {
                        kind(&n.kind)?;
                    }
                }
                Step::ExpectLog(l) => {
                    gestore(&l.gestore)?;
                    if !matches!(
                        self.topology.get(&l.gestore),
                        Some(GestoreSpec::Reference(_))
                    ) {
                        return Err(e(format!(
                            "`{}` is not a reference gestore (only their logs can be read)",
                            l.gestore
                        )));
                    }
                    match (&l.message, &l.subject) {
                        (Some(m), None) if !saved.contains(m.as_str()) => {
                            return Err(e(format!("no message saved as `{m}` before this step")));
                        }
                        (Some(_), None) | (None, Some(_)) => {}
                        _ => return Err(e("name the message: `message` or `subject`".into())),
                    }
                    if l.events.is_empty() {
                        return Err(e("events: at least one".into()));
                    }
                    for ev in &l.events {
                        if !is_known_log_event(&ev.event) {
                            return Err(e(format!(
                                "unknown log event `{}` (known: {}, ricezione-<kind>)",
                                ev.event,
                                LOG_EVENTS.join(", ")
                            )));
                        }
                        for r in &ev.related {
                            if !saved.contains(r.as_str()) {
                                return Err(e(format!(
                                    "related: no message saved as `{r}` before this step"
                                )));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The daticert fields `expect.daticert` may name.
pub const DATICERT_FIELDS: &[&str] = &[
    "tipo",
    "errore",
    "mittente",
    "destinatari",
    "risposte",
    "oggetto",
    "gestore-emittente",
    "identificativo",
    "msgid",
    "ricevuta",
    "consegna",
    "ricezione",
    "errore-esteso",
];

/// Reads every `*.yaml` of a folder, sorted by file name; all errors together.
pub fn load_dir(
    dir: &Path,
    requirements: &BTreeSet<String>,
) -> Result<Vec<Scenario>, Vec<ScenarioError>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) => {
            return Err(vec![ScenarioError {
                file: dir.to_path_buf(),
                line: 0,
                message: e.to_string(),
            }]);
        }
    };
    files.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut ids = BTreeMap::new();
    for f in files {
        match Scenario::load(&f, requirements) {
            Ok(s) => {
                if let Some(prev) = ids.insert(s.id.clone(), f.clone()) {
                    errors.push(ScenarioError {
                        file: f.clone(),
                        line: 0,
                        message: format!("id `{}` is also used by {}", s.id, prev.display()),
                    });
                }
                out.push(s);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs() -> BTreeSet<String> {
        ["ACC-01", "ENV-01", "DEL-01", "TIM-01"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    const GOOD: &str = "\
id: delivery.to-one
title: One recipient
tags: [smoke]
requirements: [ACC-01, ENV-01, DEL-01]
topology:
  A: { reference: { profile: { test_addresses: true, ordinary_mail: { forward: x@y.test } } } }
  B: { reference: {} }
mailboxes:
  alice: A
  bob: B
  nobody: { gestore: B, user: nessuno, exists: false }
  mario: { ordinary: mario@example.test }
steps:
  - submit: { as: alice, to: [bob], cc: [mario], subject: Contratto, tipo_ricevuta: breve,
              attachments: [{ name: c.pdf, size: 20KiB }] }
  - expect_reply: { code: 250 }
  - expect: { mailbox: alice, kind: accettazione, within: 5s, save: acc }
  - expect: { mailbox: bob, kind: posta-certificata, same_identificativo: acc,
              daticert: { ricevuta: breve } }
  - link: { from: B, to: A, drop: [avvenuta-consegna] }
  - advance_clock: 12h
  - wait: 250ms
  - inject: { kind: tampered, to: [bob], message: acc }
  - expect_none: { mailbox: alice, kind: preavviso-errore-consegna, after: { advance_clock: 25h } }
";

    #[test]
    fn a_good_scenario_reads() {
        let s = Scenario::from_yaml(Path::new("good.yaml"), GOOD, &reqs()).unwrap();
        assert_eq!(s.id, "delivery.to-one");
        assert_eq!(s.steps.len(), 9);
        assert_eq!(s.steps[0].referenced.line(), 14);
        assert_eq!(s.steps[5].referenced.line(), 21);
        assert!(matches!(
            s.mailboxes["nobody"].value,
            MailboxSpec::Pec { ref user, exists: false, .. } if user == "nessuno"
        ));
        assert_eq!(
            s.mailboxes["mario"].value,
            MailboxSpec::Ordinary("mario@example.test".into())
        );
        match &s.steps[5].value {
            Step::AdvanceClock(d) => assert_eq!(d.0, Duration::from_secs(12 * 3600)),
            other => panic!("{other:?}"),
        }
        match &s.steps[6].value {
            Step::Wait(d) => assert_eq!(d.0, Duration::from_millis(250)),
            other => panic!("{other:?}"),
        }
        match &s.topology["A"] {
            GestoreSpec::Reference(r) => {
                assert_eq!(r.profile.test_addresses, Some(true));
                assert_eq!(
                    r.profile.ordinary_mail,
                    Some(OrdinaryMail::Forward("x@y.test".into()))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_schema_error_names_file_line_and_field() {
        let bad = GOOD.replace("within: 5s, save", "whithin: 5s, save");
        let e = Scenario::from_yaml(Path::new("scenarios/bad.yaml"), &bad, &reqs()).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("scenarios/bad.yaml:17"), "{text}");
        assert!(text.contains("whithin"), "{text}");
        assert_eq!(e.line, 17);
    }

    #[test]
    fn reference_errors_name_the_step_line() {
        let bad = GOOD.replace("mailbox: bob, kind: posta", "mailbox: rob, kind: posta");
        let e = Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).unwrap_err();
        assert_eq!(e.line, 18, "{e}");
        assert!(e.message.contains("no mailbox `rob`"), "{e}");

        let bad = GOOD.replace("kind: accettazione", "kind: accetazione");
        let e = Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).unwrap_err();
        assert!(e.message.contains("unknown kind `accetazione`"), "{e}");
        assert_eq!(e.line, 17);

        let bad = GOOD.replace("ENV-01, DEL-01", "ENV-01, DEL-99");
        let e = Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).unwrap_err();
        assert!(
            e.message.contains("`DEL-99` is not in requirements.yaml"),
            "{e}"
        );
        assert_eq!(e.line, 4);

        let bad = GOOD.replace("same_identificativo: acc", "same_identificativo: ac");
        let e = Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).unwrap_err();
        assert!(e.message.contains("no message saved as `ac`"), "{e}");
    }

    #[test]
    fn new_expect_fields_read_and_their_errors_name_the_line() {
        let good = GOOD.replace(
            "daticert: { ricevuta: breve } }",
            "daticert: { ricevuta: breve }, breve_hashes: match_original }",
        );
        let s = Scenario::from_yaml(Path::new("x.yaml"), &good, &reqs()).unwrap();
        match &s.steps[3].value {
            Step::Expect(x) => assert_eq!(x.breve_hashes, Some(BreveHashes::MatchOriginal)),
            other => panic!("{other:?}"),
        }
        let bad = good.replace("match_original", "match_orignal");
        let e = Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).unwrap_err();
        assert_eq!(e.line, 19, "{e}");
        assert!(e.message.contains("match_orignal"), "{e}");
        // external_fetches without a hostile-daticert inject before it.
        let bad = GOOD.replace(
            "within: 5s, save: acc }",
            "within: 5s, save: acc, external_fetches: 0 }",
        );
        let e = Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).unwrap_err();
        assert_eq!(e.line, 17, "{e}");
        assert!(e.message.contains("hostile-daticert"), "{e}");
        let ok = bad.replace(
            "  - expect_reply: { code: 250 }",
            "  - inject: { kind: hostile-daticert, from: alice, to: [bob] }",
        );
        Scenario::from_yaml(Path::new("x.yaml"), &ok, &reqs()).unwrap();
        let bad = ok.replace("from: alice, to: [bob] }", "to: [bob] }");
        let e = Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).unwrap_err();
        assert_eq!(e.line, 16, "{e}");
        assert!(e.message.contains("`from` must be a PEC mailbox"), "{e}");
    }

    #[test]
    fn expect_log_and_the_directory_form_are_checked() {
        let with = |step: &str| {
            format!("{GOOD}  - expect_log: {step}\n")
                .replace("topology:\n", "directory: signed\ntopology:\n")
        };
        let ok = with(
            "{ gestore: A, message: acc, events: [accettazione, { event: consegna, related: [acc] }, ricezione-presa-in-carico] }",
        );
        let s = Scenario::from_yaml(Path::new("x.yaml"), &ok, &reqs()).unwrap();
        assert_eq!(s.directory, DirectoryForm::Signed);
        match &s.steps.last().unwrap().value {
            Step::ExpectLog(l) => {
                assert_eq!(l.events.len(), 3);
                assert_eq!(l.events[1].related, vec!["acc".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        for (step, want) in [
            (
                "{ gestore: A, message: acc, events: [consegnato] }",
                "unknown log event `consegnato`",
            ),
            (
                "{ gestore: A, message: acc, events: [ricezione-nulla] }",
                "unknown log event",
            ),
            (
                "{ gestore: A, message: ac, events: [consegna] }",
                "no message saved as `ac`",
            ),
            (
                "{ gestore: A, events: [consegna] }",
                "`message` or `subject`",
            ),
            (
                "{ gestore: Z, subject: x, events: [consegna] }",
                "no gestore `Z`",
            ),
            ("{ gestore: A, subject: x, events: [] }", "at least one"),
        ] {
            let e = Scenario::from_yaml(Path::new("x.yaml"), &with(step), &reqs()).unwrap_err();
            assert!(e.message.contains(want), "{step}: {e}");
            assert_eq!(e.line, 26, "{e}");
        }
        let bad = GOOD.replace("topology:\n", "directory: sealed\ntopology:\n");
        assert!(Scenario::from_yaml(Path::new("x.yaml"), &bad, &reqs()).is_err());
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(Dur::parse("1h30m").unwrap().0, Duration::from_secs(5400));
        assert_eq!(Dur::parse("90").unwrap().0, Duration::from_secs(90));
        assert_eq!(Dur::parse("25h").unwrap().to_string(), "25h");
        assert!(
            Dur::parse("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(Dur::parse("h").is_err());
        assert!(Dur::parse("").is_err());
    }

    #[test]
    fn the_catalog_loads_and_covers_requirements() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let reqs = load_requirements(&root.join("requirements.yaml")).unwrap();
        assert_eq!(reqs.len(), 53);
        let ids: BTreeSet<String> = reqs.iter().map(|r| r.id.clone()).collect();
        let scenarios = match load_dir(&root.join("scenarios"), &ids) {
            Ok(s) => s,
            Err(errors) => panic!(
                "{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        assert!(scenarios.len() >= 30, "{} scenarios", scenarios.len());
    }
}
