//! `pec-gestore admin`: what the provider manual lets an administrator do with mailboxes — create
//! (with a welcome message carrying the client settings), delete (with all data), disable, enable,
//! change the quota or the password. A disabled mailbox refuses login (IMAP, POP3, SMTP AUTH) and
//! delivery (the delivery point treats it as unknown).

use crate::config::Config;
use crate::password;
use crate::store::{Account, Batch, Op, SqlStore, Store};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

/// An administrator's mailbox operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxOp {
    /// Creates a mailbox with a password and an optional quota (bytes; the profile's default).
    Create {
        /// The address.
        address: String,
        /// The password.
        password: String,
        /// The quota in bytes.
        quota: Option<u64>,
    },
    /// Deletes a mailbox and all its messages.
    Delete {
        /// The address.
        address: String,
    },
    /// Disables a mailbox.
    Disable {
        /// The address.
        address: String,
    },
    /// Enables a disabled mailbox.
    Enable {
        /// The address.
        address: String,
    },
    /// Sets the quota (bytes).
    Quota {
        /// The address.
        address: String,
        /// The new quota.
        bytes: u64,
    },
    /// Sets a new password.
    Password {
        /// The address.
        address: String,
        /// The new password.
        password: String,
    },
}

fn addr_port(a: Option<std::net::SocketAddr>) -> String {
    a.map_or_else(|| "(not enabled)".into(), |a| a.to_string())
}

/// The welcome message a new holder finds in the INBOX: the client settings.
pub fn welcome_message(config: &Config, address: &str, at: DateTime<Utc>) -> Vec<u8> {
    let l = &config.listeners;
    let domain = config
        .provider
        .domains
        .first()
        .map(String::as_str)
        .unwrap_or("localhost");
    let body = format!(
        "Benvenuto nella casella di posta elettronica certificata {address}.\r\n\
         Welcome to your certified e-mail (PEC) mailbox {address}.\r\n\
         \r\n\
         Impostazioni del programma di posta / client settings (user name: {address}):\r\n\
         \r\n\
         IMAP (TLS):           {imaps}\r\n\
         IMAP (STARTTLS):      {imap}\r\n\
         POP3 (TLS):           {pop3s}\r\n\
         POP3 (STLS):          {pop3}\r\n\
         SMTP invio (TLS):     {smtps}\r\n\
         SMTP invio (STARTTLS): {smtp}\r\n\
         \r\n\
         Accesso solo su connessione cifrata, con nome utente e password.\r\n\
         Only encrypted connections are accepted, with user name and password.\r\n",
        imaps = addr_port(l.imap_tls),
        imap = addr_port(l.imap_starttls),
        pop3s = addr_port(l.pop3_tls),
        pop3 = addr_port(l.pop3_starttls),
        smtps = addr_port(l.submission_tls),
        smtp = addr_port(l.submission_starttls),
    );
    format!(
        "From: {from}\r\nTo: {address}\r\nSubject: Benvenuto nella casella PEC {address}\r\n\
         Date: {date}\r\nMessage-ID: <benvenuto.{ts}.{address}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\
         X-Provider: {domain}\r\n\r\n{body}",
        from = config.provider.service_address,
        date = at.to_rfc2822(),
        ts = at.timestamp_millis(),
    )
    .into_bytes()
}

/// Carries out one operation; returns a line for the administrator.
pub async fn run(config: &Config, store: &SqlStore, op: MailboxOp) -> anyhow::Result<String> {
    let existing = |a: &str| {
        let a = a.to_string();
        async move {
            match store.account(&a).await? {
                Some(acc) => Ok(acc),
                None => bail!("no mailbox {a}"),
            }
        }
    };
    match op {
        MailboxOp::Create {
            address,
            password,
            quota,
        } => {
            let Some((_, domain)) = address.rsplit_once('@') else {
                bail!("`{address}` is not an address");
            };
            if !config.is_local_domain(domain) {
                bail!("`{domain}` is not a domain of this provider");
            }
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            if store.account(&address).await?.is_some() {
                bail!("mailbox {address} already exists");
            }
            store
                .put_account(&Account {
                    address: address.clone(),
                    password_hash: password::hash(&password).context("hashing the password")?,
                    quota: quota.unwrap_or(config.profile.mailbox_quota.0) as i64,
                    disabled: false,
                })
                .await?;
            let now = Utc::now();
            let mut b = Batch::new(now);
            b.push(Op::Deliver {
                mailbox: address.clone(),
                folder: "INBOX".into(),
                raw: welcome_message(config, &address, now),
                kind: "welcome".into(),
                message_id: None,
            });
            store.commit(b).await?;
            Ok(format!("mailbox {address} created"))
        }
        MailboxOp::Delete { address } => {
            existing(&address).await?;
            store.delete_mailbox(&address).await?;
            Ok(format!("mailbox {address} deleted with all its messages"))
        }
        MailboxOp::Disable { address } => {
            let mut a = existing(&address).await?;
            a.disabled = true;
            store.put_account(&a).await?;
            Ok(format!("mailbox {address} disabled"))
        }
        MailboxOp::Enable { address } => {
            let mut a = existing(&address).await?;
            a.disabled = false;
            store.put_account(&a).await?;
            Ok(format!("mailbox {address} enabled"))
        }
        MailboxOp::Quota { address, bytes } => {
            let mut a = existing(&address).await?;
            a.quota = i64::try_from(bytes).context("quota too large")?;
            store.put_account(&a).await?;
            Ok(format!("mailbox {address}: quota {bytes} bytes"))
        }
        MailboxOp::Password { address, password } => {
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            let mut a = existing(&address).await?;
            a.password_hash = password::hash(&password).context("hashing the password")?;
            store.put_account(&a).await?;
            Ok(format!("mailbox {address}: password changed"))
        }
    }
}
