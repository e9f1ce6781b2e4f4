//! The SMTP server session (RFC 5321), as a state machine over any byte stream so tests drive real
//! sessions through `tokio::io::duplex`.
//!
//! Choices written down:
//! * DATA accepts only CRLF line endings. A bare LF or a bare CR in the content makes the whole
//!   message fail with `550 5.6.0` after the end of data, and only `CRLF.CRLF` ends the data
//!   (RFC 5321 §4.1.1.4, §2.3.8; this closes the "SMTP smuggling" class of bugs).
//! * Replies are buffered and flushed before the session waits for input (RFC 2920 §3.2).
//! * After STARTTLS every byte the client sent in plaintext after the command is thrown away and the
//!   session starts over (RFC 3207 §4.2; the STARTTLS command injection class of bugs).

use super::transcript::{Transcript, tls_note};
use super::{Io, Reply, closed_stream};
use crate::access::AuthThrottle;
use smtp_proto::Request;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Users submit messages: AUTH offered over TLS only (RFC 6409, RFC 6109 §5.3).
    Submission,
    /// Other providers and ordinary mail deliver here: STARTTLS offered, plaintext accepted,
    /// no AUTH (RFC 6109 §5.3, digest §8.2).
    Inbound,
}

/// Everything a session needs to know; shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Submission or inbound.
    pub mode: Mode,
    /// TLS: offered with STARTTLS, or used from the first byte when `implicit_tls`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (RFC 8314 §3); needs `tls`.
    pub implicit_tls: bool,
    /// The largest message accepted, in octets after dot-unstuffing (RFC 1870).
    pub max_message_size: usize,
    /// The most recipients per transaction (RFC 5321 §4.5.3.1.8: at least 100 should be accepted).
    pub max_recipients: usize,
    /// Submission only: MAIL needs a successful AUTH first (RFC 4954 §6, 530).
    pub auth_required: bool,
    /// The longest command line, CRLF included (RFC 5321 §4.5.3.1.4 sets 512; AUTH lines may be
    /// longer, RFC 4954 §4).
    pub max_command_line: usize,
    /// The longest line in DATA, CRLF included (RFC 5321 §4.5.3.1.6: 1000).
    pub max_data_line: usize,
    /// The most commands in one session.
    pub max_commands: usize,
    /// The most rejected (syntax or order) commands before the session is closed.
    pub max_errors: usize,
    /// The most failed AUTH attempts before the session is closed.
    pub max_auth_failures: u32,
    /// The delay after the first failed AUTH; it doubles with every further failure.
    pub auth_failure_delay: Duration,
    /// The bound on the delay after a failed AUTH.
    pub auth_failure_max_delay: Duration,
    /// Waiting for a command (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    pub command_timeout: Duration,
    /// Waiting for the next block of data (RFC 5321 §4.5.3.2.5: 3 minutes for the client).
    pub data_timeout: Duration,
    /// Waiting for the TLS handshake.
    pub tls_timeout: Duration,
    /// The most concurrent sessions of a listener in [`serve`].
    pub max_connections: usize,
}

impl SessionConfig {
    /// The defaults for a mode: 64 MiB messages, 100 recipients, RFC 5321 timeouts.
    pub fn new(hostname: impl Into<String>, mode: Mode) -> Self {
        SessionConfig {
            hostname: hostname.into(),
            mode,
            tls: None,
            implicit_tls: false,
            max_message_size: 64 * 1024 * 1024,
            max_recipients: 100,
            auth_required: mode == Mode::Submission,
            max_command_line: 4096,
            max_data_line: 1000,
            max_commands: 1000,
            max_errors: 20,
            max_auth_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            auth_failure_max_delay: Duration::from_secs(8),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            tls_timeout: Duration::from_secs(60),
            max_connections: 200,
        }
    }
}

/// What the handler knows about the session at each call.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The user name of a successful AUTH.
    pub authenticated: Option<String>,
    /// The session runs over TLS.
    pub tls: bool,
    /// The HELO/EHLO name.
    pub helo: Option<String>,
    /// The client said EHLO (not HELO).
    pub esmtp: bool,
    /// The TLS version in use (`TLSv1.3`), when the session runs over TLS.
    pub tls_version: Option<String>,
    /// The TLS cipher suite in use, by its IANA name (`TLS_AES_256_GCM_SHA384`).
    pub tls_cipher: Option<String>,
}

impl SessionInfo {
    /// The `Received:` trace field (RFC 5321 §4.4) a server named `by` prepends to a message it
    /// takes in this session at `date` (an RFC 5322 date-time), CRLF included. The protocol keyword
    /// follows RFC 3848 (`ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`); the cipher suite is the `tls`
    /// clause of RFC 8314 §4.3, the version a comment. The authenticated user is not named (only
    /// the `A` of the keyword says there was one), nor are the recipients (RFC 5321 §7.2).
    pub fn received(&self, by: &str, date: &str) -> String {
        let ip = match self.peer.ip() {
            std::net::IpAddr::V4(a) => format!("[{a}]"),
            std::net::IpAddr::V6(a) => format!("[IPv6:{a}]"),
        };
        // RFC 5321 §4.4: the EHLO name as given, when it is a domain or address literal.
        let helo = self.helo.as_deref().filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        });
        let from = match helo {
            Some(h) => format!("{h} ({ip})"),
            None => format!("{ip} ({ip})"),
        };
        let mut with = String::from(if self.esmtp { "ESMTP" } else { "SMTP" });
        if self.esmtp {
            if self.tls {
                with.push('S');
            }
            if self.authenticated.is_some() {
                with.push('A');
            }
        }
        let tls = match (&self.tls_cipher, &self.tls_version) {
            (Some(c), Some(v)) if self.tls => format!("\r\n\ttls {c} ({v})"),
            _ => String::new(),
        };
        format!("Received: from {from}\r\n\tby {by} with {with}{tls};\r\n\t{date}\r\n")
    }
}

/// The TLS version and cipher suite of a connection, as [`SessionInfo`] names them.
fn tls_names(conn: &rustls::CommonState) -> (Option<String>, Option<String>) {
    let version = conn.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        other => format!("{other:?}"),
    });
    // rustls names the TLS 1.3 suites TLS13_*; their IANA names are TLS_*.
    let cipher = conn.negotiated_cipher_suite().map(|s| {
        let name = format!("{:?}", s.suite());
        match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name,
        }
    });
    (version, cipher)
}

/// The provider's decisions. Every method may take its time; the session waits.
pub trait Handler: Send + Sync + 'static {
    /// Checks a user name and password (AUTH PLAIN and LOGIN).
    fn authenticate(&self, user: &str, password: &str) -> impl Future<Output = bool> + Send;
    /// Accepts or refuses the reverse-path (empty for the null sender `<>`).
    fn mail_from(&self, info: &SessionInfo, from: &str) -> impl Future<Output = Reply> + Send;
    /// Accepts or refuses one recipient.
    fn rcpt_to(&self, info: &SessionInfo, rcpt: &str) -> impl Future<Output = Reply> + Send;
    /// Takes the message (dot-unstuffed, CRLF lines). A positive reply is sent only after this
    /// returns, so the handler must have committed the message durably by then (RFC 5321 §6.1).
    fn data(
        &self,
        info: &SessionInfo,
        from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> impl Future<Output = Reply> + Send;
}

/// One line read from the client.
struct Line {
    /// The bytes, LF included; the tail only when the line was too long.
    bytes: Vec<u8>,
    too_long: bool,
}

enum Next {
    Continue,
    Close,
}

struct Session<H: Handler> {
    stream: Box<dyn Io>,
    /// Bytes read but not yet consumed.
    input: Vec<u8>,
    /// Replies not yet flushed.
    output: Vec<u8>,
    /// The current line is longer than the limit; its head was discarded.
    overflow: bool,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    shutdown: Option<watch::Receiver<bool>>,
    info: SessionInfo,
    from: Option<String>,
    rcpts: Vec<String>,
    commands: usize,
    errors: usize,
    auth_failures: u32,
    /// The wire transcript, when the session is recorded.
    transcript: Option<Transcript>,
}

enum ReadError {
    Eof,
    Timeout,
    Shutdown,
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Runs one SMTP session over `stream` until QUIT, a limit, a timeout or the end of the stream.
/// With `implicit_tls` the TLS handshake comes first. `shutdown` turning true ends the session with
/// 421 while it waits for the client (RFC 5321 §3.8).
pub async fn handle_connection<S, H>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    shutdown: Option<watch::Receiver<bool>>,
) -> io::Result<()>
where
    S: Io + 'static,
    H: Handler,
{
    handle_connection_inner(stream, peer, config, handler, shutdown, None).await
}

/// [`handle_connection`], recording the session's plaintext layer (before and inside TLS) into
/// `transcript` (a [`super::transcript::Side::Server`] one).
pub async fn handle_connection_recorded<S, H>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    shutdown: Option<watch::Receiver<bool>>,
    transcript: Transcript,
) -> io::Result<()>
where
    S: Io + 'static,
    H: Handler,
{
    let r = handle_connection_inner(
        stream,
        peer,
        config,
        handler,
        shutdown,
        Some(transcript.clone()),
    )
    .await;
    match &r {
        Ok(()) => transcript.note("session ended"),
        Err(e) => transcript.note(format!("session ended: {e}")),
    }
    r
}

async fn handle_connection_inner<S, H>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    shutdown: Option<watch::Receiver<bool>>,
    transcript: Option<Transcript>,
) -> io::Result<()>
where
    S: Io + 'static,
    H: Handler,
{
    let mut stream: Box<dyn Io> = match &transcript {
        Some(t) => {
            t.note(format!("connection from {peer}"));
            Box::new(t.wrap(stream))
        }
        None => Box::new(stream),
    };
    let mut tls = false;
    let mut names = (None, None);
    if config.implicit_tls {
        let Some(tls_config) = config.tls.clone() else {
            return Err(io::Error::other(
                "implicit TLS configured without a certificate",
            ));
        };
        (stream, names) = accept_tls(
            stream,
            tls_config,
            config.tls_timeout,
            transcript.as_ref(),
            "implicit TLS",
        )
        .await?;
        tls = true;
    }
    let mut session = Session {
        stream,
        input: Vec::new(),
        output: Vec::new(),
        overflow: false,
        config,
        handler,
        shutdown,
        info: SessionInfo {
            peer,
            authenticated: None,
            tls,
            helo: None,
            esmtp: false,
            tls_version: names.0,
            tls_cipher: names.1,
        },
        from: None,
        rcpts: Vec::new(),
        commands: 0,
        errors: 0,
        auth_failures: 0,
        transcript,
    };
    session.run().await
}

async fn accept_tls(
    stream: Box<dyn Io>,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    transcript: Option<&Transcript>,
    how: &str,
) -> io::Result<(Box<dyn Io>, (Option<String>, Option<String>))> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    if let Some(t) = transcript {
        t.pause(); // the handshake is not SMTP: the TLS layer is recorded instead
    }
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let names = tls_names(tls.get_ref().1);
            let stream: Box<dyn Io> = match transcript {
                Some(t) => {
                    t.note(tls_note(how, tls.get_ref().1));
                    Box::new(t.wrap(tls))
                }
                None => Box::new(tls),
            };
            Ok((stream, names))
        }
        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("TLS handshake: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Accepts connections until `shutdown` turns true, then waits for the running sessions (which end
/// with 421 at their next wait for input).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    serve_inner(listener, config, handler, shutdown, None).await
}

/// [`serve`], recording every session into the transcript `record` makes for its peer.
pub async fn serve_recorded<H, F>(
    listener: TcpListener,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
    record: F,
) -> io::Result<()>
where
    H: Handler,
    F: Fn(SocketAddr) -> Transcript + Send + Sync,
{
    serve_inner(listener, config, handler, shutdown, Some(&record)).await
}

type Recorder<'a> = &'a (dyn Fn(SocketAddr) -> Transcript + Send + Sync);

async fn serve_inner<H: Handler>(
    listener: TcpListener,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
    record: Option<Recorder<'_>>,
) -> io::Result<()> {
    let mut sessions = JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => {
                let (mut stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!("SMTP accept: {e}");
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    // RFC 5321 §3.8: 421 when the service cannot take the connection.
                    sessions.spawn(async move {
                        let _ = stream.write_all(b"421 4.3.2 Too many connections, try later\r\n").await;
                    });
                    continue;
                };
                let (config, handler, shutdown) = (config.clone(), handler.clone(), shutdown.clone());
                let transcript = record.map(|r| r(peer));
                sessions.spawn(async move {
                    let r = match transcript {
                        Some(t) => handle_connection_recorded(stream, peer, config, handler, Some(shutdown), t).await,
                        None => handle_connection(stream, peer, config, handler, Some(shutdown)).await,
                    };
                    if let Err(e) = r {
                        tracing::info!("SMTP session with {peer}: {e}");
                    }
                    drop(permit);
                });
            }
        }
    }
    while sessions.join_next().await.is_some() {}
    Ok(())
}

const GREETING_CODE: u16 = 220;

impl<H: Handler> Session<H> {
    async fn run(&mut self) -> io::Result<()> {
        // RFC 5321 §4.2: the greeting.
        self.reply(Reply::plain(
            GREETING_CODE,
            format!("{} ESMTP PEC reference gestore ready", self.config.hostname),
        ));
        loop {
            let limit = self.config.max_command_line;
            let line = match self.read_line(limit, self.config.command_timeout).await {
                Ok(line) => line,
                Err(ReadError::Eof) => return self.flush().await,
                Err(ReadError::Timeout) => {
                    // RFC 5321 §4.5.3.2.7 and §3.8: 421 on timeout.
                    self.reply(Reply::new(421, [4, 4, 2], "Timeout waiting for a command"));
                    return self.flush().await;
                }
                Err(ReadError::Shutdown) => {
                    self.reply(Reply::new(421, [4, 3, 2], "Service shutting down"));
                    return self.flush().await;
                }
                Err(ReadError::Io(e)) => return Err(e),
            };
            self.commands += 1;
            if self.commands > self.config.max_commands {
                self.reply(Reply::new(421, [4, 7, 0], "Too many commands, closing"));
                return self.flush().await;
            }
            let next = if line.too_long {
                // RFC 5321 §4.5.3.1.4 and §4.2.2: 500 line too long.
                self.error(Reply::new(500, [5, 5, 2], "Line too long"))
            } else {
                self.command(&line.bytes).await?
            };
            if let Next::Close = next {
                return self.flush().await;
            }
        }
    }

    /// Queues a reply (flushed before the next wait for input).
    fn reply(&mut self, reply: Reply) {
        self.output.extend_from_slice(&reply.to_wire());
    }

    /// Queues an error reply, closing after too many.
    fn error(&mut self, reply: Reply) -> Next {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.reply(Reply::new(421, [4, 7, 0], "Too many errors, closing"));
            return Next::Close;
        }
        Next::Continue
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        match tokio::time::timeout(self.config.command_timeout, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "writing a reply timed out",
            )),
        }
    }

    /// Reads one line (up to LF). Longer lines than `limit` are flagged and their head discarded.
    async fn read_line(&mut self, limit: usize, timeout: Duration) -> Result<Line, ReadError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.input[scanned..].iter().position(|b| *b == b'\n') {
                let end = scanned + pos + 1;
                let bytes: Vec<u8> = self.input.drain(..end).collect();
                let too_long = std::mem::take(&mut self.overflow) || bytes.len() > limit;
                return Ok(Line { bytes, too_long });
            }
            if self.input.len() > limit {
                // Keep the last byte: it may be the CR of the CRLF.
                let keep = self.input.split_off(self.input.len() - 1);
                self.input = keep;
                self.overflow = true;
            }
            scanned = self.input.len();
            self.flush().await?;
            let mut chunk = [0u8; 8192];
            let read = self.stream.read(&mut chunk);
            let n = match &mut self.shutdown {
                Some(shutdown) if *shutdown.borrow() => return Err(ReadError::Shutdown),
                Some(shutdown) => {
                    tokio::select! {
                        r = tokio::time::timeout(timeout, read) => r,
                        _ = shutdown.wait_for(|stop| *stop) => return Err(ReadError::Shutdown),
                    }
                }
                None => tokio::time::timeout(timeout, read).await,
            };
            match n {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Err(e)) => return Err(ReadError::Io(e)),
                Ok(Ok(0)) => return Err(ReadError::Eof),
                Ok(Ok(n)) => self.input.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn reset_transaction(&mut self) {
        self.from = None;
        self.rcpts.clear();
    }

    fn in_transaction(&self) -> bool {
        self.from.is_some()
    }

    async fn command(&mut self, line: &[u8]) -> io::Result<Next> {
        let parsed = Request::parse(&mut line.iter());
        let request = match parsed {
            Ok(r) => r.into_owned(),
            Err(e) => return Ok(self.syntax_error(e)),
        };
        Ok(match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Lhlo { .. } => self.error(Reply::new(500, [5, 5, 1], "This is not LMTP")),
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => return self.data().await,
            Request::Rset => {
                // RFC 5321 §4.1.1.5.
                self.reset_transaction();
                self.reply(Reply::ok("Reset"));
                Next::Continue
            }
            Request::Noop { .. } => {
                // RFC 5321 §4.1.1.9.
                self.reply(Reply::ok("OK"));
                Next::Continue
            }
            Request::Vrfy { .. } => {
                // RFC 5321 §3.5.3: 252 when the server will not verify.
                self.reply(Reply::new(
                    252,
                    [2, 5, 2],
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                Next::Continue
            }
            Request::Expn { .. } => {
                // RFC 5321 §3.5.2: EXPN may be disabled.
                self.error(Reply::new(502, [5, 5, 1], "EXPN not available"))
            }
            Request::Help { .. } => {
                self.reply(Reply::new(
                    214,
                    [2, 0, 0],
                    "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT",
                ));
                Next::Continue
            }
            Request::Quit => {
                // RFC 5321 §4.1.1.10.
                self.reply(Reply::new(221, [2, 0, 0], "Bye"));
                Next::Close
            }
            Request::Bdat { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                // Not advertised (RFC 5321 §4.2.4: 502 command not implemented).
                self.error(Reply::new(502, [5, 5, 1], "Command not implemented"))
            }
        })
    }

    fn syntax_error(&mut self, e: smtp_proto::Error) -> Next {
        use smtp_proto::Error as E;
        let reply = match e {
            E::UnknownCommand => Reply::new(500, [5, 5, 1], "Unrecognized command"),
            E::InvalidSenderAddress => Reply::new(501, [5, 1, 7], "Bad sender address syntax"),
            E::InvalidRecipientAddress => {
                Reply::new(501, [5, 1, 3], "Bad recipient address syntax")
            }
            E::SyntaxError { syntax } => Reply::new(501, [5, 5, 2], format!("Syntax: {syntax}")),
            E::InvalidParameter { param } => {
                Reply::new(501, [5, 5, 4], format!("Invalid parameter {param}"))
            }
            // RFC 5321 §4.1.1.11 and RFC 1869: 555 for parameters not recognised.
            E::UnsupportedParameter { param } => {
                Reply::new(555, [5, 5, 4], format!("Unsupported parameter {param}"))
            }
            E::NeedsMoreData { .. } | E::ResponseTooLong | E::InvalidResponse { .. } => {
                Reply::new(500, [5, 5, 2], "Syntax error")
            }
        };
        self.error(reply)
    }

    fn auth_offered(&self) -> bool {
        // RFC 6109 §5.3 (digest §8.2): users authenticate only over a secure channel.
        self.config.mode == Mode::Submission && self.info.tls
    }

    fn hello(&mut self, host: String, esmtp: bool) -> Next {
        // RFC 5321 §4.1.4: EHLO/HELO resets the transaction.
        self.reset_transaction();
        self.info.helo = Some(host.clone());
        self.info.esmtp = esmtp;
        let greeting = format!("{} greets {}", self.config.hostname, host);
        if !esmtp {
            self.reply(Reply::plain(250, greeting));
            return Next::Continue;
        }
        let mut lines = vec![
            greeting,
            "PIPELINING".to_string(),                         // RFC 2920
            "8BITMIME".to_string(),                           // RFC 6152
            format!("SIZE {}", self.config.max_message_size), // RFC 1870
            "ENHANCEDSTATUSCODES".to_string(),                // RFC 2034
        ];
        if self.config.tls.is_some() && !self.info.tls {
            lines.push("STARTTLS".to_string()); // RFC 3207
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_string()); // RFC 4954, RFC 4616
        }
        self.reply(Reply::plain(250, lines.join("\n")));
        Next::Continue
    }

    async fn starttls(&mut self) -> io::Result<Next> {
        let Some(tls_config) = self.config.tls.clone() else {
            return Ok(self.error(Reply::new(502, [5, 5, 1], "STARTTLS not available")));
        };
        if self.info.tls {
            return Ok(self.error(Reply::new(503, [5, 5, 1], "Already in TLS")));
        }
        self.reply(Reply::new(220, [2, 0, 0], "Ready to start TLS"));
        self.flush().await?;
        // RFC 3207 §4.2 and the STARTTLS injection class: drop what was pipelined in plaintext.
        self.input.clear();
        self.overflow = false;
        let plain = std::mem::replace(&mut self.stream, closed_stream());
        let (stream, (version, cipher)) = accept_tls(
            plain,
            tls_config,
            self.config.tls_timeout,
            self.transcript.as_ref(),
            "STARTTLS",
        )
        .await?;
        self.stream = stream;
        self.info.tls_version = version;
        self.info.tls_cipher = cipher;
        // RFC 3207 §4.2: forget everything learnt before TLS.
        self.info.tls = true;
        self.info.helo = None;
        self.info.esmtp = false;
        self.info.authenticated = None;
        self.reset_transaction();
        Ok(Next::Continue)
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> io::Result<Next> {
        if self.config.mode != Mode::Submission {
            return Ok(self.error(Reply::new(502, [5, 5, 1], "AUTH not available")));
        }
        if !self.info.tls {
            // RFC 4954 §6: 538 encryption required.
            return Ok(self.error(Reply::new(
                538,
                [5, 7, 11],
                "Encryption required for requested authentication mechanism",
            )));
        }
        if self.info.helo.is_none() || !self.info.esmtp {
            return Ok(self.error(Reply::new(503, [5, 5, 1], "Send EHLO first")));
        }
        // RFC 4954 §4: no AUTH after a successful one, nor during a transaction.
        if self.info.authenticated.is_some() {
            return Ok(self.error(Reply::new(503, [5, 5, 1], "Already authenticated")));
        }
        if self.in_transaction() {
            return Ok(self.error(Reply::new(
                503,
                [5, 5, 1],
                "AUTH not allowed in a transaction",
            )));
        }
        let credentials = if mechanism == smtp_proto::AUTH_PLAIN {
            self.auth_plain(initial).await?
        } else if mechanism == smtp_proto::AUTH_LOGIN {
            self.auth_login(initial).await?
        } else {
            // RFC 4954 §4: 504 for unknown mechanisms.
            return Ok(self.error(Reply::new(
                504,
                [5, 5, 4],
                "Unrecognized authentication type",
            )));
        };
        let (user, password, authz_ok) = match credentials {
            Ok(pair) => pair,
            Err(Some(reply)) => return Ok(self.error(reply)),
            Err(None) => return Ok(Next::Close),
        };
        if authz_ok && self.handler.authenticate(&user, &password).await {
            self.info.authenticated = Some(user);
            self.reply(Reply::new(235, [2, 7, 0], "Authentication successful"));
            return Ok(Next::Continue);
        }
        // Slow down password guessing: the delay doubles with each failure, bounded.
        let throttle = AuthThrottle {
            max_failures: self.config.max_auth_failures,
            delay: self.config.auth_failure_delay,
            max_delay: self.config.auth_failure_max_delay,
        };
        let too_many = throttle.fail(&mut self.auth_failures).await;
        // RFC 4954 §6: 535 invalid credentials.
        self.reply(Reply::new(
            535,
            [5, 7, 8],
            "Authentication credentials invalid",
        ));
        if too_many {
            self.reply(Reply::new(
                421,
                [4, 7, 0],
                "Too many failed authentications",
            ));
            return Ok(Next::Close);
        }
        Ok(Next::Continue)
    }

    /// Reads one SASL response line after a 334 challenge. `Err(None)`: the session must end.
    async fn sasl_response(
        &mut self,
        challenge: &str,
    ) -> io::Result<Result<Vec<u8>, Option<Reply>>> {
        self.reply(Reply::plain(334, challenge));
        let limit = self.config.max_command_line;
        let line = match self.read_line(limit, self.config.command_timeout).await {
            Ok(line) => line,
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Timeout) => {
                self.reply(Reply::new(421, [4, 4, 2], "Timeout waiting for a command"));
                return Ok(Err(None));
            }
            Err(ReadError::Shutdown) => {
                self.reply(Reply::new(421, [4, 3, 2], "Service shutting down"));
                return Ok(Err(None));
            }
            Err(ReadError::Eof) => return Ok(Err(None)),
        };
        if line.too_long {
            return Ok(Err(Some(Reply::new(
                500,
                [5, 5, 6],
                "Authentication exchange line too long",
            ))));
        }
        let text = trim_eol(&line.bytes);
        Ok(decode_sasl(text))
    }

    async fn auth_plain(
        &mut self,
        initial: String,
    ) -> io::Result<Result<(String, String, bool), Option<Reply>>> {
        // RFC 4954 §4: no initial response → empty challenge; "=" is an empty initial response.
        let decoded = if initial.is_empty() {
            match self.sasl_response("").await? {
                Ok(d) => d,
                Err(e) => return Ok(Err(e)),
            }
        } else {
            match decode_sasl(initial.as_bytes()) {
                Ok(d) => d,
                Err(e) => return Ok(Err(e)),
            }
        };
        // RFC 4616 §2: [authzid] NUL authcid NUL passwd.
        let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
        let bad = || {
            Ok(Err(Some(Reply::new(
                501,
                [5, 5, 2],
                "Malformed AUTH PLAIN response",
            ))))
        };
        let [authzid, authcid, password] = parts.as_slice() else {
            return bad();
        };
        let (Ok(authzid), Ok(authcid), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(authcid),
            std::str::from_utf8(password),
        ) else {
            return bad();
        };
        if authcid.is_empty() {
            return bad();
        }
        // No proxy authorisation: an authzid other than the user itself fails (RFC 4616 §2).
        let authz_ok = authzid.is_empty() || authzid == authcid;
        Ok(Ok((authcid.to_string(), password.to_string(), authz_ok)))
    }

    async fn auth_login(
        &mut self,
        initial: String,
    ) -> io::Result<Result<(String, String, bool), Option<Reply>>> {
        // draft-murchison-sasl-login: "Username:" then "Password:", base64 (VXNlcm5hbWU6, UGFzc3dvcmQ6).
        let user = if initial.is_empty() {
            match self.sasl_response("VXNlcm5hbWU6").await? {
                Ok(d) => d,
                Err(e) => return Ok(Err(e)),
            }
        } else {
            match decode_sasl(initial.as_bytes()) {
                Ok(d) => d,
                Err(e) => return Ok(Err(e)),
            }
        };
        let password = match self.sasl_response("UGFzc3dvcmQ6").await? {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        match (String::from_utf8(user), String::from_utf8(password)) {
            (Ok(u), Ok(p)) if !u.is_empty() => Ok(Ok((u, p, true))),
            _ => Ok(Err(Some(Reply::new(
                501,
                [5, 5, 2],
                "Malformed AUTH LOGIN response",
            )))),
        }
    }

    async fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Next {
        if self.info.helo.is_none() {
            return self.error(Reply::new(503, [5, 5, 1], "Send EHLO or HELO first"));
        }
        // RFC 4954 §6: 530 authentication required.
        if self.config.mode == Mode::Submission
            && self.config.auth_required
            && self.info.authenticated.is_none()
        {
            return self.error(Reply::new(530, [5, 7, 0], "Authentication required"));
        }
        if self.in_transaction() {
            // RFC 5321 §4.1.4: MAIL inside a transaction is out of order.
            return self.error(Reply::new(503, [5, 5, 1], "Sender already given"));
        }
        // RFC 1870 §6.1: a declared size over the limit is refused at MAIL.
        if from.size > self.config.max_message_size {
            return self.error(Reply::new(
                552,
                [5, 3, 4],
                format!(
                    "Message size exceeds the limit of {} octets",
                    self.config.max_message_size
                ),
            ));
        }
        let reply = self.handler.mail_from(&self.info, &from.address).await;
        if reply.is_positive() {
            self.from = Some(from.address);
        }
        self.reply(reply);
        Next::Continue
    }

    async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Next {
        if !self.in_transaction() {
            return self.error(Reply::new(503, [5, 5, 1], "Send MAIL first"));
        }
        if self.rcpts.len() >= self.config.max_recipients {
            // RFC 5321 §4.5.3.1.10: 452 too many recipients.
            self.reply(Reply::new(452, [4, 5, 3], "Too many recipients"));
            return Next::Continue;
        }
        let reply = self.handler.rcpt_to(&self.info, &to.address).await;
        if reply.is_positive() {
            self.rcpts.push(to.address);
        }
        self.reply(reply);
        Next::Continue
    }

    async fn data(&mut self) -> io::Result<Next> {
        let Some(from) = self.from.clone() else {
            return Ok(self.error(Reply::new(503, [5, 5, 1], "Send MAIL first")));
        };
        if self.rcpts.is_empty() {
            // RFC 2920 §3.1: DATA fails with 554 when no recipient was accepted.
            return Ok(self.error(Reply::new(554, [5, 5, 1], "No valid recipients")));
        }
        // RFC 5321 §4.1.1.4.
        self.reply(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        let mut message = Vec::new();
        let mut too_big = false;
        let mut bare_eol = false;
        let mut long_line = false;
        loop {
            let line = match self
                .read_line(self.config.max_data_line, self.config.data_timeout)
                .await
            {
                Ok(line) => line,
                Err(ReadError::Io(e)) => return Err(e),
                Err(ReadError::Eof) => return Ok(Next::Close),
                Err(ReadError::Timeout) => {
                    self.reply(Reply::new(421, [4, 4, 2], "Timeout waiting for data"));
                    return Ok(Next::Close);
                }
                Err(ReadError::Shutdown) => {
                    self.reply(Reply::new(421, [4, 3, 2], "Service shutting down"));
                    return Ok(Next::Close);
                }
            };
            let bytes = &line.bytes;
            let crlf = bytes.ends_with(b"\r\n");
            if !crlf {
                bare_eol = true;
            } else if bytes.as_slice() == b".\r\n" && !line.too_long {
                break; // RFC 5321 §4.1.1.4: end of mail data.
            }
            let content = if crlf {
                &bytes[..bytes.len() - 2]
            } else {
                &bytes[..bytes.len() - 1]
            };
            if content.contains(&b'\r') {
                bare_eol = true; // a CR not followed by LF
            }
            long_line |= line.too_long;
            // RFC 5321 §4.5.2: remove the first of a leading pair of dots.
            let content = content.strip_prefix(b".").unwrap_or(content);
            if too_big || long_line || bare_eol {
                continue;
            }
            if message.len() + content.len() + 2 > self.config.max_message_size {
                too_big = true; // RFC 1870 §6.3: the rest is read and discarded.
                message = Vec::new();
                continue;
            }
            message.extend_from_slice(content);
            message.extend_from_slice(b"\r\n");
        }
        let from_done = from;
        let rcpts = std::mem::take(&mut self.rcpts);
        self.reset_transaction();
        let reply = if too_big {
            // RFC 1870 §6.3 and RFC 5321 §4.5.3.1.10: 552.
            Reply::new(
                552,
                [5, 3, 4],
                format!(
                    "Message size exceeds the limit of {} octets",
                    self.config.max_message_size
                ),
            )
        } else if bare_eol {
            // RFC 5321 §2.3.8: CR and LF only as CRLF (choice written at the top of this file).
            Reply::new(
                550,
                [5, 6, 0],
                "Bare CR or LF in message data; use CRLF line endings",
            )
        } else if long_line {
            // RFC 5321 §4.5.3.1.6: text lines up to 1000 octets with CRLF.
            Reply::new(
                550,
                [5, 6, 0],
                format!(
                    "Message line longer than {} octets",
                    self.config.max_data_line
                ),
            )
        } else {
            self.handler
                .data(&self.info, &from_done, &rcpts, message)
                .await
        };
        self.reply(reply);
        Ok(Next::Continue)
    }
}

fn trim_eol(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Decodes a SASL response: `*` cancels (RFC 4954 §4, 501), `=` is empty, otherwise base64.
fn decode_sasl(text: &[u8]) -> Result<Vec<u8>, Option<Reply>> {
    use base64::Engine;
    let text = trim_eol(text);
    let text = text.trim_ascii();
    if text == b"*" {
        return Err(Some(Reply::new(501, [5, 0, 0], "Authentication cancelled")));
    }
    if text == b"=" {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| {
            Some(Reply::new(
                501,
                [5, 5, 2],
                "Invalid base64 in AUTH response",
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(helo: &str, esmtp: bool, tls: bool, user: Option<&str>) -> SessionInfo {
        SessionInfo {
            peer: "192.0.2.7:4242".parse().unwrap(),
            authenticated: user.map(str::to_string),
            tls,
            helo: Some(helo.to_string()),
            esmtp,
            tls_version: tls.then(|| "TLSv1.3".to_string()),
            tls_cipher: tls.then(|| "TLS_AES_256_GCM_SHA384".to_string()),
        }
    }

    #[test]
    fn received_names_the_protocol_per_rfc_3848_and_hides_the_user() {
        let d = "Mon, 30 Nov 2026 10:00:00 +0100";
        let r = info("client.test", true, true, Some("alice@pec.a.test")).received("pec.a.test", d);
        assert_eq!(
            r,
            "Received: from client.test ([192.0.2.7])\r\n\tby pec.a.test with ESMTPSA\r\n\ttls TLS_AES_256_GCM_SHA384 (TLSv1.3);\r\n\tMon, 30 Nov 2026 10:00:00 +0100\r\n"
        );
        assert!(
            info("mx", true, true, None)
                .received("b", d)
                .contains("with ESMTPS\r\n")
        );
        assert!(
            info("mx", true, false, None)
                .received("b", d)
                .contains("with ESMTP;")
        );
        assert!(
            info("mx", false, false, None)
                .received("b", d)
                .contains("with SMTP;")
        );
        // A HELO name that is no domain is not copied (it could break the field's syntax).
        let odd = info("a (b); c", true, false, None).received("b", d);
        assert!(
            odd.starts_with("Received: from [192.0.2.7] ([192.0.2.7])"),
            "{odd}"
        );
    }
}
