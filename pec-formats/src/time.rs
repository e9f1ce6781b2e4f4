//! Italian legal local time (CET, UTC+1, in winter; CEST, UTC+2, in summer) as PEC prints it
//! (RFC 6109 §4.1–§4.2; DM art. 9). THIS FILE IS A SKELETON: the signatures are the contract.

use chrono::{DateTime, FixedOffset, Utc};

/// The offset of Italian legal time from UTC at `instant` (+01:00 or +02:00), by the EU rule:
/// summer time from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October.
pub fn rome_offset(_instant: DateTime<Utc>) -> FixedOffset {
    todo!()
}

/// `instant` in Italian legal time.
pub fn to_rome(instant: DateTime<Utc>) -> DateTime<FixedOffset> {
    instant.with_timezone(&rome_offset(instant))
}
