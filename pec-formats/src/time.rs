//! Italian legal local time (CET, UTC+1, in winter; CEST, UTC+2, in summer) as PEC prints it
//! (RFC 6109 §4.1–§4.2; DM art. 9; digest §10).
//!
//! The offset is computed from the EU rule (Directive 2000/84/EC), without a time-zone database:
//! summer time runs from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of
//! October. Before 1996 Italy ended summer time in September; that history is not modelled (PEC
//! exists since 2005), the current rule is applied to every year.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc, Weekday};

/// UTC+1, Central European Time (winter).
const CET_SECONDS: i32 = 3600;
/// UTC+2, Central European Summer Time.
const CEST_SECONDS: i32 = 7200;

/// The last Sunday of `month` in `year`, at 01:00 UTC: when the EU changes the clocks.
fn change_instant(year: i32, month: u32) -> Option<DateTime<Utc>> {
    // March and October both have 31 days.
    let last = NaiveDate::from_ymd_opt(year, month, 31)?;
    let back = last.weekday().num_days_from_sunday();
    let sunday = last - chrono::Duration::days(i64::from(back));
    debug_assert_eq!(sunday.weekday(), Weekday::Sun);
    Some(Utc.from_utc_datetime(&sunday.and_hms_opt(1, 0, 0)?))
}

/// The offset of Italian legal time from UTC at `instant` (+01:00 or +02:00), by the EU rule:
/// summer time from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October.
pub fn rome_offset(instant: DateTime<Utc>) -> FixedOffset {
    let year = instant.year();
    let summer = match (change_instant(year, 3), change_instant(year, 10)) {
        (Some(start), Some(end)) => start <= instant && instant < end,
        _ => false,
    };
    let seconds = if summer { CEST_SECONDS } else { CET_SECONDS };
    FixedOffset::east_opt(seconds).expect("CET and CEST are within ±24h")
}

/// `instant` in Italian legal time.
pub fn to_rome(instant: DateTime<Utc>) -> DateTime<FixedOffset> {
    instant.with_timezone(&rome_offset(instant))
}

/// The day in Italian legal time as `gg/mm/aaaa` (daticert `giorno`, DTD; RFC 6109 §4.2 full-date).
pub fn giorno(instant: DateTime<Utc>) -> String {
    to_rome(instant).format("%d/%m/%Y").to_string()
}

/// The time of day in Italian legal time as `hh:mm:ss`, seconds precision (daticert `ora`, DTD;
/// RFC 6109 §4.2 partial-time).
pub fn ora(instant: DateTime<Utc>) -> String {
    to_rome(instant).format("%H:%M:%S").to_string()
}

/// The offset as `[+|-]hhmm` (daticert `data/@zona`, DTD), e.g. `+0100`. Real messages write no
/// colon although the RFC 6109 §4.2 ABNF has one (digest §10).
pub fn zona(instant: DateTime<Utc>) -> String {
    format_offset(rome_offset(instant))
}

/// Formats any offset as `[+|-]hhmm`.
pub fn format_offset(offset: FixedOffset) -> String {
    let s = offset.local_minus_utc();
    let sign = if s < 0 { '-' } else { '+' };
    let m = s.unsigned_abs() / 60;
    format!("{sign}{:02}{:02}", m / 60, m % 60)
}

/// Parses a `zona` value: `[+|-]hhmm` (DTD), also `[+|-]hh:mm` (the RFC 6109 §4.2 ABNF form).
/// Surrounding whitespace is ignored; hours 00–23 and minutes 00–59.
pub fn parse_zona(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = match rest.len() {
        4 => rest.to_string(),
        5 if rest.as_bytes()[2] == b':' => format!("{}{}", &rest[..2], &rest[3..]),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hh: i32 = digits[..2].parse().ok()?;
    let mm: i32 = digits[2..].parse().ok()?;
    if hh > 23 || mm > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hh * 3600 + mm * 60))
}

/// How the human-readable text of receipts prints an instant: `gg/mm/aaaa alle ore hh:mm:ss (+hhmm)`,
/// e.g. `05/12/2024 alle ore 00:02:10 (+0100)` (RFC 6109 §4.2; digest §10, real Namirial/Aruba text).
pub fn text_time(instant: DateTime<Utc>) -> String {
    format!(
        "{} alle ore {} ({})",
        giorno(instant),
        ora(instant),
        zona(instant)
    )
}

/// An RFC 5322 `Date:` value for `instant` in Italian legal time, e.g.
/// `Thu, 05 Dec 2024 00:02:10 +0100`: the same instant as the daticert `data` (digest §10).
pub fn rfc5322_date(instant: DateTime<Utc>) -> String {
    to_rome(instant)
        .format("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("test instant")
    }

    #[test]
    fn spring_change_2024_is_at_one_utc_on_march_31() {
        // RFC 6109 §4.2 legal time; EU rule: last Sunday of March 2024 is the 31st.
        let before = utc("2024-03-31T00:59:59Z");
        let after = utc("2024-03-31T01:00:00Z");
        assert_eq!(zona(before), "+0100");
        assert_eq!(ora(before), "01:59:59");
        assert_eq!(zona(after), "+0200");
        assert_eq!(ora(after), "03:00:00");
        assert_eq!(giorno(after), "31/03/2024");
    }

    #[test]
    fn autumn_change_2024_is_at_one_utc_on_october_27() {
        let before = utc("2024-10-27T00:59:59Z");
        let after = utc("2024-10-27T01:00:00Z");
        assert_eq!(zona(before), "+0200");
        assert_eq!(ora(before), "02:59:59");
        assert_eq!(zona(after), "+0100");
        assert_eq!(ora(after), "02:00:00");
    }

    #[test]
    fn winter_and_summer_days_and_year_edges() {
        assert_eq!(zona(utc("2024-01-15T12:00:00Z")), "+0100");
        assert_eq!(zona(utc("2024-07-15T12:00:00Z")), "+0200");
        // 2023-12-31 23:30Z is already 2024 in Rome.
        assert_eq!(giorno(utc("2023-12-31T23:30:00Z")), "01/01/2024");
        // Last Sunday of March 2025 is the 30th, of October 2025 the 26th.
        assert_eq!(zona(utc("2025-03-30T00:59:59Z")), "+0100");
        assert_eq!(zona(utc("2025-03-30T01:00:00Z")), "+0200");
        assert_eq!(zona(utc("2025-10-26T00:59:59Z")), "+0200");
        assert_eq!(zona(utc("2025-10-26T01:00:00Z")), "+0100");
    }

    #[test]
    fn text_and_date_header_match_the_real_samples() {
        // digest §10: "Il giorno 05/12/2024 alle ore 00:02:10 (+0100)".
        let t = utc("2024-12-04T23:02:10Z");
        assert_eq!(text_time(t), "05/12/2024 alle ore 00:02:10 (+0100)");
        assert_eq!(rfc5322_date(t), "Thu, 05 Dec 2024 00:02:10 +0100");
        // Aruba 2014: Date: Fri, 14 Nov 2014 18:26:32 +0100.
        assert_eq!(
            rfc5322_date(utc("2014-11-14T17:26:32Z")),
            "Fri, 14 Nov 2014 18:26:32 +0100"
        );
        assert_eq!(
            rfc5322_date(utc("2021-05-14T10:02:08Z")),
            "Fri, 14 May 2021 12:02:08 +0200"
        );
    }

    #[test]
    fn zona_parsing_accepts_both_forms_and_rejects_garbage() {
        assert_eq!(parse_zona("+0100"), FixedOffset::east_opt(3600));
        assert_eq!(parse_zona(" +02:00 "), FixedOffset::east_opt(7200));
        assert_eq!(
            parse_zona("-0530"),
            FixedOffset::east_opt(-(5 * 3600 + 30 * 60))
        );
        for bad in [
            "",
            "0100",
            "+100",
            "+01000",
            "+2400",
            "+0160",
            "+01:0",
            "+0a00",
            "+01-00",
            "+\u{e9}00",
        ] {
            assert_eq!(parse_zona(bad), None, "{bad:?}");
        }
        assert_eq!(
            format_offset(FixedOffset::east_opt(-3600).unwrap()),
            "-0100"
        );
    }

    proptest! {
        #[test]
        fn offset_is_cet_or_cest_and_consistent(secs in 0i64..4_102_444_800) {
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            let z = zona(t);
            prop_assert!(z == "+0100" || z == "+0200");
            prop_assert_eq!(parse_zona(&z), Some(rome_offset(t)));
            prop_assert_eq!(to_rome(t).naive_local() - t.naive_utc(),
                chrono::Duration::seconds(i64::from(rome_offset(t).local_minus_utc())));
        }
    }
}
