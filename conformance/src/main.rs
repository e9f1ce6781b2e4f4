//! `pec-conformance`: the PEC conformance tools.
use clap::Parser;

#[derive(Parser)]
#[command(name = "pec-conformance", version, about = "PEC conformance tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the scenario catalog against reference gestori (or a --target) and write reports.
    Run(pec_conformance::runner::RunArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => pec_conformance::runner::run_command(&args).unwrap_or_else(|e| {
            eprintln!("pec-conformance run: {e:#}");
            2
        }),
    };
    std::process::exit(code);
}
