//! An SMTP client (RFC 5321) for relaying to other providers and for the conformance runner:
//! STARTTLS (RFC 3207) or implicit TLS (RFC 8314), AUTH PLAIN/LOGIN (RFC 4954, RFC 4616),
//! PIPELINING (RFC 2920), per-recipient replies, dot-stuffing, timeouts.

use super::transcript::{Transcript, tls_note};
use super::{Io, Reply, closed_stream};
use base64::Engine;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext (ordinary mail, or a test that wants it).
    None,
    /// Plaintext first, then [`SmtpClient::starttls`] (RFC 3207).
    StartTls,
    /// TLS from the first byte (RFC 8314 §3).
    Implicit,
}

/// TLS settings of a client.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The mode.
    pub mode: TlsMode,
    /// The trust anchors the server certificate must chain to.
    pub roots: Arc<RootCertStore>,
    /// The name the server certificate must carry (DNS name or IP address).
    pub server_name: String,
}

impl ClientTls {
    /// Plaintext only.
    pub fn none() -> Self {
        ClientTls {
            mode: TlsMode::None,
            roots: Arc::new(RootCertStore::empty()),
            server_name: String::new(),
        }
    }

    /// STARTTLS against `server_name`, trusting `roots`.
    pub fn starttls(roots: RootCertStore, server_name: impl Into<String>) -> Self {
        ClientTls {
            mode: TlsMode::StartTls,
            roots: Arc::new(roots),
            server_name: server_name.into(),
        }
    }

    /// Implicit TLS against `server_name`, trusting `roots`.
    pub fn implicit(roots: RootCertStore, server_name: impl Into<String>) -> Self {
        ClientTls {
            mode: TlsMode::Implicit,
            roots: Arc::new(roots),
            server_name: server_name.into(),
        }
    }
}

/// Client timeouts (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting and the TLS handshake.
    pub connect: Duration,
    /// Each command's reply, the greeting included (§4.5.3.2.1–4: 5 minutes).
    pub command: Duration,
    /// Writing the data and the reply after the final dot (§4.5.3.2.6: 10 minutes).
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(300),
            data: Duration::from_secs(600),
        }
    }
}

/// A client error, naming the step (e.g. `MAIL FROM`) and, when there is one, the server's reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("{step}: {source}")]
    Io {
        /// The step.
        step: String,
        /// The error.
        source: io::Error,
    },
    /// The server did not answer in time.
    #[error("{step}: timed out")]
    Timeout {
        /// The step.
        step: String,
    },
    /// TLS could not be set up.
    #[error("{step}: TLS: {message}")]
    Tls {
        /// The step.
        step: String,
        /// What failed.
        message: String,
    },
    /// The server broke the protocol (malformed reply, closed connection, data after 220 to
    /// STARTTLS).
    #[error("{step}: {message}")]
    Protocol {
        /// The step.
        step: String,
        /// What was wrong.
        message: String,
    },
    /// The server refused.
    #[error("{step}: server replied {reply}")]
    Rejected {
        /// The step.
        step: String,
        /// The reply.
        reply: Reply,
    },
}

/// One recipient's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// The recipient.
    pub rcpt: String,
    /// The server's reply to its RCPT.
    pub reply: Reply,
}

/// The outcome of [`SmtpClient::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// The reply to MAIL FROM (positive: refusals are errors).
    pub mail: Reply,
    /// The reply to every RCPT, in order.
    pub rcpts: Vec<RcptResult>,
    /// The reply after the data (positive: refusals are errors); `None` when no recipient was
    /// accepted and no data was sent.
    pub data: Option<Reply>,
}

impl SendResult {
    /// The recipients the message was delivered to (accepted RCPT and accepted data).
    pub fn delivered(&self) -> Vec<&str> {
        if !self.data.as_ref().is_some_and(Reply::is_positive) {
            return Vec::new();
        }
        self.rcpts
            .iter()
            .filter(|r| r.reply.is_positive())
            .map(|r| r.rcpt.as_str())
            .collect()
    }

    /// The refused recipients with their replies.
    pub fn refused(&self) -> Vec<&RcptResult> {
        self.rcpts
            .iter()
            .filter(|r| !r.reply.is_positive())
            .collect()
    }
}

/// The longest reply line accepted (RFC 5321 §4.5.3.1.5 sets 512; be lenient).
const MAX_REPLY_LINE: usize = 4096;
/// The most lines in one reply.
const MAX_REPLY_LINES: usize = 200;

/// An SMTP client connection.
pub struct SmtpClient {
    stream: Box<dyn Io>,
    input: Vec<u8>,
    tls: ClientTls,
    is_tls: bool,
    timeouts: Timeouts,
    greeting: Reply,
    capabilities: Vec<String>,
    /// The wire transcript, when the session is recorded.
    transcript: Option<Transcript>,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("is_tls", &self.is_tls)
            .field("greeting", &self.greeting)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl SmtpClient {
    /// Connects, does implicit TLS when asked and reads the 220 greeting.
    pub async fn connect(addr: impl ToSocketAddrs, tls: ClientTls) -> Result<Self, ClientError> {
        Self::connect_with(addr, tls, Timeouts::default()).await
    }

    /// [`SmtpClient::connect`] with explicit timeouts.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        tls: ClientTls,
        timeouts: Timeouts,
    ) -> Result<Self, ClientError> {
        Self::connect_inner(addr, tls, timeouts, None).await
    }

    /// [`SmtpClient::connect_with`], recording the session's plaintext layer (before and inside
    /// TLS) into `transcript` (a [`super::transcript::Side::Client`] one).
    pub async fn connect_recorded(
        addr: impl ToSocketAddrs,
        tls: ClientTls,
        timeouts: Timeouts,
        transcript: Transcript,
    ) -> Result<Self, ClientError> {
        Self::connect_inner(addr, tls, timeouts, Some(transcript)).await
    }

    async fn connect_inner(
        addr: impl ToSocketAddrs,
        tls: ClientTls,
        timeouts: Timeouts,
        transcript: Option<Transcript>,
    ) -> Result<Self, ClientError> {
        let step = "connect";
        let stream = match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Io {
                    step: step.into(),
                    source,
                });
            }
            Err(_) => return Err(ClientError::Timeout { step: step.into() }),
        };
        let _ = stream.set_nodelay(true);
        if let (Some(t), Ok(peer)) = (&transcript, stream.peer_addr()) {
            t.note(format!("connected to {peer}"));
        }
        Self::from_stream_inner(stream, tls, timeouts, transcript).await
    }

    /// Runs over an already open stream (TCP or an in-memory duplex in tests).
    pub async fn from_stream<S: Io + 'static>(
        stream: S,
        tls: ClientTls,
        timeouts: Timeouts,
    ) -> Result<Self, ClientError> {
        Self::from_stream_inner(stream, tls, timeouts, None).await
    }

    /// [`SmtpClient::from_stream`], recording the session into `transcript`.
    pub async fn from_stream_recorded<S: Io + 'static>(
        stream: S,
        tls: ClientTls,
        timeouts: Timeouts,
        transcript: Transcript,
    ) -> Result<Self, ClientError> {
        Self::from_stream_inner(stream, tls, timeouts, Some(transcript)).await
    }

    async fn from_stream_inner<S: Io + 'static>(
        stream: S,
        tls: ClientTls,
        timeouts: Timeouts,
        transcript: Option<Transcript>,
    ) -> Result<Self, ClientError> {
        let stream: Box<dyn Io> = match &transcript {
            Some(t) => Box::new(t.wrap(stream)),
            None => Box::new(stream),
        };
        let mut client = SmtpClient {
            stream,
            input: Vec::new(),
            tls,
            is_tls: false,
            timeouts,
            greeting: Reply::plain(220, ""),
            capabilities: Vec::new(),
            transcript,
        };
        if client.tls.mode == TlsMode::Implicit {
            client.handshake("implicit TLS").await?;
        }
        let greeting = client.read_reply("greeting", timeouts.command).await?;
        if greeting.code != 220 {
            // RFC 5321 §3.1: 554 (or anything but 220) means no service.
            return Err(ClientError::Rejected {
                step: "greeting".into(),
                reply: greeting,
            });
        }
        client.greeting = greeting;
        Ok(client)
    }

    /// The wire transcript of a recorded session.
    pub fn transcript(&self) -> Option<&Transcript> {
        self.transcript.as_ref()
    }

    /// The greeting.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// The connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.is_tls
    }

    /// The EHLO keywords with their parameters, upper-cased, e.g. `SIZE 1000`, `AUTH PLAIN LOGIN`.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// The server advertised `keyword` (case-insensitive).
    pub fn has_capability(&self, keyword: &str) -> bool {
        let keyword = keyword.to_ascii_uppercase();
        self.capabilities
            .iter()
            .any(|c| c.split_whitespace().next() == Some(keyword.as_str()))
    }

    /// The parameters of a capability, e.g. `["PLAIN", "LOGIN"]` for `AUTH`.
    pub fn capability_params(&self, keyword: &str) -> Vec<String> {
        let keyword = keyword.to_ascii_uppercase();
        self.capabilities
            .iter()
            .find(|c| c.split_whitespace().next() == Some(keyword.as_str()))
            .map(|c| c.split_whitespace().skip(1).map(str::to_string).collect())
            .unwrap_or_default()
    }

    async fn handshake(&mut self, step: &str) -> Result<(), ClientError> {
        let tls_err = |message: String| ClientError::Tls {
            step: step.into(),
            message,
        };
        let name = ServerName::try_from(self.tls.server_name.clone())
            .map_err(|e| tls_err(format!("bad server name {:?}: {e}", self.tls.server_name)))?;
        let config = crate::tls::client_config((*self.tls.roots).clone());
        let connector = tokio_rustls::TlsConnector::from(config);
        let plain = std::mem::replace(&mut self.stream, closed_stream());
        if let Some(t) = &self.transcript {
            t.pause(); // the handshake is not SMTP: the TLS layer is recorded instead
        }
        let tls = match tokio::time::timeout(self.timeouts.connect, connector.connect(name, plain))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let Some(t) = &self.transcript {
                    t.note(format!("TLS handshake ({step}) failed: {e}"));
                }
                return Err(tls_err(e.to_string()));
            }
            Err(_) => {
                if let Some(t) = &self.transcript {
                    t.note(format!("TLS handshake ({step}) timed out"));
                }
                return Err(ClientError::Timeout { step: step.into() });
            }
        };
        self.stream = match &self.transcript {
            Some(t) => {
                t.note(tls_note(step, tls.get_ref().1));
                Box::new(t.wrap(tls))
            }
            None => Box::new(tls),
        };
        self.is_tls = true;
        Ok(())
    }

    async fn write(
        &mut self,
        step: &str,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ClientError::Io {
                step: step.into(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout { step: step.into() }),
        }
    }

    async fn read_line(&mut self, step: &str, timeout: Duration) -> Result<String, ClientError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.input[scanned..].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.input.drain(..scanned + pos + 1).collect();
                let line = String::from_utf8_lossy(&line);
                return Ok(line.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.input.len() > MAX_REPLY_LINE {
                return Err(ClientError::Protocol {
                    step: step.into(),
                    message: format!("reply line longer than {MAX_REPLY_LINE} octets"),
                });
            }
            scanned = self.input.len();
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(timeout, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(ClientError::Timeout { step: step.into() }),
                Ok(Err(source)) => {
                    return Err(ClientError::Io {
                        step: step.into(),
                        source,
                    });
                }
                Ok(Ok(0)) => {
                    return Err(ClientError::Protocol {
                        step: step.into(),
                        message: "connection closed by the server".into(),
                    });
                }
                Ok(Ok(n)) => self.input.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one (possibly multiline) reply.
    pub async fn read_reply(
        &mut self,
        step: &str,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(step, timeout).await?;
            // RFC 5321 §4.2.1: `code-` continues, `code ` (or just the code) ends the reply.
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err(ClientError::Protocol {
                    step: step.into(),
                    message: format!("reply longer than {MAX_REPLY_LINES} lines"),
                });
            }
        }
        Reply::parse_lines(&lines).map_err(|message| ClientError::Protocol {
            step: step.into(),
            message,
        })
    }

    /// Sends one command line (CRLF added) and reads its reply, whatever the code.
    pub async fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        let step = line
            .split_whitespace()
            .next()
            .unwrap_or("command")
            .to_ascii_uppercase();
        self.write(
            &step,
            format!("{line}\r\n").as_bytes(),
            self.timeouts.command,
        )
        .await?;
        self.read_reply(&step, self.timeouts.command).await
    }

    /// Sends raw bytes as they are (for deliberately broken input in conformance tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write("raw", bytes, self.timeouts.data).await
    }

    async fn expect(&mut self, step: &str, line: &str, code: u16) -> Result<Reply, ClientError> {
        self.write(
            step,
            format!("{line}\r\n").as_bytes(),
            self.timeouts.command,
        )
        .await?;
        let reply = self.read_reply(step, self.timeouts.command).await?;
        if reply.code != code {
            return Err(ClientError::Rejected {
                step: step.into(),
                reply,
            });
        }
        Ok(reply)
    }

    /// EHLO; records the capabilities. Falls back to HELO when EHLO is not recognised
    /// (RFC 5321 §3.2).
    pub async fn ehlo(&mut self, name: &str) -> Result<Reply, ClientError> {
        match self.expect("EHLO", &format!("EHLO {name}"), 250).await {
            Ok(reply) => {
                self.capabilities = reply
                    .text
                    .lines()
                    .skip(1)
                    .map(|l| l.trim().to_ascii_uppercase())
                    .collect();
                Ok(reply)
            }
            Err(ClientError::Rejected { reply, .. }) if matches!(reply.code, 500 | 502) => {
                self.capabilities.clear();
                self.expect("HELO", &format!("HELO {name}"), 250).await
            }
            Err(e) => Err(e),
        }
    }

    /// STARTTLS and the TLS handshake (RFC 3207 §4). EHLO again afterwards (§4.2).
    pub async fn starttls(&mut self) -> Result<(), ClientError> {
        if self.is_tls {
            return Err(ClientError::Protocol {
                step: "STARTTLS".into(),
                message: "the connection is already TLS".into(),
            });
        }
        self.expect("STARTTLS", "STARTTLS", 220).await?;
        if !self.input.is_empty() {
            // RFC 3207 §4.2 / STARTTLS response injection: nothing may follow the 220 in plaintext.
            return Err(ClientError::Protocol {
                step: "STARTTLS".into(),
                message: "the server sent plaintext after 220".into(),
            });
        }
        self.handshake("STARTTLS").await?;
        self.capabilities.clear();
        Ok(())
    }

    /// AUTH PLAIN with an initial response (RFC 4616, RFC 4954 §4).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<Reply, ClientError> {
        let token = b64(format!("\0{user}\0{password}").as_bytes());
        self.expect("AUTH PLAIN", &format!("AUTH PLAIN {token}"), 235)
            .await
    }

    /// AUTH LOGIN (user name and password each after a 334).
    pub async fn auth_login(&mut self, user: &str, password: &str) -> Result<Reply, ClientError> {
        self.expect("AUTH LOGIN", "AUTH LOGIN", 334).await?;
        self.expect("AUTH LOGIN user name", &b64(user.as_bytes()), 334)
            .await?;
        self.expect("AUTH LOGIN password", &b64(password.as_bytes()), 235)
            .await
    }

    /// One mail transaction: MAIL, every RCPT (refused ones are reported, the others go on),
    /// DATA with dot-stuffing. Pipelined when the server offers PIPELINING (RFC 2920).
    /// Refusals of MAIL, DATA or the message are errors naming the step.
    pub async fn send(
        &mut self,
        from: &str,
        rcpts: &[&str],
        data: &[u8],
    ) -> Result<SendResult, ClientError> {
        let body = dot_stuff(data);
        let mut mail_cmd = format!("MAIL FROM:<{from}>");
        if self.has_capability("SIZE") {
            // RFC 1870 §6: declare the size.
            mail_cmd.push_str(&format!(" SIZE={}", body.len()));
        }
        if self.has_capability("8BITMIME") && data.iter().any(|b| *b >= 0x80) {
            mail_cmd.push_str(" BODY=8BITMIME"); // RFC 6152 §3
        }
        let t = self.timeouts.command;
        let pipelining = self.has_capability("PIPELINING");
        let mut results = Vec::new();
        let mail;
        if pipelining {
            // RFC 2920 §3.1: MAIL, RCPTs and DATA in one group; DATA is the last command.
            let mut group = format!("{mail_cmd}\r\n");
            for r in rcpts {
                group.push_str(&format!("RCPT TO:<{r}>\r\n"));
            }
            group.push_str("DATA\r\n");
            self.write("MAIL FROM", group.as_bytes(), t).await?;
            mail = self.read_reply("MAIL FROM", t).await?;
            for r in rcpts {
                let reply = self.read_reply("RCPT TO", t).await?;
                results.push(RcptResult {
                    rcpt: r.to_string(),
                    reply,
                });
            }
            let data_reply = self.read_reply("DATA", t).await?;
            if !mail.is_positive() {
                return Err(ClientError::Rejected {
                    step: "MAIL FROM".into(),
                    reply: mail,
                });
            }
            let accepted = results.iter().any(|r| r.reply.is_positive());
            if data_reply.code != 354 {
                if !accepted {
                    return self.no_recipients(mail, results).await;
                }
                return Err(ClientError::Rejected {
                    step: "DATA".into(),
                    reply: data_reply,
                });
            }
            if !accepted {
                // RFC 2920 §3.1: a server that says 354 anyway gets an empty message ended at once.
                self.write("DATA", b".\r\n", t).await?;
                let _ = self.read_reply("DATA", self.timeouts.data).await?;
                return self.no_recipients(mail, results).await;
            }
        } else {
            mail = self.expect("MAIL FROM", &mail_cmd, 250).await?;
            for r in rcpts {
                let reply = self.command(&format!("RCPT TO:<{r}>")).await?;
                results.push(RcptResult {
                    rcpt: r.to_string(),
                    reply,
                });
            }
            if !results.iter().any(|r| r.reply.is_positive()) {
                return self.no_recipients(mail, results).await;
            }
            self.expect("DATA", "DATA", 354).await?;
        }
        self.write("message data", &body, self.timeouts.data)
            .await?;
        let reply = self.read_reply("message data", self.timeouts.data).await?;
        if !reply.is_positive() {
            return Err(ClientError::Rejected {
                step: "message data".into(),
                reply,
            });
        }
        Ok(SendResult {
            mail,
            rcpts: results,
            data: Some(reply),
        })
    }

    async fn no_recipients(
        &mut self,
        mail: Reply,
        rcpts: Vec<RcptResult>,
    ) -> Result<SendResult, ClientError> {
        // RFC 5321 §4.1.1.5: end the transaction.
        self.expect("RSET", "RSET", 250).await?;
        Ok(SendResult {
            mail,
            rcpts,
            data: None,
        })
    }

    /// RSET.
    pub async fn rset(&mut self) -> Result<Reply, ClientError> {
        self.expect("RSET", "RSET", 250).await
    }

    /// NOOP.
    pub async fn noop(&mut self) -> Result<Reply, ClientError> {
        self.expect("NOOP", "NOOP", 250).await
    }

    /// QUIT and close.
    pub async fn quit(mut self) -> Result<Reply, ClientError> {
        let reply = self.expect("QUIT", "QUIT", 221).await?;
        let _ = self.stream.shutdown().await;
        Ok(reply)
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The message as DATA content: CRLF line endings (bare LF and CR become CRLF), a leading dot
/// doubled (RFC 5321 §4.5.2), a final CRLF, and the terminating `.CRLF`.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 50 + 5);
    let mut at_line_start = true;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_line_start = true;
            }
            _ => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\n..c"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
    }
}
