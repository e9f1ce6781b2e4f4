//! What the mailbox access servers (IMAP, POP3) share: a boxed stream type so a session can swap
//! its plaintext stream for TLS (STARTTLS, STLS), the login check, and the accept loop.

use crate::password;
use crate::store::{SqlStore, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
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
    pub store: SqlStore,
    /// TLS: offered with STARTTLS/STLS, or used from the first byte when the listener says so.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The host name in greetings.
    pub hostname: String,
    /// The slow-down and the limit of failed logins per connection.
    pub auth: AuthThrottle,
    /// The largest message IMAP APPEND takes, in octets (RFC 7889 APPENDLIMIT).
    pub max_append_size: u64,
    /// The most literal octets of any other IMAP command (RFC 3501 §4.3 literals are otherwise
    /// unbounded): LOGIN, SEARCH and the like need little.
    pub max_command_literals: u64,
}

impl AccessConfig {
    /// A configuration with the default limits: 3 failed logins, 128 MiB APPEND, 64 KiB of
    /// literals in other commands.
    pub fn new(
        store: SqlStore,
        tls: Option<Arc<rustls::ServerConfig>>,
        hostname: impl Into<String>,
    ) -> AccessConfig {
        AccessConfig {
            store,
            tls,
            hostname: hostname.into(),
            auth: AuthThrottle::default(),
            max_append_size: 128 * 1024 * 1024,
            max_command_literals: 64 * 1024,
        }
    }
}

/// Slows down password guessing on one connection and ends it after too many failures; the SMTP
/// submission server, IMAP and POP3 share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthThrottle {
    /// The most failed attempts before the session is closed.
    pub max_failures: u32,
    /// The delay after the first failure; it doubles with every further failure.
    pub delay: Duration,
    /// The bound on the delay.
    pub max_delay: Duration,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            max_failures: 3,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl AuthThrottle {
    /// The delay after the `failures`-th failure (1-based): doubling, bounded.
    pub fn delay_after(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Counts one more failure in `failures`, waits the delay, and says whether the session must
    /// now be closed.
    pub async fn fail(&self, failures: &mut u32) -> bool {
        *failures = failures.saturating_add(1);
        let d = self.delay_after(*failures);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        *failures >= self.max_failures
    }
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
pub async fn login(store: &SqlStore, user: &str, pass: &str) -> Login {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_delay_doubles_and_is_bounded() {
        let t = AuthThrottle {
            max_failures: 5,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let d: Vec<u128> = (1..=5).map(|n| t.delay_after(n).as_millis()).collect();
        assert_eq!(d, [100, 200, 350, 350, 350]);
        assert_eq!(t.delay_after(u32::MAX), Duration::from_millis(350));
    }

    #[tokio::test]
    async fn the_session_closes_after_max_failures() {
        let t = AuthThrottle {
            max_failures: 2,
            delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        };
        let mut n = 0;
        assert!(!t.fail(&mut n).await);
        assert!(t.fail(&mut n).await);
        assert_eq!(n, 2);
    }
}
