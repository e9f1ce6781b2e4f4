//! Judging a provider's message log (registro dei messaggi) against RFC 6109 §2.3 (digest §11):
//! "The server administrator MUST keep track of any and all operations carried out in a specific
//! message log file", each with the message identifier, the date and time of the event, the sender,
//! recipients and subject of the original, the event type, the identifiers of the related generated
//! messages and the sending provider, "and preserve it unmodified".
//!
//! The checks are written from that list, not from the reference gestore's own idea of a complete
//! record: what the runner learnt from the messages it received (identificativo, sender, recipients,
//! subject from the daticert of a saved notice; the Message-IDs of the generated notices) must be
//! what the log says. The log is read from the provider's SQLite file, read-only
//! ([`reference_gestore::registro::read_only_records`]).

use crate::run_report::Check;
use chrono::{DateTime, Utc};
use reference_gestore::registro::{self, StoredRecord};

/// The rule every check of this module implements.
pub const RULE: &str = "RFC 6109 §2.3; digest §11";

/// What the runner knows about the message whose events are looked for.
#[derive(Debug, Clone, Default)]
pub struct LogExpectation {
    /// The identificativo (records are selected by it when set).
    pub msgid: Option<String>,
    /// The subject of the original (records are selected by it when `msgid` is not set).
    pub subject: Option<String>,
    /// The sender of the original, when known.
    pub sender: Option<String>,
    /// The recipients of the original, when known (lower case).
    pub recipients: Vec<String>,
    /// The events that must be logged: (event type, [(saved name, Message-ID)] of the messages the
    /// event generated).
    pub events: Vec<(String, Vec<(String, String)>)>,
    /// The records' times must fall in this window (the scenario's clock).
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// The names of the providers of the topology ("sending provider").
    pub providers: Vec<String>,
}

impl LogExpectation {
    /// The records about the message: by msgid, else by subject.
    pub fn select<'a>(&self, rows: &'a [StoredRecord]) -> Vec<&'a StoredRecord> {
        rows.iter()
            .filter(|r| match (&self.msgid, &self.subject) {
                (Some(id), _) => r.msgid.eq_ignore_ascii_case(id),
                (None, Some(s)) => &r.subject == s,
                (None, None) => false,
            })
            .collect()
    }

    /// The record logging `event` (with every related Message-ID, when some are expected).
    fn find<'a>(
        &self,
        mine: &[&'a StoredRecord],
        event: &str,
        related: &[(String, String)],
    ) -> Option<&'a StoredRecord> {
        let by_event: Vec<&StoredRecord> =
            mine.iter().copied().filter(|r| r.event == event).collect();
        by_event
            .iter()
            .copied()
            .find(|r| {
                let rel = r.record().related;
                related.iter().all(|(_, id)| has_id(&rel, id))
            })
            .or_else(|| by_event.first().copied())
    }

    /// Whether every expected event is logged.
    pub fn complete(&self, rows: &[StoredRecord]) -> bool {
        let mine = self.select(rows);
        self.events
            .iter()
            .all(|(e, rel)| self.find(&mine, e, rel).is_some())
    }

    /// Every check: one per expected event (it is logged), its fields, and the chain.
    pub fn judge(&self, rows: &[StoredRecord]) -> Vec<Check> {
        let mine = self.select(rows);
        let which = match (&self.msgid, &self.subject) {
            (Some(id), _) => format!("msgid {id}"),
            (None, Some(s)) => format!("subject `{s}`"),
            (None, None) => "no message".into(),
        };
        let present = mine
            .iter()
            .map(|r| r.event.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = Vec::new();
        for (event, related) in &self.events {
            let found = self.find(&mine, event, related);
            // RFC 6109 §2.3: "any and all operations" are logged.
            out.push(Check::new(
                "log.event",
                RULE,
                format!("event `{event}` is logged for the message"),
                found.is_some(),
                match found {
                    Some(r) => format!("record seq {}", r.seq),
                    None => format!(
                        "event `{event}` is missing: the log holds [{present}] for {which} ({} records in all)",
                        rows.len()
                    ),
                },
            ));
            if let Some(r) = found {
                out.extend(self.fields(r, event, related));
            }
        }
        // RFC 6109 §2.3: "preserve it unmodified"; the hash chain shows it (digest §11).
        let finding = registro::check_chain(rows);
        out.push(Check::new(
            "log.chain",
            RULE,
            "the log's hash chain verifies (records kept unmodified)",
            finding.is_none(),
            match finding {
                None => format!("{} records chain from the anchor", rows.len()),
                Some(f) => f.to_string(),
            },
        ));
        out
    }

    /// The fields RFC 6109 §2.3 lists, in the record of `event`.
    fn fields(&self, r: &StoredRecord, event: &str, related: &[(String, String)]) -> Vec<Check> {
        let rec = r.record();
        let mut out = Vec::new();
        let mut field = |name: &str, what: String, ok: bool, detail: String| {
            out.push(Check::new(
                &format!("log.{name}"),
                RULE,
                format!("`{event}` record (seq {}): {what}", r.seq),
                ok,
                detail,
            ));
        };
        // The message identifier [ANALYSIS: RFC 6109 §1.2.3 defines msgid as the client's
        // Message-ID, the rest of the RFC identifies a message by its identificativo; the log
        // must name the message: the identificativo is what the notices carry].
        field(
            "msgid",
            "the message identifier".into(),
            !rec.msgid.trim().is_empty()
                && self
                    .msgid
                    .as_ref()
                    .is_none_or(|id| rec.msgid.eq_ignore_ascii_case(id)),
            format!("msgid `{}`", rec.msgid),
        );
        let t = r.time();
        let (from, to) = self.window;
        field(
            "time",
            "the date and time of the event".into(),
            r.at > 0 && t >= from && t <= to,
            format!("{} (the scenario ran {from} to {to})", t.to_rfc3339()),
        );
        field(
            "sender",
            "the sender of the original".into(),
            rec.sender.contains('@')
                && self
                    .sender
                    .as_ref()
                    .is_none_or(|s| rec.sender.eq_ignore_ascii_case(s)),
            format!(
                "sender `{}`{}",
                rec.sender,
                self.sender
                    .as_ref()
                    .map(|s| format!(", expected `{s}`"))
                    .unwrap_or_default()
            ),
        );
        let strangers: Vec<&String> = rec
            .recipients
            .iter()
            .filter(|a| {
                !a.contains('@')
                    || (!self.recipients.is_empty()
                        && !self.recipients.contains(&a.to_ascii_lowercase()))
            })
            .collect();
        field(
            "recipients",
            "the recipients of the original".into(),
            !rec.recipients.is_empty() && strangers.is_empty(),
            format!(
                "recipients [{}]{}",
                rec.recipients.join(", "),
                if strangers.is_empty() {
                    String::new()
                } else {
                    format!("; not recipients of the original: {strangers:?}")
                }
            ),
        );
        field(
            "subject",
            "the subject of the original".into(),
            self.subject.as_ref().is_none_or(|s| &rec.subject == s),
            format!(
                "subject `{}`{}",
                rec.subject,
                self.subject
                    .as_ref()
                    .map(|s| format!(", expected `{s}`"))
                    .unwrap_or_default()
            ),
        );
        for (name, id) in related {
            field(
                "related",
                format!("names the generated message `{name}`"),
                has_id(&rec.related, id),
                format!("related [{}], `{name}` is <{id}>", rec.related.join(", ")),
            );
        }
        // "sending provider" [ANALYSIS: the provider that sent the original or the one that sent
        // the logged message; either way a provider of the topology, by its providerName].
        field(
            "provider",
            "the sending provider".into(),
            !rec.provider.trim().is_empty()
                && (self.providers.is_empty() || self.providers.iter().any(|p| p == &rec.provider)),
            format!(
                "provider `{}` (the topology's: {})",
                rec.provider,
                self.providers.join(", ")
            ),
        );
        out
    }
}

/// Whether a list of related ids holds `id` (angle brackets and case of the domain aside).
fn has_id(related: &[String], id: &str) -> bool {
    let bare = |s: &str| {
        s.trim()
            .trim_matches(|c| c == '<' || c == '>')
            .to_ascii_lowercase()
    };
    let want = bare(id);
    related.iter().any(|r| bare(r) == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_report::Status;

    /// A chained log of one delivery, as a provider would write it.
    fn log() -> Vec<StoredRecord> {
        let at = Utc::now().timestamp_millis();
        let rows = [
            ("accettazione", r#"["acc-1@pec.a.test","id-1@pec.a.test"]"#),
            ("presa-in-carico", r#"["presa-1@pec.b.test"]"#),
            ("consegna", r#"["cons-1@pec.b.test"]"#),
        ];
        let mut prev = registro::GENESIS.to_string();
        let mut out = Vec::new();
        for (i, (event, related)) in rows.iter().enumerate() {
            let mut r = StoredRecord {
                seq: i as i64 + 1,
                at,
                event: event.to_string(),
                msgid: "id-1@pec.a.test".into(),
                sender: "alice@pec.a.test".into(),
                recipients: r#"["bob@pec.b.test"]"#.into(),
                subject: "Contratto".into(),
                related: related.to_string(),
                provider: "Reference PEC A".into(),
                prev: prev.clone(),
                hash: String::new(),
                canon: String::new(),
            };
            r.canon = r.canonical();
            r.hash = pec_formats::hex(&openssl::sha::sha256(r.canon.as_bytes()));
            prev = r.hash.clone();
            out.push(r);
        }
        out
    }

    fn expectation(events: &[&str]) -> LogExpectation {
        let now = Utc::now();
        LogExpectation {
            msgid: Some("id-1@pec.a.test".into()),
            subject: Some("Contratto".into()),
            sender: Some("alice@pec.a.test".into()),
            recipients: vec!["bob@pec.b.test".into()],
            events: events.iter().map(|e| (e.to_string(), vec![])).collect(),
            window: (
                now - chrono::Duration::minutes(1),
                now + chrono::Duration::minutes(1),
            ),
            providers: vec!["Reference PEC A".into(), "Reference PEC B".into()],
        }
    }

    fn failed(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .filter(|c| c.status == Status::Failed)
            .map(|c| format!("{}: {}", c.id, c.detail))
            .collect()
    }

    #[test]
    fn a_complete_log_passes_every_check() {
        let mut x = expectation(&["accettazione", "presa-in-carico", "consegna"]);
        x.events[0].1 = vec![("acc".into(), "<ACC-1@pec.a.test>".into())];
        let checks = x.judge(&log());
        assert!(failed(&checks).is_empty(), "{:?}", failed(&checks));
        assert!(checks.iter().any(|c| c.id == "log.related"));
        assert!(x.complete(&log()));
    }

    #[test]
    fn a_missing_event_fails_naming_it() {
        let x = expectation(&["accettazione", "mancata-consegna"]);
        let f = failed(&x.judge(&log()));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].starts_with("log.event: event `mancata-consegna` is missing"),
            "{f:?}"
        );
        assert!(
            f[0].contains("accettazione, presa-in-carico, consegna"),
            "{f:?}"
        );
        assert!(!x.complete(&log()));
    }

    #[test]
    fn wrong_fields_and_a_changed_record_fail() {
        let mut rows = log();
        rows[1].sender = "mallory@pec.a.test".into();
        rows[2].recipients = r#"["carol@pec.c.test"]"#.into();
        let mut x = expectation(&["presa-in-carico", "consegna"]);
        x.events[1].1 = vec![("cons".into(), "other@pec.b.test".into())];
        let f = failed(&x.judge(&rows));
        for want in ["log.sender", "log.recipients", "log.related", "log.chain"] {
            assert!(f.iter().any(|c| c.starts_with(want)), "{want}: {f:?}");
        }
        assert!(
            f.iter().any(|c| c.contains("record seq 2 was changed")),
            "{f:?}"
        );
    }

    #[test]
    fn records_outside_the_window_or_of_other_messages_do_not_count() {
        let mut x = expectation(&["accettazione"]);
        x.window.0 = Utc::now() + chrono::Duration::hours(1);
        x.window.1 = x.window.0;
        assert!(failed(&x.judge(&log()))[0].starts_with("log.time"));
        x.msgid = Some("another@pec.a.test".into());
        let f = failed(&x.judge(&log()));
        assert!(f[0].contains("the log holds [] for msgid another"), "{f:?}");
    }
}
