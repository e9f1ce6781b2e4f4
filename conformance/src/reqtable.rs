//! The requirements table: for each rule of `requirements.yaml`, the code that cites it, the
//! conformance checks that cite it and the scenarios that name it (`pec-conformance requirements`,
//! committed as `docs/requirements.md`).
//!
//! A code location is a `//` comment in `pec-formats/`, `reference-gestore/src` or
//! `conformance/src` that names the requirement's id (`DC-05`) or one of the sections of its source
//! (`RFC 6109 §3.1.5`, `digest §5.9`). Sections match exactly: `§3.1` does not match `§3.1.5`.
//! A check is a check id in `conformance/src` (the verify checks and the runner's) whose rule
//! string cites the same. Everything is read from the source text; nothing is compiled in.

use crate::scenario::{Requirement, ScenarioError, load_dir, load_requirements};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders whose `.rs` files are searched for citing comments, relative to the repository root.
pub const CODE_DIRS: &[&str] = &["pec-formats", "reference-gestore/src", "conformance/src"];

/// The files whose check ids and rules are read.
pub const CHECK_FILES: &[&str] = &[
    "conformance/src/checks.rs",
    "conformance/src/runner.rs",
    "conformance/src/logcheck.rs",
];

/// The command that regenerates `docs/requirements.md`.
pub const REFRESH: &str =
    "cargo run -q -p pec-conformance -- requirements --format md > docs/requirements.md";

/// One cited section: the document (`RFC 6109` or `digest`) and the section (`3.1.5`, `A` for
/// Appendix A).
pub type Section = (String, String);

/// A comment that cites a requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeRef {
    /// The file, relative to the root, with `/`.
    pub file: String,
    /// 1-based.
    pub line: usize,
}

/// A conformance check that cites a requirement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CheckRef {
    /// The check id (`signature.integrity`, `expect.no-external-fetch`).
    pub id: String,
    /// Its rule string as written.
    pub rule: String,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Requirement id.
    pub id: String,
    /// must, should, may.
    pub level: String,
    /// The rule in our words.
    pub text: String,
    /// Its source as written.
    pub source: String,
    /// Comments citing it.
    pub code: Vec<CodeRef>,
    /// Checks citing it.
    pub checks: Vec<CheckRef>,
    /// Scenarios naming it.
    pub scenarios: Vec<String>,
}

/// The whole table.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// `pec-conformance/requirements/1`.
    pub schema: &'static str,
    /// One row per requirement, in catalog order.
    pub requirements: Vec<Row>,
    /// Ids with no citing comment.
    pub without_code: Vec<String>,
    /// Ids no scenario names.
    pub without_scenario: Vec<String>,
}

/// Builds the table from the repository at `root`.
pub fn build(root: &Path) -> Result<Table, String> {
    let show = |e: ScenarioError| e.to_string();
    let reqs: Vec<Requirement> =
        load_requirements(&root.join("requirements.yaml")).map_err(show)?;
    let ids: BTreeSet<String> = reqs.iter().map(|r| r.id.clone()).collect();
    let scenarios = load_dir(&root.join("scenarios"), &ids)
        .map_err(|errs| errs.into_iter().map(show).collect::<Vec<_>>().join("\n"))?;

    // Every citing comment: (file, line, sections, ids).
    let mut comments: Vec<(CodeRef, BTreeSet<Section>, String)> = Vec::new();
    for dir in CODE_DIRS {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files)
            .map_err(|e| format!("{}: {e}", root.join(dir).display()))?;
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            let rel = relative(root, &f);
            // This file's own examples of citations are not code implementing them.
            if rel == "conformance/src/reqtable.rs" {
                continue;
            }
            for (i, line) in text.lines().enumerate() {
                if let Some(c) = comment_of(line) {
                    comments.push((
                        CodeRef {
                            file: rel.clone(),
                            line: i + 1,
                        },
                        citations(c),
                        c.to_string(),
                    ));
                }
            }
        }
    }

    let mut checks: Vec<CheckRef> = Vec::new();
    for f in CHECK_FILES {
        let p = root.join(f);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        for c in check_rules(&text) {
            if !checks.contains(&c) {
                checks.push(c);
            }
        }
    }

    let mut rows = Vec::new();
    for r in &reqs {
        let want = citations(&r.source);
        let cites = |sections: &BTreeSet<Section>, text: &str| {
            !sections.is_disjoint(&want) || names_id(text, &r.id)
        };
        let code = comments
            .iter()
            .filter(|(_, s, t)| cites(s, t))
            .map(|(c, _, _)| c.clone())
            .collect();
        let mut by_check: BTreeSet<CheckRef> = BTreeSet::new();
        for c in &checks {
            if cites(&citations(&c.rule), &c.rule) {
                by_check.insert(c.clone());
            }
        }
        let scen = scenarios
            .iter()
            .filter(|s| s.requirements.contains(&r.id))
            .map(|s| s.id.clone())
            .collect();
        rows.push(Row {
            id: r.id.clone(),
            level: r.level.clone(),
            text: r.text.clone(),
            source: r.source.clone(),
            code,
            checks: by_check.into_iter().collect(),
            scenarios: scen,
        });
    }
    Ok(Table {
        schema: "pec-conformance/requirements/1",
        without_code: rows
            .iter()
            .filter(|r| r.code.is_empty())
            .map(|r| r.id.clone())
            .collect(),
        without_scenario: rows
            .iter()
            .filter(|r| r.scenarios.is_empty())
            .map(|r| r.id.clone())
            .collect(),
        requirements: rows,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out)?;
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

fn relative(root: &Path, f: &Path) -> String {
    let r = f.strip_prefix(root).unwrap_or(f);
    r.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The text of the `//` comment on a line (after `//`, `///` or `//!`), if any; a `//` inside a
/// string literal is not a comment.
pub fn comment_of(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            // A char literal '"' does not open a string.
            b'\'' if !in_str && b.get(i + 2) == Some(&b'\'') => i += 2,
            b'/' if !in_str && b.get(i + 1) == Some(&b'/') => {
                return Some(line[i..].trim_start_matches(['/', '!']));
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `text` names the requirement id as a word (`DC-05`, not `DC-050`).
pub fn names_id(text: &str, id: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    text.match_indices(id).any(|(i, _)| {
        !word(text[..i].chars().next_back()) && !word(text[i + id.len()..].chars().next())
    })
}

/// The sections a text cites: `RFC 6109 §2.1, §4.1`, `digest §6.2, §14.7`, `RFC 6109 §4.1–§4.2`
/// (a range lists every section between), `RFC 6109 §3.3.2.1–3`, `RFC 6109 Appendix A`
/// (`App. A`). Other documents (RFC 5321, DM, DTD) are not sections of the catalog's sources.
pub fn citations(text: &str) -> BTreeSet<Section> {
    let mut out = BTreeSet::new();
    for doc in ["RFC 6109", "digest"] {
        for (start, _) in text.match_indices(doc) {
            if text[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            {
                continue;
            }
            let rest = &text[start + doc.len()..];
            for s in section_list(rest) {
                out.insert((doc.to_string(), s));
            }
        }
    }
    out
}

/// Reads `§a, §b–§c, Appendix A…` at the start of `rest` (after the document name).
fn section_list(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut s = rest.trim_start();
    loop {
        if let Some(r) = s
            .strip_prefix("Appendix ")
            .or_else(|| s.strip_prefix("App. "))
        {
            let letter: String = r.chars().take_while(|c| c.is_ascii_uppercase()).collect();
            if letter.is_empty() {
                break;
            }
            s = &r[letter.len()..];
            out.push(letter);
        } else if let Some(r) = s.strip_prefix('§') {
            let (first, r) = number(r.trim_start());
            if first.is_empty() {
                break;
            }
            s = r;
            // A range: `–§4.2`, `-§4.2`, `–3` (the last component).
            let last = s
                .strip_prefix('–')
                .or_else(|| s.strip_prefix('-'))
                .map(|a| number(a.strip_prefix('§').unwrap_or(a)))
                .filter(|(last, _)| !last.is_empty());
            match last {
                Some((last, r)) => {
                    s = r;
                    out.extend(expand_range(&first, &last));
                }
                None => out.push(first),
            }
        } else {
            break;
        }
        // `, §x`, ` and §x`, `/§x` continue the list; anything else ends it.
        let t = s.trim_start_matches([',', ' ', '/']);
        let t = t.strip_prefix("and ").unwrap_or(t).trim_start();
        if !(t.starts_with('§') || t.starts_with("Appendix ") || t.starts_with("App. ")) {
            break;
        }
        s = t;
    }
    out
}

/// `3.1.5` from the start of `s` (a trailing dot is not part of it), and the rest.
fn number(s: &str) -> (String, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n = s[..end].trim_end_matches('.');
    (n.to_string(), &s[n.len()..])
}

/// `4.1`..`4.2` → 4.1, 4.2; `3.3.2.1`..`3` → 3.3.2.1, 3.3.2.2, 3.3.2.3; otherwise both ends.
fn expand_range(first: &str, last: &str) -> Vec<String> {
    let (prefix, a) = match first.rsplit_once('.') {
        Some((p, a)) => (Some(p), a),
        None => (None, first),
    };
    let b = match (prefix, last.rsplit_once('.')) {
        (Some(p), Some((q, b))) if p == q => b,
        (None, None) => last,
        (_, None) if !last.contains('.') => last,
        _ => return vec![first.to_string(), last.to_string()],
    };
    match (a.parse::<u32>(), b.parse::<u32>()) {
        (Ok(a), Ok(b)) if a <= b && b - a < 50 => (a..=b)
            .map(|n| match prefix {
                Some(p) => format!("{p}.{n}"),
                None => n.to_string(),
            })
            .collect(),
        _ => vec![first.to_string(), last.to_string()],
    }
}

/// The check ids of a source file with their rule strings: a check id literal (`"a.b"` of lowercase
/// words, or a `const ID`), then optionally one more argument (`Verdict::Pass`, `v`), then the
/// rule (a string literal or a `const` naming one, the nearest definition above).
pub fn check_rules(src: &str) -> Vec<CheckRef> {
    let toks = tokens(src);
    // const NAME: &str = "value";  (by position, nearest above wins)
    let mut consts: Vec<(usize, String, String)> = Vec::new();
    for w in toks.windows(7) {
        if let [
            Tok::Ident(k, _),
            Tok::Ident(name, pos),
            Tok::Punct(':'),
            Tok::Punct('&'),
            Tok::Ident(ty, _),
            Tok::Punct('='),
            Tok::Str(v),
        ] = w
            && k == "const"
            && ty == "str"
        {
            consts.push((*pos, name.clone(), v.clone()));
        }
    }
    let resolve = |name: &str, pos: usize| -> Option<String> {
        consts
            .iter()
            .filter(|(p, n, _)| *p < pos && n == name)
            .max_by_key(|(p, _, _)| *p)
            .map(|(_, _, v)| v.clone())
    };
    let value = |t: &Tok| -> Option<String> {
        match t {
            Tok::Str(s) => Some(s.clone()),
            Tok::Ident(n, pos) if is_const_name(n) => resolve(n, *pos),
            _ => None,
        }
    };
    let mut out: Vec<CheckRef> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        // The id must be an argument: after `(` or `,`.
        if i == 0 || !matches!(toks[i - 1], Tok::Punct('(') | Tok::Punct(',')) {
            continue;
        }
        let Some(id) = value(t).filter(|v| is_check_id(v)) else {
            continue;
        };
        if !matches!(toks.get(i + 1), Some(Tok::Punct(','))) {
            continue;
        }
        let rule = [i + 2, i + 4].into_iter().find_map(|j| {
            let v = value(toks.get(j)?)?;
            let after = toks.get(j + 1);
            (is_rule(&v) && matches!(after, Some(Tok::Punct(',' | ')')))).then_some(v)
        });
        if let Some(rule) = rule {
            let c = CheckRef { id, rule };
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

fn is_const_name(n: &str) -> bool {
    n.chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && n.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

/// `signature.integrity`, `expect.no-external-fetch`: dotted lowercase words.
fn is_check_id(s: &str) -> bool {
    s.contains('.')
        && s.split('.').all(|w| {
            !w.is_empty()
                && w.starts_with(|c: char| c.is_ascii_lowercase())
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn is_rule(s: &str) -> bool {
    s.contains('§') || s.contains("RFC ") || s.contains("digest") || s.contains("App")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier or keyword with its byte position; paths like `Verdict::Pass` are one token.
    Ident(String, usize),
    /// A string literal's value (escapes kept as written).
    Str(String),
    Punct(char),
}

/// A rough Rust tokenizer: enough for literals, identifiers and punctuation; comments dropped.
fn tokens(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push(Tok::Str(src[start..i.min(b.len())].to_string()));
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n') or a lifetime ('a): skip either.
            if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else if b.get(i + 1) == Some(&b'\\') {
                while i + 1 < b.len() && b[i + 1] != b'\'' {
                    i += 1;
                }
                i += 2;
            } else {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'_'
                    || (b[i] == b':' && b.get(i + 1) == Some(&b':'))
                    || (b[i] == b':' && i > 0 && b[i - 1] == b':'))
            {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_string(), start));
        } else if c.is_ascii_whitespace() || !c.is_ascii() {
            i += 1;
        } else {
            out.push(Tok::Punct(c as char));
            i += 1;
        }
    }
    out
}

/// The table as Markdown (`docs/requirements.md`).
pub fn to_markdown(t: &Table) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    s.push_str("# Requirements → code → scenarios\n\n");
    let _ = writeln!(
        s,
        "Generated from `requirements.yaml`, the sources and `scenarios/` by \
         `pec-conformance requirements`; do not edit. Refresh with:\n\n```sh\n{REFRESH}\n```\n"
    );
    s.push_str(
        "A code location is a comment citing the requirement's id or a section of its source \
         (exact section: §3.1 is not §3.1.5); a check is a conformance check whose rule cites the \
         same; a scenario names the id in its `requirements`.\n\n",
    );
    s.push_str("| id | level | source | code | checks | scenarios |\n|---|---|---|---|---|---|\n");
    for r in &t.requirements {
        let _ = writeln!(
            s,
            "| [{id}](#{anchor}) | {} | {} | {} | {} | {} |",
            r.level,
            r.source,
            r.code.len(),
            r.checks.len(),
            r.scenarios.len(),
            id = r.id,
            anchor = r.id.to_ascii_lowercase(),
        );
    }
    s.push('\n');
    for r in &t.requirements {
        let _ = writeln!(s, "## {}\n\n{} ({}; {})\n", r.id, r.text, r.level, r.source);
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let code = list(
            r.code
                .iter()
                .map(|c| format!("[{f}:{l}](../{f}#L{l})", f = c.file, l = c.line))
                .collect(),
        );
        let checks = list(r.checks.iter().map(|c| format!("`{}`", c.id)).collect());
        let scen = list(
            r.scenarios
                .iter()
                .map(|id| format!("[`{id}`](../scenarios/{id}.yaml)"))
                .collect(),
        );
        let _ = writeln!(
            s,
            "- code: {code}\n- checks: {checks}\n- scenarios: {scen}\n"
        );
    }
    s.push_str("## Not covered\n\n");
    let ids = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|id| format!("[{id}](#{})", id.to_ascii_lowercase()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(s, "- no code cites: {}", ids(&t.without_code));
    let _ = writeln!(s, "- no scenario names: {}", ids(&t.without_scenario));
    s
}

/// The table as JSON (schema `pec-conformance/requirements/1`).
pub fn to_json(t: &Table) -> String {
    serde_json::to_string_pretty(t).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Per requirement id, the rows (for callers that want a lookup).
pub fn by_id(t: &Table) -> BTreeMap<&str, &Row> {
    t.requirements.iter().map(|r| (r.id.as_str(), r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Vec<String> {
        citations(text)
            .into_iter()
            .map(|(d, s)| format!("{d} {s}"))
            .collect()
    }

    #[test]
    fn sections_are_read_exactly_with_lists_ranges_and_appendices() {
        assert_eq!(secs("RFC 6109 §3.1.5"), ["RFC 6109 3.1.5"]);
        assert_eq!(
            secs("x (RFC 6109 §2.2.2, §4.5; digest §7.2)."),
            ["RFC 6109 2.2.2", "RFC 6109 4.5", "digest 7.2"]
        );
        assert_eq!(secs("RFC 6109 §4.1–§4.2"), ["RFC 6109 4.1", "RFC 6109 4.2"]);
        assert_eq!(
            secs("RFC 6109 §3.3.2.1–3: hashes"),
            ["RFC 6109 3.3.2.1", "RFC 6109 3.3.2.2", "RFC 6109 3.3.2.3"]
        );
        assert_eq!(
            secs("RFC 6109 §3, Appendix A; digest §5.12"),
            ["RFC 6109 3", "RFC 6109 A", "digest 5.12"]
        );
        assert_eq!(secs("RFC 6109 App. A"), ["RFC 6109 A"]);
        // A trailing full stop is not part of the section; other documents are not cited.
        assert_eq!(secs("see digest §11."), ["digest 11"]);
        assert!(secs("RFC 5321 §4.2; DM art. 9; the SHA-256 digest of it").is_empty());
        // §3.1 and §3.1.5 are different sections.
        assert!(citations("RFC 6109 §3.1.5").is_disjoint(&citations("RFC 6109 §3.1")));
    }

    #[test]
    fn ids_match_as_words_and_comments_skip_strings() {
        assert!(names_id("entities refused (DC-05)", "DC-05"));
        assert!(!names_id("DC-050", "DC-05"));
        assert!(!names_id("XDC-05", "DC-05"));
        assert_eq!(
            comment_of("let u = \"http://x\"; // RFC 6109 §2.1"),
            Some(" RFC 6109 §2.1")
        );
        assert_eq!(comment_of("let u = \"http://x\";"), None);
        assert_eq!(comment_of("/// doc §1"), Some(" doc §1"));
        assert_eq!(comment_of("let c = '\"'; // x"), Some(" x"));
    }

    #[test]
    fn check_ids_are_read_with_their_rules() {
        let src = r#"
            const RULE: &str = "digest §4.1";
            fn a() {
                self.push("signature.digest", Verdict::Warn, RULE, detail);
                for (id, rule) in [("daticert.dtd", "RFC 6109 §4.4"), ("x.y", "scenario")] {}
                if c.id == "signature.chain" { f("RFC 6109 §9") }
            }
            const RULE: &str = "RFC 6109 §5.5";
            fn b() { Check::new("expect.signed-by", RULE, WHAT, true, d) }
        "#;
        let got = check_rules(src);
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|c| (c.id.as_str(), c.rule.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("signature.digest", "digest §4.1"),
                ("daticert.dtd", "RFC 6109 §4.4"),
                ("expect.signed-by", "RFC 6109 §5.5"),
            ]
        );
    }

    #[test]
    fn the_table_of_this_repository_links_code_checks_and_scenarios() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let t = build(&root).unwrap();
        let rows = by_id(&t);
        let dc05 = rows["DC-05"];
        assert!(
            dc05.checks.iter().any(|c| c.id == "daticert.entities"),
            "{:?}",
            dc05.checks
        );
        assert!(dc05.code.iter().any(|c| c.file == "conformance/src/dtd.rs"));
        assert!(
            dc05.scenarios
                .contains(&"reception.hostile-daticert".to_string())
        );
        let md = to_markdown(&t);
        assert!(md.contains("## DC-05\n"));
        assert!(md.contains("## Not covered"));
    }

    /// `docs/requirements.md` is what the command prints now.
    #[test]
    fn the_committed_table_is_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let t = build(&root).unwrap();
        let committed = std::fs::read_to_string(root.join("docs/requirements.md"))
            .unwrap_or_else(|e| panic!("docs/requirements.md: {e}; create it with `{REFRESH}`"));
        assert!(
            committed == to_markdown(&t),
            "docs/requirements.md is stale (the requirements, a citing comment or a scenario \
             changed): refresh it with `{REFRESH}` from the repository root"
        );
    }
}
