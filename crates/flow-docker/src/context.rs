//! Docker contexts: which engine to talk to, resolved the way the docker CLI resolves it.
//!
//! [`resolve`] turns what the user chose explicitly (a context, or a host) and the environment
//! into [`ConnectSettings`], in the docker CLI's order:
//!
//! 1. a context chosen explicitly (`--context NAME`); choosing a host too is refused, as the
//!    docker CLI refuses `--host` with `--context`;
//! 2. a host chosen explicitly (`--host`), then `DOCKER_HOST`;
//! 3. `DOCKER_CONTEXT`;
//! 4. `currentContext` in `config.json` of the Docker configuration directory (`DOCKER_CONFIG`,
//!    else `~/.docker`);
//! 5. the local socket.
//!
//! The context `default` is the endpoint `DOCKER_HOST` names, else the local socket. Another
//! context is read from the context store the docker CLI writes: `contexts/meta/<id>/meta.json`
//! holds its name and its `docker` endpoint (`Host`, `SkipTLSVerify`), and
//! `contexts/tls/<id>/docker/` its TLS material (`ca.pem`, `cert.pem`, `key.pem`), which turns
//! TLS on. Contexts are found by the name in their `meta.json` rather than by recomputing the
//! directory id (a SHA-256 of the name), so that an unknown name can be answered with the list
//! of known ones.
//!
//! `SkipTLSVerify` is refused by name: the TLS client verifies every server, and quietly
//! connecting with verification the context turned off (or on) would not be what it says.
//! Only the file system is read; nothing is contacted until [`crate::connect`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ConnectSettings;

/// The context that means "`DOCKER_HOST`, else the local socket".
pub const DEFAULT_CONTEXT: &str = "default";

/// What the user chose explicitly (flags, or the caller's own configuration layers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// A context by name, and where the name came from (`--context`), for messages.
    pub context: Option<(String, String)>,
    /// An endpoint (`--host`); `DOCKER_HOST` is read by [`resolve`] itself.
    pub host: Option<String>,
    /// The TLS material directory (`--cert-path`); `DOCKER_CERT_PATH` is read by [`resolve`].
    pub cert_path: Option<PathBuf>,
}

/// Where the engine is, and the context it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What [`crate::connect`] needs.
    pub settings: ConnectSettings,
    /// The context used, when one was: its name and where the name came from.
    pub context: Option<(String, String)>,
}

impl Resolved {
    /// The endpoint as messages show it: `tcp://host:2376 (Docker context "remote", from
    /// DOCKER_CONTEXT)`.
    pub fn describe(&self) -> String {
        match &self.context {
            Some((name, origin)) => format!(
                "{} (Docker context {name:?}, from {origin})",
                self.settings.endpoint()
            ),
            None => self.settings.endpoint(),
        }
    }
}

/// Why the engine's endpoint cannot be determined. Each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A context and a host were both chosen.
    #[error("a Docker context ({context:?}, from {origin}) and a Docker host ({host}) are both given: give only one")]
    HostAndContext {
        /// The context.
        context: String,
        /// Where it came from.
        origin: String,
        /// The host.
        host: String,
    },
    /// No context of that name is in the store.
    #[error("unknown Docker context {name:?} (from {origin}): the contexts in {} are {}; create it with `docker context create`, or choose another", store.display(), known.join(", "))]
    Unknown {
        /// The name.
        name: String,
        /// Where it came from.
        origin: String,
        /// The context store searched (`…/contexts/meta`).
        store: PathBuf,
        /// The names that exist, `default` first.
        known: Vec<String>,
    },
    /// A context's `meta.json`, or `config.json`, cannot be read or parsed.
    #[error("cannot read {}: {message}; fix or remove the file", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The context has no `docker` endpoint.
    #[error("Docker context {name:?} has no docker endpoint in {}: recreate it with `docker context create {name} --docker host=…`", path.display())]
    NoDockerEndpoint {
        /// The context.
        name: String,
        /// Its `meta.json`.
        path: PathBuf,
    },
    /// The context turns TLS verification off.
    #[error("Docker context {name:?} sets SkipTLSVerify, which docker-flow does not support: it always verifies the engine's certificate; give the context the engine's CA (docker context update {name} --docker ca=…) with verification on")]
    SkipTlsVerify {
        /// The context.
        name: String,
    },
}

/// `meta.json` of a context, as the docker CLI writes it.
#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Endpoints", default)]
    endpoints: Endpoints,
}

#[derive(Deserialize, Default)]
struct Endpoints {
    docker: Option<DockerEndpointMeta>,
}

#[derive(Deserialize)]
struct DockerEndpointMeta {
    #[serde(rename = "Host")]
    host: Option<String>,
    #[serde(rename = "SkipTLSVerify", default)]
    skip_tls_verify: bool,
}

/// The part of the docker CLI's `config.json` that chooses the context.
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(rename = "currentContext", default)]
    current_context: Option<String>,
}

/// The Docker configuration directory: `DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn config_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match env("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME").unwrap_or_default()).join(".docker"),
    }
}

/// Resolves the engine's endpoint; `env` looks up environment variables (`None` when unset).
pub fn resolve(
    selection: &Selection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, ContextError> {
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    let from_host = |host: Option<String>| Resolved {
        settings: ConnectSettings {
            host,
            cert_path: selection
                .cert_path
                .clone()
                .or_else(|| set("DOCKER_CERT_PATH").map(PathBuf::from)),
            tls_verify: set("DOCKER_TLS_VERIFY").is_some_and(|v| v != "0"),
        },
        context: None,
    };
    let chosen = match (&selection.context, &selection.host) {
        (Some((context, origin)), Some(host)) => {
            return Err(ContextError::HostAndContext {
                context: context.clone(),
                origin: origin.clone(),
                host: host.clone(),
            })
        }
        (Some(context), None) => context.clone(),
        (None, Some(host)) => return Ok(from_host(Some(host.clone()))),
        (None, None) => {
            if let Some(host) = set("DOCKER_HOST") {
                return Ok(from_host(Some(host)));
            }
            let config = config_dir(env);
            match set("DOCKER_CONTEXT") {
                Some(name) => (name, "DOCKER_CONTEXT".to_string()),
                None => match current_context(&config.join("config.json"))? {
                    Some(name) => (
                        name,
                        format!("currentContext in {}", config.join("config.json").display()),
                    ),
                    None => return Ok(from_host(None)),
                },
            }
        }
    };
    let (name, origin) = chosen;
    if name == DEFAULT_CONTEXT {
        let mut resolved = from_host(set("DOCKER_HOST"));
        resolved.context = Some((name, origin));
        return Ok(resolved);
    }
    let store = config_dir(env).join("contexts");
    let (dir, meta) = find(&store.join("meta"), &name)?.ok_or_else(|| ContextError::Unknown {
        known: known(&store.join("meta")),
        store: store.join("meta"),
        name: name.clone(),
        origin: origin.clone(),
    })?;
    let meta_path = store.join("meta").join(&dir).join("meta.json");
    let docker = meta
        .endpoints
        .docker
        .ok_or_else(|| ContextError::NoDockerEndpoint {
            name: name.clone(),
            path: meta_path.clone(),
        })?;
    if docker.skip_tls_verify {
        return Err(ContextError::SkipTlsVerify { name });
    }
    let host = docker.host.filter(|host| !host.is_empty()).ok_or_else(|| {
        ContextError::NoDockerEndpoint {
            name: name.clone(),
            path: meta_path,
        }
    })?;
    let tls = store.join("tls").join(&dir).join("docker");
    let has_tls = tls.join("ca.pem").is_file();
    let cert_path = selection
        .cert_path
        .clone()
        .or_else(|| has_tls.then_some(tls));
    Ok(Resolved {
        settings: ConnectSettings {
            host: Some(host),
            tls_verify: cert_path.is_some(),
            cert_path,
        },
        context: Some((name, origin)),
    })
}

/// `currentContext` of `config.json`; a missing file or key is no context.
fn current_context(path: &Path) -> Result<Option<String>, ContextError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ContextError::Unreadable {
                path: path.to_path_buf(),
                message: error.to_string(),
            })
        }
    };
    let config: ConfigFile =
        serde_json::from_str(&text).map_err(|error| ContextError::Unreadable {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
    Ok(config.current_context.filter(|name| !name.is_empty()))
}

/// Every context in the store: its directory name and parsed `meta.json`. A store that does
/// not exist holds none.
fn contexts(meta_dir: &Path) -> Result<Vec<(String, Meta)>, ContextError> {
    let entries = match std::fs::read_dir(meta_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(ContextError::Unreadable {
                path: meta_dir.to_path_buf(),
                message: error.to_string(),
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("meta.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A directory without meta.json is not a context (the docker CLI skips it too).
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(ContextError::Unreadable {
                    path,
                    message: error.to_string(),
                })
            }
        };
        let meta: Meta = serde_json::from_str(&text).map_err(|error| ContextError::Unreadable {
            path: path.clone(),
            message: error.to_string(),
        })?;
        found.push((entry.file_name().to_string_lossy().into_owned(), meta));
    }
    Ok(found)
}

fn find(meta_dir: &Path, name: &str) -> Result<Option<(String, Meta)>, ContextError> {
    Ok(contexts(meta_dir)?
        .into_iter()
        .find(|(_, meta)| meta.name == name))
}

/// The names of the contexts in the store, `default` first.
fn known(meta_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = contexts(meta_dir)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, meta)| meta.name)
        .collect();
    names.sort();
    names.insert(0, DEFAULT_CONTEXT.to_string());
    names
}
