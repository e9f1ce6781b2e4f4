//! The reception point (punto di ricezione, RFC 6109 §2.2.2, §3.2; digest §7.2): everything that
//! arrives from other providers or the Internet. A valid transport envelope gets a presa in carico
//! and goes to the delivery point; a valid receipt goes to its mailbox and moves its transaction on;
//! a virus inside a valid envelope gets an avviso di rilevazione virus; anything else is ordinary
//! mail for the mailbox's policy (busta di anomalia, refusal or forwarding).

use crate::antivirus::Verdict;
use crate::config::OrdinaryMail;
use crate::delivery_point;
use crate::gestore::{Gestore, local_part};
use crate::store::{Batch, CommitOutcome, LogRecord, Op, Store};
use crate::timers::{RecipientState, phase_name};
use anyhow::Context;
use chrono::{DateTime, Utc};
use pec_formats::build::{self, Certification};
use pec_formats::daticert::Daticert;
use pec_formats::directory::ProviderEntry;
use pec_formats::hex;
use pec_formats::kind::{Kind, TimeoutPhase};
use pec_formats::parse::{self, PecMessage};
use pec_formats::smime::{self, Outcome, VerifyOptions};

/// What became of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Committed (delivered, wrapped, forwarded, or kept in the virus store).
    Done,
    /// The same message was received before: nothing done again.
    Duplicate,
    /// Refused at SMTP, with the reason (ordinary mail where the profile refuses it).
    Refused(String),
}

/// A PEC message whose signature, origin and validity were checked (digest §7.2 steps 1-4).
pub struct Verified {
    /// The parsed message.
    pub msg: PecMessage,
    /// Its kind.
    pub kind: Kind,
    /// The provider that signed it, from the directory.
    pub provider: ProviderEntry,
    /// Its certification data (absent only on the anomaly envelope).
    pub daticert: Option<Daticert>,
}

/// Checks a message as the reception point must (RFC 6109 §2.2.2; digest §7.2), in order:
/// a PEC message at all, signature present, signature origin (a provider in the directory),
/// signature validity and chain at `now`, formal correctness of its certification data.
/// The error says which check failed: it becomes the anomaly envelope's reason.
pub fn verify(g: &Gestore, raw: &[u8], now: DateTime<Utc>) -> Result<Verified, String> {
    let msg = parse::parse(raw).map_err(|e| e.to_string())?;
    let kind = msg.kind.ok_or("messaggio non di posta certificata")?;
    let signed = msg.signed.as_ref().ok_or("firma assente")?;
    let der = signed.signature_der.as_ref().ok_or("firma assente")?;
    // Digest §7.2: the CRL of the signer's CA is checked when the config names one.
    let crls = (!g.crls.crls.is_empty()).then_some(&g.crls);
    let report = smime::verify_detached_with_crls(
        &signed.content,
        der,
        &VerifyOptions {
            trust: Some(&g.trust),
            at: Some(now),
        },
        crls,
    )
    .map_err(|e| format!("firma non leggibile: {e}"))?;
    for (what, o) in [
        ("integrita'", &report.integrity),
        ("catena di certificazione", &report.chain),
        ("validita' del certificato", &report.validity),
    ] {
        if let Outcome::Fail(why) | Outcome::NotChecked(why) = o {
            return Err(format!("firma non valida ({what}): {why}"));
        }
    }
    // A revoked signer is refused; a CA with no configured CRL stays "not checked" (allowed).
    if let Outcome::Fail(why) = &report.revocation {
        return Err(format!("firma non valida (certificato revocato): {why}"));
    }
    let signer = report
        .signer
        .as_ref()
        .ok_or("certificato del firmatario assente")?;
    let provider = g
        .directory
        .provider_for_certificate(signer)
        .ok_or("il firmatario non e' un gestore dell'indice")?
        .clone();
    let daticert = match msg.daticert_xml.as_deref() {
        Some(xml) => Some(Daticert::from_xml(xml).map_err(|e| e.to_string())?),
        None if kind == Kind::BustaAnomalia => None,
        None => return Err("daticert.xml assente".into()),
    };
    if let (Some(d), Some(tipo)) = (&daticert, kind.daticert_tipo())
        && d.tipo != tipo
    {
        return Err(format!(
            "daticert.xml di tipo {} in un messaggio {}",
            d.tipo,
            kind.id()
        ));
    }
    Ok(Verified {
        msg,
        kind,
        provider,
        daticert,
    })
}

fn log_record(
    event: &str,
    c: &Certification,
    rcpts: &[String],
    related: Vec<String>,
    provider: &str,
) -> Op {
    Op::Log(LogRecord {
        event: event.into(),
        msgid: c.identificativo.clone(),
        sender: c.mittente.clone(),
        recipients: rcpts.to_vec(),
        subject: c.oggetto.clone().unwrap_or_default(),
        related,
        provider: provider.into(),
    })
}

/// The message without the first header field when it is a `Received:` trace field (with its
/// folded lines): the one our SMTP face prepends carries the time of each attempt, so a resend of
/// the same bytes differs only there (RFC 5321 §4.4), and content keys must not see it.
fn untraced(raw: &[u8]) -> &[u8] {
    if raw.len() < 9 || !raw[..9].eq_ignore_ascii_case(b"received:") {
        return raw;
    }
    let mut at = 0;
    while let Some(nl) = raw[at..].iter().position(|&b| b == b'\n') {
        at += nl + 1;
        // A folded field continues on lines that start with white space (RFC 5322 §2.2.3).
        if !matches!(raw.get(at), Some(b' ' | b'\t')) {
            return &raw[at..];
        }
    }
    raw
}

/// Handles one message received for `rcpts` (our addresses) from `mail_from`.
pub async fn receive(
    g: &Gestore,
    mail_from: &str,
    rcpts: &[String],
    raw: &[u8],
) -> anyhow::Result<Received> {
    let now = g.clock.now();
    let mut batch = Batch::new(now);
    let verified = verify(g, raw, now);
    // A message re-sent after a crash of its sender is recognised by Message-ID and recipients.
    let message_id = match &verified {
        Ok(v) => v.msg.header("Message-ID").map(str::to_string),
        Err(_) => parse::parse(raw)
            .ok()
            .and_then(|m| m.header("Message-ID").map(str::to_string)),
    };
    // A message without Message-ID (ordinary mail may lack one) is recognised by its bytes: a
    // sender that crashed after our 250 and before recording it sends the same bytes again, and
    // keying on Message-ID alone let that resend through as a second anomaly envelope.
    let seen_id = message_id
        .clone()
        .unwrap_or_else(|| format!("sha256:{}", hex(&openssl::sha::sha256(untraced(raw)))));
    let mut r: Vec<String> = rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    batch.push(Op::Seen {
        message_id: format!("{seen_id} {}", r.join(",")),
    });
    match verified {
        Ok(v) if v.kind == Kind::BustaTrasporto => envelope(g, &mut batch, v, rcpts, raw).await?,
        Ok(v) if v.kind == Kind::BustaAnomalia => {
            // A valid anomaly envelope from another provider is delivered as it is, with no receipt
            // (RFC 6109 §3.3.2).
            for r in rcpts {
                batch.push(Op::Deliver {
                    mailbox: r.clone(),
                    folder: "INBOX".into(),
                    raw: raw.to_vec(),
                    kind: v.kind.id().into(),
                    message_id: message_id.clone(),
                });
            }
        }
        Ok(v) => receipt(g, &mut batch, v, rcpts, raw).await?,
        Err(reason) => {
            if let Some(r) = ordinary(g, &mut batch, mail_from, rcpts, raw, &reason).await? {
                return Ok(r);
            }
        }
    }
    Ok(match g.store.commit(batch).await? {
        CommitOutcome::Committed => {
            g.work.notify_one();
            Received::Done
        }
        CommitOutcome::Duplicate => Received::Duplicate,
    })
}

/// A valid transport envelope (RFC 6109 §3.2.1, §3.2.3).
async fn envelope(
    g: &Gestore,
    batch: &mut Batch,
    v: Verified,
    rcpts: &[String],
    raw: &[u8],
) -> anyhow::Result<()> {
    let d = v.daticert.as_ref().context("envelope without daticert")?;
    let c = Certification::from_daticert(d, batch.at);
    let p = g.provider();
    let id = c.identificativo.clone();
    let me = g.config.provider.name.clone();
    // The reserved test address plays a provider that never answers for it: the envelope is taken
    // and nothing follows, so the sender's provider reaches its 12h and 24h notices (README, "Test
    // addresses").
    let silent = |r: &String| {
        g.config.profile.test_addresses
            && local_part(r).eq_ignore_ascii_case(delivery_point::TEST_SILENT)
    };
    if rcpts.iter().any(silent) {
        let quiet: Vec<String> = rcpts.iter().filter(|r| silent(r)).cloned().collect();
        batch.push(log_record("silenzio-di-prova", &c, &quiet, vec![], &me));
    }
    let rcpts: Vec<String> = rcpts.iter().filter(|r| !silent(r)).cloned().collect();
    let rcpts = rcpts.as_slice();
    if rcpts.is_empty() {
        return Ok(());
    }
    let from = g.config.provider.service_address.clone();
    let to = v.provider.mail_receipt.clone();
    let mut verdict = g.antivirus.scan(raw).await?;
    // The reserved test address makes this provider find a virus that the sender's provider
    // missed (README, "Test addresses").
    if g.config.profile.test_addresses
        && rcpts
            .iter()
            .any(|r| local_part(r).eq_ignore_ascii_case(delivery_point::TEST_VIRUS))
    {
        verdict = Verdict::Infected("Test.Virus.Ricezione".into());
    }
    if let Verdict::Infected(name) = verdict {
        // RFC 6109 §3.2.3: not delivered; one avviso di rilevazione virus per recipient to the
        // sending provider; the envelope goes to the virus store.
        let mut related = Vec::new();
        for r in rcpts {
            let n = build::rilevazione_virus(&p, &c, r, &name, &to).context("rilevazione virus")?;
            related.push(n.message_id.clone());
            batch.push(Op::Enqueue {
                key: format!("rilevazione-virus:{id}:{}", r.to_ascii_lowercase()),
                mail_from: from.clone(),
                rcpts: vec![to.clone()],
                raw: n.raw,
            });
        }
        batch.push(Op::Virus {
            point: "reception-point".into(),
            virus: name,
            identificativo: Some(id.clone()),
            raw: raw.to_vec(),
        });
        batch.push(log_record("rilevazione-virus", &c, rcpts, related, &me));
        return Ok(());
    }
    // RFC 6109 §3.2.1: one presa in carico covering the recipients of this SMTP transaction, to the
    // sending provider's mailReceipt from the directory.
    let presa = build::presa_in_carico(&p, &c, rcpts, &to).context("presa in carico")?;
    let mut covered: Vec<String> = rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
    covered.sort();
    batch.push(Op::Enqueue {
        key: format!("presa-in-carico:{id}:{}", covered.join(",")),
        mail_from: from.clone(),
        rcpts: vec![to],
        raw: presa.raw.clone(),
    });
    batch.push(log_record(
        "presa-in-carico",
        &c,
        rcpts,
        vec![presa.message_id],
        &me,
    ));
    for r in rcpts {
        delivery_point::deliver_envelope(g, batch, raw, v.msg.postacert.as_deref(), &c, r).await?;
    }
    Ok(())
}

/// A valid receipt or notice: delivered as it is (never causing another receipt, RFC 6109 §2.2.2),
/// and the transaction it concerns moves on.
async fn receipt(
    g: &Gestore,
    batch: &mut Batch,
    v: Verified,
    rcpts: &[String],
    raw: &[u8],
) -> anyhow::Result<()> {
    let d = v.daticert.as_ref().context("receipt without daticert")?;
    let c = Certification::from_daticert(d, batch.at);
    let id = c.identificativo.clone();
    for r in rcpts {
        batch.push(Op::Deliver {
            mailbox: r.clone(),
            folder: "INBOX".into(),
            raw: raw.to_vec(),
            kind: v.kind.id().into(),
            message_id: v.msg.header("Message-ID").map(str::to_string),
        });
    }
    // RFC 6109 §2.3: the record names the recipients of the original (the receipt's daticert
    // lists them), not the mailbox the receipt goes to, and the received message as related.
    let original: Vec<String> = c.destinatari.iter().map(|d| d.indirizzo.clone()).collect();
    batch.push(log_record(
        &format!("ricezione-{}", v.kind.id()),
        &c,
        if original.is_empty() {
            rcpts
        } else {
            &original
        },
        v.msg
            .header("Message-ID")
            .map(|m| vec![m.trim_matches(|c| c == '<' || c == '>').to_string()])
            .unwrap_or_default(),
        &v.provider.name,
    ));
    // RFC 6109 §2.2.2, §3.2.4: the sending provider turns the virus notice into the avviso di
    // mancata consegna per virus for its user. The notice is signed by a provider of the directory,
    // so it is honoured also for a transaction this store no longer tracks (e.g. after the 24h
    // closure), as long as the sender is one of our users.
    let consegna = d.dati.consegna.clone().unwrap_or_default();
    let mut virus_rcpt = None;
    if v.kind == Kind::RilevazioneVirus && g.is_local(&c.mittente) {
        let p = g.provider();
        let virus = d
            .dati
            .errore_esteso
            .clone()
            .unwrap_or_else(|| "virus".into());
        let rcpt = if consegna.is_empty() {
            d.dati.ricezione.first().cloned().unwrap_or_default()
        } else {
            consegna.clone()
        };
        let n = build::mancata_consegna_virus(&p, &c, &rcpt, &virus)
            .context("mancata consegna per virus")?;
        batch.push(Op::Deliver {
            mailbox: c.mittente.clone(),
            folder: "INBOX".into(),
            raw: n.raw,
            kind: Kind::MancataConsegnaVirus.id().into(),
            message_id: Some(n.message_id),
        });
        virus_rcpt = Some(rcpt);
    }
    let ours = g.store.recipients(&id).await?;
    if ours.is_empty() {
        return Ok(()); // Not a transaction of ours: delivered, nothing to move on.
    }
    let state_of = |a: &str| {
        ours.iter()
            .find(|r| r.address.eq_ignore_ascii_case(a))
            .and_then(|r| RecipientState::parse(&r.state))
    };
    let set = |batch: &mut Batch, a: &str, s: RecipientState, cancel: bool| {
        batch.push(Op::RecipientState {
            identificativo: id.clone(),
            address: a.to_string(),
            state: s.as_str().into(),
        });
        if cancel {
            batch.push(Op::CancelTimers {
                identificativo: id.clone(),
                address: a.to_string(),
                phases: [TimeoutPhase::Preavviso12h, TimeoutPhase::Finale24h]
                    .map(|p| phase_name(p).to_string())
                    .to_vec(),
            });
        }
    };
    match v.kind {
        // RFC 6109 §3.1.6: a presa in carico stops the 12h notice for the recipients it covers.
        Kind::PresaInCarico => {
            for r in &d.dati.ricezione {
                if state_of(r) == Some(RecipientState::Inviato) {
                    set(batch, r, RecipientState::PresaInCarico, false);
                }
            }
        }
        Kind::AvvenutaConsegna => set(batch, &consegna, RecipientState::Consegnato, true),
        Kind::MancataConsegna | Kind::MancataConsegnaVirus => {
            set(batch, &consegna, RecipientState::Errore, true)
        }
        Kind::RilevazioneVirus => {
            if let Some(rcpt) = &virus_rcpt {
                set(batch, rcpt, RecipientState::Errore, true);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Ordinary mail, or a message that failed the checks (RFC 6109 §2.2.2, §3.2.2; digest §13): the
/// profile decides. Returns a final answer when the message is refused.
async fn ordinary(
    g: &Gestore,
    batch: &mut Batch,
    mail_from: &str,
    rcpts: &[String],
    raw: &[u8],
    reason: &str,
) -> anyhow::Result<Option<Received>> {
    let me = g.config.provider.name.clone();
    let record = |event: &str| {
        Op::Log(LogRecord {
            event: event.into(),
            msgid: String::new(),
            sender: mail_from.to_string(),
            recipients: rcpts.to_vec(),
            subject: String::new(),
            related: vec![reason.to_string()],
            provider: me.clone(),
        })
    };
    if let Verdict::Infected(name) = g.antivirus.scan(raw).await? {
        // Infected ordinary mail may be dropped (digest §13); it is kept in the virus store.
        batch.push(Op::Virus {
            point: "reception-point".into(),
            virus: name,
            identificativo: None,
            raw: raw.to_vec(),
        });
        batch.push(record("virus"));
        return Ok(None);
    }
    match &g.config.profile.ordinary_mail {
        OrdinaryMail::Refuse => Ok(Some(Received::Refused(format!(
            "casella di posta certificata: messaggio non accettato ({reason})"
        )))),
        OrdinaryMail::Forward(to) => {
            let digest = openssl::sha::sha256(untraced(raw));
            batch.push(Op::Enqueue {
                key: format!("forward:{}", hex(&digest)),
                mail_from: mail_from.to_string(),
                rcpts: vec![to.clone()],
                raw: raw.to_vec(),
            });
            batch.push(record("inoltro"));
            Ok(None)
        }
        OrdinaryMail::Anomaly => {
            // RFC 6109 §3.2.2: the busta di anomalia, delivered with no receipt.
            let b = build::busta_anomalia(&g.provider(), raw, reason, batch.at)
                .context("busta di anomalia")?;
            for r in rcpts {
                if g.store.account(r).await?.is_some_and(|a| !a.disabled) {
                    batch.push(Op::Deliver {
                        mailbox: r.clone(),
                        folder: "INBOX".into(),
                        raw: b.raw.clone(),
                        kind: Kind::BustaAnomalia.id().into(),
                        message_id: Some(b.message_id.clone()),
                    });
                }
            }
            batch.push(record("anomalia"));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_keys_skip_only_a_leading_trace_field() {
        let body = b"From: a@b\r\nSubject: x\r\n\r\nbody\r\n";
        let mut one = b"Received: from x by y;\r\n Mon, 1 Dec 2026 10:00:00 +0100\r\n".to_vec();
        one.extend_from_slice(body);
        let mut two = b"Received: from x by y;\r\n Mon, 1 Dec 2026 10:00:01 +0100\r\n".to_vec();
        two.extend_from_slice(body);
        assert_eq!(super::untraced(&one), body);
        assert_eq!(super::untraced(&one), super::untraced(&two));
        assert_eq!(super::untraced(body), body);
        assert_eq!(super::untraced(b"Received: no end"), b"Received: no end");
    }
}
