//! End-to-end throughput of the reference gestore:
//!
//! ```sh
//! cargo run --release -p reference-gestore --example bench -- --messages 200 --connections 4
//! ```
//!
//! Starts two embedded providers (`dev::prepare` + `Instance`, system clock, SQLite stores in a
//! temporary folder), submits M small one-recipient messages from alice@pec.a.test to
//! bob@pec.b.test over implicit TLS on K parallel connections, and measures messages per second
//! from the first submission to the last ricevuta di avvenuta consegna stored in the sender's
//! mailbox, and the latency of each submission's 250 (p50, p95).

use clap::Parser;
use reference_gestore::clock::{Clock, SystemClock};
use reference_gestore::config::Config;
use reference_gestore::dev::{self, DEV_PASSWORD};
use reference_gestore::instance::Instance;
use reference_gestore::smtp::client::{ClientTls, SmtpClient};
use reference_gestore::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "End-to-end throughput of two embedded reference gestori")]
struct Args {
    /// How many messages to send.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// How many parallel submission connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Keep the providers' state (stores, configs) in this folder instead of a temporary one.
    #[arg(long)]
    state: Option<std::path::PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

fn message(from: &str, to: &str, i: usize) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: bench {i}\r\nMessage-ID: <bench-{i}@client.example>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMessaggio di prova {i}.\r\n"
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    let tmp = tempfile::tempdir()?;
    let dir = args
        .state
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let state = dev::prepare(&dir, 2, false)?;
    let clock: Arc<dyn Clock> = SystemClock::new();
    let mut providers = Vec::new();
    for inst in &state.instances {
        let c = Config::load(&inst.config).map_err(|e| anyhow::anyhow!("{e}"))?;
        providers.push(Instance::start(c, clock.clone()).await?);
    }
    let alice = state.instances[0].users[0].address.clone();
    let bob = state.instances[1].users[1].address.clone();
    let addr = providers[0]
        .endpoints
        .submission_tls
        .ok_or_else(|| anyhow::anyhow!("no submission listener"))?;
    let roots = reference_gestore::tls::root_store_from_files(&[&state.ca])
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Log in first (scrypt is slow on purpose), then start the clock at the first submission.
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let mut c =
            SmtpClient::connect(addr, ClientTls::implicit(roots.clone(), "localhost")).await?;
        c.ehlo("bench.client.test").await?;
        c.auth_plain(&alice, DEV_PASSWORD).await?;
        clients.push(c);
    }
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        let (alice, bob) = (alice.clone(), bob.clone());
        let mine: Vec<usize> = (k..args.messages).step_by(args.connections).collect();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in mine {
                let t = Instant::now();
                let r = c
                    .send(&alice, &[&bob], message(&alice, &bob, i).as_bytes())
                    .await?;
                anyhow::ensure!(r.delivered().len() == 1, "message {i} refused: {r:?}");
                latencies.push(t.elapsed());
            }
            let _ = c.quit().await;
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r??);
    }
    let submitted = t0.elapsed();

    // The end: the last avvenuta consegna stored in alice's mailbox (its internal date is the
    // commit time of the receipt at the sender's provider).
    let store = &providers[0].gestore.store;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let last = loop {
        let inbox = store.mailbox(&alice, "INBOX").await?;
        let receipts: Vec<_> = inbox
            .iter()
            .filter(|m| m.kind == "avvenuta-consegna")
            .collect();
        if receipts.len() >= args.messages {
            break receipts
                .iter()
                .map(|m| m.internal_date)
                .max()
                .unwrap_or(started);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} delivery receipts after {} s",
            receipts.len(),
            args.messages,
            args.timeout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total = (last - started).to_std().unwrap_or_default();
    latencies.sort();
    println!(
        "messages: {}, connections: {}",
        args.messages, args.connections
    );
    println!(
        "submission: {:.2} s for all ({:.1} msg/s accepted)",
        submitted.as_secs_f64(),
        args.messages as f64 / submitted.as_secs_f64()
    );
    println!(
        "end to end: {:.2} s, {:.1} msg/s (first submission to last avvenuta consegna stored)",
        total.as_secs_f64(),
        args.messages as f64 / total.as_secs_f64().max(1e-9)
    );
    println!(
        "submission 250 latency: p50 {} ms, p95 {} ms",
        percentile(&latencies, 0.50).as_millis(),
        percentile(&latencies, 0.95).as_millis()
    );
    for p in providers {
        p.stop().await;
    }
    Ok(())
}
