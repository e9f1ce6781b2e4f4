//! The verdicts of `pec-conformance verify` and their two renderings: human text and the JSON schema
//! documented in `conformance/README.md` (schema id [`SCHEMA`]).

use serde::Serialize;
use std::fmt::Write as _;

/// The JSON schema identifier; bumped on any incompatible change.
pub const SCHEMA: &str = "pec-conformance/verify/v1";

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The rule holds.
    Pass,
    /// Accepted, but worth knowing (SHA-1, bare LF, wrapped by a list, …).
    Warn,
    /// The rule is broken.
    Fail,
    /// Not applicable, or not checkable with what was given.
    Skip,
}

impl Verdict {
    /// `pass`, `warn`, `fail`, `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
        }
    }
}

/// One check on one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Stable check id, e.g. `signature.integrity`.
    pub id: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// The rule the check implements, e.g. `RFC 6109 §2.1; digest §4.1`.
    pub rule: &'static str,
    /// What was found.
    pub detail: String,
}

/// The signer certificate, as embedded in the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignerSummary {
    /// Subject DN, `CN=…, O=…, C=…`.
    pub subject: String,
    /// The e-mail of the certificate (subjectAltName rfc822Name, else subject emailAddress).
    pub email: Option<String>,
    /// Issuer DN.
    pub issuer: String,
}

/// One SignerInfo of the signature and its verdict (RFC 5652 §5.3): `fail` when its integrity,
/// chain, validity or revocation check failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignerVerdict {
    /// Subject DN of the certificate it names, or `(certificate not embedded)`.
    pub subject: String,
    /// Its digest algorithm as OpenSSL names it.
    pub digest: String,
    /// `pass` or `fail`.
    pub verdict: Verdict,
    /// Why it failed, or what passed.
    pub detail: String,
}

/// The verdicts about one input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The path as given (`-` for stdin).
    pub file: String,
    /// `pass` (no check failed), `fail` (a check failed) or `error` (input unusable).
    pub status: &'static str,
    /// Why the input was unusable (status `error`).
    pub error: Option<String>,
    /// The PEC kind by header ([`pec_formats::kind::Kind::id`]), if any.
    pub kind: Option<String>,
    /// True when the PEC message was found wrapped inside another message.
    pub wrapped: bool,
    /// The signer, if a signature with a certificate was found.
    pub signer: Option<SignerSummary>,
    /// The signature digest algorithm as OpenSSL names it (`sha1`, `sha256`, …).
    pub digest: Option<String>,
    /// Every SignerInfo of the signature, in order (empty when there is no usable signature).
    pub signers: Vec<SignerVerdict>,
    /// Every check, in a fixed order.
    pub checks: Vec<CheckResult>,
}

impl FileReport {
    /// A report for an input that could not be used at all.
    pub fn unusable(file: &str, error: String) -> FileReport {
        FileReport {
            file: file.to_string(),
            status: "error",
            error: Some(error),
            kind: None,
            wrapped: false,
            signer: None,
            digest: None,
            signers: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Sets `status` from the checks.
    pub fn finish(mut self) -> FileReport {
        if self.error.is_none() {
            let failed = self.checks.iter().any(|c| c.verdict == Verdict::Fail);
            self.status = if failed { "fail" } else { "pass" };
        }
        self
    }

    /// The check with id `id`, if run.
    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// The whole run, as printed by `--format json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// One entry per input file, in argument order.
    pub files: Vec<FileReport>,
    /// Counts.
    pub summary: Summary,
}

/// Counts over the run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Files given.
    pub files: usize,
    /// Files with no failed check.
    pub passed: usize,
    /// Files with at least one failed check.
    pub failed: usize,
    /// Files that could not be used.
    pub errors: usize,
}

impl RunReport {
    /// Builds the run report.
    pub fn new(files: Vec<FileReport>) -> RunReport {
        let count = |s: &str| files.iter().filter(|f| f.status == s).count();
        let summary = Summary {
            files: files.len(),
            passed: count("pass"),
            failed: count("fail"),
            errors: count("error"),
        };
        RunReport {
            schema: SCHEMA,
            files,
            summary,
        }
    }

    /// The process exit code: 2 when an input was unusable, else 1 when a check failed, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.summary.errors > 0 {
            2
        } else if self.summary.failed > 0 {
            1
        } else {
            0
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Human-readable text.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            let _ = writeln!(out, "file:   {}", f.file);
            if let Some(e) = &f.error {
                let _ = writeln!(out, "error:  {e}");
                out.push('\n');
                continue;
            }
            let kind = f.kind.as_deref().unwrap_or("(not a PEC message)");
            let wrapped = if f.wrapped { " (wrapped)" } else { "" };
            let _ = writeln!(out, "kind:   {kind}{wrapped}");
            match &f.signer {
                Some(s) => {
                    let email = s.email.as_deref().unwrap_or("(no e-mail)");
                    let _ = writeln!(out, "signer: {} <{email}>, issuer {}", s.subject, s.issuer);
                }
                None => out.push_str("signer: (none)\n"),
            }
            let _ = writeln!(out, "digest: {}", f.digest.as_deref().unwrap_or("(none)"));
            if f.signers.len() > 1 {
                for (i, s) in f.signers.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "signer {}: {} ({}) {}: {}",
                        i + 1,
                        s.subject,
                        s.digest,
                        s.verdict.as_str(),
                        s.detail
                    );
                }
            }
            for c in &f.checks {
                let _ = writeln!(
                    out,
                    "  {:<4} {:<26} [{}] {}",
                    c.verdict.as_str(),
                    c.id,
                    c.rule,
                    c.detail
                );
            }
            let _ = writeln!(out, "result: {}\n", f.status);
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{} file(s): {} passed, {} failed, {} unusable",
            s.files, s.passed, s.failed, s.errors
        );
        out
    }
}
