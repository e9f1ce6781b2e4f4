//! The reports of `pec-conformance run`, all under `reports/<run-id>/`:
//!
//! * `junit.xml`: one test suite per gestore under test (`reference` when all are reference
//!   gestori), one test case per scenario (quick-junit);
//! * `report.json`: the [`RunReport`] below, serialised as it is; its schema is the Rust types of
//!   this module (every field is documented) and carries `"schema": "pec-conformance/report/1"`;
//! * `index.html`: the matrix gestori × scenarios, the requirements coverage table (scenarios and
//!   their last result per requirement) and the requirements no scenario covers;
//! * `cases/<scenario-id>.html`: what was expected, every check and verdict, links to the evidence
//!   and an inline SVG chart of the step timings;
//! * `evidence/<scenario-id>/`: the raw messages received (`*.eml`), the SMTP transcripts of
//!   submit and inject (`*.transcript`) and of every session through the relay of a link between
//!   gestori (`links/<from>-<to>.transcript`), captured from the wire, written by the runner;
//! * `reports/latest`: a symlink to the newest run.
//!
//! The HTML is self-contained: inline CSS and SVG, no script, no external asset.

use crate::scenario::Requirement;
use chrono::DateTime;
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The schema id written in `report.json`.
pub const SCHEMA: &str = "pec-conformance/report/1";

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything held.
    Passed,
    /// Something did not hold.
    Failed,
    /// Not run (with a reason).
    Skipped,
}

impl Status {
    /// `passed`, `failed`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// One check of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// A stable id, e.g. `expect.count` or `verify.signature` (the verify module's check ids).
    pub id: String,
    /// The rule it implements, e.g. `RFC 6109 §3.1.4`.
    pub rule: String,
    /// What was checked.
    pub description: String,
    /// The verdict.
    pub status: Status,
    /// What was seen (for a failure: what was wrong).
    pub detail: String,
}

impl Check {
    /// A check with a verdict from a boolean.
    pub fn new(
        id: &str,
        rule: &str,
        description: impl Into<String>,
        ok: bool,
        detail: impl Into<String>,
    ) -> Check {
        Check {
            id: id.into(),
            rule: rule.into(),
            description: description.into(),
            status: if ok { Status::Passed } else { Status::Failed },
            detail: detail.into(),
        }
    }
}

/// One step of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// 0-based position.
    pub index: usize,
    /// The line in the scenario file.
    pub line: u64,
    /// The step name (`submit`, `expect`, …).
    pub name: String,
    /// What the step asked for, in one line.
    pub description: String,
    /// The verdict.
    pub status: Status,
    /// Why it failed or was skipped.
    pub message: Option<String>,
    /// Milliseconds since the scenario started.
    pub start_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Every check made.
    pub checks: Vec<Check>,
    /// Evidence files, relative to the run folder.
    pub evidence: Vec<String>,
}

/// One gestore of a scenario's topology.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GestoreInfo {
    /// Its name in the scenario.
    pub name: String,
    /// `reference` or `external`.
    pub role: String,
    /// The PEC domain.
    pub domain: String,
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// The scenario id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The scenario file.
    pub file: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The requirements it covers.
    pub requirements: Vec<String>,
    /// The topology.
    pub gestori: Vec<GestoreInfo>,
    /// The verdict.
    pub status: Status,
    /// Why it failed (the first failing step) or was skipped.
    pub message: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// Every step.
    pub steps: Vec<StepResult>,
    /// Evidence of the whole scenario (every mailbox's messages, dropped messages), relative to
    /// the run folder.
    #[serde(default)]
    pub evidence: Vec<String>,
}

impl ScenarioResult {
    /// A scenario that was not run.
    pub fn skipped(s: &crate::scenario::Scenario, why: impl Into<String>) -> ScenarioResult {
        ScenarioResult {
            id: s.id.clone(),
            title: s.title.clone(),
            file: s.file.display().to_string(),
            tags: s.tags.clone(),
            requirements: s.requirements.clone(),
            gestori: Vec::new(),
            status: Status::Skipped,
            message: Some(why.into()),
            duration_ms: 0,
            steps: Vec::new(),
            evidence: Vec::new(),
        }
    }

    /// The name of the gestore under test: the external one, else `reference`.
    pub fn subject(&self) -> String {
        self.gestori
            .iter()
            .find(|g| g.role == "external")
            .map_or_else(|| "reference".to_string(), |g| g.domain.clone())
    }
}

/// A whole run: `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The run id (also the folder name).
    pub run_id: String,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// How long it took.
    pub duration_ms: u64,
    /// The `--target` name, if any.
    pub target: Option<String>,
    /// Every scenario selected, in catalog order.
    pub scenarios: Vec<ScenarioResult>,
    /// The requirements catalog.
    pub requirements: Vec<Requirement>,
}

impl RunReport {
    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s: Status| self.scenarios.iter().filter(|r| r.status == s).count();
        (n(Status::Passed), n(Status::Failed), n(Status::Skipped))
    }

    /// `N passed, N failed` (and `, N skipped` when some were).
    pub fn summary_line(&self) -> String {
        let (p, f, s) = self.counts();
        if s > 0 {
            format!("{p} passed, {f} failed, {s} skipped")
        } else {
            format!("{p} passed, {f} failed")
        }
    }
}

/// The JUnit XML of a run: one suite per gestore under test, one case per scenario.
pub fn junit(report: &RunReport) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut r = Report::new(format!("pec-conformance {}", report.run_id));
    if let Ok(t) = DateTime::parse_from_rfc3339(&report.started) {
        r.set_timestamp(t);
    }
    r.set_time(std::time::Duration::from_millis(report.duration_ms));
    let mut suites: BTreeMap<String, Vec<&ScenarioResult>> = BTreeMap::new();
    for s in &report.scenarios {
        suites.entry(s.subject()).or_default().push(s);
    }
    for (name, cases) in suites {
        let mut suite = TestSuite::new(name);
        for s in cases {
            let mut status = match s.status {
                Status::Passed => TestCaseStatus::success(),
                Status::Failed => TestCaseStatus::non_success(NonSuccessKind::Failure),
                Status::Skipped => TestCaseStatus::skipped(),
            };
            if let Some(m) = &s.message {
                status.set_message(m.as_str());
            }
            let mut case = TestCase::new(s.id.as_str(), status);
            case.set_classname(format!("scenarios.{}", s.id));
            case.set_time(std::time::Duration::from_millis(s.duration_ms));
            let failed: Vec<String> = s
                .steps
                .iter()
                .flat_map(|st| {
                    st.checks
                        .iter()
                        .filter(|c| c.status == Status::Failed)
                        .map(move |c| {
                            format!(
                                "step {} line {}: {} ({}): {}",
                                st.index + 1,
                                st.line,
                                c.description,
                                c.rule,
                                c.detail
                            )
                        })
                })
                .collect();
            if !failed.is_empty() {
                case.set_system_out(failed.join("\n"));
            }
            for req in &s.requirements {
                case.add_property(("requirement", req.as_str()));
            }
            suite.add_test_case(case);
        }
        r.add_test_suite(suite);
    }
    Ok(r.to_string()?)
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.passed{background:#dff5df}.failed{background:#f9d6d5}.skipped{background:#eee;color:#666}
code,pre{font:12px ui-monospace,monospace}pre{white-space:pre-wrap;margin:0}
.small{color:#666;font-size:12px}a{color:#1a4fa0}
";

const INDEX: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PEC conformance {{ r.run_id }}</title><style>{{ style|safe }}</style></head>
<body>
<h1>PEC conformance run {{ r.run_id }}</h1>
<p>{{ summary }} &middot; started {{ r.started }} &middot; {{ r.duration_ms }} ms{% if r.target %} &middot; target {{ r.target }}{% endif %}</p>
<h2>Scenarios × gestori</h2>
<table><tr><th>scenario</th><th>title</th>{% for g in subjects %}<th>{{ g }}</th>{% endfor %}</tr>
{% for s in r.scenarios %}<tr><td><a href="cases/{{ s.id }}.html">{{ s.id }}</a></td><td>{{ s.title }}</td>
{% for g in subjects %}{% if g == s.subject %}<td class="{{ s.status }}">{{ s.status }}</td>{% else %}<td></td>{% endif %}{% endfor %}</tr>
{% endfor %}</table>
<h2>Requirements coverage</h2>
<table><tr><th>id</th><th>level</th><th>requirement</th><th>source</th><th>scenarios (last result)</th></tr>
{% for q in coverage %}<tr class="{{ q.status }}"><td>{{ q.id }}</td><td>{{ q.level }}</td><td>{{ q.text }}</td><td class="small">{{ q.source }}</td>
<td>{% for c in q.cases %}<a href="cases/{{ c.id }}.html">{{ c.id }}</a> <span class="small">{{ c.status }}</span><br>{% endfor %}{% if not q.cases %}<em>no scenario</em>{% endif %}</td></tr>
{% endfor %}</table>
<h2>Requirements with no scenario ({{ uncovered|length }})</h2>
<ul>{% for q in uncovered %}<li>{{ q.id }}: {{ q.text }} <span class="small">({{ q.source }})</span></li>{% endfor %}</ul>
</body></html>
"#;

const CASE: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ s.id }}</title><style>{{ style|safe }}</style></head>
<body>
<p><a href="../index.html">&larr; run {{ run_id }}</a></p>
<h1>{{ s.id }}: <span class="{{ s.status }}">{{ s.status }}</span></h1>
<p>{{ s.title }}</p>
<p class="small">file {{ s.file }} &middot; {{ s.duration_ms }} ms &middot; requirements {{ s.requirements|join(", ") }}{% if s.tags %} &middot; tags {{ s.tags|join(", ") }}{% endif %}</p>
{% if s.message %}<p><strong>{{ s.message }}</strong></p>{% endif %}
<h2>Topology</h2>
<table><tr><th>gestore</th><th>role</th><th>domain</th></tr>{% for g in s.gestori %}<tr><td>{{ g.name }}</td><td>{{ g.role }}</td><td>{{ g.domain }}</td></tr>{% endfor %}</table>
<h2>Timing</h2>
{{ chart|safe }}
<h2>Steps</h2>
<table><tr><th>#</th><th>line</th><th>step</th><th>verdict</th><th>checks</th><th>evidence</th></tr>
{% for st in s.steps %}<tr class="{{ st.status }}"><td>{{ st.index + 1 }}</td><td>{{ st.line }}</td>
<td><code>{{ st.name }}</code> {{ st.description }}<br><span class="small">at {{ st.start_ms }} ms, {{ st.duration_ms }} ms</span>{% if st.message %}<br><strong>{{ st.message }}</strong>{% endif %}</td>
<td>{{ st.status }}</td>
<td>{% if st.checks %}<table>{% for c in st.checks %}<tr class="{{ c.status }}"><td>{{ c.status }}</td><td>{{ c.description }}<br><span class="small">{{ c.id }} &middot; {{ c.rule }}</span>{% if c.detail %}<pre>{{ c.detail }}</pre>{% endif %}</td></tr>{% endfor %}</table>{% endif %}</td>
<td>{% for e in st.evidence %}<a href="../{{ e }}">{{ e|split("/")|last }}</a><br>{% endfor %}</td></tr>
{% endfor %}</table>
<h2>All messages</h2>
<ul>{% for e in s.evidence %}<li><a href="../{{ e }}">{{ e }}</a></li>{% endfor %}</ul>
</body></html>
"#;

/// An inline SVG bar chart of the step timings (one row per step, coloured by verdict).
pub fn timing_svg(s: &ScenarioResult) -> String {
    let total = s
        .steps
        .iter()
        .map(|st| st.start_ms + st.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (w, row, left) = (720.0, 18.0, 140.0);
    let h = row * s.steps.len() as f64 + 24.0;
    let mut out = format!(r#"<svg width="{w}" height="{h}" role="img" aria-label="step timings">"#);
    for (i, st) in s.steps.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let x = left + (st.start_ms as f64 / total) * (w - left - 10.0);
        let bw = ((st.duration_ms as f64 / total) * (w - left - 10.0)).max(1.5);
        let color = match st.status {
            Status::Passed => "#4caf50",
            Status::Failed => "#e53935",
            Status::Skipped => "#9e9e9e",
        };
        out += &format!(
            r#"<text x="2" y="{ty}" font-size="11">{n}. {name}</text><rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{rh}" fill="{color}"><title>{name}: {d} ms</title></rect>"#,
            ty = y + 12.0,
            n = i + 1,
            name = html_escape(&st.name),
            d = st.duration_ms,
            rh = row - 4.0,
        );
    }
    out += &format!(
        r#"<text x="{left}" y="{ty}" font-size="11">0 ms</text><text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{total} ms</text></svg>"#,
        ty = h - 6.0,
        tx = w - 10.0,
    );
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn env() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.add_template("index.html", INDEX)?;
    env.add_template("case.html", CASE)?;
    Ok(env)
}

#[derive(Serialize)]
struct CoverageRow {
    id: String,
    level: String,
    text: String,
    source: String,
    status: &'static str,
    cases: Vec<CoverageCase>,
}

#[derive(Serialize)]
struct CoverageCase {
    id: String,
    status: &'static str,
}

#[derive(Serialize)]
struct ScenarioRow<'a> {
    #[serde(flatten)]
    s: &'a ScenarioResult,
    subject: String,
}

/// `index.html`.
pub fn index_html(report: &RunReport) -> anyhow::Result<String> {
    let mut subjects: Vec<String> = report.scenarios.iter().map(|s| s.subject()).collect();
    subjects.sort();
    subjects.dedup();
    let coverage: Vec<CoverageRow> = report
        .requirements
        .iter()
        .map(|q| {
            let cases: Vec<CoverageCase> = report
                .scenarios
                .iter()
                .filter(|s| s.requirements.contains(&q.id))
                .map(|s| CoverageCase {
                    id: s.id.clone(),
                    status: s.status.as_str(),
                })
                .collect();
            let status = if cases.is_empty() {
                "skipped"
            } else if cases.iter().any(|c| c.status == "failed") {
                "failed"
            } else if cases.iter().any(|c| c.status == "passed") {
                "passed"
            } else {
                "skipped"
            };
            CoverageRow {
                id: q.id.clone(),
                level: q.level.clone(),
                text: q.text.clone(),
                source: q.source.clone(),
                status,
                cases,
            }
        })
        .collect();
    let uncovered: Vec<&CoverageRow> = coverage.iter().filter(|c| c.cases.is_empty()).collect();
    let rows: Vec<ScenarioRow<'_>> = report
        .scenarios
        .iter()
        .map(|s| ScenarioRow {
            s,
            subject: s.subject(),
        })
        .collect();
    let r = context! {
        run_id => report.run_id.clone(),
        started => report.started.clone(),
        duration_ms => report.duration_ms,
        target => report.target.clone(),
        scenarios => Value::from(Serde(&rows)),
    };
    Ok(env()?.get_template("index.html")?.render(context! {
        r, style => STYLE, subjects,
        coverage => Value::from(Serde(&coverage)),
        uncovered => Value::from(Serde(&uncovered)),
        summary => report.summary_line(),
    })?)
}

/// `cases/<id>.html`.
pub fn case_html(run_id: &str, s: &ScenarioResult) -> anyhow::Result<String> {
    Ok(env()?.get_template("case.html")?.render(context! {
        s => Value::from(Serde(s)), run_id, style => STYLE, chart => timing_svg(s),
    })?)
}

/// Writes junit.xml, report.json, index.html and cases/*.html into `dir` (evidence is already
/// there) and points `<dir>/../latest` at it.
pub fn write_all(dir: &Path, report: &RunReport) -> anyhow::Result<()> {
    use anyhow::Context;
    let w = |name: &str, data: &[u8]| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    w("junit.xml", junit(report)?.as_bytes())?;
    w("report.json", &serde_json::to_vec_pretty(report)?)?;
    w("index.html", index_html(report)?.as_bytes())?;
    for s in &report.scenarios {
        w(
            &format!("cases/{}.html", s.id),
            case_html(&report.run_id, s)?.as_bytes(),
        )?;
    }
    if let Some(parent) = dir.parent() {
        let latest = parent.join("latest");
        let _ = std::fs::remove_file(&latest);
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.file_name().unwrap_or_default(), &latest)
            .with_context(|| format!("linking {}", latest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunReport {
        let step = |i: usize, status: Status| StepResult {
            index: i,
            line: 10 + i as u64,
            name: if i == 0 { "submit" } else { "expect" }.into(),
            description: "alice <script>→ bob".into(),
            status,
            message: (status == Status::Failed).then(|| "no accettazione within 5s".into()),
            start_ms: 100 * i as u64,
            duration_ms: 80,
            checks: vec![Check::new(
                "expect.count",
                "RFC 6109 §3.1.4",
                "one accettazione",
                status != Status::Failed,
                "0 of 1",
            )],
            evidence: vec![format!("evidence/x/{i}.eml")],
        };
        let case = |id: &str, status: Status, reqs: &[&str]| ScenarioResult {
            id: id.into(),
            title: format!("title of {id}"),
            file: format!("scenarios/{id}.yaml"),
            tags: vec![],
            requirements: reqs.iter().map(|s| s.to_string()).collect(),
            gestori: vec![GestoreInfo {
                name: "A".into(),
                role: "reference".into(),
                domain: "pec.a.test".into(),
            }],
            status,
            message: None,
            duration_ms: 300,
            steps: vec![step(0, Status::Passed), step(1, status)],
            evidence: vec![format!(
                "evidence/{id}/mailboxes/a@pec.a.test/001-accettazione.eml"
            )],
        };
        let req = |id: &str| Requirement {
            id: id.into(),
            text: format!("text {id} & more"),
            source: "RFC 6109 §3".into(),
            level: "must".into(),
        };
        RunReport {
            schema: SCHEMA.into(),
            run_id: "20260101-000000".into(),
            started: "2026-01-01T00:00:00Z".into(),
            duration_ms: 1234,
            target: None,
            scenarios: vec![
                case("a.ok", Status::Passed, &["ACC-01"]),
                case("b.bad", Status::Failed, &["ACC-01", "ENV-01"]),
            ],
            requirements: vec![req("ACC-01"), req("ENV-01"), req("LOG-01")],
        }
    }

    #[test]
    fn junit_parses_back_with_the_verdicts() {
        let xml = junit(&sample()).unwrap();
        let back = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(back.tests, 2);
        assert_eq!(back.failures, 1);
        assert_eq!(back.test_suites.len(), 1);
        assert_eq!(back.test_suites[0].name.as_str(), "reference");
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let r = sample();
        let index = index_html(&r).unwrap();
        let case = case_html(&r.run_id, &r.scenarios[1]).unwrap();
        for page in [&index, &case] {
            assert!(!page.contains("http://"), "{page}");
            assert!(!page.contains("https://"), "{page}");
            assert!(!page.contains("<script"), "unescaped input: {page}");
        }
        assert!(index.contains("1 passed, 1 failed"));
        // LOG-01 has no scenario: listed as uncovered.
        assert!(index.contains("Requirements with no scenario (1)"));
        assert!(index.contains("LOG-01: text LOG-01 &amp; more"));
        assert!(case.contains("<svg"));
        assert!(case.contains("no accettazione within 5s"));
        // minijinja escapes `/` in attributes as `&#x2f;`, which browsers decode.
        assert!(
            case.replace("&#x2f;", "/")
                .contains(r#"href="../evidence/x/1.eml""#)
        );
    }

    #[test]
    fn write_all_writes_every_file_and_the_latest_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("20260101-000000");
        std::fs::create_dir_all(&dir).unwrap();
        let r = sample();
        write_all(&dir, &r).unwrap();
        for f in [
            "junit.xml",
            "report.json",
            "index.html",
            "cases/a.ok.html",
            "cases/b.bad.html",
        ] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        let back: RunReport =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(back.scenarios.len(), 2);
        assert_eq!(back.schema, SCHEMA);
        let latest = std::fs::read_link(tmp.path().join("latest")).unwrap();
        assert_eq!(latest, Path::new("20260101-000000"));
    }
}
