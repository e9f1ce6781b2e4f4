//! The 12h/24h rules (RFC 6109 §2.1.1.1.2, §3.1.6; digest §12). At dispatch the access point arms
//! two timers per certified recipient (timers run per recipient: a presa in carico covers a set
//! of recipients and a delivery receipt one [ANALYSIS, digest §12]); no timers for ordinary
//! recipients [ANALYSIS, digest §13]. When a timer is due, [`decide`] says whether it sends a
//! notice, from what the sender's provider has heard back for that recipient.
//!
//! The three cases of the RFC come out of the two rules:
//! 1. presa in carico within 12h, never a delivery → only the 24h notice;
//! 2. no presa in carico, delivery between 12h and 24h → only the 12h notice;
//! 3. neither → both notices.

use pec_formats::kind::TimeoutPhase;

/// What the sender's provider knows about one certified recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientState {
    /// The envelope was dispatched; nothing heard back.
    Inviato,
    /// A presa in carico covering this recipient arrived.
    PresaInCarico,
    /// The avvenuta consegna arrived.
    Consegnato,
    /// A final negative notice arrived (mancata consegna, also for a virus).
    Errore,
    /// The 24h notice was sent: the provider stopped tracking (RFC 6109 §2.1.1.1.2).
    Scaduto,
}

impl RecipientState {
    /// The value stored in the store's `recipients.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Inviato => "inviato",
            RecipientState::PresaInCarico => "presa-in-carico",
            RecipientState::Consegnato => "consegnato",
            RecipientState::Errore => "errore",
            RecipientState::Scaduto => "scaduto",
        }
    }

    /// Parses [`RecipientState::as_str`].
    pub fn parse(s: &str) -> Option<RecipientState> {
        [
            RecipientState::Inviato,
            RecipientState::PresaInCarico,
            RecipientState::Consegnato,
            RecipientState::Errore,
            RecipientState::Scaduto,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether the recipient's outcome is final (no timer may fire any more).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RecipientState::Consegnato | RecipientState::Errore | RecipientState::Scaduto
        )
    }
}

/// The timer phase names stored in the store's `timers.phase`.
pub fn phase_name(p: TimeoutPhase) -> &'static str {
    match p {
        TimeoutPhase::Preavviso12h => "12h",
        TimeoutPhase::Finale24h => "24h",
    }
}

/// Parses [`phase_name`].
pub fn parse_phase(s: &str) -> Option<TimeoutPhase> {
    match s {
        "12h" => Some(TimeoutPhase::Preavviso12h),
        "24h" => Some(TimeoutPhase::Finale24h),
        _ => None,
    }
}

/// Whether a due timer sends its notice.
pub fn decide(phase: TimeoutPhase, state: RecipientState) -> bool {
    match phase {
        // RFC 6109 §2.1.1.1.2: "no server-server acceptance or delivery PEC notification has been
        // received" within 12 hours.
        TimeoutPhase::Preavviso12h => state == RecipientState::Inviato,
        // RFC 6109 §3.1.6: no delivery within 24 hours closes the transaction negatively.
        TimeoutPhase::Finale24h => !state.is_final(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecipientState::*;
    use TimeoutPhase::*;

    /// The three cases of RFC 6109 §3.1.6, plus the happy path, as (state at 12h, state at 24h)
    /// → (12h notice sent, 24h notice sent).
    #[test]
    fn the_rfc_cases_come_out_of_the_two_rules() {
        let cases = [
            (
                "presa within 12h, never delivered",
                PresaInCarico,
                PresaInCarico,
                (false, true),
            ),
            (
                "no presa, delivered between 12h and 24h",
                Inviato,
                Consegnato,
                (true, false),
            ),
            ("neither", Inviato, Inviato, (true, true)),
            (
                "delivered within 12h",
                Consegnato,
                Consegnato,
                (false, false),
            ),
            (
                "mancata consegna within 12h",
                Errore,
                Errore,
                (false, false),
            ),
        ];
        for (name, at12, at24, expected) in cases {
            assert_eq!(
                (decide(Preavviso12h, at12), decide(Finale24h, at24)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [Inviato, PresaInCarico, Consegnato, Errore, Scaduto] {
            assert_eq!(RecipientState::parse(s.as_str()), Some(s));
        }
        for p in [Preavviso12h, Finale24h] {
            assert_eq!(parse_phase(phase_name(p)), Some(p));
        }
    }
}
