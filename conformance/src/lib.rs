//! PEC conformance: offline verification of single messages (`verify`) and, later, the scenario runner.
