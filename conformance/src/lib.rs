//! PEC conformance: offline verification of single messages (`verify`) and, later, the scenario runner.
//!
//! - [`checks`]: every check of one message, each with an id and the rule it implements;
//! - [`dtd`]: our own validator for the daticert DTD (refuses entities, fetches nothing);
//! - [`mime`]: minimal reading of the signed entity as written;
//! - [`report`]: verdicts, human text and the JSON schema of `conformance/README.md`.

pub mod checks;
pub mod dtd;
pub mod mime;
pub mod report;
