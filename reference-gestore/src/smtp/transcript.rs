//! SMTP transcripts captured from the wire: a [`Transcript`] records every line that crosses a
//! session's byte stream, in order, with the time since the transcript began and its direction
//! (`C:` client to server, `S:` server to client).
//!
//! The recording is of the plaintext layer: [`Transcript::wrap`] wraps a stream and makes it the
//! recorded layer; before a TLS handshake [`Transcript::pause`] stops recording the layer below,
//! and the TLS stream is wrapped in turn, so the SMTP dialogue inside TLS is what is recorded
//! (with a marker line for the handshake, see [`tls_note`]).
//!
//! What is not copied: the responses to SASL challenges and the initial response of `AUTH`
//! become `****` (credentials, RFC 4954 §4), and the message content after a `354` becomes one
//! line `[message: N bytes, sha256 …]` (N and the hash are of the content as received: dot-
//! unstuffed, without the final `.`, RFC 5321 §4.5.2). Memory is bounded: past the limit a
//! transcript records one truncation marker and nothing else.
//!
//! The same recorder reads IMAP ([`Transcript::imap`]): the password of `LOGIN` and the
//! `AUTHENTICATE` initial response and continuation responses become `****` (RFC 3501 §6.2.2,
//! §6.2.3), and every literal (RFC 3501 §4.3: `{N}` then N octets) becomes one line: a server's
//! `[literal: N bytes, sha256 …]` (a message body), a client's `[literal: N bytes]` (it may be a
//! credential).

use openssl::sha::Sha256;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The default cap of a transcript's text, in bytes.
pub const DEFAULT_LIMIT: usize = 1024 * 1024;

/// The longest line kept whole; the rest of a longer line is counted, not kept.
const MAX_LINE: usize = 4096;

/// Which end of the session the recorded stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stream of an SMTP client: writes are `C:`, reads are `S:`.
    Client,
    /// The stream of an SMTP server: reads are `C:`, writes are `S:`.
    Server,
}

/// The direction of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    FromClient,
    FromServer,
}

/// The message content after `354`, un-stuffed on the fly (RFC 5321 §4.5.2).
struct DataState {
    hasher: Sha256,
    bytes: u64,
    line_start: bool,
    /// Bytes held at a line start: `.` or `.\r` (a terminator or a stuffed dot so far).
    held: usize,
}

impl DataState {
    fn new() -> Self {
        DataState {
            hasher: Sha256::new(),
            bytes: 0,
            line_start: true,
            held: 0,
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// Takes one byte; true at the end of the content (the `.CRLF` line, or `.LF`).
    fn byte(&mut self, b: u8) -> bool {
        match (self.held, b) {
            (0, b'.') if self.line_start => {
                self.held = 1;
                false
            }
            (1, b'\r') => {
                self.held = 2;
                false
            }
            (1 | 2, b'\n') => true,
            (1, _) => {
                // A stuffed dot: dropped (RFC 5321 §4.5.2).
                self.held = 0;
                self.line_start = false;
                self.emit(&[b]);
                false
            }
            (2, _) => {
                self.held = 0;
                self.emit(b"\r");
                // `.\rX`: a stuffed dot before a bare CR; `\n` was handled above.
                self.line_start = false;
                self.emit(&[b]);
                false
            }
            _ => {
                self.emit(&[b]);
                self.line_start = b == b'\n';
                false
            }
        }
    }
}

#[derive(Default)]
struct Partial {
    line: Vec<u8>,
    /// Bytes of the current line beyond [`MAX_LINE`].
    dropped: usize,
}

/// The literal being received (IMAP, RFC 3501 §4.3).
struct LiteralState {
    dir: Dir,
    remaining: usize,
    bytes: usize,
    hasher: Sha256,
}

struct State {
    side: Side,
    /// IMAP instead of SMTP.
    imap: bool,
    /// IMAP: the literal whose octets are being counted.
    literal: Option<LiteralState>,
    /// IMAP: an AUTHENTICATE is running (its continuation responses are credentials).
    authenticating: bool,
    /// IMAP: a LOGIN sent with literals goes on (its next client line is credentials).
    login_literal: bool,
    start: Instant,
    limit: usize,
    size: usize,
    truncated: bool,
    lines: Vec<String>,
    layers: u32,
    /// The layer recorded; 0 while none is (during a TLS handshake).
    active: u32,
    from_client: Partial,
    from_server: Partial,
    data: Option<DataState>,
    /// The server sent a `334` challenge: the client's next line is a SASL response.
    sasl_response: bool,
}

impl State {
    fn push(&mut self, tag: &str, text: &str) {
        if self.truncated {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64();
        let line = format!("{secs:9.3} {tag} {text}");
        if self.size + line.len() + 1 > self.limit {
            self.truncated = true;
            let marker = format!("{secs:9.3} -- transcript truncated at {} bytes", self.limit);
            self.size += marker.len() + 1;
            self.lines.push(marker);
            return;
        }
        self.size += line.len() + 1;
        self.lines.push(line);
    }

    fn bytes(&mut self, dir: Dir, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if let Some(l) = self.literal.as_mut().filter(|l| l.dir == dir) {
                // RFC 3501 §4.3: N octets, whatever they hold.
                let n = l.remaining.min(rest.len());
                l.hasher.update(&rest[..n]);
                l.bytes += n;
                l.remaining -= n;
                rest = &rest[n..];
                if l.remaining == 0 {
                    let l = self.literal.take().expect("literal state present");
                    let text = match dir {
                        Dir::FromServer => {
                            format!("[literal: {} bytes, sha256 {}]", l.bytes, hex(l.hasher))
                        }
                        Dir::FromClient => format!("[literal: {} bytes]", l.bytes),
                    };
                    self.push(if dir == Dir::FromServer { "S:" } else { "C:" }, &text);
                }
                continue;
            }
            if dir == Dir::FromClient
                && let Some(d) = self.data.as_mut()
            {
                let mut used = rest.len();
                for (i, b) in rest.iter().enumerate() {
                    if d.byte(*b) {
                        used = i + 1;
                        let d = self.data.take().expect("data state present");
                        let hash: String =
                            d.hasher.finish().iter().fold(String::new(), |mut s, b| {
                                let _ = write!(s, "{b:02x}");
                                s
                            });
                        let text = format!("[message: {} bytes, sha256 {hash}]", d.bytes);
                        self.push("C:", &text);
                        break;
                    }
                }
                rest = &rest[used..];
                continue;
            }
            let partial = match dir {
                Dir::FromClient => &mut self.from_client,
                Dir::FromServer => &mut self.from_server,
            };
            match rest.iter().position(|b| *b == b'\n') {
                Some(pos) => {
                    take(partial, &rest[..=pos]);
                    rest = &rest[pos + 1..];
                    let p = std::mem::take(partial);
                    self.line(dir, p);
                }
                None => {
                    take(partial, rest);
                    rest = &[];
                }
            }
        }
    }

    /// One complete line (or what is left of one at a pause).
    fn line(&mut self, dir: Dir, p: Partial) {
        let mut text = printable(&p.line);
        if p.dropped > 0 {
            let _ = write!(text, " … [{} more bytes]", p.dropped);
        }
        if self.imap {
            return self.imap_line(dir, text);
        }
        match dir {
            Dir::FromClient => {
                if std::mem::take(&mut self.sasl_response) {
                    // RFC 4954 §4: the response to a challenge carries credentials.
                    text = "****".into();
                } else if let Some(redacted) = redact_auth(&text) {
                    text = redacted;
                }
                self.push("C:", &text);
            }
            Dir::FromServer => {
                let code = text.get(..3).unwrap_or("");
                let last = text.as_bytes().get(3) != Some(&b'-');
                if last && code == "334" {
                    self.sasl_response = true; // RFC 4954 §4
                }
                if last && code == "354" {
                    // RFC 5321 §4.1.1.4: the content follows the 354.
                    self.data = Some(DataState::new());
                }
                self.push("S:", &text);
            }
        }
    }

    /// One IMAP line: credentials redacted, a literal announced at its end counted next.
    fn imap_line(&mut self, dir: Dir, mut text: String) {
        let lit = literal_len(&text);
        let lit_mark = lit.map(|n| format!(" {{{n}}}")).unwrap_or_default();
        match dir {
            Dir::FromClient => {
                if std::mem::take(&mut self.sasl_response) {
                    // RFC 3501 §6.2.2: a response to a continuation of AUTHENTICATE.
                    text = "****".into();
                } else if self.login_literal {
                    // The rest of a LOGIN sent with literals (RFC 3501 §4.3, §6.2.3).
                    text = format!("****{lit_mark}");
                    self.login_literal = lit.is_some();
                } else if let Some((redacted, auth)) = redact_imap(&text) {
                    self.authenticating = auth;
                    if lit.is_some() && !auth {
                        // `LOGIN {N}` or `LOGIN user {N}`: nothing of it is copied.
                        let verb = text.split(' ').take(2).collect::<Vec<_>>().join(" ");
                        text = format!("{verb} ****{lit_mark}");
                        self.login_literal = true;
                    } else {
                        text = redacted;
                    }
                }
            }
            Dir::FromServer => {
                if text.starts_with('+') && self.authenticating {
                    self.sasl_response = true;
                } else if !text.starts_with('*') && !text.starts_with('+') {
                    // A tagged response ends the command (RFC 3501 §7.1).
                    self.authenticating = false;
                    self.login_literal = false;
                }
            }
        }
        let tag = if dir == Dir::FromServer { "S:" } else { "C:" };
        self.push(tag, &text);
        match lit {
            Some(0) => self.push(tag, "[literal: 0 bytes]"),
            Some(n) => {
                self.literal = Some(LiteralState {
                    dir,
                    remaining: n,
                    bytes: 0,
                    hasher: Sha256::new(),
                })
            }
            None => {}
        }
    }

    fn flush_partials(&mut self) {
        for dir in [Dir::FromClient, Dir::FromServer] {
            let p = match dir {
                Dir::FromClient => std::mem::take(&mut self.from_client),
                Dir::FromServer => std::mem::take(&mut self.from_server),
            };
            if !p.line.is_empty() || p.dropped > 0 {
                self.line(dir, p);
            }
        }
    }
}

fn take(p: &mut Partial, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(p.line.len());
    let kept = bytes.len().min(room);
    p.line.extend_from_slice(&bytes[..kept]);
    p.dropped += bytes.len() - kept;
}

/// A line as text: line end removed, invalid UTF-8 replaced, control characters escaped.
fn printable(line: &[u8]) -> String {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    String::from_utf8_lossy(&line[..end])
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Lowercase hex of a finished hash.
fn hex(h: Sha256) -> String {
    h.finish().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `{N}` or `{N+}` at the end of an IMAP line: a literal of N octets follows (RFC 3501 §4.3,
/// RFC 7888).
fn literal_len(line: &str) -> Option<usize> {
    let open = line.strip_suffix('}')?.rfind('{')?;
    line[open + 1..line.len() - 1]
        .trim_end_matches('+')
        .parse()
        .ok()
}

/// `tag LOGIN user password` → `tag LOGIN user ****` (RFC 3501 §6.2.3) and
/// `tag AUTHENTICATE mech [initial response]` → `tag AUTHENTICATE mech [****]` (RFC 3501 §6.2.2,
/// RFC 4959); the flag says an AUTHENTICATE starts.
fn redact_imap(text: &str) -> Option<(String, bool)> {
    let mut words = text.splitn(3, ' ');
    let tag = words.next()?;
    let verb = words.next()?;
    let rest = words.next().unwrap_or("");
    if verb.eq_ignore_ascii_case("LOGIN") {
        // The user name: a quoted string (with escapes), a literal or an atom.
        let user = if let Some(q) = rest.strip_prefix('"') {
            let mut end = None;
            let mut esc = false;
            for (i, c) in q.char_indices() {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            end.map_or(rest, |e| &rest[..e + 2])
        } else {
            rest.split(' ').next().unwrap_or("")
        };
        let pw = if literal_len(text).is_some() && !rest.contains(' ') {
            // `LOGIN {N}`: the user name itself follows as a literal.
            String::new()
        } else {
            " ****".into()
        };
        return Some((format!("{tag} {verb} {user}{pw}"), false));
    }
    if verb.eq_ignore_ascii_case("AUTHENTICATE") {
        let mech = rest.split(' ').next().unwrap_or("");
        let ir = if rest.contains(' ') { " ****" } else { "" };
        return Some((format!("{tag} {verb} {mech}{ir}"), true));
    }
    None
}

/// `AUTH <mechanism> <initial response>` → `AUTH <mechanism> ****` (RFC 4954 §4).
fn redact_auth(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    let verb = words.next()?;
    if !verb.eq_ignore_ascii_case("AUTH") {
        return None;
    }
    let mechanism = words.next()?;
    words.next()?;
    Some(format!("{verb} {mechanism} ****"))
}

/// A transcript being recorded; clones share it.
#[derive(Clone)]
pub struct Transcript(Arc<Mutex<State>>);

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Transcript")
            .field("side", &s.side)
            .field("lines", &s.lines.len())
            .field("truncated", &s.truncated)
            .finish()
    }
}

impl Transcript {
    /// A new transcript of the `side` end of a session, capped at [`DEFAULT_LIMIT`].
    pub fn new(side: Side) -> Self {
        Self::with_limit(side, DEFAULT_LIMIT)
    }

    /// A new transcript of the `side` end of an IMAP session (RFC 3501), capped at
    /// [`DEFAULT_LIMIT`]: credentials redacted, literals counted and hashed, not copied.
    pub fn imap(side: Side) -> Self {
        let t = Self::new(side);
        t.lock().imap = true;
        t
    }

    /// A new transcript capped at `limit` bytes of text.
    pub fn with_limit(side: Side, limit: usize) -> Self {
        Transcript(Arc::new(Mutex::new(State {
            side,
            imap: false,
            literal: None,
            authenticating: false,
            login_literal: false,
            start: Instant::now(),
            limit,
            size: 0,
            truncated: false,
            lines: Vec::new(),
            layers: 0,
            active: 0,
            from_client: Partial::default(),
            from_server: Partial::default(),
            data: None,
            sasl_response: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while recording leaves the state usable: it is only text.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wraps `inner`, which becomes the recorded layer (the layers below stop recording).
    pub fn wrap<S>(&self, inner: S) -> Recorded<S> {
        let mut s = self.lock();
        s.layers += 1;
        s.active = s.layers;
        Recorded {
            inner,
            transcript: self.clone(),
            layer: s.layers,
        }
    }

    /// Stops recording until the next [`Transcript::wrap`] (call before a TLS handshake: the
    /// handshake is not SMTP, RFC 3207 §4).
    pub fn pause(&self) {
        let mut s = self.lock();
        s.flush_partials();
        s.active = 0;
    }

    /// A marker line `-- text` (a connection, a TLS handshake, an error).
    pub fn note(&self, text: impl AsRef<str>) {
        let mut s = self.lock();
        s.flush_partials();
        s.push("--", text.as_ref());
    }

    /// The transcript so far, one line each, ending with a newline.
    pub fn text(&self) -> String {
        let mut s = self.lock();
        s.flush_partials();
        let mut out = String::with_capacity(s.size);
        for l in &s.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// The stream's side.
    pub fn side(&self) -> Side {
        self.lock().side
    }

    fn record(&self, layer: u32, written: bool, bytes: &[u8]) {
        let mut s = self.lock();
        if s.active != layer || bytes.is_empty() {
            return;
        }
        let dir = match (s.side, written) {
            (Side::Client, true) | (Side::Server, false) => Dir::FromClient,
            _ => Dir::FromServer,
        };
        s.bytes(dir, bytes);
    }
}

/// The marker text of a finished TLS handshake: protocol version and cipher suite.
pub fn tls_note(how: &str, conn: &rustls::CommonState) -> String {
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "unknown version".into());
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "unknown cipher".into());
    format!("TLS handshake ({how}) done: {version}, {suite}")
}

/// A stream whose traffic is recorded into a [`Transcript`] while it is the recorded layer.
pub struct Recorded<S> {
    inner: S,
    transcript: Transcript,
    layer: u32,
}

impl<S> Recorded<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.transcript
                .record(this.layer, false, &buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.transcript.record(this.layer, true, &buf[..*n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    /// The peer says `bytes`; the recorded end reads them all.
    async fn hear(peer: &mut DuplexStream, rec: &mut Recorded<DuplexStream>, bytes: &[u8]) {
        peer.write_all(bytes).await.unwrap();
        let mut got = vec![0; bytes.len()];
        rec.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bytes);
    }

    /// The recorded end says `bytes`; the peer reads them all.
    async fn say(peer: &mut DuplexStream, rec: &mut Recorded<DuplexStream>, bytes: &[u8]) {
        rec.write_all(bytes).await.unwrap();
        let mut got = vec![0; bytes.len()];
        peer.read_exact(&mut got).await.unwrap();
    }

    /// The lines without their timestamps.
    fn lines(t: &Transcript) -> Vec<String> {
        t.text()
            .lines()
            .map(|l| l.trim_start().split_once(' ').unwrap().1.to_string())
            .collect()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        openssl::sha::sha256(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[tokio::test]
    async fn an_imap_session_hides_passwords_and_literal_bodies() {
        let (a, mut peer) = duplex(64 * 1024);
        let t = Transcript::imap(Side::Client);
        let mut rec = t.wrap(a);
        let body = b"From: a@b\r\nSubject: secret body\r\n\r\nhello\r\n";
        hear(
            &mut peer,
            &mut rec,
            b"* OK [CAPABILITY IMAP4rev1] ready\r\n",
        )
        .await;
        say(
            &mut peer,
            &mut rec,
            b"c1 LOGIN \"bob@b\" \"s3cr\\\"et\"\r\n",
        )
        .await;
        hear(&mut peer, &mut rec, b"c1 OK done\r\n").await;
        say(&mut peer, &mut rec, b"c2 AUTHENTICATE PLAIN\r\n").await;
        hear(&mut peer, &mut rec, b"+ \r\n").await;
        say(&mut peer, &mut rec, b"AGJvYgBzM2NyZXQ=\r\n").await;
        hear(&mut peer, &mut rec, b"c2 NO no\r\n").await;
        say(&mut peer, &mut rec, b"c3 LOGIN {5}\r\n").await;
        hear(&mut peer, &mut rec, b"+ go\r\n").await;
        say(&mut peer, &mut rec, b"bob@b {6}\r\n").await;
        say(&mut peer, &mut rec, b"s3cret\r\n").await;
        hear(&mut peer, &mut rec, b"c3 OK\r\n").await;
        let mut fetch = format!("* 1 FETCH (UID 7 BODY[] {{{}}}\r\n", body.len()).into_bytes();
        fetch.extend_from_slice(body);
        fetch.extend_from_slice(b")\r\nc4 OK fetched\r\n");
        say(&mut peer, &mut rec, b"c4 UID FETCH 7 BODY.PEEK[]\r\n").await;
        hear(&mut peer, &mut rec, &fetch).await;
        let got = lines(&t);
        let text = t.text();
        assert!(
            !text.contains("s3cr") && !text.contains("AGJvYgBz"),
            "{text}"
        );
        assert!(!text.contains("secret body"), "{text}");
        assert_eq!(
            got,
            [
                "S: * OK [CAPABILITY IMAP4rev1] ready".to_string(),
                "C: c1 LOGIN \"bob@b\" ****".into(),
                "S: c1 OK done".into(),
                "C: c2 AUTHENTICATE PLAIN".into(),
                "S: + ".into(),
                "C: ****".into(),
                "S: c2 NO no".into(),
                "C: c3 LOGIN **** {5}".into(),
                "S: + go".into(),
                "C: [literal: 5 bytes]".into(),
                "C: **** {6}".into(),
                "C: [literal: 6 bytes]".into(),
                "C: ****".into(),
                "S: c3 OK".into(),
                "C: c4 UID FETCH 7 BODY.PEEK[]".into(),
                format!("S: * 1 FETCH (UID 7 BODY[] {{{}}}", body.len()),
                format!(
                    "S: [literal: {} bytes, sha256 {}]",
                    body.len(),
                    sha256_hex(body)
                ),
                "S: )".into(),
                "S: c4 OK fetched".into(),
            ]
        );
    }

    #[tokio::test]
    async fn a_client_dialogue_is_recorded_with_credentials_and_content_replaced() {
        let (a, mut peer) = duplex(64 * 1024);
        let t = Transcript::new(Side::Client);
        let mut rec = t.wrap(a);
        hear(&mut peer, &mut rec, b"220 mx ESMTP\r\n").await;
        say(&mut peer, &mut rec, b"EHLO c\r\n").await;
        hear(
            &mut peer,
            &mut rec,
            b"250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
        )
        .await;
        say(&mut peer, &mut rec, b"AUTH PLAIN AGEAc2VncmV0bw==\r\n").await;
        hear(&mut peer, &mut rec, b"535 5.7.8 no\r\n").await;
        say(&mut peer, &mut rec, b"AUTH LOGIN\r\n").await;
        hear(&mut peer, &mut rec, b"334 VXNlcm5hbWU6\r\n").await;
        say(&mut peer, &mut rec, b"dXNlcg==\r\n").await;
        hear(&mut peer, &mut rec, b"334 UGFzc3dvcmQ6\r\n").await;
        say(&mut peer, &mut rec, b"c2VncmV0bw==\r\n").await;
        hear(&mut peer, &mut rec, b"235 2.7.0 ok\r\n").await;
        // Pipelined (RFC 2920): three commands in one write, three replies in one read.
        say(
            &mut peer,
            &mut rec,
            b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
        )
        .await;
        hear(&mut peer, &mut rec, b"250 ok\r\n250 ok\r\n354 go\r\n").await;
        // The content, dot-stuffed, in pieces that split the terminator; QUIT right after it.
        say(&mut peer, &mut rec, b"Subject: x\r\n\r\n..dot\r").await;
        say(&mut peer, &mut rec, b"\nlast\r\n.").await;
        say(&mut peer, &mut rec, b"\r\nQUIT\r\n").await;
        hear(&mut peer, &mut rec, b"250 2.0.0 queued\r\n221 bye\r\n").await;
        let content = b"Subject: x\r\n\r\n.dot\r\nlast\r\n";
        let marker = format!(
            "C: [message: {} bytes, sha256 {}]",
            content.len(),
            sha256_hex(content)
        );
        assert_eq!(
            lines(&t),
            [
                "S: 220 mx ESMTP",
                "C: EHLO c",
                "S: 250-mx",
                "S: 250-AUTH PLAIN LOGIN",
                "S: 250 8BITMIME",
                "C: AUTH PLAIN ****",
                "S: 535 5.7.8 no",
                "C: AUTH LOGIN",
                "S: 334 VXNlcm5hbWU6",
                "C: ****",
                "S: 334 UGFzc3dvcmQ6",
                "C: ****",
                "S: 235 2.7.0 ok",
                "C: MAIL FROM:<a@x.test>",
                "C: RCPT TO:<b@y.test>",
                "C: DATA",
                "S: 250 ok",
                "S: 250 ok",
                "S: 354 go",
                marker.as_str(),
                "C: QUIT",
                "S: 250 2.0.0 queued",
                "S: 221 bye",
            ]
        );
        let text = t.text();
        assert!(!text.contains("c2VncmV0bw"), "{text}");
        assert!(!text.contains("Subject"), "{text}");
        // Every line carries a relative time in seconds.
        assert!(
            text.lines().all(|l| l.trim_start().starts_with("0.")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_server_stream_records_reads_as_client_lines() {
        let (a, mut peer) = duplex(4096);
        let t = Transcript::new(Side::Server);
        let mut rec = t.wrap(a);
        say(&mut peer, &mut rec, b"220 me\r\n").await;
        hear(&mut peer, &mut rec, b"DATA\r\n").await;
        say(&mut peer, &mut rec, b"354 go\r\n").await;
        hear(&mut peer, &mut rec, b".\r\nNOOP\r\n").await;
        assert_eq!(
            lines(&t),
            [
                "S: 220 me",
                "C: DATA",
                "S: 354 go",
                &format!("C: [message: 0 bytes, sha256 {}]", sha256_hex(b"")),
                "C: NOOP",
            ]
        );
    }

    #[tokio::test]
    async fn only_the_top_layer_is_recorded_and_markers_are_kept() {
        let (a, mut peer) = duplex(4096);
        let t = Transcript::new(Side::Client);
        let mut lower = t.wrap(a);
        say(&mut peer, &mut lower, b"STARTTLS\r\n").await;
        // A line cut by the pause is kept as it is.
        say(&mut peer, &mut lower, b"half").await;
        t.pause();
        say(&mut peer, &mut lower, b"\x16\x03\x01 handshake bytes\r\n").await;
        let mut upper = t.wrap(lower);
        t.note("TLS handshake (STARTTLS) done: TLSv1_3, TLS13_AES_128_GCM_SHA256");
        upper.write_all(b"EHLO again\r\n").await.unwrap();
        let mut got = [0u8; 12];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(
            lines(&t),
            [
                "C: STARTTLS",
                "C: half",
                "-- TLS handshake (STARTTLS) done: TLSv1_3, TLS13_AES_128_GCM_SHA256",
                "C: EHLO again",
            ]
        );
    }

    #[tokio::test]
    async fn memory_is_bounded_with_a_truncation_marker() {
        let (a, mut peer) = duplex(1 << 20);
        let t = Transcript::with_limit(Side::Client, 200);
        let mut rec = t.wrap(a);
        for _ in 0..50 {
            say(&mut peer, &mut rec, b"NOOP\r\n").await;
        }
        // A very long line keeps its head only.
        let t2 = Transcript::new(Side::Client);
        let (b, mut peer2) = duplex(1 << 20);
        let mut rec2 = t2.wrap(b);
        let long = [b'x'; 10_000];
        say(&mut peer2, &mut rec2, &long).await;
        say(&mut peer2, &mut rec2, b"\r\n").await;
        let text = t.text();
        assert!(text.len() <= 200 + 80, "{}", text.len());
        assert!(
            text.lines()
                .last()
                .unwrap()
                .ends_with("-- transcript truncated at 200 bytes"),
            "{text}"
        );
        assert_eq!(text.matches("truncated").count(), 1);
        let text2 = t2.text();
        assert!(text2.len() < MAX_LINE + 100, "{}", text2.len());
        assert!(
            text2.contains(&format!("… [{} more bytes]", 10_002 - MAX_LINE)),
            "{text2}"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable(b"a\x00b\tc\r\n"), "a\\u{0}b\tc");
        assert_eq!(
            redact_auth("auth plain AGEAYg=="),
            Some("auth plain ****".into())
        );
        assert_eq!(redact_auth("AUTH LOGIN"), None);
        assert_eq!(redact_auth("MAIL FROM:<a@b>"), None);
    }
}
