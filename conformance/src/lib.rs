//! PEC conformance: offline verification of single messages (`verify`) and the scenario runner.
//!
//! - [`checks`]: every check of one message, each with an id and the rule it implements;
//! - [`dtd`]: our own validator for the daticert DTD (refuses entities, fetches nothing);
//! - [`imap`]: a small IMAP client that reads the target's mailboxes;
//! - [`logcheck`]: judging a reference gestore's message log (RFC 6109 §2.3);
//! - [`mime`]: minimal reading of the signed entity as written;
//! - [`reqtable`]: the requirements table (requirement → code → checks → scenarios);
//! - [`report`]: verdicts, human text and the JSON schema of `conformance/README.md`;
//! - [`scenario`], [`topology`], [`craft`], [`runner`], [`run_report`]: `pec-conformance run`, the
//!   scenario runner between gestori and its reports.

pub mod breve;
pub mod cert_profile;
pub mod checks;
pub mod craft;
pub mod dtd;
pub mod imap;
pub mod logcheck;
pub mod mime;
pub mod probe;
pub mod report;
pub mod reqtable;
pub mod run_report;
pub mod runner;
pub mod scenario;
pub mod topology;
