//! The reference PEC provider (gestore): access point, reception point, delivery point, timers,
//! store, mailbox access and log. Modules are named after the concepts of RFC 6109 §2.2.

pub mod access;
pub mod access_point;
pub mod admin;
pub mod antivirus;
pub mod clock;
pub mod config;
pub mod control;
pub mod delivery_point;
pub mod dev;
pub mod gestore;
pub mod imap;
pub mod instance;
pub mod outbound;
pub mod password;
pub mod pgcluster;
pub mod pop3;
pub mod reception_point;
pub mod registro;
pub mod smtp;
pub mod store;
pub mod timers;
pub mod tls;
pub mod worker;
