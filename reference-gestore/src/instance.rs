//! A running provider: its listeners (submission with implicit TLS and with STARTTLS, inbound SMTP),
//! the SMTP handlers that connect them to the access and reception points, and the worker. The same
//! code serves `pec-gestore serve`, `pec-gestore dev` and Rust tests that embed a provider
//! (`Instance::start` on `127.0.0.1:0` ports, then read `endpoints`).

use crate::access::{self, AccessConfig};
use crate::access_point::{self, Submitted};
use crate::clock::Clock;
use crate::config::Config;
use crate::gestore::Gestore;
use crate::password;
use crate::reception_point::{self, Received};
use crate::smtp::Reply;
use crate::smtp::server::{self, Handler, Mode, SessionConfig, SessionInfo};
use crate::store::Store;
use crate::tls;
use crate::worker;
use crate::{imap, pop3};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Where a running provider listens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoints {
    /// Submission with implicit TLS.
    pub submission_tls: Option<SocketAddr>,
    /// Submission with STARTTLS.
    pub submission_starttls: Option<SocketAddr>,
    /// Inbound SMTP.
    pub inbound: Option<SocketAddr>,
    /// IMAP with implicit TLS.
    pub imap_tls: Option<SocketAddr>,
    /// IMAP with STARTTLS.
    pub imap_starttls: Option<SocketAddr>,
    /// POP3 with implicit TLS.
    pub pop3_tls: Option<SocketAddr>,
    /// POP3 with STLS.
    pub pop3_starttls: Option<SocketAddr>,
}

/// A provider running inside this process.
pub struct Instance {
    /// Its context (store, config, clock...), for tests that look inside.
    pub gestore: Arc<Gestore>,
    /// Its listening addresses.
    pub endpoints: Endpoints,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// The access point's SMTP face: authenticated submission (RFC 6109 §3.1, §5.3).
struct SubmissionHandler(Arc<Gestore>);
/// The reception point's SMTP face (RFC 6109 §2.2.2).
struct InboundHandler(Arc<Gestore>);

/// The message with our `Received:` field prepended (RFC 5321 §4.4: a server that takes a message
/// adds one at the top and changes nothing else). Prepended to the header of the outermost
/// message, it is outside any signature: a transport envelope's S/MIME signature covers only its
/// body (RFC 6109 §4.3), and a submission is signed only later, inside the envelope.
fn with_trace(g: &Gestore, info: &SessionInfo, message: Vec<u8>) -> Vec<u8> {
    let date = pec_formats::time::rfc5322_date(g.clock.now());
    let mut out = info.received(g.domain(), &date).into_bytes();
    out.extend_from_slice(&message);
    out
}

impl Handler for SubmissionHandler {
    async fn authenticate(&self, user: &str, pass: &str) -> bool {
        let Ok(Some(account)) = self.0.store.account(user).await else {
            return false;
        };
        if account.disabled {
            return false;
        }
        let (pass, hash) = (pass.to_string(), account.password_hash);
        // scrypt is deliberately slow: off the async threads.
        tokio::task::spawn_blocking(move || password::verify(&pass, &hash))
            .await
            .unwrap_or(false)
    }
    async fn mail_from(&self, _info: &SessionInfo, _from: &str) -> Reply {
        // The sender is checked against the From and the user by the formal checks, whose failure
        // is a non-accettazione notice rather than an SMTP refusal (RFC 6109 §3.1.2).
        Reply::sender_ok("mittente accettato")
    }
    async fn rcpt_to(&self, _info: &SessionInfo, _rcpt: &str) -> Reply {
        Reply::new(250, [2, 1, 5], "destinatario accettato")
    }
    async fn data(
        &self,
        info: &SessionInfo,
        from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> Reply {
        let user = info.authenticated.clone().unwrap_or_default();
        let message = with_trace(&self.0, info, message);
        match access_point::submit(&self.0, &user, from, rcpts, &message).await {
            Ok(Submitted::Accepted { identificativo }) => Reply::ok(format!(
                "messaggio accettato, identificativo {identificativo}"
            )),
            Ok(Submitted::NotAccepted { reason }) => Reply::ok(format!(
                "messaggio non accettato ({reason}): avviso di non accettazione inviato"
            )),
            Ok(Submitted::Virus { name }) => Reply::ok(format!(
                "messaggio non accettato per virus ({name}): avviso inviato"
            )),
            Err(e) => {
                tracing::error!("submission: {e:#}");
                Reply::new(451, [4, 3, 0], "errore temporaneo, riprovare")
            }
        }
    }
}

impl Handler for InboundHandler {
    async fn authenticate(&self, _user: &str, _pass: &str) -> bool {
        false
    }
    async fn mail_from(&self, _info: &SessionInfo, _from: &str) -> Reply {
        Reply::sender_ok("ok")
    }
    async fn rcpt_to(&self, _info: &SessionInfo, rcpt: &str) -> Reply {
        let g = &self.0;
        if g.is_local(rcpt) || rcpt.eq_ignore_ascii_case(&g.config.provider.mail_receipt) {
            Reply::new(250, [2, 1, 5], "ok")
        } else {
            Reply::new(550, [5, 7, 1], "relay non consentito")
        }
    }
    async fn data(
        &self,
        info: &SessionInfo,
        from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> Reply {
        let message = with_trace(&self.0, info, message);
        match reception_point::receive(&self.0, from, rcpts, &message).await {
            Ok(Received::Done) => Reply::ok("preso in carico"),
            Ok(Received::Duplicate) => Reply::ok("gia' ricevuto"),
            Ok(Received::Refused(why)) => Reply::new(550, [5, 7, 1], why),
            Err(e) => {
                tracing::error!("reception: {e:#}");
                Reply::new(451, [4, 3, 0], "errore temporaneo, riprovare")
            }
        }
    }
}

async fn bind(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        // A port `dev::prepare` reserved in this process is taken over, not bound again.
        Some(a) => match crate::dev::take_reserved(a) {
            Some(l) => {
                l.set_nonblocking(true)?;
                Ok(Some(TcpListener::from_std(l)?))
            }
            None => Ok(Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding {a}"))?,
            )),
        },
    }
}

impl Instance {
    /// Starts a provider from its config: opens the store, binds every configured listener and
    /// starts the worker, which resumes any work a previous run left.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Instance> {
        let tls = tls::server_config_from_files(&config.tls.cert, &config.tls.key)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let l = config.listeners.clone();
        let g = Gestore::open(config, clock).await?;
        let hostname = g.domain().to_string();
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut endpoints = Endpoints {
            submission_tls: None,
            submission_starttls: None,
            inbound: None,
            imap_tls: None,
            imap_starttls: None,
            pop3_tls: None,
            pop3_starttls: None,
        };
        let profile = &g.config.profile;
        let session = |mode: Mode, implicit: bool| {
            let mut s = SessionConfig::new(hostname.clone(), mode);
            s.tls = Some(tls.clone());
            s.implicit_tls = implicit;
            // RFC 6109 §3.1.2: above the hard limit SMTP refuses; below it the formal check sends
            // a non-accettazione.
            s.max_message_size = profile.hard_message_size.0 as usize;
            s.max_recipients = profile.max_recipients.max(1) * 2;
            Arc::new(s)
        };
        for (addr, mode, implicit, slot) in [
            (
                l.submission_tls,
                Mode::Submission,
                true,
                &mut endpoints.submission_tls,
            ),
            (
                l.submission_starttls,
                Mode::Submission,
                false,
                &mut endpoints.submission_starttls,
            ),
            (l.inbound, Mode::Inbound, false, &mut endpoints.inbound),
        ] {
            let Some(listener) = bind(addr).await? else {
                continue;
            };
            *slot = Some(listener.local_addr()?);
            let cfg = session(mode, implicit);
            let rx = rx.clone();
            match mode {
                Mode::Submission => {
                    let h = Arc::new(SubmissionHandler(g.clone()));
                    tasks.spawn(async move {
                        if let Err(e) = server::serve(listener, cfg, h, rx).await {
                            tracing::error!("submission listener: {e}");
                        }
                    });
                }
                Mode::Inbound => {
                    let h = Arc::new(InboundHandler(g.clone()));
                    tasks.spawn(async move {
                        if let Err(e) = server::serve(listener, cfg, h, rx).await {
                            tracing::error!("inbound listener: {e}");
                        }
                    });
                }
            }
        }
        // Mailbox access (IMAP, POP3): RFC 6109 §5.3, TLS for the user's connection.
        let mut access_cfg =
            AccessConfig::new(g.store.clone(), Some(tls.clone()), hostname.clone());
        // APPEND takes what SMTP takes (RFC 6109 §3.1.2 hard limit): any stored message fits.
        access_cfg.max_append_size = profile.hard_message_size.0;
        let access_cfg = Arc::new(access_cfg);
        for (addr, imap, implicit, slot) in [
            (l.imap_tls, true, true, &mut endpoints.imap_tls),
            (l.imap_starttls, true, false, &mut endpoints.imap_starttls),
            (l.pop3_tls, false, true, &mut endpoints.pop3_tls),
            (l.pop3_starttls, false, false, &mut endpoints.pop3_starttls),
        ] {
            let Some(listener) = bind(addr).await? else {
                continue;
            };
            *slot = Some(listener.local_addr()?);
            let (cfg, rx) = (access_cfg.clone(), rx.clone());
            tasks.spawn(async move {
                let r = if imap {
                    access::serve(listener, cfg, implicit, rx, imap::session).await
                } else {
                    access::serve(listener, cfg, implicit, rx, pop3::session).await
                };
                if let Err(e) = r {
                    tracing::error!("mailbox access listener: {e}");
                }
            });
        }
        tasks.spawn(worker::run(g.clone(), rx));
        Ok(Instance {
            gestore: g,
            endpoints,
            shutdown,
            tasks,
        })
    }

    /// Stops the listeners and the worker and waits for them.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
