//! The POP3 server (RFC 1939) of the mailbox access point, with CAPA (RFC 2449), STLS (RFC 2595)
//! and implicit TLS (RFC 8314). USER/PASS only over TLS (RFC 6109 §5.3). It serves the INBOX; the
//! session is generic over the stream so tests run it over an in-memory duplex. Failed PASS
//! attempts are slowed down and end the session after a few ([`access::AuthThrottle`]).

use crate::access::{self, AccessConfig, BoxIo, Login};
use crate::store::{MessageMeta, Store};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The longest command line accepted (RFC 2449 §4: 255 octets; some slack).
const MAX_LINE: u64 = 1024;

struct Session {
    io: BufReader<BoxIo>,
    cfg: Arc<AccessConfig>,
    tls: bool,
    user_name: Option<String>,
    mailbox: Option<String>,
    uidvalidity: u32,
    msgs: Vec<MessageMeta>,
    deleted: Vec<bool>,
    auth_failures: u32,
}

/// Runs one POP3 session over `io` until QUIT or the client goes away.
pub async fn session(io: BoxIo, cfg: Arc<AccessConfig>, tls_active: bool) -> std::io::Result<()> {
    let mut s = Session {
        io: BufReader::new(io),
        cfg,
        tls: tls_active,
        user_name: None,
        mailbox: None,
        uidvalidity: 0,
        msgs: Vec::new(),
        deleted: Vec::new(),
        auth_failures: 0,
    };
    let host = s.cfg.hostname.clone();
    s.send(&format!("+OK {host} POP3 ready\r\n")).await?;
    s.run().await
}

/// A message with every line ending in CRLF and lines starting with "." doubled, followed by the
/// terminating "." line (RFC 1939 §3 byte-stuffing). `body_lines` limits the body for TOP.
fn multiline(raw: &[u8], body_lines: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut in_body = false;
    let mut body_count = 0;
    for line in raw.split_inclusive(|&c| c == b'\n') {
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if in_body {
            if body_lines.is_some_and(|n| body_count >= n) {
                break;
            }
            body_count += 1;
        }
        if content.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        if !in_body && content.is_empty() {
            in_body = true;
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl Session {
    async fn send(&mut self, s: &str) -> std::io::Result<()> {
        self.send_bytes(s.as_bytes()).await
    }

    async fn send_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(b).await?;
        w.flush().await
    }

    fn capa(&self) -> String {
        let mut c = vec!["+OK capability list follows", "TOP", "UIDL", "RESP-CODES"];
        if !self.tls && self.cfg.tls.is_some() {
            c.push("STLS");
        }
        if self.tls && self.mailbox.is_none() {
            c.push("USER");
        }
        c.push("IMPLEMENTATION pec-gestore");
        c.push(".");
        c.join("\r\n") + "\r\n"
    }

    /// The 0-based index of a message number argument that names a live message.
    fn msg_arg(&self, arg: Option<&str>) -> Result<usize, &'static str> {
        let n: usize = arg
            .ok_or("-ERR missing message number")?
            .parse()
            .map_err(|_| "-ERR invalid message number")?;
        if n == 0 || n > self.msgs.len() {
            return Err("-ERR no such message");
        }
        if self.deleted[n - 1] {
            return Err("-ERR message already deleted");
        }
        Ok(n - 1)
    }

    async fn run(&mut self) -> std::io::Result<()> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.io)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                // Closed without QUIT: no UPDATE state, nothing deleted (RFC 1939 §6).
                return Ok(());
            }
            if !line.ends_with(b"\n") {
                self.send("-ERR line too long\r\n").await?;
                return Ok(());
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let mut words = text.splitn(2, ' ');
            let cmd = words.next().unwrap_or("").to_ascii_uppercase();
            let arg = words.next().map(str::trim);
            if !self.command(&cmd, arg).await? {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, cmd: &str, arg: Option<&str>) -> std::io::Result<bool> {
        let authed = self.mailbox.is_some();
        let reply: String = match (cmd, authed) {
            ("CAPA", _) => self.capa(),
            ("NOOP", true) => "+OK\r\n".into(),
            ("QUIT", _) => {
                let r = self.update().await;
                self.send(&r).await?;
                return Ok(false);
            }
            ("STLS", false) => {
                let Some(tls) = self.cfg.tls.clone().filter(|_| !self.tls) else {
                    self.send("-ERR STLS not available\r\n").await?;
                    return Ok(true);
                };
                self.send("+OK begin TLS negotiation\r\n").await?;
                // The read buffer (anything pipelined after STLS) is dropped (RFC 2595 §4).
                let (placeholder, _) = tokio::io::duplex(1);
                let old = std::mem::replace(&mut self.io, BufReader::new(Box::new(placeholder)));
                self.io = BufReader::new(access::start_tls(old.into_inner(), tls).await?);
                self.tls = true;
                self.user_name = None;
                return Ok(true);
            }
            ("USER", false) if !self.tls => {
                // RFC 2595 §4 / RFC 6109 §5.3: no plaintext passwords.
                "-ERR [SYS/PERM] USER is only allowed over TLS: use STLS\r\n".into()
            }
            ("USER", false) => match arg {
                Some(u) if !u.is_empty() => {
                    self.user_name = Some(u.to_string());
                    "+OK send PASS\r\n".into()
                }
                _ => "-ERR USER needs a name\r\n".into(),
            },
            ("PASS", false) if !self.tls => {
                "-ERR [SYS/PERM] PASS is only allowed over TLS\r\n".into()
            }
            ("PASS", false) => {
                let Some(reply) = self.pass(arg).await else {
                    // Too many failed logins: the session ends (as SMTP AUTH does).
                    self.send("-ERR [AUTH] invalid credentials; too many failures, closing\r\n")
                        .await?;
                    return Ok(false);
                };
                reply
            }
            ("STAT", true) => {
                let (n, size) = self
                    .live()
                    .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size));
                format!("+OK {n} {size}\r\n")
            }
            ("LIST", true) | ("UIDL", true) => {
                let uidl = cmd == "UIDL";
                let item = |s: &Session, i: usize| {
                    if uidl {
                        // RFC 1939 §7: a unique id that persists across sessions.
                        format!("{} {}.{}", i + 1, s.uidvalidity, s.msgs[i].uid)
                    } else {
                        format!("{} {}", i + 1, s.msgs[i].size)
                    }
                };
                match arg {
                    Some(a) => match self.msg_arg(Some(a)) {
                        Ok(i) => format!("+OK {}\r\n", item(self, i)),
                        Err(e) => format!("{e}\r\n"),
                    },
                    None => {
                        let mut r = String::from("+OK\r\n");
                        for (i, _) in self.live() {
                            r += &item(self, i);
                            r += "\r\n";
                        }
                        r + ".\r\n"
                    }
                }
            }
            ("RETR", true) | ("TOP", true) => {
                let mut parts = arg.unwrap_or("").split_whitespace();
                let i = match self.msg_arg(parts.next()) {
                    Ok(i) => i,
                    Err(e) => {
                        self.send(&format!("{e}\r\n")).await?;
                        return Ok(true);
                    }
                };
                let lines = if cmd == "TOP" {
                    match parts.next().and_then(|n| n.parse::<usize>().ok()) {
                        Some(n) => Some(n),
                        None => {
                            self.send("-ERR TOP needs a message and a line count\r\n")
                                .await?;
                            return Ok(true);
                        }
                    }
                } else {
                    None
                };
                let mb = self.mailbox.clone().unwrap_or_default();
                let uid = self.msgs[i].uid;
                let Ok(Some(raw)) = self.cfg.store.message_raw(&mb, "INBOX", uid).await else {
                    self.send("-ERR message no longer available\r\n").await?;
                    return Ok(true);
                };
                if lines.is_none() && !self.msgs[i].flags.iter().any(|f| f == "\\Seen") {
                    self.msgs[i].flags.push("\\Seen".into());
                    let _ = self
                        .cfg
                        .store
                        .set_flags(&mb, "INBOX", uid, &self.msgs[i].flags)
                        .await;
                }
                let mut out = format!("+OK {} octets\r\n", raw.len()).into_bytes();
                out.extend(multiline(&raw, lines));
                self.send_bytes(&out).await?;
                return Ok(true);
            }
            ("DELE", true) => match self.msg_arg(arg) {
                Ok(i) => {
                    self.deleted[i] = true;
                    format!("+OK message {} deleted\r\n", i + 1)
                }
                Err(e) => format!("{e}\r\n"),
            },
            ("RSET", true) => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                format!("+OK {} messages\r\n", self.msgs.len())
            }
            (_, false) if !cmd.is_empty() => format!("-ERR {cmd}: not allowed before login\r\n"),
            _ => format!("-ERR unknown command {cmd}\r\n"),
        };
        self.send(&reply).await?;
        Ok(true)
    }

    fn live(&self) -> impl Iterator<Item = (usize, &MessageMeta)> {
        self.msgs
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// The reply to PASS; `None` when the failures reached the limit and the session must end.
    async fn pass(&mut self, arg: Option<&str>) -> Option<String> {
        let Some(user) = self.user_name.take() else {
            return Some("-ERR send USER first\r\n".into());
        };
        Some(
            match access::login(&self.cfg.store, &user, arg.unwrap_or("")).await {
                Login::Ok(address) => {
                    let store = &self.cfg.store;
                    let folder = store.folder(&address, "INBOX").await.ok().flatten();
                    self.uidvalidity = folder.map_or(0, |f| f.uidvalidity);
                    self.msgs = store.messages(&address, "INBOX").await.unwrap_or_default();
                    self.deleted = vec![false; self.msgs.len()];
                    self.mailbox = Some(address);
                    format!("+OK {} messages\r\n", self.msgs.len())
                }
                Login::Disabled => "-ERR [AUTH] mailbox disabled\r\n".into(),
                Login::Failed => {
                    // Slow down password guessing; close after too many (access::AuthThrottle).
                    let auth = self.cfg.auth;
                    if auth.fail(&mut self.auth_failures).await {
                        return None;
                    }
                    "-ERR [AUTH] invalid credentials\r\n".into()
                }
            },
        )
    }

    /// The UPDATE state (RFC 1939 §6): removes the messages marked deleted.
    async fn update(&mut self) -> String {
        let Some(mb) = self.mailbox.clone() else {
            return "+OK bye\r\n".into();
        };
        let uids: Vec<i64> = self
            .msgs
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.uid)
            .collect();
        match self.cfg.store.delete_messages(&mb, "INBOX", &uids).await {
            Ok(n) => format!("+OK {n} messages deleted, bye\r\n"),
            Err(e) => format!("-ERR [SYS/TEMP] some deleted messages not removed: {e}\r\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::multiline;

    #[test]
    fn multiline_stuffs_dots_normalises_line_ends_and_cuts_top() {
        let raw = b"Subject: x\n\r\n.hidden\r\nline2\r\nline3";
        assert_eq!(
            multiline(raw, None),
            b"Subject: x\r\n\r\n..hidden\r\nline2\r\nline3\r\n.\r\n"
        );
        assert_eq!(
            multiline(raw, Some(1)),
            b"Subject: x\r\n\r\n..hidden\r\n.\r\n"
        );
        assert_eq!(multiline(raw, Some(0)), b"Subject: x\r\n\r\n.\r\n");
    }
}
