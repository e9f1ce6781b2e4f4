//! The control port of `pec-gestore serve --manual-clock --control ADDR`: a tiny line protocol that
//! lets a test harness (the conformance runner) move the gestore's [`ManualClock`], so that the
//! 12h/24h deadlines of RFC 6109 §3.1.6 are reached without waiting. Loopback only.
//!
//! ```text
//! ADVANCE <seconds>   →  OK <now, RFC 3339>   (after the clock moved)
//! NOW                 →  OK <now, RFC 3339>
//! anything else       →  ERR <what is wrong>
//! ```
//!
//! One connection may send several commands; a line longer than [`MAX_LINE`] bytes is refused and
//! ends the connection. The protocol itself ([`respond`]) is plain code with no sockets.
//! The same module writes and reads the `pec-gestore ready <json>` line `serve` prints on stdout.

use crate::clock::{Clock, ManualClock};
use crate::instance::Endpoints;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The longest command line accepted, in bytes (CRLF included).
pub const MAX_LINE: usize = 128;

/// The most one ADVANCE may move the clock: ten years, far beyond any PEC deadline.
pub const MAX_ADVANCE_SECS: u64 = 10 * 366 * 86_400;

/// The prefix of the line `serve` prints on stdout once every listener is bound.
pub const READY_PREFIX: &str = "pec-gestore ready ";

/// A parsed control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Move the clock forward by this many seconds.
    Advance(u64),
    /// Tell the current time.
    Now,
}

/// Parses one command line (without or with its line end). The error says what is wrong.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().unwrap_or("");
    let arg = words.next();
    if words.next().is_some() {
        return Err(format!("too many arguments in `{line}`"));
    }
    if verb.eq_ignore_ascii_case("NOW") {
        return match arg {
            None => Ok(Command::Now),
            Some(a) => Err(format!("NOW takes no argument, got `{a}`")),
        };
    }
    if verb.eq_ignore_ascii_case("ADVANCE") {
        let Some(a) = arg else {
            return Err("ADVANCE needs a number of seconds".into());
        };
        return match a.parse::<u64>() {
            Ok(n) if n <= MAX_ADVANCE_SECS => Ok(Command::Advance(n)),
            Ok(n) => Err(format!("ADVANCE {n}: at most {MAX_ADVANCE_SECS} seconds")),
            Err(_) => Err(format!(
                "ADVANCE `{a}`: not a whole non-negative number of seconds"
            )),
        };
    }
    if verb.is_empty() {
        return Err("empty command (ADVANCE <seconds> or NOW)".into());
    }
    Err(format!(
        "unknown command `{verb}` (ADVANCE <seconds> or NOW)"
    ))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Runs one command line against `clock` and returns the reply line (without line end).
pub fn respond(line: &str, clock: &ManualClock) -> String {
    match parse(line) {
        Ok(Command::Advance(secs)) => {
            // ManualClock::advance wakes the timer workers (RFC 6109 §3.1.6 deadlines).
            clock.advance(chrono::Duration::seconds(secs as i64));
            format!("OK {}", rfc3339(clock.now()))
        }
        Ok(Command::Now) => format!("OK {}", rfc3339(clock.now())),
        Err(e) => format!("ERR {e}"),
    }
}

/// Whether a control address may be used: loopback only (nobody else may move the clock).
pub fn check_address(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--control {addr}: the control port must be on a loopback address (127.0.0.1 or ::1)"
        ))
    }
}

/// Serves the control protocol on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    clock: Arc<ManualClock>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (clock, rx) = (clock.clone(), shutdown.clone());
                tokio::spawn(connection(stream, clock, rx));
            }
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    clock: Arc<ManualClock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut buf = Vec::new();
        // One byte more than allowed tells a line that is too long.
        let mut limited = (&mut r).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.changed() => return,
            n = limited.read_until(b'\n', &mut buf) => n,
        };
        let reply = match read {
            Ok(0) | Err(_) => return,
            Ok(_) if buf.len() > MAX_LINE => {
                let _ = w
                    .write_all(format!("ERR line longer than {MAX_LINE} bytes\r\n").as_bytes())
                    .await;
                return;
            }
            Ok(_) => match std::str::from_utf8(&buf) {
                Ok(line) => respond(line, &clock),
                Err(_) => "ERR the command is not UTF-8".to_string(),
            },
        };
        if w.write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// What the ready line carries: every bound endpoint and the control port.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    /// The listeners.
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// The control port, with `--control`.
    pub control: Option<SocketAddr>,
}

impl Ready {
    /// The line `serve` prints on stdout: `pec-gestore ready <json>`.
    pub fn line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        format!("{READY_PREFIX}{json}")
    }

    /// Reads a ready line; `None` for any other line.
    pub fn parse_line(line: &str) -> Option<Result<Ready, String>> {
        let json = line.trim_end().strip_prefix(READY_PREFIX)?;
        Some(serde_json::from_str(json).map_err(|e| format!("the ready line `{line}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed_strictly() {
        assert_eq!(parse("ADVANCE 43200\r\n"), Ok(Command::Advance(43200)));
        assert_eq!(parse("advance 0"), Ok(Command::Advance(0)));
        assert_eq!(parse("NOW\n"), Ok(Command::Now));
        for (bad, says) in [
            ("ADVANCE", "needs a number"),
            ("ADVANCE -5", "not a whole non-negative"),
            ("ADVANCE 1.5", "not a whole non-negative"),
            ("ADVANCE 12h", "not a whole non-negative"),
            ("ADVANCE 1 2", "too many arguments"),
            ("ADVANCE 99999999999999", "at most"),
            ("NOW please", "takes no argument"),
            ("", "empty command"),
            ("RESET", "unknown command `RESET`"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn advance_moves_the_clock_and_answers_the_new_time() {
        let clock = ManualClock::new();
        let before = clock.now();
        let r = respond("ADVANCE 43200", &clock);
        let t = DateTime::parse_from_rfc3339(r.strip_prefix("OK ").unwrap()).unwrap();
        let moved = t.to_utc() - before;
        // The reply has milliseconds: it may be up to 1 ms behind.
        assert!(
            moved >= chrono::Duration::hours(12) - chrono::Duration::milliseconds(1),
            "{moved}"
        );
        assert!(moved < chrono::Duration::hours(12) + chrono::Duration::seconds(5));
        assert!(clock.now() - before >= chrono::Duration::hours(12));
        let now = respond("NOW", &clock);
        assert!(now.starts_with("OK "), "{now}");
        let e = respond("ADVANCE soon", &clock);
        assert!(e.starts_with("ERR ") && e.contains("soon"), "{e}");
        // An error does not move the clock.
        assert!(clock.now() - before < chrono::Duration::hours(12) + chrono::Duration::seconds(5));
    }

    #[test]
    fn only_loopback_addresses_may_control() {
        assert!(check_address("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(check_address("[::1]:9".parse().unwrap()).is_ok());
        let e = check_address("0.0.0.0:7000".parse().unwrap()).unwrap_err();
        assert!(e.contains("loopback") && e.contains("0.0.0.0:7000"), "{e}");
    }

    #[test]
    fn the_ready_line_round_trips() {
        let r = Ready {
            endpoints: Endpoints {
                submission_tls: Some("127.0.0.1:4650".parse().unwrap()),
                submission_starttls: None,
                inbound: Some("127.0.0.1:2525".parse().unwrap()),
                imap_tls: None,
                imap_starttls: None,
                pop3_tls: None,
                pop3_starttls: None,
            },
            control: Some("127.0.0.1:7000".parse().unwrap()),
        };
        let line = r.line();
        assert!(line.starts_with("pec-gestore ready {"), "{line}");
        assert!(line.contains(r#""inbound":"127.0.0.1:2525""#), "{line}");
        assert_eq!(Ready::parse_line(&line), Some(Ok(r)));
        assert_eq!(Ready::parse_line("something else"), None);
        assert!(matches!(
            Ready::parse_line("pec-gestore ready {oops"),
            Some(Err(_))
        ));
    }
}
