//! The delivery point (punto di consegna, RFC 6109 §2.2.3, §3.3): stores a valid transport envelope
//! in the recipient's mailbox, unmodified, and owes one receipt per recipient: the ricevuta di
//! avvenuta consegna of the type the sender asked for, or the avviso di mancata consegna.

use crate::gestore::{Gestore, local_part};
use crate::store::{Batch, LogRecord, Op, Store};
use anyhow::Context;
use pec_formats::build::{self, Certification};
use pec_formats::kind::{Errore, Kind};

/// Reserved local parts that trigger the hard paths on demand when the profile enables them
/// (README, "Test addresses").
pub const TEST_FULL: &str = "test-casella-piena";
/// A mailbox that never exists.
pub const TEST_UNKNOWN: &str = "test-inesistente";
/// A recipient whose provider finds a virus in every envelope addressed to it (the reception
/// point's virus path, RFC 6109 §3.2.3, without a sender provider that misses the virus).
pub const TEST_VIRUS: &str = "test-virus";
/// A recipient whose provider takes the envelope and never answers: no presa in carico, no
/// delivery, no receipt; the sender's provider reaches the 12h and 24h notices (RFC 6109 §3.1.6).
pub const TEST_SILENT: &str = "test-nessuna-risposta";

/// Why a recipient cannot be delivered to, with the `errore` and `errore-esteso` of the notice.
async fn refusal(g: &Gestore, rcpt: &str, size: usize) -> anyhow::Result<Option<(Errore, String)>> {
    let name = &g.config.provider.name;
    let test = g.config.profile.test_addresses;
    let full_test = test && local_part(rcpt).eq_ignore_ascii_case(TEST_FULL);
    let account = g.store.account(rcpt).await?;
    let unknown = !full_test
        && (account.as_ref().is_none_or(|a| a.disabled)
            || (test && local_part(rcpt).eq_ignore_ascii_case(TEST_UNKNOWN)));
    if unknown {
        // RFC 6109 §3.3.3: errore no-dest for a mailbox that does not exist. (Aruba sends `altro`
        // with the same text; consumers key on tipo: digest §5.10.)
        return Ok(Some((
            Errore::NoDest,
            format!("5.1.1 - {name} - indirizzo non valido"),
        )));
    }
    let full = full_test
        || match &account {
            Some(a) => g.store.mailbox_size(rcpt).await? + size as i64 > a.quota,
            None => false,
        };
    if full {
        // RFC 6109 §3.3.3: a full mailbox is a delivery error; `altro` with the SMTP-style code.
        return Ok(Some((
            Errore::Altro,
            format!("5.2.2 - {name} - casella piena"),
        )));
    }
    Ok(None)
}

/// Delivers a valid transport envelope to one of our recipients and queues the receipt owed to the
/// sender (RFC 6109 §3.3.2, §3.3.3). `original` is the envelope's postacert.eml, `primary` whether
/// the recipient is in the original's To (or ambiguous).
pub async fn deliver_envelope(
    g: &Gestore,
    batch: &mut Batch,
    envelope: &[u8],
    original: Option<&[u8]>,
    c: &Certification,
    rcpt: &str,
) -> anyhow::Result<()> {
    let p = g.provider();
    let id = &c.identificativo;
    let (receipt, kind, event) = match refusal(g, rcpt, envelope.len()).await? {
        Some((errore, esteso)) => (
            build::mancata_consegna(&p, c, rcpt, errore, &esteso).context("mancata consegna")?,
            Kind::MancataConsegna,
            "mancata-consegna",
        ),
        None => {
            // RFC 6109 §3.3: stored unmodified; "delivered" means stored (digest §12).
            batch.push(Op::Deliver {
                mailbox: rcpt.to_string(),
                folder: "INBOX".into(),
                raw: envelope.to_vec(),
                kind: Kind::BustaTrasporto.id().into(),
                message_id: Some(id.clone()),
            });
            let primary = original.is_none_or(|o| build::is_primary_recipient(o, rcpt));
            let variant = build::receipt_variant(c.ricevuta, primary);
            (
                build::avvenuta_consegna(&p, c, rcpt, variant, original)
                    .context("avvenuta consegna")?,
                Kind::AvvenutaConsegna,
                "consegna",
            )
        }
    };
    // Notices go to the original's reverse-path (RFC 6109 §2.1), one per recipient.
    batch.push(Op::Enqueue {
        key: format!("{}:{id}:{}", kind.id(), rcpt.to_ascii_lowercase()),
        mail_from: g.config.provider.service_address.clone(),
        rcpts: vec![c.mittente.clone()],
        raw: receipt.raw.clone(),
    });
    batch.push(Op::Log(LogRecord {
        event: event.into(),
        msgid: id.clone(),
        sender: c.mittente.clone(),
        recipients: vec![rcpt.to_string()],
        subject: c.oggetto.clone().unwrap_or_default(),
        related: vec![receipt.message_id.clone()],
        provider: g.config.provider.name.clone(),
    }));
    Ok(())
}
