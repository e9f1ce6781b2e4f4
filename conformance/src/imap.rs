//! A small IMAP4rev1 client (RFC 3501) for reading the target's mailboxes: LOGIN, SELECT,
//! UID SEARCH ALL, UID FETCH BODY.PEEK[] (so reading never sets `\Seen`), LOGOUT. Implicit TLS
//! (RFC 8314 §3.2) or STARTTLS (RFC 3501 §6.2.1), on tokio-rustls. Every read has a deadline; a
//! broken or hostile server gives an error naming the command, never a panic. A session can be
//! recorded ([`fetch_all_recorded`]) with the SMTP transcript recorder in its IMAP mode: the
//! password is redacted and message bodies become a size and SHA-256 line.

use reference_gestore::smtp::transcript::{Transcript, tls_note};
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How to reach an IMAP server.
#[derive(Debug, Clone)]
pub struct ImapServer {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// STARTTLS on a plaintext connection instead of implicit TLS.
    pub starttls: bool,
    /// Trust anchors for the server certificate.
    pub roots: RootCertStore,
    /// The name the certificate must carry (usually `host`).
    pub server_name: String,
    /// Deadline of connecting and of each command.
    pub timeout: Duration,
}

/// One message of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapMessage {
    /// Its UID (RFC 3501 §2.3.1.1).
    pub uid: u32,
    /// The whole message, as stored.
    pub raw: Vec<u8>,
}

/// An IMAP failure, naming the step.
#[derive(Debug, thiserror::Error)]
#[error("IMAP {step}: {message}")]
pub struct ImapError {
    /// `connect`, `TLS`, `greeting`, `LOGIN`, `SELECT`, …
    pub step: String,
    /// What went wrong (the server's text when it refused).
    pub message: String,
}

fn err(step: &str, message: impl std::fmt::Display) -> ImapError {
    ImapError {
        step: step.into(),
        message: message.to_string(),
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The longest line or literal accepted (a PEC message is at most a few tens of MB).
const MAX_LITERAL: usize = 256 * 1024 * 1024;
const MAX_LINE: usize = 1024 * 1024;

/// One server response: its text (literals replaced by `{N}` markers) and its literals in order.
#[derive(Debug, Default)]
struct Response {
    text: String,
    literals: Vec<Vec<u8>>,
}

struct Conn<S> {
    io: BufReader<S>,
    tag: u32,
    timeout: Duration,
}

impl<S: Io> Conn<S> {
    async fn line(&mut self, step: &str) -> Result<Vec<u8>, ImapError> {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(self.timeout, async {
            (&mut self.io)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await
        })
        .await
        .map_err(|_| err(step, "timed out"))?
        .map_err(|e| err(step, e))?;
        if read == 0 {
            return Err(err(step, "the server closed the connection"));
        }
        if !buf.ends_with(b"\n") {
            return Err(err(step, "a response line is too long"));
        }
        Ok(buf)
    }

    /// One response with its literals (RFC 3501 §4.3: `{N}` CRLF then N octets).
    async fn response(&mut self, step: &str) -> Result<Response, ImapError> {
        let mut r = Response::default();
        loop {
            let line = self.line(step).await?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            r.text.push_str(text);
            let Some(n) = literal_len(text) else {
                return Ok(r);
            };
            if n > MAX_LITERAL {
                return Err(err(step, format!("a literal of {n} octets is too large")));
            }
            let mut lit = vec![0; n];
            tokio::time::timeout(self.timeout, self.io.read_exact(&mut lit))
                .await
                .map_err(|_| err(step, "timed out"))?
                .map_err(|e| err(step, e))?;
            r.literals.push(lit);
        }
    }

    /// Sends a command and reads to its tagged completion; the untagged responses before it.
    async fn command(&mut self, step: &str, cmd: &str) -> Result<Vec<Response>, ImapError> {
        self.tag += 1;
        let tag = format!("c{}", self.tag);
        let line = format!("{tag} {cmd}\r\n");
        tokio::time::timeout(self.timeout, async {
            self.io.get_mut().write_all(line.as_bytes()).await?;
            self.io.get_mut().flush().await
        })
        .await
        .map_err(|_| err(step, "timed out"))?
        .map_err(|e| err(step, e))?;
        let mut untagged = Vec::new();
        loop {
            let r = self.response(step).await?;
            if let Some(rest) = r.text.strip_prefix(&format!("{tag} ")) {
                // RFC 3501 §7.1: OK, NO or BAD completes the command.
                if rest.get(..2).is_some_and(|s| s.eq_ignore_ascii_case("OK")) {
                    return Ok(untagged);
                }
                return Err(err(step, rest));
            }
            untagged.push(r);
        }
    }
}

/// The length of the literal a response line ends with (`{N}` or `{N+}`), if any.
fn literal_len(line: &str) -> Option<usize> {
    let open = line.strip_suffix('}')?.rfind('{')?;
    let n = &line[open + 1..line.len() - 1];
    n.trim_end_matches('+').parse().ok()
}

/// A quoted string (RFC 3501 §4.3); CR, LF and NUL cannot be quoted.
fn quoted(s: &str) -> Result<String, ImapError> {
    if s.contains(['\r', '\n', '\0']) {
        return Err(err(
            "LOGIN",
            "the user name or password contains CR, LF or NUL",
        ));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

async fn tls<S: Io>(
    server: &ImapServer,
    tcp: S,
) -> Result<tokio_rustls::client::TlsStream<S>, ImapError> {
    let name = ServerName::try_from(server.server_name.clone())
        .map_err(|e| err("TLS", format!("server name `{}`: {e}", server.server_name)))?;
    let connector = tokio_rustls::TlsConnector::from(reference_gestore::tls::client_config(
        server.roots.clone(),
    ));
    tokio::time::timeout(server.timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| err("TLS", "the handshake timed out"))?
        .map_err(|e| err("TLS", e))
}

/// Connects, logs in and selects `mailbox`.
async fn open(
    server: &ImapServer,
    user: &str,
    password: &str,
    mailbox: &str,
    transcript: &Transcript,
) -> Result<Conn<Box<dyn Io>>, ImapError> {
    let addr = format!("{}:{}", server.host, server.port);
    transcript.note(format!(
        "connecting to {addr} ({})",
        if server.starttls {
            "STARTTLS"
        } else {
            "implicit TLS"
        }
    ));
    let tcp = tokio::time::timeout(server.timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| err("connect", format!("{addr}: timed out")))?
        .map_err(|e| err("connect", format!("{addr}: {e}")))?;
    let tcp = transcript.wrap(tcp);
    // The TLS handshake is not IMAP: not recorded, a marker line says how it went.
    let secure = |s: tokio_rustls::client::TlsStream<_>, how: &str| {
        transcript.note(tls_note(how, s.get_ref().1));
        Box::new(transcript.wrap(s)) as Box<dyn Io>
    };
    let mut conn = if server.starttls {
        let mut plain = Conn {
            io: BufReader::new(tcp),
            tag: 0,
            timeout: server.timeout,
        };
        greeting(&mut plain).await?;
        plain.command("STARTTLS", "STARTTLS").await?;
        // RFC 3501 §6.2.1: nothing the server sent before the handshake is kept.
        if !plain.io.buffer().is_empty() {
            return Err(err(
                "STARTTLS",
                "the server sent data before the TLS handshake",
            ));
        }
        let tcp = plain.io.into_inner();
        transcript.pause();
        Conn {
            io: BufReader::new(secure(tls(server, tcp).await?, "STARTTLS")),
            tag: plain.tag,
            timeout: server.timeout,
        }
    } else {
        transcript.pause();
        let mut c = Conn {
            io: BufReader::new(secure(tls(server, tcp).await?, "implicit")),
            tag: 0,
            timeout: server.timeout,
        };
        greeting(&mut c).await?;
        c
    };
    // RFC 3501 §6.1.1, §6.2.1: the capabilities as they are after TLS (recorded for the evidence).
    conn.command("CAPABILITY", "CAPABILITY").await?;
    conn.command(
        "LOGIN",
        &format!("LOGIN {} {}", quoted(user)?, quoted(password)?),
    )
    .await?;
    conn.command("SELECT", &format!("SELECT {}", quoted(mailbox)?))
        .await?;
    Ok(conn)
}

async fn greeting<S: Io>(c: &mut Conn<S>) -> Result<(), ImapError> {
    let g = c.response("greeting").await?;
    // RFC 3501 §7.1.1, §7.1.4: `* OK` (or PREAUTH) greets; `* BYE` refuses.
    let up = g.text.to_ascii_uppercase();
    if up.starts_with("* OK") || up.starts_with("* PREAUTH") {
        Ok(())
    } else {
        Err(err("greeting", g.text))
    }
}

/// Every message of `mailbox` (RFC 3501 §6.4.4 UID SEARCH ALL, §6.4.5 BODY.PEEK[]), by UID.
pub async fn fetch_all(
    server: &ImapServer,
    user: &str,
    password: &str,
    mailbox: &str,
) -> Result<Vec<ImapMessage>, ImapError> {
    let t = Transcript::imap(reference_gestore::smtp::transcript::Side::Client);
    fetch_all_recorded(server, user, password, mailbox, &t).await
}

/// [`fetch_all`], recording the session into `transcript` (made with [`Transcript::imap`]: the
/// password redacted, each message a size and SHA-256 line); an error is noted in it too.
pub async fn fetch_all_recorded(
    server: &ImapServer,
    user: &str,
    password: &str,
    mailbox: &str,
    transcript: &Transcript,
) -> Result<Vec<ImapMessage>, ImapError> {
    let r = fetch_session(server, user, password, mailbox, transcript).await;
    if let Err(e) = &r {
        transcript.note(format!("error: {e}"));
    }
    r
}

async fn fetch_session(
    server: &ImapServer,
    user: &str,
    password: &str,
    mailbox: &str,
    transcript: &Transcript,
) -> Result<Vec<ImapMessage>, ImapError> {
    let mut c = open(server, user, password, mailbox, transcript).await?;
    let search = c.command("UID SEARCH", "UID SEARCH ALL").await?;
    let uids: Vec<u32> = search
        .iter()
        .filter_map(|r| {
            let up = r.text.to_ascii_uppercase();
            up.starts_with("* SEARCH").then(|| r.text[8..].to_string())
        })
        .flat_map(|s| {
            s.split_ascii_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    let mut out = Vec::new();
    if !uids.is_empty() {
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let fetched = c
            .command("UID FETCH", &format!("UID FETCH {set} (UID BODY.PEEK[])"))
            .await?;
        for r in fetched {
            // Unsolicited FETCH responses (flag updates, RFC 3501 §7.4.2) carry no body.
            if !r.text.to_ascii_uppercase().contains(" FETCH (") || r.literals.is_empty() {
                continue;
            }
            let Some(uid) = fetch_uid(&r.text) else {
                return Err(err("UID FETCH", format!("no UID in `{}`", r.text)));
            };
            let raw = r.literals.into_iter().next().unwrap_or_default();
            out.push(ImapMessage { uid, raw });
        }
    }
    let _ = c.command("LOGOUT", "LOGOUT").await;
    if out.len() < uids.len() {
        return Err(err(
            "UID FETCH",
            format!("{} of {} messages came back", out.len(), uids.len()),
        ));
    }
    out.sort_by_key(|m| m.uid);
    Ok(out)
}

/// The UID of a FETCH response (`… UID 7 …`).
fn fetch_uid(text: &str) -> Option<u32> {
    let up = text.to_ascii_uppercase();
    let mut words = up.split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ')');
    while let Some(w) = words.next() {
        if w == "UID" {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_uids_are_read_from_response_text() {
        assert_eq!(literal_len("* 1 FETCH (UID 4 BODY[] {123}"), Some(123));
        assert_eq!(literal_len("* 1 FETCH (UID 4 BODY[] {12+}"), Some(12));
        assert_eq!(literal_len("* OK done"), None);
        assert_eq!(literal_len("* OK {x}"), None);
        assert_eq!(fetch_uid("* 1 FETCH (UID 4 BODY[] {3})"), Some(4));
        assert_eq!(fetch_uid("* 1 FETCH (BODY[] {3}) UID 9)"), Some(9));
        assert_eq!(fetch_uid("* 1 FETCH (FLAGS ())"), None);
        assert_eq!(quoted(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quoted("a\r\nb").is_err());
    }
}
