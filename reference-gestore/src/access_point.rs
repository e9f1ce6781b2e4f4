//! The access point (punto di accesso, RFC 6109 §2.2.1, §3.1): authenticated submission, formal
//! checks, antivirus, acceptance or non-acceptance, the transport envelope, the timers.
//!
//! [`submit`] does one submission from start to end and commits, in one batch, the acceptance (or
//! non-acceptance) notice, the envelopes owed to every recipient, the timers and the log records:
//! the SMTP 250 follows only that commit.

pub mod formal;

use crate::antivirus::Verdict;
use crate::gestore::{Gestore, domain_of};
use crate::store::{Batch, LogRecord, Op, Store};
use crate::timers::phase_name;
use anyhow::Context;
use chrono::{DateTime, Utc};
use pec_formats::build::{self, Built, Certification};
use pec_formats::daticert::Destinatario;
use pec_formats::kind::{Kind, TimeoutPhase, TipoDestinatario, TipoRicevuta};
use std::collections::BTreeMap;

/// What became of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Accepted: the ricevuta di accettazione is in the sender's mailbox and the envelopes queued.
    Accepted {
        /// The identificativo given (RFC 6109 §2.2.1).
        identificativo: String,
    },
    /// Not accepted for a formal error: the avviso di non accettazione is in the sender's mailbox.
    NotAccepted {
        /// The reason, as the notice states it.
        reason: String,
    },
    /// Not accepted because of a virus (RFC 6109 §3.1.3): notice sent, message in the virus store.
    Virus {
        /// The virus found.
        name: String,
    },
}

/// The certification data of a submission; for a message too broken to read, what the SMTP
/// envelope alone says (the non-accettazione still names sender and recipients).
fn certification(
    g: &Gestore,
    raw: &[u8],
    mail_from: &str,
    rcpts: &[String],
    identificativo: &str,
    now: DateTime<Utc>,
) -> Certification {
    let kind_of = |a: &str| {
        // RFC 6109 §2.2.1: the recipient's kind by a case-insensitive lookup of its domain in the
        // directory's managedDomains.
        if g.directory.is_pec_address(a) || g.is_local(a) {
            TipoDestinatario::Certificato
        } else {
            TipoDestinatario::Esterno
        }
    };
    Certification::from_submission(
        raw,
        mail_from,
        rcpts,
        &kind_of,
        identificativo.to_string(),
        now,
    )
    .unwrap_or_else(|_| Certification {
        mittente: mail_from.to_string(),
        destinatari: rcpts
            .iter()
            .map(|r| Destinatario {
                tipo: kind_of(r),
                indirizzo: r.clone(),
            })
            .collect(),
        risposte: mail_from.to_string(),
        oggetto: None,
        msgid: None,
        identificativo: identificativo.to_string(),
        ricevuta: TipoRicevuta::Completa,
        time: now,
    })
}

fn log(event: &str, c: &Certification, related: Vec<String>, provider: &str) -> Op {
    Op::Log(LogRecord {
        event: event.into(),
        msgid: c.identificativo.clone(),
        sender: c.mittente.clone(),
        recipients: c.destinatari.iter().map(|d| d.indirizzo.clone()).collect(),
        subject: c.oggetto.clone().unwrap_or_default(),
        related,
        provider: provider.into(),
    })
}

/// Puts a notice for one of our own users straight into their mailbox: the access point and the
/// user's mailbox are the same provider, so there is no SMTP hop to make.
fn deliver_notice(batch: &mut Batch, to: &str, kind: Kind, built: &Built) {
    batch.push(Op::Deliver {
        mailbox: to.to_string(),
        folder: "INBOX".into(),
        raw: built.raw.clone(),
        kind: kind.id().into(),
        message_id: Some(built.message_id.clone()),
    });
}

/// Handles one authenticated submission (RFC 6109 §3.1). `user` is the SMTP AUTH identity.
pub async fn submit(
    g: &Gestore,
    user: &str,
    mail_from: &str,
    rcpts: &[String],
    raw: &[u8],
) -> anyhow::Result<Submitted> {
    let now = g.clock.now(); // RFC 6109 §4.1: one time value for the whole transaction.
    let p = g.provider();
    let provider_name = g.config.provider.name.clone();
    let identificativo = build::new_identificativo(g.domain());
    let c = certification(g, raw, mail_from, rcpts, &identificativo, now);
    let mut batch = Batch::new(now);

    // RFC 6109 §3.1.1: the formal checks, each failure with its own notice text (§3.1.2).
    let sub = formal::Submission {
        user,
        mail_from,
        rcpts,
        message: raw,
    };
    if let Err(e) = formal::check(sub, &g.config.profile) {
        let reason = e.descrizione();
        let notice = build::non_accettazione(&p, &c, &reason).context("non-accettazione")?;
        deliver_notice(&mut batch, user, Kind::NonAccettazione, &notice);
        batch.push(log(
            "non-accettazione",
            &c,
            vec![notice.message_id.clone()],
            &provider_name,
        ));
        g.store.commit(batch).await?;
        return Ok(Submitted::NotAccepted { reason });
    }

    // RFC 6109 §3.1.3, §5.4: the antivirus before acceptance.
    if let Verdict::Infected(name) = g.antivirus.scan(raw).await? {
        let notice =
            build::non_accettazione_virus(&p, &c, &name).context("non-accettazione per virus")?;
        deliver_notice(&mut batch, user, Kind::NonAccettazioneVirus, &notice);
        // RFC 6109 §2.2.4: the infected message is kept in the virus store.
        batch.push(Op::Virus {
            point: "access-point".into(),
            virus: name.clone(),
            identificativo: Some(identificativo.clone()),
            raw: raw.to_vec(),
        });
        batch.push(log(
            "virus",
            &c,
            vec![notice.message_id.clone()],
            &provider_name,
        ));
        g.store.commit(batch).await?;
        return Ok(Submitted::Virus { name });
    }

    // RFC 6109 §3.1.4: the ricevuta di accettazione to the sender.
    let acc = build::accettazione(&p, &c).context("accettazione")?;
    // RFC 6109 §3.1.5: one transport envelope for every recipient, certified and ordinary.
    let env = build::busta_trasporto(&p, &c, raw).context("busta di trasporto")?;
    batch.push(Op::Transaction {
        identificativo: identificativo.clone(),
        sender: c.mittente.clone(),
        client_msgid: c.msgid.clone(),
        subject: c.oggetto.clone().unwrap_or_default(),
        tipo_ricevuta: c.ricevuta.as_str().into(),
        recipients: c
            .destinatari
            .iter()
            .map(|d| (d.indirizzo.clone(), d.tipo.as_str().to_string()))
            .collect(),
        daticert: acc
            .daticert
            .as_ref()
            .map(|d| d.to_xml())
            .unwrap_or_default(),
    });
    deliver_notice(&mut batch, user, Kind::Accettazione, &acc);
    // The user's own copy of what was sent, where mail clients look for it.
    batch.push(Op::Deliver {
        mailbox: user.to_string(),
        folder: "Sent".into(),
        raw: raw.to_vec(),
        kind: "ordinary".into(),
        message_id: c.msgid.clone(),
    });
    // One SMTP transaction per destination domain (RFC 6109 §3.2.1: each recipient provider answers
    // for the recipients of its transaction); our own domains are handed over in-process.
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rcpts {
        let d = domain_of(r).unwrap_or_default().to_ascii_lowercase();
        by_domain.entry(d).or_default().push(r.clone());
    }
    for (domain, group) in by_domain {
        batch.push(Op::Enqueue {
            key: format!("busta:{identificativo}:{domain}"),
            // RFC 6109 §3.1.5: forward and reverse paths stay those of the original.
            mail_from: mail_from.to_string(),
            rcpts: group,
            raw: env.raw.clone(),
        });
    }
    // RFC 6109 §3.1.6; digest §12-§13: timers for certified recipients only [ANALYSIS].
    let t = &g.config.timeouts;
    // The 24h notice must go out by 24h and not before 22h: arm it at 23/24 of the final deadline,
    // in the middle of that window, so a busy worker still sends it in time.
    let finale = t.finale.chrono() * 23 / 24;
    for d in c
        .destinatari
        .iter()
        .filter(|d| d.tipo == TipoDestinatario::Certificato)
    {
        for (phase, after) in [
            (TimeoutPhase::Preavviso12h, t.preavviso.chrono()),
            (TimeoutPhase::Finale24h, finale),
        ] {
            batch.push(Op::ArmTimer {
                identificativo: identificativo.clone(),
                address: d.indirizzo.clone(),
                phase: phase_name(phase).into(),
                due: now + after,
            });
        }
    }
    batch.push(log(
        "accettazione",
        &c,
        vec![acc.message_id.clone(), env.message_id.clone()],
        &provider_name,
    ));
    g.store.commit(batch).await?;
    g.work.notify_one();
    Ok(Submitted::Accepted { identificativo })
}
