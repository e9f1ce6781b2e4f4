//! `pec-gestore`: the reference PEC provider.

use anyhow::Context;
use clap::{Parser, Subcommand};
use reference_gestore::clock::{Clock, SystemClock};
use reference_gestore::config::Config;
use reference_gestore::dev;
use reference_gestore::instance::Instance;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "pec-gestore",
    version,
    about = "The reference PEC provider (gestore di posta elettronica certificata)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one provider from a YAML config file.
    Serve {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs ready-made providers on loopback, creating everything they need in a state folder.
    Dev {
        /// The state folder (created; reused on the next run).
        #[arg(long, default_value = "pec-dev")]
        state: PathBuf,
        /// How many providers, each with its own domain pec.<letter>.test.
        #[arg(long, default_value_t = 1)]
        instances: usize,
        /// Enable the reserved test addresses (README, "Test addresses").
        #[arg(long)]
        test_addresses: bool,
    },
}

async fn wait_for_ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = SystemClock::new();
    match cli.command {
        Command::Serve { config } => {
            let c = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = c.provider.name.clone();
            let i = Instance::start(c, clock).await?;
            eprintln!("{name}: {}", serde_json::to_string(&i.endpoints)?);
            wait_for_ctrl_c().await;
            i.stop().await;
        }
        Command::Dev {
            state,
            instances,
            test_addresses,
        } => {
            let s = dev::prepare(&state, instances, test_addresses)?;
            let mut running = Vec::new();
            for inst in &s.instances {
                let c = Config::load(&inst.config).map_err(|e| anyhow::anyhow!("{e}"))?;
                running.push(
                    Instance::start(c, clock.clone())
                        .await
                        .with_context(|| format!("starting {}", inst.name))?,
                );
            }
            println!("{}", dev::describe(&s));
            println!(
                "The same details, as JSON: {}",
                state.join("dev.json").display()
            );
            println!("Stop with Ctrl-C.");
            wait_for_ctrl_c().await;
            for i in running {
                i.stop().await;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pec-gestore: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pec-gestore: {e:#}");
            ExitCode::from(1)
        }
    }
}
