//! What makes docker-flow feel like a Docker tool: the `--json` event schema the README
//! documents, Docker contexts, `--version`, completions.
//!
//! The schema test reads the examples of the README's "JSON events" section and checks every
//! line of real runs against them: the same fields, each of a JSON type some example gives it
//! (objects and arrays compared recursively, tagged objects against examples with the same
//! tag: `event`, `action`, `lock`, `route`). The README is the schema; a field added without documenting it fails here.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{demo_compose, demo_images, Site};

const README: &str = include_str!("../../../README.md");

/// The JSON lines of the README's "JSON events" section.
pub(crate) fn documented_events() -> Vec<Value> {
    let section = README
        .split("### JSON events")
        .nth(1)
        .expect("the README has a JSON events section");
    let section = section.split("\n### ").next().unwrap_or(section);
    let mut examples = Vec::new();
    for block in section.split("```json").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            examples.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("README example is not JSON ({e}): {line}")),
            );
        }
    }
    assert!(!examples.is_empty(), "the section has examples");
    examples
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why `real` does not have a shape the `examples` document, `None` when it does.
fn mismatch(real: &Value, examples: &[&Value], at: &str) -> Option<String> {
    let same_kind: Vec<&Value> = examples
        .iter()
        .copied()
        .filter(|e| kind(e) == kind(real))
        .collect();
    if same_kind.is_empty() {
        let kinds: BTreeSet<&str> = examples.iter().map(|e| kind(e)).collect();
        return Some(format!(
            "{at} is {} but is documented as {kinds:?}",
            kind(real)
        ));
    }
    match real {
        Value::Object(fields) => {
            let mut candidates = same_kind;
            // The tags of tagged objects: events, plan actions, a status's lock and route.
            for tag in ["event", "action", "lock", "route"] {
                if let Some(name) = fields.get(tag).filter(|value| value.is_string()) {
                    candidates.retain(|e| e.get(tag) == Some(name));
                    if candidates.is_empty() {
                        return Some(format!("{at}: {tag} {name} is not documented"));
                    }
                }
            }
            let documented: BTreeSet<&String> = candidates
                .iter()
                .flat_map(|e| e.as_object().into_iter().flat_map(|o| o.keys()))
                .collect();
            let present: BTreeSet<&String> = fields.keys().collect();
            if documented != present {
                return Some(format!(
                    "{at} has the fields {present:?}, documented {documented:?}"
                ));
            }
            fields.iter().find_map(|(key, value)| {
                let values: Vec<&Value> = candidates.iter().filter_map(|e| e.get(key)).collect();
                mismatch(value, &values, &format!("{at}.{key}"))
            })
        }
        Value::Array(items) => {
            let pooled: Vec<&Value> = same_kind
                .iter()
                .flat_map(|e| e.as_array().into_iter().flatten())
                .collect();
            items
                .iter()
                .find_map(|item| mismatch(item, &pooled, &format!("{at}[]")))
        }
        _ => None,
    }
}

/// Checks every stdout line of a `--json` run; returns the event types seen.
#[track_caller]
pub(crate) fn check_lines(stdout: &str, documented: &[Value]) -> BTreeSet<String> {
    let examples: Vec<&Value> = documented.iter().collect();
    let mut seen = BTreeSet::new();
    for line in stdout.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a --json line is not JSON ({e}): {line}"));
        assert_eq!(value["schema"], 1, "{line}");
        if let Some(problem) = mismatch(&value, &examples, "event") {
            panic!("{problem}\n  line: {line}");
        }
        seen.insert(value["event"].as_str().unwrap_or_default().to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_runs_print_only_documented_events() {
    demo_images().await;
    let documented = documented_events();
    let site = Site::new("schema", &demo_compose("")).await;
    let mut seen = BTreeSet::new();

    let first = site
        .flow(
            &["-t", "app", "-b", "-s", "2", "--json", "--verbose"],
            &[("DEMO_TAG", "v1")],
        )
        .await;
    first.assert_code(0);
    seen.extend(check_lines(&first.stdout, &documented));

    let plan = site
        .flow(
            &["-t", "app", "-b", "--json", "--dry-run"],
            &[("DEMO_TAG", "v2")],
        )
        .await;
    plan.assert_code(0);
    seen.extend(check_lines(&plan.stdout, &documented));

    let failed = site
        .flow(
            &["-t", "app", "-b", "--json", "--health-timeout", "3s"],
            &[("DEMO_TAG", "v3"), ("DEMO_UNHEALTHY", "1")],
        )
        .await;
    failed.assert_code(3);
    seen.extend(check_lines(&failed.stdout, &documented));
    let last: Value = serde_json::from_str(failed.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["event"].as_str(), last["exit"].as_u64()),
        (Some("failed"), Some(3))
    );

    for event in [
        "phase-finished",
        "step-started",
        "waiting-healthy",
        "step-finished",
        "port-call",
        "done",
        "plan",
        "rolling-back",
        "failed",
    ] {
        assert!(
            seen.contains(event),
            "no {event} event in the runs: {seen:?}"
        );
    }
    let quiet = site
        .flow(&["-t", "app", "-b", "--json", "-q"], &[("DEMO_TAG", "v2")])
        .await;
    quiet.assert_code(0);
    assert_eq!(
        check_lines(&quiet.stdout, &documented),
        BTreeSet::from(["done".to_string()])
    );

    // A rollback's plan and run, and a status, are documented too.
    let mut later = BTreeSet::new();
    for args in [
        &["-t", "app", "-b", "--json", "rollback", "--dry-run"][..],
        &["-t", "app", "-b", "--json", "rollback", "-F", "stop-old"][..],
        &["-t", "app", "-b", "--json", "status"][..],
    ] {
        let run = site.flow(args, &[]).await;
        run.assert_code(0);
        later.extend(check_lines(&run.stdout, &documented));
    }
    for event in ["plan", "step-finished", "done", "status"] {
        assert!(later.contains(event), "no {event} event: {later:?}");
    }
}

/// Writes a Docker configuration directory with one context `name` whose endpoint is `host`,
/// chosen as the current context.
fn docker_config(site: &Site, name: &str, host: &str) -> String {
    let dir = site.dir().join("docker-config");
    let meta = dir.join("contexts/meta/0123abcd");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        format!(r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"currentContext":"{name}"}}"#),
    )
    .unwrap();
    dir.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_docker_context_is_used_and_bad_ones_are_named() {
    demo_images().await;
    let site = Site::new("context", &demo_compose("")).await;
    let engine = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    let config = docker_config(&site, "here", &engine);
    // DOCKER_HOST would win over the context: the test's own is removed.
    let env = [("DOCKER_CONFIG", config.as_str()), ("DOCKER_HOST", "")];

    site.flow(&["-t", "app", "--dry-run"], &env)
        .await
        .assert_code(0);
    let unknown = site.flow(&["-t", "app", "--context", "nope"], &env).await;
    unknown.assert_code(2).assert_stderr_names(&[
        "unknown Docker context \"nope\"",
        "--context",
        "default, here",
    ]);
    let both = site
        .flow(&["-t", "app", "--context", "here", "-H", &engine], &env)
        .await;
    both.assert_code(2).assert_stderr_names(&["give only one"]);

    let gone = docker_config(&site, "gone", "unix:///nonexistent/docker.sock");
    let unreachable = site
        .flow(
            &["-t", "app"],
            &[("DOCKER_CONFIG", gone.as_str()), ("DOCKER_HOST", "")],
        )
        .await;
    unreachable
        .assert_code(1)
        .assert_stderr_names(&["unix:///nonexistent/docker.sock", "Docker context \"gone\""]);
    site.assert_no_containers().await;
    site.assert_nothing_stored();
}

/// Runs the `docker-flow` binary with `args` only.
fn docker_flow(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(flow_tests::fixtures::docker_flow_binary())
        .args(args)
        .output()
        .expect("docker-flow runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_completions_and_the_man_page() {
    let (code, version, _) = docker_flow(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        version.contains("(commit ") && version.contains("Docker API 1.41 to 1."),
        "{version}"
    );
    let (code, bash, _) = docker_flow(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert_eq!(
        complete_in_bash(&bash, "--health-t"),
        ["--health-timeout"],
        "the bash completion loads in bash and completes a flag"
    );
    let (code, _, error) = docker_flow(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{error}");
    assert!(error.contains("tcsh") && error.contains("bash"), "{error}");
    let (code, man, _) = docker_flow(&["man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH docker-flow 1"), "{man}");
}

/// Loads `script` (a bash completion) into a real bash, asks it to complete `docker-flow WORD`
/// as bash does on a TAB, and returns the candidates.
fn complete_in_bash(script: &str, word: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docker-flow.bash");
    std::fs::write(&file, script).unwrap();
    // The function is the one `complete -p` names, as bash-completion would call it.
    let program = r#"source "$1" || exit 10
function=$(complete -p docker-flow | sed -E 's/.* -F ([^ ]+) .*/\1/')
COMP_WORDS=(docker-flow "$2"); COMP_CWORD=1
COMP_LINE="docker-flow $2"; COMP_POINT=${#COMP_LINE}
"$function" docker-flow "$2" docker-flow || exit 11
printf '%s\n' "${COMPREPLY[@]}""#;
    let output = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", program, "bash"])
        .arg(&file)
        .arg(word)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "bash could not load or run the completion ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_live_progress_and_a_pipe_plain_lines() {
    demo_images().await;
    let site = Site::new("terminal", &demo_compose("")).await;
    // `script` gives the release a pseudo-terminal, as an interactive shell would.
    let command = format!(
        "{} -p {} -t app -s 2",
        flow_tests::fixtures::docker_flow_binary().display(),
        site.project()
    );
    let output = tokio::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(site.dir())
        .env("DEMO_TAG", "v1")
        .env("TERM", "xterm-256color")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("script runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    // indicatif redraws the running line in place: cursor movement and erased lines.
    assert!(
        screen.contains("\u{1b}[2K") || screen.contains("\u{1b}[1A"),
        "no live display on a terminal:\n{screen}"
    );
    assert!(
        screen.contains('✓'),
        "finished phases stay on screen:\n{screen}"
    );
    assert!(
        !screen.contains("waiting for health:"),
        "plain progress lines on a terminal:\n{screen}"
    );

    // Piped, the same release prints plain lines only.
    let piped = site
        .flow(&["-t", "app", "-s", "2"], &[("DEMO_TAG", "v1")])
        .await;
    piped.assert_code(0);
    assert!(
        !piped.stderr.contains('\u{1b}') && !piped.stdout.contains('\u{1b}'),
        "escape sequences in piped output:\n{}{}",
        piped.stdout,
        piped.stderr
    );
}
