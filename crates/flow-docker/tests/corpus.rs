//! The Compose corpus: one directory per case under `tests/corpus/`, each a Compose file (with
//! the files it uses) and a `case.yml` that says, from the Compose specification, what the
//! resolved model holds. The reader's model, as `docker-flow config` prints it, must contain
//! every expected value (`expected`), lack what the specification leaves out (`absent`),
//! warn as expected (`warnings`), or be refused with a message naming each part of `error`.
//!
//! In `case.yml`, `${DIR}` stands for the case's directory and `${PARENT}` for the corpus
//! directory; `environment` is the whole environment the file is read with (`HOME` is
//! `/home/corpus` unless given), `profiles` are `--profile` values. Scalars compare by their
//! text, so that `retries: 3` and `retries: "3"` agree, as they do in YAML written by hand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flow_docker::compose::{ComposeProject, LoadOptions};
use serde_json::Value;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    environment: HashMap<String, String>,
    #[serde(default)]
    profiles: Vec<String>,
    expected: Option<Value>,
    #[serde(default)]
    absent: Vec<Vec<String>>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    error: Vec<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every difference between `expected` and the part of `actual` it describes, by key path.
fn differences(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let here = format!("{path}.{key}");
                match actual.get(key) {
                    Some(found) => differences(value, found, &here, out),
                    None if value.is_null() => {}
                    None => out.push(format!("{here}: missing (expected {value})")),
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            if expected.len() != actual.len() {
                out.push(format!(
                    "{path}: {} items, expected {}: {actual:?}",
                    actual.len(),
                    expected.len()
                ));
                return;
            }
            for (index, (e, a)) in expected.iter().zip(actual).enumerate() {
                differences(e, a, &format!("{path}[{index}]"), out);
            }
        }
        (Value::Null, Value::Null) => {}
        (expected, actual) => {
            if text(expected) != text(actual) {
                out.push(format!("{path}: {actual}, expected {expected}"));
            }
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn run_case(dir: &Path) -> Vec<String> {
    let raw = std::fs::read_to_string(dir.join("case.yml")).expect("case.yml");
    let raw = raw
        .replace("${DIR}", &dir.display().to_string())
        .replace("${PARENT}", &corpus_dir().display().to_string());
    let mut case: Case = serde_norway::from_str(&raw).expect("a valid case.yml");
    case.environment
        .entry("HOME".into())
        .or_insert_with(|| "/home/corpus".into());
    let options = LoadOptions {
        environment: case.environment.clone(),
        profiles: case.profiles.clone(),
    };
    let mut warnings = Vec::new();
    let loaded =
        ComposeProject::load_with(&dir.join("docker-compose.yml"), &options, &mut warnings);
    let mut problems = Vec::new();
    for expected in &case.warnings {
        if !warnings.iter().any(|w| w.contains(expected)) {
            problems.push(format!("no warning contains {expected:?}: {warnings:?}"));
        }
    }
    let project = match (loaded, case.error.is_empty()) {
        (Ok(project), true) => project,
        (Ok(_), false) => {
            problems.push(format!(
                "loaded, but should be refused naming {:?}",
                case.error
            ));
            return problems;
        }
        (Err(error), true) => {
            problems.push(format!("refused: {error}"));
            return problems;
        }
        (Err(error), false) => {
            let message = error.to_string();
            for part in &case.error {
                if !message.contains(part) {
                    problems.push(format!("the error does not name {part:?}: {message}"));
                }
            }
            return problems;
        }
    };
    let model = project.to_config("corpus", None);
    if let Some(expected) = &case.expected {
        differences(expected, &model, "", &mut problems);
    }
    for path in &case.absent {
        let mut node = &model;
        let mut present = true;
        for key in path {
            match node.get(key) {
                Some(next) => node = next,
                None => {
                    present = false;
                    break;
                }
            }
        }
        if present {
            problems.push(format!("{} is present: {node}", path.join(".")));
        }
    }
    problems
}

#[test]
fn every_corpus_case_resolves_as_the_specification_documents() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory")
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.join("case.yml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "the corpus lost cases: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        for problem in run_case(case) {
            failures.push(format!(
                "{}: {problem}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
