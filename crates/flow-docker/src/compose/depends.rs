//! `depends_on`: what a service waits for before it starts, read in both of its spellings, and
//! the order services start in (05-services.md "depends_on").
//!
//! The short form (`depends_on: [db]`) is the long form with its defaults: condition
//! `service_started`, `required: true`, `restart: false`. Reading keeps both the names (in
//! the order written, which is what a release spec serializes) and each name's settings.
//! `restart: true` asks Compose to restart the dependent service after the dependency is
//! updated; docker-flow never updates a running dependency, so it is read and warned about by
//! name rather than silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_norway::Value;

use super::{key_text, scalar_text, warn_unknown, ComposeError, ComposeProject};

/// When a dependency counts as ready (`depends_on.<service>.condition`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Condition {
    /// `service_started`: its container runs (or has run and exited 0).
    #[default]
    #[serde(rename = "service_started")]
    Started,
    /// `service_healthy`: Docker reports its healthcheck healthy.
    #[serde(rename = "service_healthy")]
    Healthy,
    /// `service_completed_successfully`: it ran to its end with exit code 0.
    #[serde(rename = "service_completed_successfully")]
    CompletedSuccessfully,
}

impl Condition {
    /// The Compose spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "service_started",
            Condition::Healthy => "service_healthy",
            Condition::CompletedSuccessfully => "service_completed_successfully",
        }
    }

    fn parse(text: &str) -> Option<Condition> {
        [
            Condition::Started,
            Condition::Healthy,
            Condition::CompletedSuccessfully,
        ]
        .into_iter()
        .find(|condition| condition.as_str() == text)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings of one `depends_on` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependency {
    /// `condition`.
    pub condition: Condition,
    /// `required` (default `true`): when `false`, a dependency that is absent or does not
    /// become ready is warned about and the service starts anyway.
    pub required: bool,
    /// `restart: true` (read and warned about: docker-flow does not restart dependents).
    pub restart: bool,
}

impl Default for Dependency {
    fn default() -> Self {
        Dependency {
            condition: Condition::Started,
            required: true,
            restart: false,
        }
    }
}

/// The `depends_on` of service `service` (`context` names it in messages): the names in the
/// order written, and the settings of each.
pub(super) fn parse(
    service: &str,
    context: &str,
    value: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<String>, BTreeMap<String, Dependency>), ComposeError> {
    let invalid = |field: String, message: String| ComposeError::InvalidValue {
        service: service.to_string(),
        field,
        message,
    };
    let mut names = Vec::new();
    let mut settings = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for item in items {
                let name = scalar_text(item).ok_or_else(|| {
                    invalid(
                        "depends_on".into(),
                        "expected a list of service names".into(),
                    )
                })?;
                settings.insert(name.clone(), Dependency::default());
                names.push(name);
            }
        }
        Some(Value::Mapping(entries)) => {
            for (name, body) in entries {
                let name = key_text(name);
                let mut dependency = Dependency::default();
                match body {
                    Value::Mapping(body) => {
                        let field = |key: &str| format!("depends_on.{name}.{key}");
                        warn_unknown(
                            body,
                            &["condition", "required", "restart"],
                            &format!("{context}: depends_on.{name}"),
                            warnings,
                        );
                        if let Some(text) = body.get("condition").and_then(scalar_text) {
                            dependency.condition = Condition::parse(&text).ok_or_else(|| {
                                invalid(
                                    field("condition"),
                                    format!("{text:?} is not a condition; use service_started, service_healthy or service_completed_successfully"),
                                )
                            })?;
                        }
                        let flag = |key: &str, default: bool| match body.get(key) {
                            None | Some(Value::Null) => Ok(default),
                            Some(value) => boolean(value).ok_or_else(|| {
                                invalid(field(key), "expected true or false".into())
                            }),
                        };
                        dependency.required = flag("required", true)?;
                        dependency.restart = flag("restart", false)?;
                        if dependency.restart {
                            warnings.push(format!(
                                "{context}: depends_on.{name}.restart: true is not implemented by docker-flow: {service} is not restarted when {name} changes"
                            ));
                        }
                    }
                    Value::Null => {}
                    _ => {
                        return Err(invalid(
                            format!("depends_on.{name}"),
                            "expected a map of condition, required and restart".into(),
                        ))
                    }
                }
                settings.insert(name.clone(), dependency);
                names.push(name);
            }
        }
        Some(_) => {
            return Err(invalid(
                "depends_on".into(),
                "expected a list or a map".into(),
            ))
        }
    }
    Ok((names, settings))
}

/// A YAML boolean, or its text after interpolation (`required: ${OPTIONAL:-false}`).
fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(text) => match text.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

impl ComposeProject {
    /// `services` in an order they can start in: each after every one of them it depends on,
    /// directly or through other services (a depth-first walk from each in the order given).
    ///
    /// Refuses, before anything starts, a `depends_on` cycle among the services reachable
    /// from them ([`ComposeError::DependencyCycle`], naming it) and a required dependency the
    /// file does not define ([`ComposeError::UnknownDependency`]).
    pub fn start_order(&self, services: &[String]) -> Result<Vec<String>, ComposeError> {
        let wanted: BTreeSet<&str> = services.iter().map(String::as_str).collect();
        let mut walk = Walk {
            project: self,
            wanted: &wanted,
            done: BTreeSet::new(),
            path: Vec::new(),
            order: Vec::new(),
        };
        for service in services {
            walk.visit(service)?;
        }
        Ok(walk.order)
    }
}

/// A depth-first walk of the `depends_on` graph: a service is placed once everything it
/// depends on is, and meeting a service already on the current path is a cycle.
struct Walk<'a> {
    project: &'a ComposeProject,
    wanted: &'a BTreeSet<&'a str>,
    done: BTreeSet<String>,
    path: Vec<String>,
    order: Vec<String>,
}

impl Walk<'_> {
    fn visit(&mut self, service: &str) -> Result<(), ComposeError> {
        if self.done.contains(service) {
            return Ok(());
        }
        if let Some(at) = self.path.iter().position(|s| s == service) {
            let mut cycle = self.path[at..].to_vec();
            cycle.push(service.to_string());
            return Err(ComposeError::DependencyCycle { cycle });
        }
        let Some(spec) = self.project.services.get(service) else {
            // Only a dependency can be missing here: the services asked for were checked.
            return Ok(());
        };
        self.path.push(service.to_string());
        for dependency in &spec.depends_on {
            let settings = spec.dependency(dependency);
            if !self.project.services.contains_key(dependency) {
                if settings.required {
                    return Err(ComposeError::UnknownDependency {
                        service: service.to_string(),
                        dependency: dependency.clone(),
                    });
                }
                continue;
            }
            self.visit(dependency)?;
        }
        self.path.pop();
        self.done.insert(service.to_string());
        if self.wanted.contains(service) {
            self.order.push(service.to_string());
        }
        Ok(())
    }
}
