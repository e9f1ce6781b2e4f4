//! SMTP for the provider: a server session (submission from users, inbound from other providers,
//! RFC 5321, RFC 6409, RFC 3207, RFC 4954) and a client (outbound relay and the conformance runner).

pub mod client;
pub mod server;
pub mod transcript;

mod reply;
pub use reply::Reply;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream a session or client can run over: TCP, TLS over TCP, or an in-memory duplex.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A stream that is at end of file and swallows writes: the placeholder while a stream is being
/// upgraded to TLS.
pub(crate) fn closed_stream() -> Box<dyn Io> {
    Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()))
}
