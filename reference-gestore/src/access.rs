//! What the mailbox access servers (IMAP, POP3) share: a boxed stream type so a session can swap
//! its plaintext stream for TLS (STARTTLS, STLS), the login check, and the accept loop.

use crate::password;
use crate::store::{SqliteStore, Store};
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A byte stream a session runs over: TCP, TLS over TCP, or an in-memory duplex in tests.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// What every mailbox access session needs.
#[derive(Clone)]
pub struct AccessConfig {
    /// The store holding the mailboxes.
    pub store: SqliteStore,
    /// TLS: offered with STARTTLS/STLS, or used from the first byte when the listener says so.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The host name in greetings.
    pub hostname: String,
}

/// The outcome of a login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Accepted: the mailbox address as stored.
    Ok(String),
    /// The mailbox exists but an administrator disabled it (provider manual: it refuses login).
    Disabled,
    /// Unknown user or wrong password.
    Failed,
}

/// Checks a user name and password against the accounts.
pub async fn login(store: &SqliteStore, user: &str, pass: &str) -> Login {
    let Ok(Some(account)) = store.account(user).await else {
        return Login::Failed;
    };
    let (p, hash) = (pass.to_string(), account.password_hash.clone());
    // scrypt is deliberately slow: off the async threads.
    let ok = tokio::task::spawn_blocking(move || password::verify(&p, &hash))
        .await
        .unwrap_or(false);
    match (ok, account.disabled) {
        (false, _) => Login::Failed,
        (true, true) => Login::Disabled,
        (true, false) => Login::Ok(account.address),
    }
}

/// Accepts connections until `shutdown` turns true; each one runs `session(stream, tls_active)`
/// in its own task. With `implicit_tls` the TLS handshake comes first (RFC 8314 §3).
pub async fn serve<F, Fut>(
    listener: TcpListener,
    cfg: Arc<AccessConfig>,
    implicit_tls: bool,
    mut shutdown: watch::Receiver<bool>,
    session: F,
) -> std::io::Result<()>
where
    F: Fn(BoxIo, Arc<AccessConfig>, bool) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let session = Arc::new(session);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = shutdown.changed() => return Ok(()),
        };
        let (cfg, session) = (cfg.clone(), session.clone());
        tokio::spawn(async move {
            let r = if implicit_tls {
                let Some(tls) = cfg.tls.clone() else {
                    tracing::error!("implicit TLS listener without TLS configuration");
                    return;
                };
                match tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await {
                    Ok(s) => session(Box::new(s), cfg, true).await,
                    Err(e) => Err(e),
                }
            } else {
                session(Box::new(tcp), cfg, false).await
            };
            if let Err(e) = r {
                tracing::debug!("mailbox access session with {peer}: {e}");
            }
        });
    }
}

/// Upgrades a plaintext stream to TLS. Whatever the client sent after the command and before the
/// handshake is discarded by the caller (it drops its read buffer): RFC 3207 §4.2-style injection.
pub async fn start_tls(io: BoxIo, tls: Arc<rustls::ServerConfig>) -> std::io::Result<BoxIo> {
    let s = tokio_rustls::TlsAcceptor::from(tls).accept(io).await?;
    Ok(Box::new(s))
}
