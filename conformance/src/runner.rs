//! `pec-conformance run`: loads the scenario catalog, starts each scenario's topology, runs its
//! steps, judges every expected message (the scenario's expectations plus the offline checks), keeps
//! the evidence (raw messages, SMTP transcripts, timings) and writes the reports ([`crate::run_report`]).
//! Scenarios are independent (each has its own gestori, folder and clock) and run `--jobs` at a time.

use crate::craft::{self, Draft};
use crate::imap::ImapServer;
use crate::run_report::{
    self as report, Check, GestoreInfo, RunReport, ScenarioResult, Status, StepResult,
};
use crate::scenario::{
    self, Dur, Expect, ExpectLog, ExpectNone, GestoreSpec, Inject, InjectKind, MailboxSpec,
    OriginalSpec, Scenario, Step, Submit,
};
use crate::topology::{self, Launch, Target, Topology, kind_by_headers};
use anyhow::Context;
use pec_formats::daticert::Daticert;
use pec_formats::smime::{TrustStore, VerifyOptions};
use reference_gestore::registro::StoredRecord;
use reference_gestore::smtp::Reply;
use reference_gestore::smtp::client::{ClientTls, SmtpClient, Timeouts};
use reference_gestore::smtp::transcript::{Side, Transcript};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `pec-conformance run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The scenario folder.
    #[arg(long, default_value = "scenarios")]
    pub scenarios: PathBuf,
    /// Only scenarios whose id matches (a substring, or a pattern with `*`).
    #[arg(long)]
    pub only: Option<String>,
    /// List the selected scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// A third-party gestore under test (YAML; see the README).
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// Run `slow` scenarios against a target (real-time windows).
    #[arg(long)]
    pub slow: bool,
    /// Where reports go (`<out>/<run-id>/`, `<out>/latest`).
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Scenarios run at the same time.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// The requirements catalog.
    #[arg(long, default_value = "requirements.yaml")]
    pub requirements: PathBuf,
    /// Run the reference gestori inside this process instead of as `pec-gestore serve` children.
    #[arg(long)]
    pub embedded: bool,
    /// The `pec-gestore` executable (else `$PEC_GESTORE_BIN`, else next to this executable or one
    /// folder up).
    #[arg(long, value_name = "PATH", conflicts_with = "embedded")]
    pub gestore_bin: Option<PathBuf>,
}

/// Whether `id` matches `pattern` (`*` matches any run of characters; without `*`, a substring).
pub fn matches_pattern(pattern: &str, id: &str) -> bool {
    if !pattern.contains('*') {
        return id.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = id;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// `pec-conformance run`: the exit code (0: no scenario failed, 1: a scenario failed, 2: the run
/// could not start), errors printed.
pub fn main_run(args: &RunArgs) -> i32 {
    run_command(args).unwrap_or_else(|e| {
        eprintln!("pec-conformance run: {e:#}");
        2
    })
}

/// Runs the command; the process exit code (0: no scenario failed).
pub fn run_command(args: &RunArgs) -> anyhow::Result<i32> {
    let reqs = scenario::load_requirements(&args.requirements)?;
    let ids: BTreeSet<String> = reqs.iter().map(|r| r.id.clone()).collect();
    let all = scenario::load_dir(&args.scenarios, &ids).map_err(|errors| {
        anyhow::anyhow!(
            "{} scenario error(s):\n{}",
            errors.len(),
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let selected: Vec<Scenario> = all
        .into_iter()
        .filter(|s| {
            args.only
                .as_deref()
                .is_none_or(|p| matches_pattern(p, &s.id))
        })
        .collect();
    if args.list {
        for s in &selected {
            let tags = if s.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", s.tags.join(", "))
            };
            println!("{}{tags}  {}", s.id, s.title);
        }
        return Ok(0);
    }
    let target = match &args.target {
        Some(p) => Some(Arc::new(Target::load(p)?)),
        None => None,
    };
    let launch = if args.embedded {
        Launch::Embedded
    } else {
        Launch::Process {
            bin: topology::find_gestore_bin(args.gestore_bin.as_deref())?,
        }
    };
    let started = chrono::Utc::now();
    let run_id = started.format("%Y%m%d-%H%M%S").to_string();
    let dir = args.out.join(&run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let results = rt.block_on(run_all(
        selected,
        target.clone(),
        args.slow,
        args.jobs.max(1),
        dir.clone(),
        launch,
    ));
    let report = RunReport {
        schema: report::SCHEMA.into(),
        run_id,
        started: started.to_rfc3339(),
        duration_ms: t0.elapsed().as_millis() as u64,
        target: target.as_ref().map(|t| t.name.clone()),
        scenarios: results,
        requirements: reqs,
    };
    report::write_all(&dir, &report)?;
    eprintln!("report: {}", dir.join("index.html").display());
    println!("{}", report.summary_line());
    Ok(if report.counts().1 > 0 { 1 } else { 0 })
}

/// Why a scenario is not run in this configuration, if it is not.
pub fn skip_reason(s: &Scenario, target: Option<&Target>, slow: bool) -> Option<String> {
    let external = !s.external_gestori().is_empty();
    match (external, target) {
        (true, None) => Some("needs a third-party gestore: pass --target FILE".into()),
        (false, Some(_)) => Some("reference-only scenario: not run against a target".into()),
        (true, Some(_)) if s.has_tag("slow") && !slow => {
            Some("slow against a target (real-time windows): pass --slow".into())
        }
        _ => None,
    }
}

/// Runs scenarios, `jobs` at a time, in catalog order in the result.
pub async fn run_all(
    scenarios: Vec<Scenario>,
    target: Option<Arc<Target>>,
    slow: bool,
    jobs: usize,
    dir: PathBuf,
    launch: Launch,
) -> Vec<ScenarioResult> {
    let bar = indicatif::ProgressBar::new(scenarios.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // A kept runner state has fixed inbound ports: one scenario at a time.
    let jobs = if target.as_ref().is_some_and(|t| t.runner_state.is_some()) {
        1
    } else {
        jobs
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    let mut results: Vec<Option<ScenarioResult>> = vec![None; scenarios.len()];
    for (i, s) in scenarios.iter().enumerate() {
        if let Some(why) = skip_reason(s, target.as_deref(), slow) {
            results[i] = Some(ScenarioResult::skipped(s, why));
            bar.inc(1);
            continue;
        }
        let (s, target, dir, sem, launch) = (
            s.clone(),
            target.clone(),
            dir.clone(),
            sem.clone(),
            launch.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let id = s.id.clone();
            // A panic inside a scenario (e.g. an unfinished library function) fails that
            // scenario only.
            let scenario = s.clone();
            let r = tokio::spawn(async move {
                run_scenario_with(scenario, target, slow, dir, &launch).await
            })
            .await;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    let mut r = ScenarioResult::skipped(&s, format!("the scenario panicked: {e}"));
                    r.status = Status::Failed;
                    r
                }
            };
            (i, id, r)
        });
    }
    while let Some(done) = set.join_next().await {
        if let Ok((i, id, r)) = done {
            bar.set_message(format!("{id}: {}", r.status.as_str()));
            if r.status == Status::Failed {
                bar.println(format!(
                    "FAILED {id}: {}",
                    r.message.clone().unwrap_or_default()
                ));
            }
            results[i] = Some(r);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    results
        .into_iter()
        .zip(&scenarios)
        .map(|(r, s)| {
            r.unwrap_or_else(|| {
                let mut r = ScenarioResult::skipped(s, "lost: the scenario task did not finish");
                r.status = Status::Failed;
                r
            })
        })
        .collect()
}

/// Where a scenario mailbox lives.
#[derive(Debug, Clone)]
enum Place {
    /// On a reference gestore (read from its store).
    Reference { gestore: String, address: String },
    /// On the target (read over IMAP).
    External { address: String },
    /// Ordinary mail caught by the sink.
    Ordinary { address: String },
}

impl Place {
    fn address(&self) -> &str {
        match self {
            Place::Reference { address, .. }
            | Place::External { address }
            | Place::Ordinary { address } => address,
        }
    }
}

/// The outcome of the last submit or inject.
#[derive(Debug, Clone, Default)]
struct LastSend {
    /// (step, reply) in order.
    replies: Vec<(String, Reply)>,
    /// A client error that is not a reply (connection, TLS).
    error: Option<String>,
}

impl LastSend {
    /// The decisive reply: the first refusal, else the last reply.
    fn decisive(&self) -> Option<&Reply> {
        self.replies
            .iter()
            .find(|(_, r)| !r.is_positive() && !r.is_intermediate())
            .or(self.replies.last())
            .map(|(_, r)| r)
    }
}

/// A message kept by `save`.
#[derive(Debug, Clone)]
struct Saved {
    raw: Vec<u8>,
    identificativo: Option<String>,
}

/// One received message.
#[derive(Debug, Clone)]
struct Received {
    key: i64,
    kind: String,
    raw: Vec<u8>,
}

struct Run {
    s: Scenario,
    topo: Topology,
    target: Option<Arc<Target>>,
    slow: bool,
    places: BTreeMap<String, Place>,
    trust: TrustStore,
    dir: PathBuf,
    rel: String,
    claimed: HashSet<(String, i64)>,
    saved: BTreeMap<String, Saved>,
    last: Option<LastSend>,
    seq: usize,
    evidence: Vec<String>,
    /// The attachments of each submission, by its Message-ID (for `breve_hashes`).
    sent: BTreeMap<String, Vec<crate::breve::SentAttachment>>,
    /// The listener of the last `hostile-daticert` or `remote-doctype` inject (for
    /// `external_fetches`).
    probe: Option<crate::probe::FetchProbe>,
    /// The last IMAP session with each target mailbox not yet in the evidence: address →
    /// transcript (credentials redacted, messages as size and SHA-256).
    imap_sessions: std::sync::Mutex<BTreeMap<String, String>>,
    /// The shared clock when the scenario started (log times are judged against it).
    started: chrono::DateTime<chrono::Utc>,
}

/// The messages a link dropped: (from, to, [(kind, raw)]).
type DroppedOnLink = (String, String, Vec<(String, Vec<u8>)>);

/// The result of one step.
struct StepOutcome {
    status: Status,
    message: Option<String>,
    checks: Vec<Check>,
    evidence: Vec<String>,
}

impl StepOutcome {
    fn pass() -> StepOutcome {
        StepOutcome {
            status: Status::Passed,
            message: None,
            checks: Vec::new(),
            evidence: Vec::new(),
        }
    }
    fn fail(m: impl Into<String>) -> StepOutcome {
        StepOutcome {
            status: Status::Failed,
            message: Some(m.into()),
            ..StepOutcome::pass()
        }
    }
    fn skip(m: impl Into<String>) -> StepOutcome {
        StepOutcome {
            status: Status::Skipped,
            message: Some(m.into()),
            ..StepOutcome::pass()
        }
    }
    /// Failed when a check failed.
    fn judged(mut self) -> StepOutcome {
        if self.status == Status::Passed
            && let Some(c) = self.checks.iter().find(|c| c.status == Status::Failed)
        {
            self.status = Status::Failed;
            self.message = Some(format!("{}: {}", c.description, c.detail));
        }
        self
    }
}

/// Runs one scenario end to end with embedded reference gestori ([`run_scenario_with`]).
pub async fn run_scenario(
    s: Scenario,
    target: Option<Arc<Target>>,
    slow: bool,
    out: PathBuf,
) -> ScenarioResult {
    run_scenario_with(s, target, slow, out, &Launch::Embedded).await
}

/// Runs one scenario end to end, its reference gestori started as `launch` says. In process mode
/// the evidence has each child's stderr (`gestore-<name>.log`) and its command line and pid
/// (`gestore-<name>.cmd`).
pub async fn run_scenario_with(
    s: Scenario,
    target: Option<Arc<Target>>,
    slow: bool,
    out: PathBuf,
    launch: &Launch,
) -> ScenarioResult {
    let t0 = Instant::now();
    let mut result = ScenarioResult::skipped(&s, "");
    result.message = None;
    let routes: Vec<(String, String)> = target
        .as_ref()
        .map(|t| {
            t.domains
                .iter()
                .map(|d| (d.clone(), t.inbound_route()))
                .collect()
        })
        .unwrap_or_default();
    let rel = format!("evidence/{}", s.id);
    let logs = out.join(&rel);
    let started =
        Topology::start_launched(&s, &routes, target.as_deref(), launch, Some(&logs)).await;
    let topo = match started {
        Ok(t) => t,
        Err(e) => {
            result.status = Status::Failed;
            result.message = Some(format!("the topology did not start: {e:#}"));
            result.duration_ms = t0.elapsed().as_millis() as u64;
            return result;
        }
    };
    let mut places = BTreeMap::new();
    for (name, m) in &s.mailboxes {
        let place = match &m.value {
            MailboxSpec::Ordinary(a) => Place::Ordinary {
                address: a.to_ascii_lowercase(),
            },
            MailboxSpec::Pec { gestore, user, .. } => match topo.gestori.get(gestore) {
                Some(g) => Place::Reference {
                    gestore: gestore.clone(),
                    address: topology::pec_address(name, user, &g.domain, &g.service_address),
                },
                None => {
                    let t = target.as_deref();
                    let address = if user.is_empty() {
                        // The target's mailboxes in order of the scenario's names.
                        t.and_then(|t| {
                            let i = s
                                .mailboxes
                                .iter()
                                .filter(|(_, m)| matches!(&m.value, MailboxSpec::Pec { gestore: g, .. } if g == gestore))
                                .position(|(n, _)| n == name)?;
                            t.mailboxes.get(i).map(|m| m.address.clone())
                        })
                        .unwrap_or_else(|| format!("{name}@unknown.invalid"))
                    } else {
                        let d = t
                            .and_then(|t| t.domains.first().cloned())
                            .unwrap_or_default();
                        format!("{user}@{d}")
                    };
                    Place::External { address }
                }
            },
        };
        places.insert(name.clone(), place);
    }
    result.gestori = s
        .topology
        .iter()
        .map(|(name, g)| match g {
            GestoreSpec::Reference(_) => GestoreInfo {
                name: name.clone(),
                role: "reference".into(),
                domain: topo
                    .gestori
                    .get(name)
                    .map(|g| g.domain.clone())
                    .unwrap_or_default(),
            },
            GestoreSpec::External(_) => GestoreInfo {
                name: name.clone(),
                role: "external".into(),
                domain: target
                    .as_ref()
                    .and_then(|t| t.domains.first().cloned())
                    .unwrap_or_default(),
            },
        })
        .collect();
    // The topology's test CA and, against a target, the target's `ca` judge signatures.
    let trust = TrustStore {
        certs: std::iter::once(topo.ca_pem.clone())
            .chain(target.as_ref().and_then(|t| t.ca.clone()))
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|p| openssl::x509::X509::stack_from_pem(&p).ok())
            .flatten()
            .collect(),
    };
    let rel = format!("evidence/{}", s.id);
    let topo_clock = topo.clock.clone();
    let mut run = Run {
        dir: out.clone(),
        rel,
        s: s.clone(),
        topo,
        target,
        slow,
        places,
        trust,
        claimed: HashSet::new(),
        saved: BTreeMap::new(),
        last: None,
        seq: 0,
        evidence: Vec::new(),
        sent: BTreeMap::new(),
        probe: None,
        imap_sessions: Default::default(),
        started: reference_gestore::clock::Clock::now(&*topo_clock),
    };
    // Process mode: the children's logs (written there by the children) and how they were started.
    let processes: Vec<(String, String)> = run
        .topo
        .gestori
        .iter()
        .filter_map(|(name, g)| {
            let p = g.process()?;
            let what = format!(
                "pid: {}\ncommand: {}\nready: {}\nsqlite: {}\n",
                p.pid,
                p.command,
                p.ready.line(),
                g.sqlite().display()
            );
            Some((name.clone(), what))
        })
        .collect();
    for (name, what) in processes {
        let cmd = run.write_evidence(&format!("gestore-{name}.cmd"), what.as_bytes());
        run.evidence.push(cmd);
        run.evidence.push(format!("{}/gestore-{name}.log", run.rel));
    }
    // What the target's mailboxes hold before the scenario is not new: mark it as seen.
    let external: Vec<Place> = run
        .places
        .values()
        .filter(|p| matches!(p, Place::External { .. }))
        .cloned()
        .collect();
    for p in external {
        if let Ok(ms) = run.messages_checked(&p).await {
            for m in ms {
                run.claimed.insert((p.address().to_string(), m.key));
            }
        }
    }
    let before = run.imap_evidence("00");
    run.evidence.extend(before);
    let mut failed = false;
    for (index, step) in s.steps.iter().enumerate() {
        let start = t0.elapsed();
        let mut o = if failed {
            StepOutcome::skip("not run: an earlier step failed")
        } else {
            run.step(index, &step.value).await
        };
        // The IMAP reads of the target during the step (its last session per mailbox).
        o.evidence
            .extend(run.imap_evidence(&format!("{:02}", index + 1)));
        let duration = t0.elapsed() - start;
        if o.status == Status::Failed && !failed {
            failed = true;
            result.message = Some(format!(
                "step {} (line {}, {}): {}",
                index + 1,
                step.referenced.line(),
                step.value.name(),
                o.message.clone().unwrap_or_default()
            ));
        }
        result.steps.push(StepResult {
            index,
            line: step.referenced.line(),
            name: step.value.name().into(),
            description: describe(&step.value),
            status: o.status,
            message: o.message,
            start_ms: start.as_millis() as u64,
            duration_ms: duration.as_millis() as u64,
            checks: o.checks,
            evidence: o.evidence,
        });
    }
    run.dump_mailboxes().await;
    result.evidence = std::mem::take(&mut run.evidence);
    run.topo.stop().await;
    result.status = if failed {
        Status::Failed
    } else if result.steps.iter().all(|s| s.status == Status::Skipped) && !result.steps.is_empty() {
        Status::Skipped
    } else {
        Status::Passed
    };
    result.duration_ms = t0.elapsed().as_millis() as u64;
    result
}

/// One line about a step, for reports.
fn describe(step: &Step) -> String {
    match step {
        Step::Submit(s) => format!(
            "{} → to [{}] cc [{}]{}{}",
            s.as_,
            s.to.join(", "),
            s.cc.join(", "),
            s.tipo_ricevuta
                .as_ref()
                .map(|t| format!(", X-TipoRicevuta {t}"))
                .unwrap_or_default(),
            if s.attachments.is_empty() {
                String::new()
            } else {
                format!(", {} attachment(s)", s.attachments.len())
            }
        ),
        Step::Inject(i) => format!("{:?} → [{}]", i.kind, i.to.join(", ")),
        Step::AdvanceClock(d) => format!("clock +{d}"),
        Step::Wait(d) => format!("wait {d}"),
        Step::Link(l) => format!(
            "{} → {}: {:?}{}",
            l.from,
            l.to,
            l.state,
            if l.drop.is_empty() {
                String::new()
            } else {
                format!(", drop [{}]", l.drop.join(", "))
            }
        ),
        Step::Expect(x) => format!(
            "{} × {} in {} within {}",
            x.count.unwrap_or(1),
            x.kind,
            x.mailbox,
            x.within.unwrap_or(DEFAULT_WITHIN)
        ),
        Step::ExpectReply(r) => format!(
            "reply {} {}",
            r.code.map(|c| c.to_string()).unwrap_or_default(),
            r.text.clone().unwrap_or_default()
        ),
        Step::ExpectLog(l) => format!(
            "log of {} holds [{}] for {}",
            l.gestore,
            l.events
                .iter()
                .map(|e| e.event.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            l.message
                .as_ref()
                .map(|m| format!("message `{m}`"))
                .or_else(|| l.subject.as_ref().map(|s| format!("subject `{s}`")))
                .unwrap_or_default()
        ),
        Step::ExpectNone(n) => format!(
            "no {} in {}{} for {}",
            n.kind,
            n.mailbox,
            n.after
                .as_ref()
                .map(|a| format!(" after clock +{}", a.advance_clock))
                .unwrap_or_default(),
            n.for_.unwrap_or(DEFAULT_NONE)
        ),
    }
}

/// How long `expect` waits by default.
pub const DEFAULT_WITHIN: Dur = Dur(Duration::from_secs(15));
/// How long `expect_log` waits for the records by default.
pub const DEFAULT_LOG_WITHIN: Dur = Dur(Duration::from_secs(5));
/// How long `expect_none` watches by default.
pub const DEFAULT_NONE: Dur = Dur(Duration::from_secs(2));
/// The longest `wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often mailboxes are looked at.
const POLL: Duration = Duration::from_millis(25);
/// How often the target's mailboxes are read over IMAP.
const POLL_IMAP: Duration = Duration::from_millis(500);

/// Runs a synchronous library call, turning a panic into an error (an unfinished function must
/// fail a check, not the run).
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let m = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what} panicked: {m}")
    })
}

fn client_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(10),
        command: Duration::from_secs(60),
        data: Duration::from_secs(120),
    }
}

impl Run {
    /// Writes the recorded IMAP sessions as `<prefix>-imap-<address>.transcript`; their paths.
    fn imap_evidence(&mut self, prefix: &str) -> Vec<String> {
        let sessions = match self.imap_sessions.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => BTreeMap::new(),
        };
        sessions
            .into_iter()
            .map(|(address, text)| {
                self.write_evidence(
                    &format!("{prefix}-imap-{address}.transcript"),
                    text.as_bytes(),
                )
            })
            .collect()
    }

    fn write_evidence(&mut self, name: &str, data: &[u8]) -> String {
        let rel = format!("{}/{name}", self.rel);
        let path = self.dir.join(&rel);
        if let Some(p) = path.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        let _ = std::fs::write(&path, data);
        rel
    }

    /// A mailbox name or a literal address → the address.
    fn address(&self, n: &str) -> String {
        if n.contains('@') {
            return n.to_string();
        }
        self.places
            .get(n)
            .map(|p| p.address().to_string())
            .unwrap_or_else(|| n.to_string())
    }

    /// `{name}` in a string → the mailbox's address.
    fn expand(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (n, p) in &self.places {
            out = out.replace(&format!("{{{n}}}"), p.address());
        }
        out
    }

    fn next_id(&mut self) -> String {
        self.seq += 1;
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        format!("{}.{}.{nanos:x}@runner.test", self.s.id, self.seq)
    }

    async fn step(&mut self, index: usize, step: &Step) -> StepOutcome {
        match step {
            Step::Submit(s) => self.submit(index, s).await,
            Step::Inject(i) => self.inject(index, i).await,
            Step::AdvanceClock(d) => self.advance(d).await,
            Step::Wait(d) => {
                let d = d.0.min(MAX_WAIT);
                tokio::time::sleep(d).await;
                StepOutcome::pass()
            }
            Step::Link(l) => {
                let Some(c) = self.topo.links.get(&(l.from.clone(), l.to.clone())) else {
                    return StepOutcome::skip(
                        "links to or from an external gestore are not relayed",
                    );
                };
                if let Ok(mut st) = c.state.lock() {
                    *st = (l.state, l.drop.clone());
                }
                StepOutcome::pass()
            }
            Step::Expect(x) => self.expect(index, x).await,
            Step::ExpectReply(r) => {
                let Some(last) = &self.last else {
                    return StepOutcome::fail("no submit or inject ran");
                };
                let mut o = StepOutcome::pass();
                let seen = last
                    .replies
                    .iter()
                    .map(|(s, r)| format!("{s}: {r}"))
                    .chain(last.error.clone())
                    .collect::<Vec<_>>()
                    .join("\n");
                let decisive = last.decisive();
                if let Some(code) = r.code {
                    o.checks.push(Check::new(
                        "reply.code",
                        "RFC 5321 §4.2",
                        format!("the decisive SMTP reply has code {code}"),
                        decisive.is_some_and(|d| d.code == code),
                        seen.clone(),
                    ));
                }
                if let Some(t) = &r.text {
                    o.checks.push(Check::new(
                        "reply.text",
                        "RFC 5321 §4.2",
                        format!("the decisive SMTP reply says `{t}`"),
                        decisive.is_some_and(|d| d.text.to_lowercase().contains(&t.to_lowercase())),
                        seen,
                    ));
                }
                o.judged()
            }
            Step::ExpectNone(n) => self.expect_none(n).await,
            Step::ExpectLog(l) => self.expect_log(index, l).await,
        }
    }

    async fn advance(&mut self, d: &Dur) -> StepOutcome {
        // Every clock has moved (each child answered its ADVANCE) before the step passes.
        if let Err(e) = self.topo.advance(d.0).await {
            return StepOutcome::fail(format!("{e:#}"));
        }
        if self.target.is_some() {
            if !self.slow {
                return StepOutcome::skip(
                    "the target runs on real time: advance_clock needs --slow",
                );
            }
            // Against a target, time windows are real time.
            tokio::time::sleep(d.0).await;
        }
        StepOutcome::pass()
    }

    async fn submit(&mut self, index: usize, s: &Submit) -> StepOutcome {
        let sender = self.address(&s.as_);
        let id = self.next_id();
        let draft = Draft {
            from: s.from.clone().unwrap_or_else(|| sender.clone()),
            to: s.to.iter().map(|r| self.address(r)).collect(),
            cc: s.cc.iter().map(|r| self.address(r)).collect(),
            bcc: s.bcc.iter().map(|r| self.address(r)).collect(),
            subject: s
                .subject
                .clone()
                .unwrap_or_else(|| format!("{} step {}", self.s.id, index + 1)),
            body: s
                .body
                .clone()
                .unwrap_or_else(|| "Messaggio di prova del runner di conformità.".into()),
            attachments: s.attachments.clone(),
            tipo_ricevuta: s.tipo_ricevuta.clone(),
            headers: s.headers.clone(),
            message_id: id,
        };
        let raw = craft::submission(&draft);
        self.sent.insert(
            draft.message_id.clone(),
            crate::breve::sent_attachments(&draft.attachments),
        );
        let rcpts: Vec<String> = match &s.rcpts {
            Some(r) => r.iter().map(|x| self.address(x)).collect(),
            None => draft
                .to
                .iter()
                .chain(&draft.cc)
                .chain(&draft.bcc)
                .cloned()
                .collect(),
        };
        let place = self.places.get(&s.as_).cloned();
        let (addr, tls, password) = match place {
            Some(Place::Reference { gestore, .. }) => {
                let g = &self.topo.gestori[&gestore];
                let Some(a) = g.endpoints().submission_tls else {
                    return StepOutcome::fail(format!(
                        "gestore {gestore} has no submission listener"
                    ));
                };
                (
                    a.to_string(),
                    ClientTls::implicit(self.topo.roots.clone(), "127.0.0.1"),
                    reference_gestore::dev::DEV_PASSWORD.to_string(),
                )
            }
            Some(Place::External { address }) => {
                let Some(t) = self.target.clone() else {
                    return StepOutcome::fail("no target");
                };
                let Some(m) = t.mailboxes.iter().find(|m| m.address == address) else {
                    return StepOutcome::fail(format!("the target has no mailbox {address}"));
                };
                let Ok(pw) = std::env::var(&m.password_env) else {
                    return StepOutcome::fail(format!(
                        "environment variable {} (password of {address}) is not set",
                        m.password_env
                    ));
                };
                let roots = match t.ca.as_ref().map(|p| {
                    reference_gestore::tls::root_store_from_files(&[p]).map_err(|e| e.to_string())
                }) {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => return StepOutcome::fail(e),
                    None => {
                        return StepOutcome::skip(
                            "submission to the target needs `ca:` (its TLS trust anchors) in the target file",
                        );
                    }
                };
                let tls = if t.submission.tls.as_deref() == Some("starttls") {
                    ClientTls::starttls(roots, t.submission.host.clone())
                } else {
                    ClientTls::implicit(roots, t.submission.host.clone())
                };
                (
                    format!("{}:{}", t.submission.host, t.submission.port),
                    tls,
                    pw,
                )
            }
            _ => return StepOutcome::fail(format!("`{}` cannot submit", s.as_)),
        };
        let mut o = StepOutcome::pass();
        o.evidence
            .push(self.write_evidence(&format!("{:02}-submit.eml", index + 1), &raw));
        let (last, transcript) = smtp_send(
            &addr,
            tls,
            Some((&sender, &password)),
            &sender,
            &rcpts,
            &raw,
        )
        .await;
        self.sent(
            o,
            format!("{:02}-submit.transcript", index + 1),
            last,
            transcript,
        )
    }

    async fn inject(&mut self, index: usize, i: &Inject) -> StepOutcome {
        let to: Vec<String> = i.to.iter().map(|r| self.address(r)).collect();
        let places: Vec<Place> =
            i.to.iter()
                .filter_map(|r| self.places.get(r).cloned())
                .collect();
        let gestore = match places.first() {
            Some(Place::Reference { gestore, .. }) => Some(gestore.clone()),
            Some(Place::External { .. }) => None,
            _ => return StepOutcome::fail("inject: recipients must be PEC mailboxes"),
        };
        let same = places.iter().all(|p| match (p, &gestore) {
            (Place::Reference { gestore: g, .. }, Some(x)) => g == x,
            (Place::External { .. }, None) => true,
            _ => false,
        });
        if !same {
            return StepOutcome::fail("inject: all recipients must be on one gestore");
        }
        let from_name = i.from.clone();
        let from = from_name
            .as_deref()
            .map(|f| self.address(f))
            .unwrap_or_else(|| "mario.rossi@example.test".into());
        let id = self.next_id();
        let subject = i
            .subject
            .clone()
            .unwrap_or_else(|| format!("{} {:?}", self.s.id, i.kind));
        // The gestore of the sender, for messages it must sign.
        let signer_gestore = from_name.as_ref().and_then(|f| match self.places.get(f) {
            Some(Place::Reference { gestore, .. }) => Some(gestore.clone()),
            _ => None,
        });
        // DC-05: the hostile daticert's DTD and entities point at a loopback listener, open until
        // the scenario ends; `expect.external_fetches` reads its count.
        let probe_base = if matches!(
            i.kind,
            InjectKind::HostileDaticert | InjectKind::RemoteDoctype
        ) {
            match crate::probe::FetchProbe::start().await {
                Ok(p) => {
                    let base = p.url("");
                    self.probe = Some(p);
                    Some(base)
                }
                Err(e) => return StepOutcome::fail(format!("opening the fetch listener: {e}")),
            }
        } else {
            None
        };
        let built: Result<Vec<u8>, String> = match i.kind {
            InjectKind::Ordinary => Ok(craft::ordinary(&from, &to, &subject, &id)),
            InjectKind::Unsigned => {
                let service = format!(
                    "posta-certificata@{}",
                    from.rsplit_once('@').map(|x| x.1).unwrap_or("example.test")
                );
                Ok(craft::unsigned_envelope(
                    &from, &service, &to, &subject, &id,
                ))
            }
            InjectKind::Tampered => {
                let name = i.message.clone().unwrap_or_default();
                match self.saved.get(&name) {
                    Some(m) => craft::tamper(&m.raw)
                        .ok_or_else(|| format!("`{name}` is not a multipart/signed message")),
                    None => Err(format!("no message saved as `{name}`")),
                }
            }
            InjectKind::UntrustedCa => {
                let original = craft::ordinary(&from, &to, &subject, &id);
                let domain = from
                    .rsplit_once('@')
                    .map(|x| x.1.to_string())
                    .unwrap_or_default();
                guarded("untrusted-ca envelope", || -> Result<Vec<u8>, String> {
                    let ca = pec_formats::pki::TestCa::generate("Untrusted Test CA")
                        .map_err(|e| e.to_string())?;
                    let service = format!("posta-certificata@{domain}");
                    let ident = ca
                        .issue_provider("Gestore non fidato", &service)
                        .map_err(|e| e.to_string())?;
                    let signer = pec_formats::smime::Signer {
                        key: ident.key,
                        cert: ident.cert,
                        chain: vec![],
                        digest: pec_formats::smime::DigestAlg::Sha256,
                    };
                    let p =
                        pec_formats::build::Provider::new("Gestore non fidato", &domain, &signer);
                    craft::signed_envelope(&p, &from, &to, &original).map_err(|e| format!("{e:#}"))
                })
                .and_then(|r| r)
            }
            InjectKind::Virus
            | InjectKind::BadDaticert
            | InjectKind::HostileDaticert
            | InjectKind::RemoteDoctype => {
                let Some(g) = signer_gestore.and_then(|g| self.topo.gestori.get(&g)) else {
                    return StepOutcome::fail(
                        "the sender must be a mailbox of a reference gestore",
                    );
                };
                if i.kind == InjectKind::Virus {
                    let original = craft::submission(&Draft {
                        from: from.clone(),
                        to: to.clone(),
                        subject: subject.clone(),
                        body: "In allegato.".into(),
                        attachments: vec![scenario::Attachment {
                            name: "fattura.exe".into(),
                            size: reference_gestore::config::ByteSize(2048),
                            virus: true,
                        }],
                        message_id: format!("orig.{id}"),
                        ..Draft::default()
                    });
                    guarded("virus envelope", || {
                        craft::signed_envelope(&g.provider(), &from, &to, &original)
                            .map_err(|e| format!("{e:#}"))
                    })
                    .and_then(|r| r)
                } else if i.kind == InjectKind::RemoteDoctype {
                    // DC-05, digest §6.2: a remote DTD named, never fetched.
                    let base = probe_base.as_deref().unwrap_or_default();
                    let original = craft::ordinary(&from, &to, &subject, &format!("orig.{id}"));
                    guarded("remote-doctype envelope", || {
                        craft::remote_doctype_envelope(
                            &g.provider(),
                            &g.signer,
                            &from,
                            &to,
                            &original,
                            base,
                        )
                        .map_err(|e| format!("{e:#}"))
                    })
                    .and_then(|r| r)
                } else if i.kind == InjectKind::HostileDaticert {
                    let base = probe_base.as_deref().unwrap_or_default();
                    guarded("hostile-daticert envelope", || {
                        craft::hostile_daticert_envelope(
                            &g.signer,
                            &from,
                            &g.service_address,
                            &to,
                            &subject,
                            &id,
                            base,
                        )
                        .map_err(|e| format!("{e:#}"))
                    })
                    .and_then(|r| r)
                } else {
                    guarded("bad-daticert envelope", || {
                        craft::bad_daticert_envelope(
                            &g.signer,
                            &from,
                            &g.service_address,
                            &to,
                            &subject,
                            &id,
                        )
                        .map_err(|e| format!("{e:#}"))
                    })
                    .and_then(|r| r)
                }
            }
        };
        let raw = match built {
            Ok(r) => r,
            Err(e) => return StepOutcome::fail(format!("building the message: {e}")),
        };
        let (addr, tls) = match &gestore {
            Some(g) => {
                let Some(a) = self.topo.gestori[g].endpoints().inbound else {
                    return StepOutcome::fail(format!("gestore {g} has no inbound listener"));
                };
                let tls = if i.kind == InjectKind::Ordinary {
                    ClientTls::none()
                } else {
                    // RFC 6109 §5.3: between providers over TLS.
                    ClientTls::starttls(self.topo.roots.clone(), "127.0.0.1")
                };
                (a.to_string(), tls)
            }
            None => {
                let Some(t) = &self.target else {
                    return StepOutcome::fail("no target");
                };
                (t.inbound_route(), ClientTls::none())
            }
        };
        let mut o = StepOutcome::pass();
        o.evidence.push(self.write_evidence(
            &format!("{:02}-inject-{:?}.eml", index + 1, i.kind).to_lowercase(),
            &raw,
        ));
        let (last, transcript) = smtp_send(&addr, tls, None, &from, &to, &raw).await;
        self.sent(
            o,
            format!("{:02}-inject.transcript", index + 1),
            last,
            transcript,
        )
    }

    /// The end of a submit or inject step: the wire transcript as evidence, the SMTP outcome kept
    /// for `expect_reply`, and the step failed when the session itself failed.
    fn sent(
        &mut self,
        mut o: StepOutcome,
        transcript_name: String,
        last: LastSend,
        transcript: String,
    ) -> StepOutcome {
        o.evidence
            .push(self.write_evidence(&transcript_name, transcript.as_bytes()));
        let err = last.error.clone();
        self.last = Some(last);
        if let Some(e) = err {
            return StepOutcome {
                status: Status::Failed,
                message: Some(e),
                ..o
            };
        }
        o
    }

    /// Every message of a mailbox.
    async fn messages(&self, place: &Place) -> Vec<Received> {
        match place {
            Place::Reference { gestore, address } => {
                let Some(g) = self.topo.gestori.get(gestore) else {
                    return Vec::new();
                };
                match g.mailbox(address).await {
                    Ok(ms) => ms
                        .into_iter()
                        .map(|m| Received {
                            key: m.uid,
                            kind: kind_by_headers(&m.raw).to_string(),
                            raw: m.raw,
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                }
            }
            Place::Ordinary { address } => self
                .topo
                .sink
                .lock()
                .map(|b| {
                    b.iter()
                        .enumerate()
                        .filter(|(_, (r, _))| r == address)
                        .map(|(i, (_, raw))| Received {
                            key: i as i64,
                            kind: kind_by_headers(raw).to_string(),
                            raw: raw.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Place::External { .. } => self.messages_checked(place).await.unwrap_or_default(),
        }
    }

    /// How to read the target's mailboxes: its `imap:` endpoint, trusting its `ca:`.
    fn target_imap(&self) -> Result<ImapServer, StepOutcome> {
        let Some(t) = &self.target else {
            return Err(StepOutcome::fail("no target"));
        };
        let Some(e) = &t.imap else {
            return Err(StepOutcome::skip(
                "reading the target's mailboxes needs `imap:` in the target file",
            ));
        };
        let roots = match &t.ca {
            Some(p) => reference_gestore::tls::root_store_from_files(&[p])
                .map_err(|e| StepOutcome::fail(e.to_string()))?,
            None => {
                return Err(StepOutcome::skip(
                    "reading the target's mailboxes needs `ca:` (its TLS trust anchors) in the target file",
                ));
            }
        };
        Ok(ImapServer {
            host: e.host.clone(),
            port: e.port,
            // RFC 8314 §3.2 implicit TLS by default; STARTTLS (RFC 3501 §6.2.1) when asked.
            starttls: e.tls.as_deref() == Some("starttls"),
            roots,
            server_name: e.host.clone(),
            timeout: Duration::from_secs(30),
        })
    }

    /// The INBOX of a mailbox of the target, over IMAP; an error says why it could not be read
    /// (empty for the other places: they are read from the stores).
    async fn messages_checked(&self, place: &Place) -> Result<Vec<Received>, StepOutcome> {
        let Place::External { address } = place else {
            return Ok(Vec::new());
        };
        let server = self.target_imap()?;
        let Some(m) = self
            .target
            .as_ref()
            .and_then(|t| t.mailboxes.iter().find(|m| &m.address == address))
        else {
            return Err(StepOutcome::fail(format!(
                "the target has no mailbox {address}"
            )));
        };
        let Ok(pw) = std::env::var(&m.password_env) else {
            return Err(StepOutcome::fail(format!(
                "environment variable {} (password of {address}) is not set",
                m.password_env
            )));
        };
        let transcript = Transcript::imap(Side::Client);
        let read =
            crate::imap::fetch_all_recorded(&server, address, &pw, "INBOX", &transcript).await;
        if let Ok(mut m) = self.imap_sessions.lock() {
            m.insert(address.clone(), transcript.text());
        }
        let ms = read.map_err(|e| StepOutcome::fail(format!("reading {address}: {e}")))?;
        Ok(ms
            .into_iter()
            .map(|m| Received {
                key: i64::from(m.uid),
                kind: kind_by_headers(&m.raw).to_string(),
                raw: m.raw,
            })
            .collect())
    }

    async fn unclaimed(&self, place: &Place, kind: &str) -> Vec<Received> {
        self.messages(place)
            .await
            .into_iter()
            .filter(|m| kind == "any" || m.kind == kind)
            .filter(|m| !self.claimed.contains(&(place.address().to_string(), m.key)))
            .collect()
    }

    async fn expect(&mut self, index: usize, x: &Expect) -> StepOutcome {
        let Some(place) = self.places.get(&x.mailbox).cloned() else {
            return StepOutcome::fail(format!("no mailbox {}", x.mailbox));
        };
        // Against a target its mailboxes are read over IMAP: fail (or skip) now when they cannot be.
        if let Err(o) = self.messages_checked(&place).await {
            return o;
        }
        let poll = if matches!(place, Place::External { .. }) {
            POLL_IMAP
        } else {
            POLL
        };
        let want = x.count.unwrap_or(1);
        let within = x.within.unwrap_or(DEFAULT_WITHIN).0;
        let deadline = Instant::now() + within;
        let about = x
            .consegna
            .as_ref()
            .map(|c| self.address(c).to_ascii_lowercase());
        let select = |ms: Vec<Received>| -> Vec<Received> {
            match &about {
                None => ms,
                Some(a) => ms
                    .into_iter()
                    .filter(|m| recipients_of(&m.raw).iter().any(|r| r == a))
                    .collect(),
            }
        };
        let mut found = select(self.unclaimed(&place, &x.kind).await);
        while found.len() < want && Instant::now() < deadline {
            tokio::time::sleep(poll).await;
            found = select(self.unclaimed(&place, &x.kind).await);
        }
        let mut o = StepOutcome::pass();
        let present: Vec<String> = self
            .messages(&place)
            .await
            .iter()
            .map(|m| m.kind.clone())
            .collect();
        o.checks.push(Check::new(
            "expect.count",
            "scenario",
            format!(
                "{want} new {} in {}{}",
                x.kind,
                x.mailbox,
                x.consegna
                    .as_ref()
                    .map(|c| format!(" about {c}"))
                    .unwrap_or_default()
            ),
            found.len() == want,
            format!(
                "found {} within {}; the mailbox holds [{}]",
                found.len(),
                Dur(within),
                present.join(", ")
            ),
        ));
        let take: Vec<Received> = found.into_iter().take(want).collect();
        for (k, m) in take.iter().enumerate() {
            self.claimed.insert((place.address().to_string(), m.key));
            let name = format!("{:02}-{}-{}-{}.eml", index + 1, x.mailbox, x.kind, k + 1);
            o.evidence.push(self.write_evidence(&name, &m.raw));
            o.checks
                .extend(offline_checks(&m.raw, &x.kind, &self.trust));
            o.checks.extend(self.expectations(x, &m.raw));
        }
        if let (Some(name), Some(first)) = (&x.save, take.first()) {
            let identificativo = identificativo_of(&first.raw);
            self.saved.insert(
                name.clone(),
                Saved {
                    raw: first.raw.clone(),
                    identificativo,
                },
            );
        }
        o.judged()
    }

    /// The scenario's own expectations about one message.
    fn expectations(&self, x: &Expect, raw: &[u8]) -> Vec<Check> {
        let mut out = Vec::new();
        for (name, want) in &x.headers {
            let want = self.expand(want);
            let values = header_values(raw, name);
            out.push(Check::new(
                "expect.header",
                "scenario",
                format!("header {name} contains `{want}`"),
                values
                    .iter()
                    .any(|v| v.to_lowercase().contains(&want.to_lowercase())),
                format!("{name}: {}", values.join(" | ")),
            ));
        }
        let parsed = guarded("pec_formats::parse", || pec_formats::parse::parse(raw));
        let daticert = parsed
            .as_ref()
            .ok()
            .and_then(|p| p.as_ref().ok())
            .and_then(|p| {
                p.daticert_xml
                    .as_ref()
                    .and_then(|x| guarded("Daticert::from_xml", || Daticert::from_xml(x)).ok())
                    .and_then(|r| r.ok())
            });
        if !x.daticert.is_empty() || x.same_identificativo.is_some() {
            for (field, want) in &x.daticert {
                let want = self.expand(want);
                let got = daticert.as_ref().map(|d| daticert_field(d, field));
                out.push(Check::new(
                    &format!("expect.daticert.{field}"),
                    "RFC 6109 §4.4",
                    format!("daticert {field} contains `{want}`"),
                    got.as_ref()
                        .is_some_and(|g| g.to_lowercase().contains(&want.to_lowercase())),
                    got.unwrap_or_else(|| "no readable daticert.xml".into()),
                ));
            }
        }
        if let Some(s) = &x.same_identificativo {
            let mine = identificativo_of(raw);
            let theirs = self.saved.get(s).and_then(|m| m.identificativo.clone());
            out.push(Check::new(
                "expect.same-identificativo",
                "RFC 6109 §2.2.1, §4.4",
                format!("same identificativo as `{s}`"),
                mine.is_some() && mine == theirs,
                format!("{mine:?} vs {theirs:?}"),
            ));
        }
        let wanted_original = match (x.original, x.ricevuta.as_deref()) {
            (Some(o), _) => Some(o),
            (None, Some("completa")) => Some(OriginalSpec::Included),
            (None, Some("breve")) => Some(OriginalSpec::Hashed),
            (None, Some("sintetica")) => Some(OriginalSpec::Absent),
            _ => None,
        };
        if let Some(w) = wanted_original {
            let got = match &parsed {
                Ok(Ok(p)) => Ok(original_form(p.postacert.as_deref())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.clone()),
            };
            // RFC 6109 §3.3.2.1–3: completa carries the original, breve the original with
            // attachments replaced by SHA-1 hashes, sintetica no original.
            out.push(Check::new(
                "expect.original",
                "RFC 6109 §3.3.2",
                format!("the original is {w:?}").to_lowercase(),
                got.as_ref().is_ok_and(|(f, _)| *f == w),
                match got {
                    Ok((f, d)) => format!("{f:?}: {d}"),
                    Err(e) => e,
                },
            ));
        }
        if x.breve_hashes.is_some() {
            out.push(self.breve_hashes_check(&parsed, daticert.as_ref()));
        }
        if let Some(max) = x.external_fetches {
            // DC-05 (digest §6.2, §14.7): readers never fetch the external DTD or entities the
            // hostile daticert names; every connection to the listener is a fetch.
            let n = self.probe.as_ref().map_or(0, |p| p.connections());
            let requests = self
                .probe
                .as_ref()
                .map(|p| p.requests())
                .unwrap_or_default();
            out.push(Check::new(
                "expect.no-external-fetch",
                "digest §6.2, §14.7 (DC-05)",
                format!("at most {max} connection(s) to the DTD/entity listener"),
                self.probe.is_some() && n <= max,
                if self.probe.is_none() {
                    "no listener: no hostile-daticert or remote-doctype inject ran".to_string()
                } else {
                    format!("{n} connection(s) [{}]", requests.join(" | "))
                },
            ));
        }
        if let Some(g) = &x.signed_by {
            let want = self
                .topo
                .gestori
                .get(g)
                .and_then(|g| g.signer.cert.to_der().ok());
            let got = parsed
                .as_ref()
                .ok()
                .and_then(|p| p.as_ref().ok())
                .and_then(|p| {
                    let s = p.signed.as_ref()?;
                    let der = s.signature_der.as_ref()?;
                    guarded("verify_detached", || {
                        pec_formats::smime::verify_detached(
                            &s.content,
                            der,
                            &VerifyOptions::default(),
                        )
                    })
                    .ok()?
                    .ok()?
                    .signer?
                    .to_der()
                    .ok()
                });
            out.push(Check::new(
                "expect.signed-by",
                "RFC 6109 §2.1, §4.5",
                format!("signed with the certificate of gestore {g}"),
                want.is_some() && got == want,
                if got.is_none() {
                    "no readable signer certificate".to_string()
                } else if got == want {
                    "the signer certificate is the gestore's".into()
                } else {
                    "another certificate".into()
                },
            ));
            // SIG-05, RFC 6109 §5.5.2: the whole profile, with no tolerance (unlike `verify`).
            let address = self.topo.gestori.get(g).map(|g| g.service_address.clone());
            out.push(signer_profile_check(got.as_deref(), address.as_deref()));
        }
        out
    }

    /// `breve_hashes: match_original`: the receipt's `.hash` parts against the attachments of the
    /// submission it is about (found by the daticert `msgid` or the postacert's Message-IDs).
    fn breve_hashes_check(
        &self,
        parsed: &Result<
            Result<pec_formats::parse::PecMessage, pec_formats::parse::ParseError>,
            String,
        >,
        daticert: Option<&Daticert>,
    ) -> Check {
        const ID: &str = "expect.breve-hashes";
        const RULE: &str = "RFC 6109 §3.3.2.2; digest §5.9";
        const WHAT: &str =
            "each attachment sent has its <name>.hash with the SHA-1 of the base64 part";
        let postacert = match parsed {
            Ok(Ok(p)) => p.postacert.clone(),
            _ => None,
        };
        let Some(postacert) = postacert else {
            return Check::new(
                ID,
                RULE,
                WHAT,
                false,
                "the receipt carries no postacert.eml",
            );
        };
        let ids: Vec<String> = daticert
            .and_then(|d| d.dati.msgid.clone())
            .map(|m| m.trim().trim_matches(|c| c == '<' || c == '>').to_string())
            .into_iter()
            .chain(crate::breve::original_ids(&postacert))
            .collect();
        let Some(sent) = ids.iter().find_map(|i| self.sent.get(i)) else {
            return Check::new(
                ID,
                RULE,
                WHAT,
                false,
                format!(
                    "the receipt's original [{}] is no submission of this scenario",
                    ids.join(", ")
                ),
            );
        };
        match crate::breve::compare(&postacert, sent) {
            Ok(d) => Check::new(ID, RULE, WHAT, true, d),
            Err(d) => Check::new(ID, RULE, WHAT, false, d),
        }
    }

    /// `expect_log`: reads the gestore's message log from its store file (read-only, so it works
    /// whichever process runs the gestore) until the events are there or `within` passes, then
    /// judges them ([`crate::logcheck`]).
    async fn expect_log(&mut self, index: usize, l: &ExpectLog) -> StepOutcome {
        let Some(g) = self.topo.gestori.get(&l.gestore) else {
            return StepOutcome::skip(format!(
                "the log of `{}` cannot be read: it is not a reference gestore",
                l.gestore
            ));
        };
        let db = g.sqlite().to_path_buf();
        let saved = l.message.as_ref().and_then(|m| self.saved.get(m));
        let d = saved.and_then(|s| daticert_of(&s.raw));
        let mut x = crate::logcheck::LogExpectation {
            msgid: saved.and_then(|s| s.identificativo.clone()),
            subject: l.subject.clone().or_else(|| {
                d.as_ref()
                    .map(|d| d.intestazione.oggetto.clone().unwrap_or_default())
            }),
            sender: d.as_ref().map(|d| d.intestazione.mittente.clone()),
            recipients: d
                .as_ref()
                .map(|d| {
                    d.intestazione
                        .destinatari
                        .iter()
                        .map(|r| r.indirizzo.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default(),
            events: Vec::new(),
            window: (self.started, self.started),
            providers: self
                .topo
                .gestori
                .values()
                .map(|g| g.config.provider.name.clone())
                .collect(),
        };
        if l.message.is_some() && x.msgid.is_none() {
            return StepOutcome::fail(format!(
                "the saved message `{}` has no identificativo",
                l.message.clone().unwrap_or_default()
            ));
        }
        for ev in &l.events {
            let mut related = Vec::new();
            for name in &ev.related {
                let id = self
                    .saved
                    .get(name)
                    .and_then(|s| header_values(&s.raw, "Message-ID").first().cloned());
                match id {
                    Some(id) => related.push((name.clone(), id)),
                    None => {
                        return StepOutcome::fail(format!(
                            "the saved message `{name}` has no Message-ID"
                        ));
                    }
                }
            }
            x.events.push((ev.event.clone(), related));
        }
        let within = l.within.unwrap_or(DEFAULT_LOG_WITHIN).0;
        let deadline = Instant::now() + within;
        let rows = loop {
            let rows = reference_gestore::registro::read_only_records(&db).await;
            let done = rows.as_ref().is_ok_and(|r| x.complete(r));
            if done || Instant::now() >= deadline {
                break rows;
            }
            tokio::time::sleep(POLL).await;
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => return StepOutcome::fail(format!("reading the log: {e:#}")),
        };
        // The records' time: between the scenario's start and now on the shared clock (1s slack).
        let slack = chrono::Duration::seconds(1);
        x.window = (
            self.started - slack,
            reference_gestore::clock::Clock::now(&*self.topo.clock) + slack,
        );
        let mut o = StepOutcome::pass();
        o.checks = x.judge(&rows);
        let mine: Vec<StoredRecord> = x.select(&rows).into_iter().cloned().collect();
        let name = format!("{:02}-log-{}.txt", index + 1, l.gestore);
        let text = reference_gestore::registro::extract_text(&mine);
        o.evidence.push(self.write_evidence(&name, text.as_bytes()));
        o.judged()
    }

    async fn expect_none(&mut self, n: &ExpectNone) -> StepOutcome {
        let Some(place) = self.places.get(&n.mailbox).cloned() else {
            return StepOutcome::fail(format!("no mailbox {}", n.mailbox));
        };
        // Against a target its mailboxes are read over IMAP: fail (or skip) now when they cannot be.
        if let Err(o) = self.messages_checked(&place).await {
            return o;
        }
        let poll = if matches!(place, Place::External { .. }) {
            POLL_IMAP
        } else {
            POLL
        };
        if let Some(a) = &n.after {
            let o = self.advance(&a.advance_clock).await;
            if o.status != Status::Passed {
                return o;
            }
        }
        let until = Instant::now() + n.for_.unwrap_or(DEFAULT_NONE).0;
        let mut found = self.unclaimed(&place, &n.kind).await;
        while found.is_empty() && Instant::now() < until {
            tokio::time::sleep(poll).await;
            found = self.unclaimed(&place, &n.kind).await;
        }
        let mut o = StepOutcome::pass();
        o.checks.push(Check::new(
            "expect-none",
            "scenario",
            format!("no new {} in {}", n.kind, n.mailbox),
            found.is_empty(),
            if found.is_empty() {
                "none arrived".to_string()
            } else {
                format!(
                    "arrived: [{}]",
                    found
                        .iter()
                        .map(|m| m.kind.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ));
        for (k, m) in found.iter().enumerate() {
            let name = format!("unexpected-{}-{}-{}.eml", n.mailbox, m.kind, k + 1);
            o.evidence.push(self.write_evidence(&name, &m.raw));
        }
        o.judged()
    }

    /// Writes every message of every scenario mailbox and every service mailbox, the ordinary
    /// mail sink and the messages dropped on links.
    async fn dump_mailboxes(&mut self) {
        let mut places: Vec<Place> = self.places.values().cloned().collect();
        for (name, g) in &self.topo.gestori {
            places.push(Place::Reference {
                gestore: name.clone(),
                address: g.service_address.clone(),
            });
        }
        let mut seen = BTreeSet::new();
        for p in places {
            if !seen.insert(p.address().to_string()) {
                continue;
            }
            for m in self.messages(&p).await {
                let name = format!("mailboxes/{}/{:03}-{}.eml", p.address(), m.key, m.kind);
                let rel = self.write_evidence(&name, &m.raw);
                self.evidence.push(rel);
            }
        }
        let dropped: Vec<DroppedOnLink> = self
            .topo
            .links
            .iter()
            .map(|((f, t), c)| {
                (
                    f.clone(),
                    t.clone(),
                    c.dropped.lock().map(|d| d.clone()).unwrap_or_default(),
                )
            })
            .collect();
        for (f, t, msgs) in dropped {
            for (i, (kind, raw)) in msgs.iter().enumerate() {
                let rel =
                    self.write_evidence(&format!("dropped/{f}-{t}-{:02}-{kind}.eml", i + 1), raw);
                self.evidence.push(rel);
            }
        }
        // Issue 5: what one provider said to the other, one file per link, a section per session.
        let links: Vec<(String, String, String)> = self
            .topo
            .links
            .iter()
            .map(|((f, t), c)| (f.clone(), t.clone(), c.transcript_text()))
            .filter(|(_, _, text)| !text.is_empty())
            .collect();
        for (f, t, text) in links {
            let rel = self.write_evidence(&format!("links/{f}-{t}.transcript"), text.as_bytes());
            self.evidence.push(rel);
        }
    }
}

/// One SMTP transaction, recorded from the wire: connect, EHLO, STARTTLS when asked, AUTH when
/// given, MAIL, RCPT, DATA. The transcript is what crossed the connection (plaintext layer,
/// credentials and message content replaced: [`Transcript`]).
async fn smtp_send(
    addr: &str,
    tls: ClientTls,
    auth: Option<(&str, &str)>,
    from: &str,
    rcpts: &[String],
    raw: &[u8],
) -> (LastSend, String) {
    use reference_gestore::smtp::client::ClientError;
    let transcript = Transcript::new(Side::Client);
    let mut last = LastSend::default();
    let mode = tls.mode;
    transcript.note(format!("connecting to {addr} (TLS: {mode:?})"));
    let result: Result<(), ClientError> = async {
        let mut c =
            SmtpClient::connect_recorded(addr, tls, client_timeouts(), transcript.clone()).await?;
        c.ehlo("runner.test").await?;
        if mode == reference_gestore::smtp::client::TlsMode::StartTls {
            c.starttls().await?;
            // RFC 3207 §4.2: the client must say EHLO again after the handshake.
            c.ehlo("runner.test").await?;
        }
        if let Some((user, pass)) = auth {
            let r = c.auth_plain(user, pass).await?;
            last.replies.push(("AUTH".into(), r));
        }
        let to: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let r = c.send(from, &to, raw).await?;
        last.replies.push(("MAIL FROM".into(), r.mail.clone()));
        for x in &r.rcpts {
            last.replies
                .push((format!("RCPT TO:<{}>", x.rcpt), x.reply.clone()));
        }
        if let Some(d) = &r.data {
            last.replies.push(("DATA".into(), d.clone()));
        }
        let _ = c.quit().await;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        transcript.note(format!("error: {e}"));
        match e {
            ClientError::Rejected { step, reply } => last.replies.push((step, reply)),
            other => last.error = Some(other.to_string()),
        }
    }
    (last, transcript.text())
}

/// Header values of the top-level header section (unfolded, trimmed), case-insensitive name.
pub fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    let end = topology::find(raw, b"\r\n\r\n")
        .or_else(|| topology::find(raw, b"\n\n"))
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]);
    let unfolded = head
        .replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ");
    unfolded
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .collect()
}

/// The identificativo of a message: its daticert's, else its Message-ID (the envelope's
/// Message-ID is the identificativo: RFC 6109 §2.2.1).
fn identificativo_of(raw: &[u8]) -> Option<String> {
    let from_daticert = guarded("pec_formats::parse", || pec_formats::parse::parse(raw))
        .ok()
        .and_then(|p| p.ok())
        .and_then(|p| p.daticert_xml)
        .and_then(|x| guarded("Daticert::from_xml", || Daticert::from_xml(&x)).ok())
        .and_then(|d| d.ok())
        .map(|d| d.dati.identificativo);
    from_daticert.or_else(|| {
        header_values(raw, "Message-ID")
            .first()
            .map(|v| v.trim_matches(|c| c == '<' || c == '>').to_string())
    })
}

/// The daticert of a message, when it has a readable one.
fn daticert_of(raw: &[u8]) -> Option<Daticert> {
    guarded("pec_formats::parse", || pec_formats::parse::parse(raw))
        .ok()
        .and_then(|p| p.ok())
        .and_then(|p| p.daticert_xml)
        .and_then(|x| guarded("Daticert::from_xml", || Daticert::from_xml(&x)).ok())
        .and_then(|d| d.ok())
}

/// The recipients a notice is about: daticert `consegna` and `ricezione`, lower case.
fn recipients_of(raw: &[u8]) -> Vec<String> {
    guarded("pec_formats::parse", || pec_formats::parse::parse(raw))
        .ok()
        .and_then(|p| p.ok())
        .and_then(|p| p.daticert_xml)
        .and_then(|x| guarded("Daticert::from_xml", || Daticert::from_xml(&x)).ok())
        .and_then(|d| d.ok())
        .map(|d| {
            d.dati
                .consegna
                .into_iter()
                .chain(d.dati.ricezione)
                .map(|a| a.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

/// A daticert field as text, for `expect.daticert`.
pub fn daticert_field(d: &Daticert, field: &str) -> String {
    match field {
        "tipo" => d.tipo.as_str().into(),
        "errore" => d.errore.as_str().into(),
        "mittente" => d.intestazione.mittente.clone(),
        "destinatari" => d
            .intestazione
            .destinatari
            .iter()
            .map(|x| format!("{} ({})", x.indirizzo, x.tipo.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
        "risposte" => d.intestazione.risposte.clone(),
        "oggetto" => d.intestazione.oggetto.clone().unwrap_or_default(),
        "gestore-emittente" => d.dati.gestore_emittente.clone(),
        "identificativo" => d.dati.identificativo.clone(),
        "msgid" => d.dati.msgid.clone().unwrap_or_default(),
        "ricevuta" => d
            .dati
            .ricevuta
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        "consegna" => d.dati.consegna.clone().unwrap_or_default(),
        "ricezione" => d.dati.ricezione.join(", "),
        "errore-esteso" => d.dati.errore_esteso.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// How a receipt carries the original (RFC 6109 §3.3.2.1–3; digest §5.9): absent, included, or
/// hashed (every attachment a `.hash` part of 40 hex digits, SHA-1).
pub fn original_form(postacert: Option<&[u8]>) -> (OriginalSpec, String) {
    let Some(p) = postacert else {
        return (OriginalSpec::Absent, "no postacert.eml".into());
    };
    use mail_parser::MimeHeaders;
    let Some(m) = mail_parser::MessageParser::default().parse(p) else {
        return (
            OriginalSpec::Included,
            "postacert.eml is not readable".into(),
        );
    };
    let mut hashes = Vec::new();
    let mut others = Vec::new();
    for a in m.attachments() {
        let name = a.attachment_name().unwrap_or("").to_string();
        if name.to_ascii_lowercase().ends_with(".hash") {
            let body = String::from_utf8_lossy(a.contents()).trim().to_string();
            let ok = body.len() == 40 && body.chars().all(|c| c.is_ascii_hexdigit());
            hashes.push(format!(
                "{name}{}",
                if ok { "" } else { " (not 40 hex digits)" }
            ));
            if !ok {
                return (
                    OriginalSpec::Included,
                    format!("{name} is not a SHA-1 hash: `{body}`"),
                );
            }
        } else {
            others.push(name);
        }
    }
    if !hashes.is_empty() && others.is_empty() {
        (
            OriginalSpec::Hashed,
            format!("hash parts: {}", hashes.join(", ")),
        )
    } else {
        (
            OriginalSpec::Included,
            format!(
                "attachments: [{}]{}",
                others.join(", "),
                if hashes.is_empty() {
                    String::new()
                } else {
                    format!(", hash parts: [{}]", hashes.join(", "))
                }
            ),
        )
    }
}

/// SIG-05: the signer certificate (DER) follows the provider profile of RFC 6109 §5.5.2 in full,
/// with `address` among its rfc822Name SAN entries.
pub fn signer_profile_check(der: Option<&[u8]>, address: Option<&str>) -> Check {
    const ID: &str = "expect.signer-profile";
    const RULE: &str = "RFC 6109 §5.5.1, §5.5.2 (SIG-05)";
    const WHAT: &str = "signer certificate: Key Usage digitalSignature (critical), AKI, SKI, rfc822Name SAN, no Basic Constraints";
    let Some(der) = der else {
        return Check::new(ID, RULE, WHAT, false, "no readable signer certificate");
    };
    match crate::cert_profile::deviations(der, address) {
        Ok(d) if d.is_empty() => Check::new(ID, RULE, WHAT, true, "follows the profile"),
        Ok(d) => Check::new(ID, RULE, WHAT, false, crate::cert_profile::describe(&d)),
        Err(e) => Check::new(ID, RULE, WHAT, false, e),
    }
}

/// The offline verdict on one received message of kind `kind`: the classification by header, then
/// every check of the `verify` module ([`crate::checks::verify_bytes`], written from the spec) with
/// the topology's CA as trust anchor. A `warn` counts as passed (its detail says so); a `skip` is
/// reported as skipped.
pub fn offline_checks(raw: &[u8], kind: &str, trust: &TrustStore) -> Vec<Check> {
    use crate::report::Verdict;
    let mut out = Vec::new();
    // digest §5.12: classified by header, never by subject.
    out.push(Check::new(
        "verify.kind",
        "digest §5.12; RFC 6109 Appendix A",
        format!("X-Trasporto / X-Ricevuta say {kind}"),
        kind_by_headers(raw) == kind,
        kind_by_headers(raw),
    ));
    if kind == "ordinary" {
        return out;
    }
    let cfg = crate::checks::VerifyConfig {
        trust: Some(TrustStore {
            certs: trust.certs.clone(),
        }),
        at: None,
    };
    match guarded("checks::verify_bytes", || {
        crate::checks::verify_bytes(kind, raw, &cfg)
    }) {
        Ok(r) => {
            if let Some(e) = &r.error {
                out.push(Check::new(
                    "verify.usable",
                    "RFC 5322",
                    "the message reads",
                    false,
                    e.clone(),
                ));
            }
            for c in r.checks {
                out.push(Check {
                    id: format!("verify.{}", c.id),
                    rule: c.rule.to_string(),
                    description: format!("verify: {}", c.id),
                    status: match c.verdict {
                        Verdict::Pass | Verdict::Warn => Status::Passed,
                        Verdict::Fail => Status::Failed,
                        Verdict::Skip => Status::Skipped,
                    },
                    detail: if c.verdict == Verdict::Warn {
                        format!("warn: {}", c.detail)
                    } else {
                        c.detail
                    },
                });
            }
        }
        Err(e) => out.push(Check::new(
            "verify.usable",
            "RFC 5322",
            "the message reads",
            false,
            e,
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn patterns_match_ids() {
        assert!(matches_pattern("timer", "timers.12h.neither"));
        assert!(matches_pattern("timers.*", "timers.12h.neither"));
        assert!(matches_pattern("*neither", "timers.12h.neither"));
        assert!(matches_pattern("t*12h*r", "timers.12h.neither"));
        assert!(!matches_pattern("delivery.*", "timers.12h.neither"));
        assert!(!matches_pattern("*12h", "timers.12h.neither"));
    }

    #[test]
    fn header_values_unfold_and_ignore_the_body() {
        let raw = b"Subject: a\r\n b\r\nX-A: 1\r\nx-a: 2\r\n\r\nX-A: 3\r\n";
        assert_eq!(header_values(raw, "X-A"), vec!["1", "2"]);
        assert_eq!(header_values(raw, "subject"), vec!["a b"]);
    }

    #[test]
    fn the_original_form_is_read_from_postacert() {
        assert_eq!(original_form(None).0, OriginalSpec::Absent);
        let hashed = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: text/plain; name=\"c.pdf.hash\"\r\nContent-Disposition: attachment; filename=\"c.pdf.hash\"\r\n\r\n0123456789abcdef0123456789abcdef01234567\r\n--b--\r\n";
        assert_eq!(original_form(Some(hashed)).0, OriginalSpec::Hashed);
        let full = String::from_utf8_lossy(hashed).replace("c.pdf.hash", "c.pdf");
        assert_eq!(
            original_form(Some(full.as_bytes())).0,
            OriginalSpec::Included
        );
        let bad =
            String::from_utf8_lossy(hashed).replace("0123456789abcdef01234567\r\n", "xyz\r\n");
        let (f, d) = original_form(Some(bad.as_bytes()));
        assert_eq!(f, OriginalSpec::Included, "{d}");
        assert!(d.contains("not a SHA-1 hash"));
    }

    #[test]
    fn the_signer_profile_check_is_strict() {
        let ca = pec_formats::pki::TestCa::generate("Test CA").unwrap();
        let id = ca
            .issue_provider("Gestore A", "posta-certificata@pec.a.test")
            .unwrap();
        let der = id.cert.to_der().unwrap();
        let c = signer_profile_check(Some(&der), Some("posta-certificata@pec.a.test"));
        assert_eq!(c.status, Status::Passed, "{}", c.detail);
        // A TLS server certificate: Basic Constraints, no rfc822Name, no digitalSignature-only use.
        let (_, tls) = ca.issue_tls_server(&["127.0.0.1"]).unwrap();
        let c = signer_profile_check(Some(&tls.to_der().unwrap()), None);
        assert_eq!(c.status, Status::Failed);
        assert!(c.detail.contains("Basic Constraints"), "{}", c.detail);
        assert!(c.detail.contains("rfc822Name"), "{}", c.detail);
        assert_eq!(signer_profile_check(None, None).status, Status::Failed);
    }

    #[test]
    fn the_decisive_reply_is_the_first_refusal() {
        let l = LastSend {
            replies: vec![
                ("MAIL FROM".into(), Reply::plain(250, "ok")),
                ("RCPT TO:<a>".into(), Reply::plain(550, "no")),
                ("DATA".into(), Reply::plain(250, "ok")),
            ],
            error: None,
        };
        assert_eq!(l.decisive().unwrap().code, 550);
    }

    #[test]
    fn skip_reasons_follow_the_target() {
        let reqs = BTreeSet::new();
        let s = Scenario::from_yaml(
            Path::new("x.yaml"),
            "id: x\ntitle: t\ntags: [slow]\ntopology: { T: { external: target } }\nmailboxes: { a: T }\nsteps: []\n",
            &reqs,
        )
        .unwrap();
        assert!(skip_reason(&s, None, false).unwrap().contains("--target"));
    }
}
