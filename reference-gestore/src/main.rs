//! `pec-gestore`: the reference PEC provider.

use anyhow::Context;
use clap::{Parser, Subcommand};
use reference_gestore::admin::{self, MailboxOp};
use reference_gestore::clock::{Clock, ManualClock, SystemClock};
use reference_gestore::config::{ByteSize, Config};
use reference_gestore::control;
use reference_gestore::dev;
use reference_gestore::instance::Instance;
use reference_gestore::store::SqlStore;
use std::io::Write;
use std::net::SocketAddr;
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
        /// Run on a manual clock that starts at the real time and moves only by `--control`
        /// (tests and the conformance runner: the 12h/24h deadlines without waiting).
        #[arg(long)]
        manual_clock: bool,
        /// With --manual-clock: a loopback address for the control port (`ADVANCE <seconds>`,
        /// `NOW`); port 0 picks a free one, printed in the ready line.
        #[arg(long, value_name = "ADDR", requires = "manual_clock")]
        control: Option<SocketAddr>,
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
    /// Administers a provider's mailboxes (works on the store named in the config).
    Admin {
        /// The provider's config file.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        what: AdminWhat,
    },
    /// The message log (registro): verify, extract, purge. Exit 0 ok, 1 tampering/refused, 2 unusable.
    Log {
        #[command(subcommand)]
        what: reference_gestore::registro::LogCommand,
    },
}

#[derive(Subcommand)]
enum AdminWhat {
    /// Mailbox operations.
    Mailbox {
        #[command(subcommand)]
        action: MailboxAction,
    },
}

#[derive(Subcommand)]
enum MailboxAction {
    /// Creates a mailbox and sends its holder a welcome message with the client settings.
    Create {
        /// The address.
        address: String,
        /// The password.
        #[arg(long)]
        password: String,
        /// The quota (`100MiB`, `1GB`, bytes); the profile's default if absent.
        #[arg(long)]
        quota: Option<ByteSize>,
    },
    /// Deletes a mailbox and all its messages.
    Delete {
        /// The address.
        address: String,
    },
    /// Disables a mailbox: it refuses login and delivery.
    Disable {
        /// The address.
        address: String,
    },
    /// Enables a disabled mailbox.
    Enable {
        /// The address.
        address: String,
    },
    /// Sets a mailbox's quota.
    Quota {
        /// The address.
        address: String,
        /// The quota (`100MiB`, `1GB`, bytes).
        size: ByteSize,
    },
    /// Sets a mailbox's password.
    Password {
        /// The address.
        address: String,
        /// The new password.
        #[arg(long)]
        password: String,
    },
}

async fn wait_for_ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = SystemClock::new();
    match cli.command {
        Command::Serve {
            config,
            manual_clock,
            control,
        } => {
            if let Some(a) = control {
                control::check_address(a).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let c = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = c.provider.name.clone();
            let manual = manual_clock.then(ManualClock::new);
            let clock = match &manual {
                Some(m) => m.clone() as Arc<dyn Clock>,
                None => clock,
            };
            let i = Instance::start(c, clock).await?;
            let (stop_control, rx) = tokio::sync::watch::channel(false);
            let mut control_addr = None;
            let mut control_task = None;
            if let (Some(addr), Some(m)) = (control, manual) {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the control port {addr}"))?;
                control_addr = Some(l.local_addr()?);
                control_task = Some(tokio::spawn(control::serve(l, m, rx)));
            }
            eprintln!("{name}: {}", serde_json::to_string(&i.endpoints)?);
            // One line on stdout once every listener is bound: what a harness waits for.
            let ready = control::Ready {
                endpoints: i.endpoints,
                control: control_addr,
            };
            {
                let mut out = std::io::stdout().lock();
                // A closed stdout (a harness that stopped reading) does not stop the gestore.
                let _ = writeln!(out, "{}", ready.line());
                let _ = out.flush();
            }
            wait_for_ctrl_c().await;
            let _ = stop_control.send(true);
            if let Some(t) = control_task {
                let _ = t.await;
            }
            i.stop().await;
        }
        Command::Admin {
            config,
            what: AdminWhat::Mailbox { action },
        } => {
            let c = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = SqlStore::open_config(&c.store)
                .await
                .with_context(|| format!("opening {}", c.store.describe()))?;
            let op = match action {
                MailboxAction::Create {
                    address,
                    password,
                    quota,
                } => MailboxOp::Create {
                    address,
                    password,
                    quota: quota.map(|q| q.0),
                },
                MailboxAction::Delete { address } => MailboxOp::Delete { address },
                MailboxAction::Disable { address } => MailboxOp::Disable { address },
                MailboxAction::Enable { address } => MailboxOp::Enable { address },
                MailboxAction::Quota { address, size } => MailboxOp::Quota {
                    address,
                    bytes: size.0,
                },
                MailboxAction::Password { address, password } => {
                    MailboxOp::Password { address, password }
                }
            };
            println!("{}", admin::run(&c, &store, op).await?);
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
        Command::Log { what } => {
            // Exit codes of its own: 0 ok, 1 tampering found or request refused, 2 unusable.
            std::process::exit(reference_gestore::registro::cli(what).await.into())
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
