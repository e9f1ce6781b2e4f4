//! The formal checks of the access point (RFC 6109 §3.1.1; digest §7.1). Pure: no sockets, no
//! store. Each failure has its own text for the avviso di non accettazione (RFC 6109 §3.1.2).
//!
//! Addresses are compared case-insensitively as a whole. RFC 5321 lets a local part be case
//! sensitive, but PEC mailboxes are provisioned case-insensitively by every provider we know of
//! [ANALYSIS]; a strict-case comparison would refuse messages real providers accept.

use crate::config::Profile;
use mail_parser::{Address, HeaderName, MessageParser};

/// A submitted message with its SMTP envelope and the authenticated user.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// The authenticated user (SMTP AUTH identity, a mailbox address).
    pub user: &'a str,
    /// The SMTP reverse-path.
    pub mail_from: &'a str,
    /// The SMTP forward-paths.
    pub rcpts: &'a [String],
    /// The message as received (CRLF).
    pub message: &'a [u8],
}

/// Why a message is not accepted. Each variant names the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormalError {
    /// Not an RFC 5322 message: no header section, a malformed field, a field that may occur at
    /// most once occurring twice (RFC 5322 §3.6).
    NotRfc5322(String),
    /// No `From:` with exactly one valid address (RFC 6109 §3.1.1, first check).
    From(String),
    /// No `To:` with at least one valid address (RFC 6109 §3.1.1, second check).
    To(String),
    /// The reverse-path differs from the From address (RFC 6109 §3.1.1, third check).
    SenderMismatch {
        /// MAIL FROM.
        mail_from: String,
        /// The From address.
        from: String,
    },
    /// The From address is not the authenticated user: the purpose of authentication is to stop
    /// sender forgery (RFC 6109 §3.1.1; digest §7.1).
    NotTheAuthenticatedUser {
        /// The user.
        user: String,
        /// The From address.
        from: String,
    },
    /// An SMTP recipient is in neither To nor Cc (RFC 6109 §3.1.1, fourth check).
    RecipientNotInHeaders(String),
    /// A To/Cc address is not among the SMTP recipients (RFC 6109 §3.1.1: the two sets coincide).
    HeaderRecipientNotInEnvelope(String),
    /// A non-empty `Bcc:` (RFC 6109 §3.1.1, fifth check).
    Bcc,
    /// More recipients than the provider accepts (a provider limit; Aruba: 500).
    TooManyRecipients {
        /// Recipients.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Size (× recipients where the profile says so) over the provider limit (RFC 6109 §3.1.1,
    /// sixth check).
    TooLarge {
        /// The counted size.
        counted: u64,
        /// The limit.
        max: u64,
    },
}

impl FormalError {
    /// The short Italian description used in the notice's text and in `errore-esteso`.
    pub fn descrizione(&self) -> String {
        match self {
            FormalError::NotRfc5322(why) => format!("messaggio non conforme a RFC 5322: {why}"),
            FormalError::From(why) => format!("campo From non valido: {why}"),
            FormalError::To(why) => format!("campo To non valido: {why}"),
            FormalError::SenderMismatch { mail_from, from } => {
                format!("il mittente SMTP ({mail_from}) non coincide con il campo From ({from})")
            }
            FormalError::NotTheAuthenticatedUser { user, from } => {
                format!("il campo From ({from}) non coincide con l'utente autenticato ({user})")
            }
            FormalError::RecipientNotInHeaders(a) => {
                format!("il destinatario {a} non compare nei campi To o Cc")
            }
            FormalError::HeaderRecipientNotInEnvelope(a) => {
                format!("il destinatario {a} dei campi To o Cc non compare tra i destinatari SMTP")
            }
            FormalError::Bcc => "il campo Bcc non e' ammesso".into(),
            FormalError::TooManyRecipients { count, max } => {
                format!("numero di destinatari ({count}) superiore al limite ({max})")
            }
            FormalError::TooLarge { counted, max } => format!(
                "dimensione del messaggio ({counted} byte) superiore al limite ({max} byte)"
            ),
        }
    }

    /// The rule the check implements.
    pub fn rule(&self) -> &'static str {
        match self {
            FormalError::NotRfc5322(_) => "RFC 6109 §3.1.1 (RFC 5322)",
            FormalError::TooManyRecipients { .. } => "provider profile: max_recipients",
            FormalError::NotTheAuthenticatedUser { .. } => "RFC 6109 §3.1.1 (authentication)",
            _ => "RFC 6109 §3.1.1",
        }
    }
}

/// What the checks learned about the message, for the builders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The From address.
    pub from: String,
    /// To addresses, in order.
    pub to: Vec<String>,
    /// Cc addresses, in order.
    pub cc: Vec<String>,
}

/// Header fields that may occur at most once (RFC 5322 §3.6).
const AT_MOST_ONCE: &[&str] = &[
    "date",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "message-id",
    "in-reply-to",
    "references",
    "subject",
];

fn addresses(a: Option<&Address<'_>>) -> Vec<Option<String>> {
    match a {
        None => Vec::new(),
        Some(a) => a
            .iter()
            .map(|addr| addr.address().map(|s| s.trim().to_string()))
            .collect(),
    }
}

/// A minimal RFC 5321 mailbox check: one `@`, a non-empty local part and a dotted domain of
/// letters, digits, hyphens.
fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains(char::is_whitespace)
        && !domain.is_empty()
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Header section well-formedness: a blank line ends it; every field is `name: value` with a
/// printable ASCII name, or a folded continuation.
fn header_section_problem(message: &[u8]) -> Option<String> {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (i, line) in message[..end].split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if i == 0 {
                return Some("the header section starts with a continuation line".into());
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Some(format!("header line {} has no colon", i + 1));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b)) {
            return Some(format!("header line {} has an invalid field name", i + 1));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .into_iter()
        .find(|(n, c)| *c > 1 && AT_MOST_ONCE.contains(&n.as_str()))
        .map(|(n, c)| format!("the {n} field occurs {c} times"))
}

/// Runs every formal check, in the order of RFC 6109 §3.1.1.
pub fn check(sub: Submission<'_>, profile: &Profile) -> Result<Checked, FormalError> {
    if !sub.message.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(FormalError::NotRfc5322(
            "no blank line ends the header section".into(),
        ));
    }
    if let Some(p) = header_section_problem(sub.message) {
        return Err(FormalError::NotRfc5322(p));
    }
    let parsed = MessageParser::default()
        .parse_headers(sub.message)
        .ok_or_else(|| FormalError::NotRfc5322("the header section cannot be read".into()))?;

    let from = addresses(parsed.from());
    let from = match from.as_slice() {
        [Some(a)] if valid_address(a) => a.clone(),
        [] => return Err(FormalError::From("missing".into())),
        [_] => return Err(FormalError::From("not a valid address".into())),
        many => {
            return Err(FormalError::From(format!(
                "{} addresses, one expected",
                many.len()
            )));
        }
    };
    let to = addresses(parsed.to());
    if to.is_empty() {
        return Err(FormalError::To("missing".into()));
    }
    let to: Vec<String> = to
        .into_iter()
        .map(|a| {
            a.filter(|a| valid_address(a))
                .ok_or_else(|| FormalError::To("an invalid address".into()))
        })
        .collect::<Result<_, _>>()?;
    let cc: Vec<String> = addresses(parsed.cc())
        .into_iter()
        .map(|a| {
            a.filter(|a| valid_address(a))
                .ok_or_else(|| FormalError::To("an invalid Cc address".into()))
        })
        .collect::<Result<_, _>>()?;

    if !same(sub.mail_from, &from) {
        return Err(FormalError::SenderMismatch {
            mail_from: sub.mail_from.into(),
            from,
        });
    }
    if !same(sub.user, &from) {
        return Err(FormalError::NotTheAuthenticatedUser {
            user: sub.user.into(),
            from,
        });
    }
    // "Bcc: header field does not contain any value": an empty Bcc is tolerated.
    let bcc_has_value = parsed
        .header_values(HeaderName::Bcc)
        .any(|v| v.as_address().is_some_and(|a| a.iter().next().is_some()));
    if bcc_has_value {
        return Err(FormalError::Bcc);
    }
    let in_headers = |a: &str| to.iter().chain(cc.iter()).any(|h| same(h, a));
    if let Some(r) = sub.rcpts.iter().find(|r| !in_headers(r)) {
        return Err(FormalError::RecipientNotInHeaders(r.clone()));
    }
    if let Some(h) = to
        .iter()
        .chain(cc.iter())
        .find(|h| !sub.rcpts.iter().any(|r| same(r, h)))
    {
        return Err(FormalError::HeaderRecipientNotInEnvelope(h.clone()));
    }
    if sub.rcpts.len() > profile.max_recipients {
        return Err(FormalError::TooManyRecipients {
            count: sub.rcpts.len(),
            max: profile.max_recipients,
        });
    }
    let size = sub.message.len() as u64;
    let counted = if profile.size_times_recipients {
        size.saturating_mul(sub.rcpts.len().max(1) as u64)
    } else {
        size
    };
    if counted > profile.max_message_size.0 {
        return Err(FormalError::TooLarge {
            counted,
            max: profile.max_message_size.0,
        });
    }
    Ok(Checked { from, to, cc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    fn msg(headers: &str) -> Vec<u8> {
        format!("{headers}Subject: Contratto\r\nMessage-ID: <c1@client>\r\n\r\nTesto\r\n")
            .replace("\n", "\r\n")
            .replace("\r\r\n", "\r\n")
            .into_bytes()
    }

    fn run(headers: &str, from: &str, rcpts: &[&str]) -> Result<Checked, FormalError> {
        let m = msg(headers);
        let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        let sub = Submission {
            user: "alice@pec.a.test",
            mail_from: from,
            rcpts: &rcpts,
            message: &m,
        };
        check(sub, &Profile::default())
    }

    #[test]
    fn a_conformant_message_passes_with_its_recipients() {
        let c = run(
            "From: Alice <Alice@pec.a.test>\nTo: bob@pec.b.test, \"C, D\" <carol@pec.b.test>\nCc: dan@example.com\n",
            "alice@pec.a.test",
            &["bob@pec.b.test", "CAROL@pec.b.test", "dan@example.com"],
        )
        .unwrap();
        assert_eq!(c.to, ["bob@pec.b.test", "carol@pec.b.test"]);
        assert_eq!(c.cc, ["dan@example.com"]);
    }

    #[test]
    fn each_formal_error_is_named() {
        let to = "To: bob@pec.b.test\n";
        let ok_from = "From: alice@pec.a.test\n";
        assert_eq!(
            run(to, "alice@pec.a.test", &["bob@pec.b.test"]),
            Err(FormalError::From("missing".into()))
        );
        assert_eq!(
            run(ok_from, "alice@pec.a.test", &["bob@pec.b.test"]),
            Err(FormalError::To("missing".into()))
        );
        assert!(matches!(
            run(
                &format!("From: mallory@pec.a.test\n{to}"),
                "mallory@pec.a.test",
                &["bob@pec.b.test"]
            ),
            Err(FormalError::NotTheAuthenticatedUser { .. })
        ));
        assert!(matches!(
            run(
                &format!("{ok_from}{to}"),
                "other@pec.a.test",
                &["bob@pec.b.test"]
            ),
            Err(FormalError::SenderMismatch { .. })
        ));
        assert_eq!(
            run(
                &format!("{ok_from}{to}Bcc: eve@pec.b.test\n"),
                "alice@pec.a.test",
                &["bob@pec.b.test", "eve@pec.b.test"]
            ),
            Err(FormalError::Bcc)
        );
        assert_eq!(
            run(
                &format!("{ok_from}{to}"),
                "alice@pec.a.test",
                &["bob@pec.b.test", "eve@pec.b.test"]
            ),
            Err(FormalError::RecipientNotInHeaders("eve@pec.b.test".into()))
        );
        assert_eq!(
            run(
                &format!("{ok_from}To: bob@pec.b.test, carol@pec.b.test\n"),
                "alice@pec.a.test",
                &["bob@pec.b.test"]
            ),
            Err(FormalError::HeaderRecipientNotInEnvelope(
                "carol@pec.b.test".into()
            ))
        );
        assert!(matches!(
            run(&format!("{ok_from}{to}{to}"), "alice@pec.a.test", &["bob@pec.b.test"]),
            Err(FormalError::NotRfc5322(m)) if m.contains("to field occurs 2 times")
        ));
        // An empty Bcc carries no value and is tolerated.
        assert!(
            run(
                &format!("{ok_from}{to}Bcc:\n"),
                "alice@pec.a.test",
                &["bob@pec.b.test"]
            )
            .is_ok()
        );
    }

    #[test]
    fn size_is_counted_times_recipients_when_the_profile_says_so() {
        let m = msg("From: alice@pec.a.test\nTo: b1@pec.b.test, b2@pec.b.test\n");
        let rcpts = vec!["b1@pec.b.test".to_string(), "b2@pec.b.test".to_string()];
        let sub = Submission {
            user: "alice@pec.a.test",
            mail_from: "alice@pec.a.test",
            rcpts: &rcpts,
            message: &m,
        };
        let mut p = Profile {
            max_message_size: ByteSize(m.len() as u64 + 1),
            ..Profile::default()
        };
        assert!(matches!(check(sub, &p), Err(FormalError::TooLarge { .. })));
        p.size_times_recipients = false;
        assert!(check(sub, &p).is_ok());
        p.max_recipients = 1;
        assert_eq!(
            check(sub, &p),
            Err(FormalError::TooManyRecipients { count: 2, max: 1 })
        );
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for m in [
            &b""[..],
            b"no header",
            b"\r\n\r\n",
            b": x\r\n\r\nb",
            b"\xff\xfe: \x00\r\n\r\n",
        ] {
            let sub = Submission {
                user: "a@b.c",
                mail_from: "a@b.c",
                rcpts: &[],
                message: m,
            };
            assert!(check(sub, &Profile::default()).is_err());
        }
    }
}
