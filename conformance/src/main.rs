//! `pec-conformance`: offline verification of PEC messages (`verify`), the scenario runner (`run`)
//! and the requirements table (`requirements`).

use clap::{Parser, Subcommand, ValueEnum};
use pec_conformance::checks::{VerifyConfig, load_crls, load_trust, verify_bytes_with_crls};
use pec_conformance::report::{FileReport, RunReport};
use pec_formats::smime::CrlSet;
use std::io::Read;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "pec-conformance",
    version,
    about = "PEC (Posta Elettronica Certificata) conformance tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify PEC messages offline: signature, daticert.xml, headers and MIME layout.
    Verify {
        /// Trust anchors: a PEM bundle or a folder of PEM files (without it signature.chain is skipped).
        #[arg(long, value_name = "PEM|DIR")]
        trust: Option<PathBuf>,
        /// Check chain and validity at this time (RFC 3339), e.g. the message's own date; default: now.
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// A CRL (PEM or DER; repeatable): check the signer certificate against its issuer's CRLs
        /// at the `--at` time (signature.revocation; without it that check is skipped).
        #[arg(long, value_name = "FILE")]
        crl: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Messages to verify (`-` = standard input).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Run the scenario catalog between gestori and write reports (see scenarios/README.md).
    Run(pec_conformance::runner::RunArgs),
    /// Print the requirements table: per requirement, the code, checks and scenarios citing it.
    Requirements {
        /// Output format (`md` is what docs/requirements.md holds).
        #[arg(long, value_enum, default_value_t = TableFormat::Md)]
        format: TableFormat,
        /// The repository root (with requirements.yaml, scenarios/ and the sources).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TableFormat {
    Md,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

fn main() {
    let cli = Cli::parse();
    let (trust, at, crl, format, files) = match cli.command {
        Command::Run(args) => std::process::exit(pec_conformance::runner::main_run(&args)),
        Command::Requirements { format, root } => {
            match pec_conformance::reqtable::build(&root) {
                Ok(t) => {
                    let text = match format {
                        TableFormat::Md => pec_conformance::reqtable::to_markdown(&t),
                        TableFormat::Json => pec_conformance::reqtable::to_json(&t) + "\n",
                    };
                    // A closed pipe (`| head`) is not an error worth a panic.
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
                }
                Err(e) => fail_usage(&format!("requirements: {e}")),
            }
            return;
        }
        Command::Verify {
            trust,
            at,
            crl,
            format,
            files,
        } => (trust, at, crl, format, files),
    };
    let mut cfg = VerifyConfig::default();
    if let Some(p) = trust {
        match load_trust(&p) {
            Ok(t) => cfg.trust = Some(t),
            Err(e) => fail_usage(&e),
        }
    }
    if let Some(a) = at {
        match chrono::DateTime::parse_from_rfc3339(a.trim()) {
            Ok(t) => cfg.at = Some(t.with_timezone(&chrono::Utc)),
            Err(e) => fail_usage(&format!("--at {a}: not an RFC 3339 time: {e}")),
        }
    }
    let crls = if crl.is_empty() {
        None
    } else {
        match load_crls(&crl) {
            Ok(c) => Some(c),
            Err(e) => fail_usage(&e),
        }
    };
    let reports: Vec<FileReport> = files
        .iter()
        .map(|f| verify_file(f, &cfg, crls.as_ref()))
        .collect();
    let run = RunReport::new(reports);
    match format {
        Format::Human => print!("{}", run.to_human()),
        Format::Json => println!("{}", run.to_json()),
    }
    for f in &run.files {
        if let Some(e) = &f.error {
            eprintln!("pec-conformance: {e}");
        }
    }
    std::process::exit(run.exit_code());
}

fn fail_usage(msg: &str) -> ! {
    eprintln!("pec-conformance: {msg}");
    std::process::exit(2);
}

fn verify_file(file: &str, cfg: &VerifyConfig, crls: Option<&CrlSet>) -> FileReport {
    let raw = if file == "-" {
        let mut buf = Vec::new();
        match std::io::stdin().read_to_end(&mut buf) {
            Ok(_) => buf,
            Err(e) => {
                return FileReport::unusable(file, format!("-: cannot read standard input: {e}"));
            }
        }
    } else {
        match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => return FileReport::unusable(file, format!("{file}: cannot read: {e}")),
        }
    };
    // A bug in a library must not take the other files down: report it as unusable input.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verify_bytes_with_crls(file, &raw, cfg, crls)
    })) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            FileReport::unusable(
                file,
                format!("{file}: internal error (a bug) while verifying: {what}"),
            )
        }
    }
}
