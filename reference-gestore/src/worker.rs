//! The provider's background work: the outbox (envelopes and notices to other providers, with
//! retries; to our own domains, handed over to the reception point in-process) and the 12h/24h
//! timers (RFC 6109 §3.1.6). Work is taken from the store, so a restart resumes it; every item is
//! idempotent, so doing one twice after a crash sends nothing twice that the receiver keeps
//! (the reception point recognises a message it already has).

use crate::gestore::{Gestore, domain_of};
use crate::outbound::{Job, RcptOutcome, RouteSender};
use crate::reception_point::{self, Received};
use crate::store::{Backend, Batch, LogRecord, Op, OutboxItem, Store};
use crate::timers::{RecipientState, decide, parse_phase};
use anyhow::Context;
use chrono::{DateTime, Utc};
use pec_formats::build::{self, Certification};
use pec_formats::daticert::Daticert;
use pec_formats::kind::{Kind, TimeoutPhase};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// How many outbox items one pass takes (bounded work per pass).
const BATCH: i64 = 64;
/// The longest the worker sleeps without looking at the store (a safety net; wake-ups come from
/// commits and clock jumps).
const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a pass holds the outbox items it claimed ([`Store::claim_outbox`]): another worker on
/// the same database takes them only after this, if this one died without releasing them.
pub const LEASE: chrono::Duration = chrono::Duration::minutes(5);

/// The delay before retry number `attempts` (1-based): 2 s doubling up to 30 min, so a peer that
/// is restarting is found again within seconds.
pub fn backoff(attempts: i64) -> chrono::Duration {
    let secs = 2i64.saturating_mul(1 << attempts.clamp(1, 11).saturating_sub(1));
    chrono::Duration::seconds(secs.min(1800))
}

/// The time a queued item has waited after `attempts` failed attempts (the sum of the backoffs).
pub fn waited(attempts: i64) -> chrono::Duration {
    (1..=attempts.clamp(0, 10_000)).map(backoff).sum()
}

/// RFC 6109 §2.2.2: the queue time limit between providers is 24 h.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// Why an outbound attempt failed.
#[derive(Debug)]
pub enum SendFailure {
    /// Try again later (4xx, connection refused, timeout).
    Transient(String),
    /// Do not try again (5xx for every recipient).
    Permanent(String),
}

/// The recipients of one outbox item, sorted by what happened to them in this pass.
#[derive(Debug, Default)]
struct ItemOutcome {
    /// Replies of the recipients that were taken (never sent again).
    accepted: Vec<String>,
    /// Recipients to try again, with why.
    transient: Vec<(String, String)>,
    /// Recipients that failed for good, with why.
    permanent: Vec<(String, String)>,
}

impl ItemOutcome {
    fn add(&mut self, rcpt: &str, o: RcptOutcome) {
        match o {
            RcptOutcome::Accepted(r) => self.accepted.push(format!("{rcpt}: {r}")),
            RcptOutcome::Transient(w) => self.transient.push((rcpt.to_string(), w)),
            RcptOutcome::Permanent(w) => self.permanent.push((rcpt.to_string(), w)),
        }
    }
    fn add_all(&mut self, rcpts: &[String], o: &RcptOutcome) {
        for r in rcpts {
            self.add(r, o.clone());
        }
    }
}

/// One pass over the due outbox items. Returns how many were handled. The items are claimed
/// (leased for [`LEASE`]), so a second worker on the same database never sends them at the same
/// time. Items for our own domains go to the reception point in-process; the others are grouped by
/// route, each route's share going over as few SMTP sessions as possible ([`RouteSender`]), and
/// what the peer accepted is recorded as each transaction completes, before the next one starts.
pub async fn outbox_pass(g: &Gestore) -> anyhow::Result<usize> {
    let now = g.clock.now();
    let items = g.store.claim_outbox(now, BATCH, now + LEASE).await?;
    let mut results: Vec<ItemOutcome> = items.iter().map(|_| ItemOutcome::default()).collect();
    // route → (item index, recipients at that route)
    let mut by_route: BTreeMap<String, Vec<(usize, Vec<String>)>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &item.rcpts {
            let d = domain_of(r).unwrap_or_default().to_ascii_lowercase();
            by_domain.entry(d).or_default().push(r.clone());
        }
        for (domain, rcpts) in by_domain {
            if g.config.is_local_domain(&domain) {
                // Our own domain: the reception point, in-process (RFC 6109 §3.4: same processing).
                let o = match reception_point::receive(g, &item.mail_from, &rcpts, &item.raw).await
                {
                    Ok(Received::Refused(why)) => RcptOutcome::Permanent(why),
                    Ok(_) => RcptOutcome::Accepted("local".into()),
                    Err(e) => RcptOutcome::Transient(format!("{e:#}")),
                };
                results[i].add_all(&rcpts, &o);
            } else if let Some(route) = g.config.route_for(&domain) {
                by_route
                    .entry(route.to_string())
                    .or_default()
                    .push((i, rcpts));
            } else {
                let o = RcptOutcome::Permanent(format!("no route to {domain}"));
                results[i].add_all(&rcpts, &o);
            }
        }
    }
    for (route, shares) in &by_route {
        let mut sender = RouteSender::new(g, route);
        for (i, rcpts) in shares {
            let item = &items[*i];
            let job = Job {
                mail_from: &item.mail_from,
                rcpts,
                raw: &item.raw,
            };
            let per_rcpt = sender.send(&job).await;
            let accepted: Vec<String> = per_rcpt
                .iter()
                .filter(|(_, o)| matches!(o, RcptOutcome::Accepted(_)))
                .map(|(r, _)| r.clone())
                .collect();
            if !accepted.is_empty() {
                // RFC 6109 §2.3, digest §11: the hand-over to the other provider is an operation
                // of its own, logged once the peer has accepted it; in the same transaction the
                // accepted recipients leave the outbox item (RFC 5321 §4.5.4.1), before the next
                // transaction starts: a crash after this re-sends, and logs, only the others.
                let reply = per_rcpt
                    .iter()
                    .find_map(|(_, o)| match o {
                        RcptOutcome::Accepted(r) => Some(r.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let mut taken = Batch::new(g.clock.now());
                taken.push(Op::Log(invio_record(g, item, &accepted)));
                taken.push(Op::OutboxTaken {
                    id: item.id,
                    rcpts: accepted,
                    reply,
                });
                g.store.commit(taken).await?;
            }
            for (rcpt, o) in per_rcpt {
                results[*i].add(&rcpt, o);
            }
        }
        sender.close().await;
    }
    for (item, r) in items.iter().zip(results) {
        finish(g, item, r, now).await?;
    }
    Ok(items.len())
}

/// The log record of a message handed over to another provider for `rcpts` (event `invio`).
/// RFC 6109 §2.3: msgid, sender, recipients and subject are those of the original, from the
/// daticert of what was sent (a transport envelope or a notice); the related id is the Message-ID
/// of the message sent. Mail without a daticert (an ordinary forward) is described by its headers.
pub fn invio_record(g: &Gestore, item: &OutboxItem, rcpts: &[String]) -> LogRecord {
    let msg = pec_formats::parse::parse(&item.raw).ok();
    let header = |name: &str| {
        msg.as_ref()
            .and_then(|m| m.header(name))
            .map(|v| v.trim().to_string())
    };
    let message_id = header("Message-ID").unwrap_or_default();
    let daticert = msg
        .as_ref()
        .and_then(|m| m.daticert_xml.as_deref())
        .and_then(|x| Daticert::from_xml(x).ok());
    let Some(d) = daticert else {
        return LogRecord {
            event: "invio".into(),
            msgid: message_id.clone(),
            sender: item.mail_from.clone(),
            recipients: rcpts.to_vec(),
            subject: header("Subject").unwrap_or_default(),
            related: vec![message_id],
            provider: g.config.provider.name.clone(),
        };
    };
    // The recipients of the original this sending carries (a transport envelope); a notice goes to
    // the sender's provider, so its record names every recipient of the original.
    let original: Vec<String> = d
        .intestazione
        .destinatari
        .iter()
        .map(|x| x.indirizzo.clone())
        .collect();
    let carried: Vec<String> = original
        .iter()
        .filter(|a| rcpts.iter().any(|r| r.eq_ignore_ascii_case(a)))
        .cloned()
        .collect();
    LogRecord {
        event: "invio".into(),
        msgid: d.dati.identificativo.clone(),
        sender: d.intestazione.mittente.clone(),
        recipients: match (carried.is_empty(), original.is_empty()) {
            (false, _) => carried,
            (true, false) => original,
            (true, true) => rcpts.to_vec(),
        },
        subject: d.intestazione.oggetto.clone().unwrap_or_default(),
        related: vec![message_id],
        provider: g.config.provider.name.clone(),
    }
}

/// Records the outcome of one item: the accepted recipients are never sent again; the transient
/// failures are retried alone with the backoff until the 24 h limit (RFC 5321 §4.5.4.1; RFC 6109
/// §2.2.2); ordinary recipients that fail for good get a bounce (digest §13).
async fn finish(
    g: &Gestore,
    item: &OutboxItem,
    r: ItemOutcome,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut lost: Vec<(String, String)> = r.permanent.clone();
    let why = |list: &[(String, String)]| {
        list.iter()
            .map(|(_, w)| w.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if r.transient.is_empty() {
        let mut summary = r.accepted.join("; ");
        if !r.permanent.is_empty() {
            summary = format!("{summary}; refused: {}", why(&r.permanent));
        }
        if r.accepted.is_empty() {
            g.store.outbox_retry(item.id, now, &summary, true).await?;
        } else {
            g.store.outbox_done(item.id, &summary).await?;
        }
    } else {
        let attempts = item.attempts + 1;
        let give_up = waited(attempts) >= GIVE_UP_AFTER;
        let reason = why(&r.transient);
        let again: Vec<String> = r.transient.iter().map(|(a, _)| a.clone()).collect();
        if give_up {
            g.store.outbox_retry(item.id, now, &reason, true).await?;
            lost.extend(r.transient.iter().cloned());
        } else if again.len() == item.rcpts.len() {
            g.store
                .outbox_retry(item.id, now + backoff(attempts), &reason, false)
                .await?;
        } else {
            // RFC 5321 §4.5.4.1: only the recipients that failed transiently are tried again.
            g.store
                .outbox_retry_rcpts(item.id, &again, now + backoff(attempts), &reason)
                .await?;
        }
    }
    bounce(g, item, &lost, now).await
}

/// Digest §13 (RFC 6109 §2.2.3): an ordinary (esterno) recipient of our user's envelope that
/// cannot be reached gets no PEC notice; the sender gets an ordinary non-delivery report
/// (RFC 3464 in form; RFC 5321 §4.5.5: to the reverse-path) in the mailbox.
async fn bounce(
    g: &Gestore,
    item: &OutboxItem,
    lost: &[(String, String)],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let esterni: Vec<&(String, String)> = lost
        .iter()
        .filter(|(a, _)| !g.directory.is_pec_address(a) && !g.is_local(a))
        .collect();
    if esterni.is_empty() || !item.key.starts_with("busta:") || !g.is_local(&item.mail_from) {
        return Ok(());
    }
    let domain = g.domain();
    let message_id = format!("<bounce.{}.{}@{domain}>", item.id, now.timestamp_millis());
    let mut text = String::from(
        "Il messaggio non e' stato consegnato ai seguenti destinatari di posta ordinaria:\r\n\r\n",
    );
    let mut status = String::new();
    for (a, w) in &esterni {
        text.push_str(&format!("  {a}: {w}\r\n"));
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {a}\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; {}\r\n",
            w.replace(['\r', '\n'], " ")
        ));
    }
    let headers_end = item
        .raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(item.raw.len(), |p| p + 2);
    let raw = format!(
        "From: Mail Delivery System <postmaster@{domain}>\r\nTo: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: {date}\r\nMessage-ID: {message_id}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"dsn\"\r\n\r\n--dsn\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n--dsn\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; {domain}\r\n{status}\r\n--dsn\r\nContent-Type: text/rfc822-headers\r\n\r\n{orig}\r\n--dsn--\r\n",
        to = item.mail_from,
        date = pec_formats::time::rfc5322_date(now),
        orig = String::from_utf8_lossy(&item.raw[..headers_end]),
    );
    let mut batch = Batch::new(now);
    batch.push(Op::Deliver {
        mailbox: item.mail_from.clone(),
        folder: "INBOX".into(),
        raw: raw.into_bytes(),
        kind: "ordinary".into(),
        message_id: Some(message_id.clone()),
    });
    batch.push(Op::Log(LogRecord {
        event: "mancata-consegna-esterno".into(),
        msgid: item
            .key
            .strip_prefix("busta:")
            .and_then(|k| k.rsplit_once(':'))
            .map_or(item.key.as_str(), |(id, _)| id)
            .to_string(),
        sender: item.mail_from.clone(),
        recipients: esterni.iter().map(|(a, _)| a.clone()).collect(),
        subject: String::new(),
        related: vec![message_id],
        provider: g.config.provider.name.clone(),
    }));
    g.store.commit(batch).await?;
    Ok(())
}

/// One pass over the due timers (RFC 6109 §3.1.6; digest §12). Returns how many fired.
pub async fn timers_pass(g: &Gestore) -> anyhow::Result<usize> {
    let now = g.clock.now();
    let due = g.store.due_timers(now).await?;
    for t in &due {
        let Some(phase) = parse_phase(&t.phase) else {
            continue;
        };
        let state = g
            .store
            .recipients(&t.identificativo)
            .await?
            .into_iter()
            .find(|r| r.address.eq_ignore_ascii_case(&t.address))
            .and_then(|r| RecipientState::parse(&r.state))
            .unwrap_or(RecipientState::Inviato);
        let mut batch = Batch::new(now);
        batch.push(Op::TimerFired {
            identificativo: t.identificativo.clone(),
            address: t.address.clone(),
            phase: t.phase.clone(),
        });
        if decide(phase, state) {
            timeout_notice(g, &mut batch, &t.identificativo, &t.address, phase, now).await?;
        }
        g.store.commit(batch).await?;
    }
    Ok(due.len())
}

async fn timeout_notice(
    g: &Gestore,
    batch: &mut Batch,
    identificativo: &str,
    rcpt: &str,
    phase: TimeoutPhase,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let xml = g
        .store
        .transaction_daticert(identificativo)
        .await?
        .with_context(|| format!("timer for unknown transaction {identificativo}"))?;
    let d = Daticert::from_xml(xml.as_bytes()).context("stored daticert")?;
    let c = Certification::from_daticert(&d, now);
    let n = build::mancata_consegna_timeout(&g.provider(), &c, rcpt, phase)
        .context("mancata consegna per superamento dei tempi massimi")?;
    // The sender is our own user: the notice goes straight to the mailbox.
    batch.push(Op::Deliver {
        mailbox: c.mittente.clone(),
        folder: "INBOX".into(),
        raw: n.raw,
        kind: Kind::MancataConsegnaTimeout.id().into(),
        message_id: Some(n.message_id.clone()),
    });
    if phase == TimeoutPhase::Finale24h {
        // After the 24h notice the provider stops tracking (digest §12).
        batch.push(Op::RecipientState {
            identificativo: identificativo.into(),
            address: rcpt.into(),
            state: RecipientState::Scaduto.as_str().into(),
        });
    }
    batch.push(Op::Log(LogRecord {
        event: match phase {
            TimeoutPhase::Preavviso12h => "preavviso-12h",
            TimeoutPhase::Finale24h => "mancata-consegna-24h",
        }
        .into(),
        msgid: identificativo.into(),
        sender: c.mittente.clone(),
        recipients: vec![rcpt.into()],
        subject: c.oggetto.clone().unwrap_or_default(),
        related: vec![n.message_id],
        provider: g.config.provider.name.clone(),
    }));
    Ok(())
}

/// Runs the outbox and the timers until `shutdown` turns true. Wakes on new work, on clock jumps
/// (a test advancing the clock) and at the next due time.
pub async fn run(g: Arc<Gestore>, mut shutdown: watch::Receiver<bool>) {
    let mut jumps = g.clock.jumps();
    // A SQLite store has one writing process, this one: a lease left by a run that died is held
    // by no live worker, so its items are due at once rather than after [`LEASE`].
    if g.store.backend() == Backend::Sqlite
        && let Err(e) = g.store.release_outbox_leases().await
    {
        tracing::error!("outbox: {e:#}");
    }
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut busy = false;
        match outbox_pass(&g).await {
            Ok(n) => busy |= n > 0,
            Err(e) => tracing::error!("outbox: {e:#}"),
        }
        match timers_pass(&g).await {
            Ok(n) => busy |= n > 0,
            Err(e) => tracing::error!("timers: {e:#}"),
        }
        // Digest §11: seal every past, unsealed day of the message log.
        if let Err(e) = crate::registro::seal_pass(&g.store, &g.config.log, g.clock.now()).await {
            tracing::error!("registro: {e:#}");
        }
        if busy {
            continue;
        }
        let wait = match g.store.next_wakeup().await {
            Ok(Some(at)) => (at - g.clock.now())
                .to_std()
                .unwrap_or_default()
                .clamp(std::time::Duration::from_millis(10), MAX_IDLE),
            _ => MAX_IDLE,
        };
        tokio::select! {
            _ = g.work.notified() => {}
            _ = jumps.changed() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_give_up_after_about_a_day() {
        assert_eq!(backoff(1), chrono::Duration::seconds(2));
        assert_eq!(backoff(3), chrono::Duration::seconds(8));
        assert_eq!(backoff(40), chrono::Duration::seconds(1800));
        // RFC 6109 §2.2.2: the queue limit is 24 h; the last retry falls within half an hour of it.
        let n = (1..).find(|n| waited(*n) >= GIVE_UP_AFTER).unwrap();
        assert!(waited(n - 1) < GIVE_UP_AFTER);
        assert!(waited(n) - GIVE_UP_AFTER <= chrono::Duration::minutes(30));
    }
}
