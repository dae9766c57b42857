//! The build context of a Compose `build:` section, as the engine's `/build` endpoint takes
//! it: a tar of the context directory without what `.dockerignore` excludes.
//!
//! `.dockerignore` is read as the docker CLI reads it: one pattern per line, `#` comments,
//! paths relative to the context (a leading `/` is dropped), `*` and `?` within a path
//! component, `**` across components, `!` re-including, the last matching line deciding. A
//! directory that is excluded is skipped whole unless a `!` pattern could match inside it. The
//! Dockerfile and `.dockerignore` are always sent, as the engine needs them.

use std::path::{Path, PathBuf};

/// Everything preparing a build context can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildContextError {
    /// The context directory does not exist or is not a directory.
    #[error("the build context {path} is not a directory; fix `build.context` (relative paths start from the Compose file's directory)")]
    NoContext {
        /// The path tried.
        path: PathBuf,
    },
    /// The Dockerfile is not in the context.
    #[error(
        "the Dockerfile {path} does not exist; fix `build.dockerfile` (relative to the context)"
    )]
    NoDockerfile {
        /// The path tried.
        path: PathBuf,
    },
    /// A file of the context cannot be read.
    #[error("cannot read {path} of the build context: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// One `.dockerignore` line.
#[derive(Debug, Clone)]
struct Rule {
    components: Vec<String>,
    include: bool,
}

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (include, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let components: Vec<String> = pattern
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                (!components.is_empty()).then_some(Rule {
                    components,
                    include,
                })
            })
            .collect();
        DockerIgnore { rules }
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut excluded = false;
        for rule in &self.rules {
            // A pattern matching a parent directory matches everything below it.
            let matched = (1..=parts.len()).any(|end| matches(&rule.components, &parts[..end]));
            if matched {
                excluded = !rule.include;
            }
        }
        excluded
    }

    /// Whether some `!` pattern could re-include a path below the excluded directory `dir`.
    fn may_include_below(&self, dir: &str) -> bool {
        self.rules.iter().any(|rule| {
            rule.include && {
                let prefix: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                rule.components.iter().any(|c| c.contains("**"))
                    || (rule.components.len() > prefix.len()
                        && matches(&rule.components[..prefix.len()], &prefix))
            }
        })
    }
}

/// Whether the pattern components match the path components exactly.
fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((part, tail)) => component_matches(first, part) && matches(rest, tail),
            None => false,
        },
    }
}

/// `*` (any run of characters) and `?` (one character) within one component.
fn component_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// The tar of `context` the engine builds from, `dockerfile` being relative to it.
pub fn context_tar(context: &Path, dockerfile: &str) -> Result<Vec<u8>, BuildContextError> {
    if !context.is_dir() {
        return Err(BuildContextError::NoContext {
            path: context.to_path_buf(),
        });
    }
    let dockerfile_path = context.join(dockerfile);
    if !dockerfile_path.is_file() {
        return Err(BuildContextError::NoDockerfile {
            path: dockerfile_path,
        });
    }
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildContextError::Read { path, source }
    };
    let ignore_path = context.join(".dockerignore");
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => DockerIgnore::parse(&text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(error) => return Err(read_error(&ignore_path)(error)),
    };
    let always = [dockerfile.trim_start_matches("./"), ".dockerignore"];
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = context.join(&relative);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(read_error(&dir))?
            .collect::<Result<_, _>>()
            .map_err(read_error(&dir))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = relative.join(entry.file_name());
            let text = name.to_string_lossy().replace('\\', "/");
            let kind = entry.file_type().map_err(read_error(&entry.path()))?;
            let excluded = ignore.excludes(&text) && !always.contains(&text.as_str());
            if kind.is_dir() {
                if !excluded || ignore.may_include_below(&text) {
                    if !excluded {
                        builder
                            .append_dir(&name, entry.path())
                            .map_err(read_error(&entry.path()))?;
                    }
                    pending.push(name);
                }
            } else if !excluded {
                builder
                    .append_path_with_name(entry.path(), &name)
                    .map_err(read_error(&entry.path()))?;
            }
        }
    }
    builder.into_inner().map_err(read_error(context))
}
