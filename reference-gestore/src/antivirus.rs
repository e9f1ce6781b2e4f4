//! Antivirus behind one interface (RFC 6109 §5.4: mandatory and up to date; it must not alter
//! certified content). Two engines: clamd over its socket (INSTREAM, unix or TCP), and a built-in
//! signature scanner for machines without ClamAV. The built-in scanner knows the EICAR test file and
//! the project's test marker, and looks inside every MIME part after decoding its transfer encoding,
//! so a base64 attachment is found as clamd would find it.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The project's own test signature: a harmless marker that both engines detect (the clamd test
/// database in `scripts/clamd` carries it as `Pec-Test.Marker`), so tests and fixtures need not
/// store the EICAR string.
pub const TEST_MARKER: &str = "PEC-TEST-VIRUS-MARKER-7f3a";

/// The EICAR test file, assembled at run time so the source holds no scanner-triggering string.
pub fn eicar() -> Vec<u8> {
    let parts = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-",
        "TEST-FILE!$H+H*",
    ];
    parts.concat().into_bytes()
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing found.
    Clean,
    /// Infected, with the signature name.
    Infected(String),
}

/// Why a scan could not be done (the message is then refused with a temporary error: a message is
/// never accepted unscanned).
#[derive(Debug, thiserror::Error)]
#[error("antivirus: {0}")]
pub struct ScanError(pub String);

/// One of the two engines.
#[derive(Debug, Clone)]
pub enum Antivirus {
    /// clamd at a unix socket path or `host:port`.
    Clamd(String),
    /// The built-in scanner.
    Builtin,
}

impl Antivirus {
    /// From the config: clamd if a socket is named, else built-in.
    pub fn from_config(clamd: Option<&str>) -> Antivirus {
        match clamd {
            Some(s) => Antivirus::Clamd(s.to_string()),
            None => Antivirus::Builtin,
        }
    }

    /// Scans a whole message.
    pub async fn scan(&self, message: &[u8]) -> Result<Verdict, ScanError> {
        match self {
            Antivirus::Builtin => Ok(builtin_scan(message)),
            Antivirus::Clamd(addr) => {
                let fut = async {
                    if addr.starts_with('/') {
                        let s = tokio::net::UnixStream::connect(addr)
                            .await
                            .map_err(|e| ScanError(format!("clamd {addr}: {e}")))?;
                        clamd_instream(s, message).await
                    } else {
                        let s = tokio::net::TcpStream::connect(addr)
                            .await
                            .map_err(|e| ScanError(format!("clamd {addr}: {e}")))?;
                        clamd_instream(s, message).await
                    }
                };
                tokio::time::timeout(Duration::from_secs(60), fut)
                    .await
                    .map_err(|_| ScanError(format!("clamd {addr}: no answer in 60 s")))?
            }
        }
    }
}

/// clamd's INSTREAM: `zINSTREAM\0`, chunks each prefixed by a 4-byte big-endian length, a zero
/// chunk, then one reply line `stream: OK` or `stream: <name> FOUND`.
async fn clamd_instream<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    data: &[u8],
) -> Result<Verdict, ScanError> {
    let io = |e: std::io::Error| ScanError(format!("clamd: {e}"));
    s.write_all(b"zINSTREAM\0").await.map_err(io)?;
    for chunk in data.chunks(64 * 1024) {
        s.write_all(&(chunk.len() as u32).to_be_bytes())
            .await
            .map_err(io)?;
        s.write_all(chunk).await.map_err(io)?;
    }
    s.write_all(&0u32.to_be_bytes()).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    let mut reply = Vec::new();
    s.take(4096).read_to_end(&mut reply).await.map_err(io)?;
    let text = String::from_utf8_lossy(&reply);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    let body = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if body == "OK" {
        Ok(Verdict::Clean)
    } else if let Some(name) = body.strip_suffix("FOUND") {
        Ok(Verdict::Infected(name.trim().to_string()))
    } else {
        Err(ScanError(format!("clamd answered `{text}`")))
    }
}

/// How deep the built-in scanner follows attached messages (an envelope's postacert.eml holds the
/// user's message, which may itself attach messages).
const MAX_NESTING: usize = 8;

/// The built-in scanner: the raw bytes, then every MIME part decoded, and attached messages
/// (`message/rfc822`, such as an envelope's postacert.eml) scanned the same way, recursively up to
/// [`MAX_NESTING`] levels.
pub fn builtin_scan(message: &[u8]) -> Verdict {
    scan_nested(message, MAX_NESTING)
}

fn scan_nested(message: &[u8], depth: usize) -> Verdict {
    let signatures: [(&str, Vec<u8>); 2] = [
        ("Pec-Test.EICAR", eicar()),
        ("Pec-Test.Marker", TEST_MARKER.as_bytes().to_vec()),
    ];
    let hit = |bytes: &[u8]| {
        signatures
            .iter()
            .find(|(_, sig)| bytes.windows(sig.len()).any(|w| w == sig.as_slice()))
            .map(|(name, _)| Verdict::Infected((*name).to_string()))
    };
    if let Some(v) = hit(message) {
        return v;
    }
    let Some(parsed) = mail_parser::MessageParser::default().parse(message) else {
        return Verdict::Clean;
    };
    for part in parsed.parts.iter() {
        let found = match &part.body {
            mail_parser::PartType::Binary(b) | mail_parser::PartType::InlineBinary(b) => hit(b),
            mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => hit(t.as_bytes()),
            mail_parser::PartType::Message(m) if depth > 0 => {
                match scan_nested(m.raw_message(), depth - 1) {
                    Verdict::Clean => None,
                    v => Some(v),
                }
            }
            mail_parser::PartType::Message(m) => hit(m.raw_message()),
            mail_parser::PartType::Multipart(_) => None,
        };
        if let Some(v) = found {
            return v;
        }
    }
    Verdict::Clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn with_attachment(content: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        format!(
            "From: a@x\r\nTo: b@y\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
             Content-Type: text/plain\r\n\r\nhello\r\n--b1\r\n\
             Content-Type: application/octet-stream; name=\"x.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b1--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_builtin_scanner_finds_eicar_and_the_marker_inside_base64_parts() {
        assert_eq!(
            builtin_scan(&with_attachment(b"plain data")),
            Verdict::Clean
        );
        assert_eq!(
            builtin_scan(&with_attachment(&eicar())),
            Verdict::Infected("Pec-Test.EICAR".into())
        );
        // An infected attachment inside an attached message (an envelope's postacert.eml).
        let inner = String::from_utf8(with_attachment(&eicar())).unwrap();
        let outer = format!(
            "From: p@x\r\nSubject: e\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\n\
             Content-Type: text/plain\r\n\r\nenvelope\r\n--o\r\n\
             Content-Type: message/rfc822; name=\"postacert.eml\"\r\n\r\n{inner}\r\n--o--\r\n"
        );
        assert_eq!(
            builtin_scan(outer.as_bytes()),
            Verdict::Infected("Pec-Test.EICAR".into())
        );
        let marked = format!("prefix {TEST_MARKER} suffix");
        assert_eq!(
            builtin_scan(&with_attachment(marked.as_bytes())),
            Verdict::Infected("Pec-Test.Marker".into())
        );
    }

    #[tokio::test]
    async fn instream_speaks_clamds_protocol() {
        // The far end of a duplex plays clamd: it checks the framing and answers.
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut cmd = [0u8; 10];
            far.read_exact(&mut cmd).await.unwrap();
            assert_eq!(&cmd, b"zINSTREAM\0");
            loop {
                let mut len = [0u8; 4];
                far.read_exact(&mut len).await.unwrap();
                let n = u32::from_be_bytes(len) as usize;
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0u8; n];
                far.read_exact(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk);
            }
            far.write_all(b"stream: Pec-Test.Marker.UNOFFICIAL FOUND\0")
                .await
                .unwrap();
            far.shutdown().await.unwrap();
            buf
        });
        let data = vec![7u8; 150_000];
        let v = clamd_instream(near, &data).await.unwrap();
        assert_eq!(v, Verdict::Infected("Pec-Test.Marker.UNOFFICIAL".into()));
        assert_eq!(server.await.unwrap(), data);
    }
}
