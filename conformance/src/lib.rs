//! PEC conformance: offline verification of single messages (`verify`) and the scenario runner
//! between gestori (`scenario`, `topology`, `runner`, `report`).

pub mod craft;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod topology;
