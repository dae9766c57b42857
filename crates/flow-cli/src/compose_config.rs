//! `docker-flow config`: the Compose model a release runs, printed as `docker compose config`
//! prints it. It reads the files only: no engine, no registry, nothing written.

use flow_docker::compose::{ComposeProject, LoadOptions};

use crate::config::ComposeConfigRequest;
use crate::exit::Exit;

/// Prints the model on stdout (warnings on stderr, even when the file is then refused).
pub fn run(request: &ComposeConfigRequest) -> Exit {
    match render(request, &mut |warning| {
        eprintln!("docker-flow: warning: {warning}")
    }) {
        Ok(text) => {
            print!("{text}");
            Exit::Success
        }
        Err(message) => {
            eprintln!("docker-flow: {message}");
            Exit::BadInput
        }
    }
}

/// The text `run` prints, with each warning handed to `warn` first.
pub fn render(
    request: &ComposeConfigRequest,
    warn: &mut dyn FnMut(&str),
) -> Result<String, String> {
    let options = LoadOptions {
        profiles: request.profiles.clone(),
        ..LoadOptions::from_process()
    };
    let mut warnings = Vec::new();
    let loaded = ComposeProject::load_with(&request.compose_path, &options, &mut warnings);
    for warning in &warnings {
        warn(warning);
    }
    let project = loaded.map_err(|error| error.to_string())?;
    if let Some(target) = &request.target {
        if !project.services.contains_key(target) {
            return Err(format!(
                "{} defines no service {target:?} (it defines: {}); check -t/--target",
                request.compose_path.display(),
                project
                    .services
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let model = project.to_config(&request.project, request.target.as_deref());
    if request.json {
        let mut text = serde_json::to_string_pretty(&model).expect("a JSON value serializes");
        text.push('\n');
        Ok(text)
    } else {
        serde_norway::to_string(&model).map_err(|error| error.to_string())
    }
}
