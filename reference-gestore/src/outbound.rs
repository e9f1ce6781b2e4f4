//! Outbound SMTP to other providers (RFC 6109 §5.3: TLS between providers). The peer's certificate
//! is checked against the configured trust anchors.

use crate::gestore::Gestore;
use crate::smtp::client::{ClientError, ClientTls, SmtpClient};
use crate::worker::SendFailure;

/// Sends one message to `route` (`host:port`) for `rcpts`; the peer's final reply on success.
/// A refusal of some recipients is reported with the accepted ones delivered: the refused ones get
/// no retry (their provider answered for them).
pub async fn send(
    g: &Gestore,
    route: &str,
    mail_from: &str,
    rcpts: &[String],
    raw: &[u8],
) -> Result<String, SendFailure> {
    let host = route.rsplit_once(':').map_or(route, |(h, _)| h).to_string();
    let tls = ClientTls::starttls(g.tls_roots.clone(), host);
    let transient = |e: ClientError| match &e {
        ClientError::Rejected { reply, .. } if reply.code >= 500 => {
            SendFailure::Permanent(format!("{route}: {e}"))
        }
        _ => SendFailure::Transient(format!("{route}: {e}")),
    };
    let mut c = SmtpClient::connect(route, tls).await.map_err(transient)?;
    c.ehlo(g.domain()).await.map_err(transient)?;
    // RFC 6109 §5.3: the exchange between providers runs over TLS.
    c.starttls().await.map_err(transient)?;
    c.ehlo(g.domain()).await.map_err(transient)?;
    let to: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let r = c.send(mail_from, &to, raw).await.map_err(transient)?;
    let _ = c.quit().await;
    let refused: Vec<String> = r
        .refused()
        .iter()
        .map(|x| format!("{} {}", x.rcpt, x.reply))
        .collect();
    match (&r.data, refused.is_empty()) {
        (Some(d), true) => Ok(d.to_string()),
        (Some(d), false) => Ok(format!("{d}; refused: {}", refused.join(", "))),
        (None, _) => {
            if r.rcpts.iter().any(|x| x.reply.code < 500) {
                Err(SendFailure::Transient(format!(
                    "{route}: {}",
                    refused.join(", ")
                )))
            } else {
                Err(SendFailure::Permanent(format!(
                    "{route}: {}",
                    refused.join(", ")
                )))
            }
        }
    }
}
