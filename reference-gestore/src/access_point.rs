//! The access point (punto di accesso, RFC 6109 §2.2.1, §3.1): authenticated submission, formal
//! checks, antivirus, acceptance or non-acceptance, the transport envelope, the timers.

pub mod formal;
