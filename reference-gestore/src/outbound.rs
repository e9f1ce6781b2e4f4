//! Outbound SMTP to other providers (RFC 6109 §5.3: TLS between providers). The peer's certificate
//! is checked against the configured trust anchors. Several queued messages for the same route go
//! over one SMTP session (RFC 5321 §3.3: a session may carry several transactions), and every
//! recipient gets its own outcome, so that only the transient refusals are retried
//! (RFC 5321 §4.2.5, §4.5.4.1).

use crate::gestore::Gestore;
use crate::smtp::client::{ClientError, ClientTls, SendResult, SmtpClient};
use crate::worker::SendFailure;

/// At most this many transactions go over one session before it is closed and a new one opened
/// (bounded sessions, so one route cannot hold a connection forever).
pub const MAX_PER_SESSION: usize = 50;

/// One message for one route.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// SMTP reverse-path.
    pub mail_from: &'a str,
    /// The recipients at this route.
    pub rcpts: &'a [String],
    /// The message.
    pub raw: &'a [u8],
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The peer took the message for this recipient (its final reply).
    Accepted(String),
    /// Try this recipient again later (4xx, connection failure, timeout).
    Transient(String),
    /// Never try this recipient again (5xx).
    Permanent(String),
}

impl RcptOutcome {
    fn from_error(route: &str, e: &ClientError) -> RcptOutcome {
        match e {
            ClientError::Rejected { reply, .. } if reply.code >= 500 => {
                RcptOutcome::Permanent(format!("{route}: {e}"))
            }
            _ => RcptOutcome::Transient(format!("{route}: {e}")),
        }
    }
}

/// The outcome of each recipient of `job`, from the result of its transaction.
fn outcomes(route: &str, job: &Job<'_>, r: &SendResult) -> Vec<(String, RcptOutcome)> {
    job.rcpts
        .iter()
        .map(|rcpt| {
            let reply = r
                .rcpts
                .iter()
                .find(|x| x.rcpt.eq_ignore_ascii_case(rcpt))
                .map(|x| &x.reply);
            let o = match (reply, &r.data) {
                (Some(rr), Some(d)) if rr.is_positive() => RcptOutcome::Accepted(d.to_string()),
                // RFC 5321 §4.2.5: 4yz is a transient failure of this recipient only.
                (Some(rr), _) if rr.code < 500 => {
                    RcptOutcome::Transient(format!("{route}: RCPT TO {rcpt}: {rr}"))
                }
                (Some(rr), _) => RcptOutcome::Permanent(format!("{route}: RCPT TO {rcpt}: {rr}")),
                (None, _) => RcptOutcome::Transient(format!("{route}: no reply for {rcpt}")),
            };
            (rcpt.clone(), o)
        })
        .collect()
}

async fn open(g: &Gestore, route: &str) -> Result<SmtpClient, ClientError> {
    let host = route.rsplit_once(':').map_or(route, |(h, _)| h).to_string();
    let tls = ClientTls::starttls(g.tls_roots.clone(), host);
    let mut c = SmtpClient::connect(route, tls).await?;
    c.ehlo(g.domain()).await?;
    // RFC 6109 §5.3: the exchange between providers runs over TLS.
    c.starttls().await?;
    c.ehlo(g.domain()).await?;
    Ok(c)
}

/// The sessions of one pass to one route, one transaction at a time, so the caller can record
/// each outcome before the next transaction starts (a crash then re-sends only what was not yet
/// accepted). RSET before each further transaction, a new session after [`MAX_PER_SESSION`]
/// transactions or after an error. When no session can be opened, that failure is the outcome of
/// every later transaction of the pass (nothing is tried twice per pass).
pub struct RouteSender<'g> {
    g: &'g Gestore,
    route: &'g str,
    session: Option<(SmtpClient, usize)>,
    down: Option<RcptOutcome>,
}

impl<'g> RouteSender<'g> {
    /// No session yet: the first [`RouteSender::send`] opens one.
    pub fn new(g: &'g Gestore, route: &'g str) -> RouteSender<'g> {
        RouteSender {
            g,
            route,
            session: None,
            down: None,
        }
    }

    /// Sends one job as one transaction; the outcome of each of its recipients, in order.
    pub async fn send(&mut self, job: &Job<'_>) -> Vec<(String, RcptOutcome)> {
        let route = self.route;
        let all = |o: &RcptOutcome| job.rcpts.iter().map(|r| (r.clone(), o.clone())).collect();
        if let Some(o) = &self.down {
            return all(o);
        }
        // Reuse a live session: RSET both ends any leftover state (RFC 5321 §4.1.1.5) and proves
        // the connection still answers; a session that fails it is replaced.
        if let Some((mut c, n)) = self.session.take() {
            if n < MAX_PER_SESSION && c.rset().await.is_ok() {
                self.session = Some((c, n));
            } else {
                let _ = c.quit().await;
            }
        }
        let (c, n) = match self.session.as_mut() {
            Some(s) => s,
            None => match open(self.g, route).await {
                Ok(c) => self.session.insert((c, 0)),
                Err(e) => {
                    let o = RcptOutcome::from_error(route, &e);
                    self.down = Some(o.clone());
                    return all(&o);
                }
            },
        };
        let to: Vec<&str> = job.rcpts.iter().map(String::as_str).collect();
        match c.send(job.mail_from, &to, job.raw).await {
            Ok(r) => {
                *n += 1;
                outcomes(route, job, &r)
            }
            Err(e) => {
                // The session's state is unknown after an error: the next job opens a new one.
                if let Some((c, _)) = self.session.take() {
                    let _ = c.quit().await;
                }
                all(&RcptOutcome::from_error(route, &e))
            }
        }
    }

    /// Closes the session, if one is open (QUIT).
    pub async fn close(mut self) {
        if let Some((c, _)) = self.session.take() {
            let _ = c.quit().await;
        }
    }
}

/// Sends `jobs` to `route` (`host:port`) over as few sessions as possible ([`RouteSender`]).
/// Returns, for each job in order, the outcome of each of its recipients.
pub async fn send_all(
    g: &Gestore,
    route: &str,
    jobs: &[Job<'_>],
) -> Vec<Vec<(String, RcptOutcome)>> {
    let mut sender = RouteSender::new(g, route);
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(sender.send(job).await);
    }
    sender.close().await;
    out
}

/// Sends one message to `route` for `rcpts` over its own session; the peer's final reply when
/// every recipient was accepted. A partial acceptance is reported as the failure of the refused
/// recipients (transient if any of them may be retried).
pub async fn send(
    g: &Gestore,
    route: &str,
    mail_from: &str,
    rcpts: &[String],
    raw: &[u8],
) -> Result<String, SendFailure> {
    let job = Job {
        mail_from,
        rcpts,
        raw,
    };
    let results = send_all(g, route, &[job]).await.pop().unwrap_or_default();
    let mut accepted = None;
    let (mut transient, mut permanent) = (Vec::new(), Vec::new());
    for (_, o) in results {
        match o {
            RcptOutcome::Accepted(r) => accepted = Some(r),
            RcptOutcome::Transient(w) => transient.push(w),
            RcptOutcome::Permanent(w) => permanent.push(w),
        }
    }
    if !transient.is_empty() {
        transient.extend(permanent);
        return Err(SendFailure::Transient(transient.join("; ")));
    }
    if !permanent.is_empty() {
        return Err(SendFailure::Permanent(permanent.join("; ")));
    }
    accepted.ok_or_else(|| SendFailure::Permanent(format!("{route}: no recipients")))
}
