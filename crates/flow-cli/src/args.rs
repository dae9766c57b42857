//! Stage 1: the raw inputs, exactly as given.
//!
//! Flags are parsed by clap into [`Cli`]; `docker-flow.yml` is parsed into [`FileOptions`].
//! Nothing here interprets a value: every option stays the text the user wrote (booleans,
//! numbers and durations included), so that a flag, an environment variable and a yml key
//! all go through the same parser in [`crate::config`], which is the one place that layers
//! and validates them. Environment variables are read there too, through an injected
//! lookup function, so that tests never touch the process environment.
//!
//! Clap does not read the environment itself (its `env` feature would merge `FLOW_*` into
//! the flag values and hide whether a value came from a flag or from the environment, but
//! the layering `yml < env < flag` needs to know). Each flag's help names its variable and
//! yml key instead.

use std::collections::BTreeMap;
use std::fmt;

use clap::{Args, Parser, Subcommand};
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

/// The command line of `docker-flow`.
///
/// Without a subcommand it is a release, with the 1.x flags (`docker-flow -t app -b`).
#[derive(Debug, Parser)]
#[command(
    name = "docker-flow",
    version = crate::version::SHORT,
    long_version = crate::version::long(),
    about = "Zero-downtime blue-green releases of Compose services on plain Docker hosts",
    long_about = None,
    after_help = "Without a subcommand, releases a Compose service. Options are layered: built-in \
        defaults < ./docker-flow.yml < environment FLOW_<KEY> < flags.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A subcommand; `None` is a release.
    #[command(subcommand)]
    pub command: Option<CommandArgs>,
    /// The release flags (used only without a subcommand, or before `rollback`/`status`).
    #[command(flatten)]
    pub release: ReleaseFlags,
    /// `rollback` or `status` after release flags (`docker-flow -t app rollback`): clap takes
    /// no subcommand once a flag was given, so the word arrives here and [`crate::config`]
    /// turns it into the subcommand it names, or refuses it.
    #[arg(value_name = "COMMAND", hide = true)]
    pub word: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    /// Runs the reverse proxy (HAProxy) and its reconfigure API.
    Proxy {
        /// What to do with the proxy.
        #[command(subcommand)]
        command: ProxyCommandArgs,
    },
    /// Registers running containers in the registry and follows Docker events.
    Registrator(Box<RegistratorFlags>),
    /// Makes the previous release live again (`-F rollback`); add `-F stop-old` to stop the rolled-back colour. Takes the release options, before or after the word.
    Rollback(ReleaseFlags),
    /// Shows what runs: live colour and release, instances and health, the idle colour, the proxy route, the lock holder. Changes nothing. Takes the release options, before or after the word.
    Status(ReleaseFlags),
    /// Prints a shell completion script: bash, zsh, fish or powershell.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the man page (roff), e.g. `docker-flow man > /usr/local/share/man/man1/docker-flow.1`.
    Man,
    /// Prints the Compose model a release runs, as `docker compose config` does (YAML, or JSON
    /// with --json); changes nothing and needs no engine.
    Config(ComposeConfigFlags),
}

/// Flags of `docker-flow config`.
#[derive(Debug, Default, Args)]
pub struct ComposeConfigFlags {
    /// The Compose file [default: docker-compose.yml] [env: FLOW_COMPOSE_PATH] [yml: compose_path]
    #[arg(short = 'f', long, visible_alias = "file", value_name = "PATH")]
    pub compose_path: Option<String>,
    /// Compose project name [default: the Compose file's directory name] [env: FLOW_PROJECT] [yml: project]
    #[arg(short = 'p', long, value_name = "NAME")]
    pub project: Option<String>,
    /// Only this service (enabled by a profile or not)
    #[arg(short = 't', long, value_name = "SERVICE")]
    pub target: Option<String>,
    /// A profile to activate, besides those of COMPOSE_PROFILES (repeatable)
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// JSON instead of YAML
    #[arg(long)]
    pub json: bool,
}

/// The flags `config` takes with a value, so that they may come before the word.
const CONFIG_VALUE_FLAGS: &[&str] = &[
    "-f",
    "--compose-path",
    "--file",
    "-p",
    "--project",
    "-t",
    "--target",
    "--profile",
];

/// The arguments with a `config` word that follows only `config`'s own options moved first
/// (`docker-flow -f app.yml config` is `docker-flow config -f app.yml`); others unchanged.
pub fn config_word_first(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut index = 1;
    while index < args.len() {
        let Some(word) = args[index].to_str() else {
            return args;
        };
        if word == "config" {
            let mut reordered = args;
            let config = reordered.remove(index);
            reordered.insert(1, config);
            return reordered;
        }
        let flag = word.split_once('=').map_or(word, |(flag, _)| flag);
        if CONFIG_VALUE_FLAGS.contains(&flag) {
            index += if word.contains('=') { 1 } else { 2 };
        } else if word == "--json" {
            index += 1;
        } else {
            return args;
        }
    }
    args
}

/// The `proxy` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProxyCommandArgs {
    /// Runs HAProxy and serves the reconfigure API until stopped.
    Serve(ProxyServeFlags),
}

/// Flags of a release (`docker-flow [options]`), as typed.
///
/// Booleans take an optional `=VALUE` (`-b` means true, `--blue-green=false` overrides a
/// yml or env `true`).
#[derive(Debug, Default, Args)]
pub struct ReleaseFlags {
    /// Compose service to release (required) [env: FLOW_TARGET] [yml: target]
    #[arg(short = 't', long, value_name = "SERVICE")]
    pub target: Option<String>,
    /// Extra services started with the target (in depends_on order), never coloured, scaled or stopped; repeatable or comma-separated [env: FLOW_SIDE_TARGETS] [yml: side_targets]
    #[arg(
        short = 'T',
        long = "side-target",
        value_name = "SERVICE",
        value_delimiter = ','
    )]
    pub side_targets: Vec<String>,
    /// Release into the idle colour (blue-green) [env: FLOW_BLUE_GREEN] [yml: blue_green]
    #[arg(short = 'b', long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub blue_green: Option<String>,
    /// Steps in order: deploy, scale, stop-old, proxy, rollback (not with deploy); repeatable or comma-separated [default: deploy] [env: FLOW or FLOW_FLOW] [yml: flow]
    #[arg(short = 'F', long, value_name = "STEP", value_delimiter = ',')]
    pub flow: Vec<String>,
    /// Instances: N, or +N/-N relative to the stored scale [env: FLOW_SCALE] [yml: scale]
    #[arg(short = 's', long, value_name = "N|+N|-N", allow_hyphen_values = true)]
    pub scale: Option<String>,
    /// The Compose file [default: docker-compose.yml] [env: FLOW_COMPOSE_PATH] [yml: compose_path]
    #[arg(short = 'f', long, value_name = "PATH")]
    pub compose_path: Option<String>,
    /// Compose project name [default: the Compose file's directory name] [env: FLOW_PROJECT] [yml: project]
    #[arg(short = 'p', long, value_name = "NAME")]
    pub project: Option<String>,
    /// Docker endpoint [default: DOCKER_HOST] [env: FLOW_HOST] [yml: host]
    #[arg(short = 'H', long, value_name = "URL")]
    pub host: Option<String>,
    /// Docker context to use [default: DOCKER_CONTEXT, else the current context of the Docker config] [env: FLOW_CONTEXT] [yml: context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Directory of the Docker TLS certificates [default: DOCKER_CERT_PATH] [env: FLOW_CERT_PATH] [yml: cert_path]
    #[arg(long, value_name = "DIR")]
    pub cert_path: Option<String>,
    /// Consul as the registry: http://host:port or host:port [env: FLOW_CONSUL_ADDRESS] [yml: consul_address]
    #[arg(short = 'c', long, value_name = "ADDRESS")]
    pub consul_address: Option<String>,
    /// Host of the proxy's reconfigure API [env: FLOW_PROXY_HOST] [yml: proxy_host]
    #[arg(long, value_name = "HOST")]
    pub proxy_host: Option<String>,
    /// Port of the proxy's reconfigure API [default: 8080] [env: FLOW_PROXY_RECONF_PORT] [yml: proxy_reconf_port]
    #[arg(long, value_name = "PORT")]
    pub proxy_reconf_port: Option<String>,
    /// Unsupported (1.x): start the proxy with `docker-flow proxy serve` instead [env: FLOW_PROXY_DOCKER_HOST]
    #[arg(long, value_name = "URL")]
    pub proxy_docker_host: Option<String>,
    /// Unsupported (1.x): start the proxy with `docker-flow proxy serve` instead [env: FLOW_PROXY_DOCKER_CERT_PATH]
    #[arg(long, value_name = "DIR")]
    pub proxy_docker_cert_path: Option<String>,
    /// URL path routed to the service by the proxy; repeatable [env: FLOW_SERVICE_PATH, comma-separated] [yml: service_path]
    #[arg(long, value_name = "PATH")]
    pub service_path: Vec<String>,
    /// Also pull the side targets' images [env: FLOW_PULL_SIDE_TARGETS] [yml: pull_side_targets]
    #[arg(short = 'S', long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub pull_side_targets: Option<String>,
    /// Unsupported (1.x): the proxy renders its own configuration [env: FLOW_CONSUL_TEMPLATE_FE_PATH]
    #[arg(long, value_name = "PATH")]
    pub consul_template_fe_path: Option<String>,
    /// Unsupported (1.x): the proxy renders its own configuration [env: FLOW_CONSUL_TEMPLATE_BE_PATH]
    #[arg(long, value_name = "PATH")]
    pub consul_template_be_path: Option<String>,
    /// Registry/proxy name of the service [default: <project>-<target>] [env: FLOW_SERVICENAME] [yml: servicename]
    #[arg(long = "service-name", value_name = "NAME")]
    pub service_name: Option<String>,
    /// HTTP path probed to decide an instance is healthy [env: FLOW_HEALTH_PATH] [yml: health_path]
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// The service's container port [env: FLOW_PORT] [yml: port]
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,
    /// How long new instances may take to become healthy, and each depends_on condition to be met: 90s, 2m, 500ms or seconds [default: 60s] [env: FLOW_HEALTH_TIMEOUT] [yml: health_timeout]
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// End the health wait at the first `unhealthy` instead of waiting for it to recover until --health-timeout [env: FLOW_HEALTH_FAIL_FAST] [yml: health_fail_fast]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub health_fail_fast: Option<String>,
    /// How long old instances may take to finish their requests [default: 30s] [env: FLOW_DRAIN_TIMEOUT] [yml: drain_timeout]
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// When to pull the target's image: always, missing or never [default: missing] [env: FLOW_PULL] [yml: pull]
    #[arg(long, value_name = "POLICY")]
    pub pull: Option<String>,
    /// Build every service that has `build:` before starting it, even when its image exists [env: FLOW_BUILD] [yml: build]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub build: Option<String>,
    /// Never build: a service with `build:` whose image is missing is an error [env: FLOW_NO_BUILD] [yml: no_build]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub no_build: Option<String>,
    /// Host name requests must carry to reach the service [env: FLOW_SERVICE_DOMAIN] [yml: service_domain]
    #[arg(long, value_name = "DOMAIN")]
    pub service_domain: Option<String>,
    /// How service paths match: path_beg, path, path_end or path_reg [default: path_beg] [env: FLOW_PATH_TYPE] [yml: path_type]
    #[arg(long, value_name = "MATCHER")]
    pub path_type: Option<String>,
    /// Token for the proxy's API [env: FLOW_PROXY_TOKEN] [yml: proxy_token]
    #[arg(long, value_name = "TOKEN")]
    pub proxy_token: Option<String>,
    /// IP address the proxy reaches the instances at [env: FLOW_ADVERTISE_ADDR] [yml: advertise_addr]
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<String>,
    /// Release state store: file:PATH, consul://host:port or etcd://host:port[,host:port] [default: file:.docker-flow] [env: FLOW_REGISTRY] [yml: registry]
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Print what would be done and change nothing [env: FLOW_DRY_RUN] [yml: dry_run]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dry_run: Option<String>,
    /// Print JSON event lines on stdout instead of progress text [env: FLOW_JSON] [yml: json]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub json: Option<String>,
    /// Print only the summary and errors [env: FLOW_QUIET] [yml: quiet]
    #[arg(short = 'q', long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub quiet: Option<String>,
    /// Also print every call to the engine, registry and proxy with its timing [env: FLOW_VERBOSE] [yml: verbose]
    #[arg(short = 'v', long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub verbose: Option<String>,
}

/// Flags of `docker-flow proxy serve`, as typed.
#[derive(Debug, Default, Args)]
pub struct ProxyServeFlags {
    /// Address of the reconfigure API, IP:PORT [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub api_addr: Option<String>,
    /// Address HAProxy serves traffic on, IP:PORT; repeatable [default: 127.0.0.1:8081]
    #[arg(long, value_name = "ADDR")]
    pub bind: Vec<String>,
    /// Address HAProxy serves HTTPS on, IP:PORT; repeatable; listens once there is a certificate
    #[arg(long, value_name = "ADDR")]
    pub bind_https: Vec<String>,
    /// Directory of PEM certificates (chain and key in one file) to serve on --bind-https, read at start
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<String>,
    /// Directory for routes and the rendered HAProxy configuration [default: ./.docker-flow-proxy]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// The HAProxy binary [default: haproxy on PATH, else /usr/sbin/haproxy]
    #[arg(long, value_name = "PATH")]
    pub haproxy: Option<String>,
    /// Token API callers must present [env: FLOW_PROXY_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// Run the API without a token (an empty token is refused otherwise)
    #[arg(long)]
    pub no_auth: bool,
    /// On SIGINT/SIGTERM also stop HAProxy, finishing open connections first [default: HAProxy keeps serving]
    #[arg(long)]
    pub stop_haproxy: bool,
    /// With --stop-haproxy: how long open connections may take to finish: 30s, 2m or seconds [default: 30s]
    #[arg(long, value_name = "DURATION", requires = "stop_haproxy")]
    pub stop_timeout: Option<String>,
    /// Registry to read instances from: file:PATH, consul://host:port or etcd://host:port[,host:port] [env: FLOW_REGISTRY]
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Directory of the dfp_users_NAME files that usersSecret=NAME reads [default: /run/secrets]
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<String>,
}

/// Flags of `docker-flow registrator`, as typed.
#[derive(Debug, Default, Args)]
pub struct RegistratorFlags {
    /// Registry to write to: file:PATH, consul://host:port or etcd://host:port[,host:port] (required) [env: FLOW_REGISTRY]
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// IP address registered for published ports [default: the port's host IP, or the host name resolved for ports on every interface] [env: FLOW_IP]
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// Register exposed ports at the container's IP instead of published ones [env: FLOW_INTERNAL]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub internal: Option<String>,
    /// Register only containers (ports) with a SERVICE_NAME [env: FLOW_EXPLICIT]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub explicit: Option<String>,
    /// Comma-separated tags added to every registration (`\,` for a comma in a tag) [env: FLOW_TAGS]
    #[arg(long, value_name = "TAGS")]
    pub tags: Option<String>,
    /// Register the IP address held by this container label (10.0.0.5 or 10.0.0.5/24) [env: FLOW_USE_IP_FROM_LABEL]
    #[arg(long, value_name = "LABEL")]
    pub use_ip_from_label: Option<String>,
    /// Registrations expire this long after their last refresh: 30s, 5m or seconds; needs --ttl-refresh and an etcd registry [env: FLOW_TTL]
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// With --ttl: write every registration again this often (shorter than --ttl) [env: FLOW_TTL_REFRESH]
    #[arg(long, value_name = "DURATION")]
    pub ttl_refresh: Option<String>,
    /// Deregister a stopped container: always, or on-success (only when it exited with 0 or by a signal) [default: always] [env: FLOW_DEREGISTER]
    #[arg(long, value_name = "MODE")]
    pub deregister: Option<String>,
    /// Resyncs remove this registrator's registrations whose container is gone [default: true] [env: FLOW_CLEANUP]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cleanup: Option<String>,
    /// Try the registry this many more times at start before giving up; -1: without end [default: 0] [env: FLOW_RETRY_ATTEMPTS]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub retry_attempts: Option<String>,
    /// The wait between those tries: 500ms, 2s or milliseconds, as Registrator [default: 2000] [env: FLOW_RETRY_INTERVAL]
    #[arg(long, value_name = "DURATION")]
    pub retry_interval: Option<String>,
    /// Also re-sync every running container this often: 30s, 5m or seconds [default: never] [env: FLOW_RESYNC]
    #[arg(long, value_name = "DURATION")]
    pub resync: Option<String>,
    /// Docker endpoint [default: DOCKER_HOST] [env: FLOW_HOST]
    #[arg(short = 'H', long, value_name = "URL")]
    pub host: Option<String>,
    /// Docker context to use [default: DOCKER_CONTEXT, else the current context of the Docker config] [env: FLOW_CONTEXT]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Directory of the Docker TLS certificates [default: DOCKER_CERT_PATH] [env: FLOW_CERT_PATH]
    #[arg(long, value_name = "DIR")]
    pub cert_path: Option<String>,
}

/// A list option in `docker-flow.yml`: a YAML sequence, or one scalar meaning a one-item list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringList;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<StringList, E> {
                Ok(StringList(vec![value.to_string()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<ListItem>()? {
                    items.push(item.0);
                }
                Ok(StringList(items))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

/// One item of a yml list: a string (a bare number is taken as its digits).
struct ListItem(String);

impl<'de> Deserialize<'de> for ListItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;

        impl Visitor<'_> for ItemVisitor {
            type Value = ListItem;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ListItem, E> {
                Ok(ListItem(value.to_string()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ListItem, E> {
                Ok(ListItem(value.to_string()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ListItem, E> {
                Ok(ListItem(value.to_string()))
            }
        }

        deserializer.deserialize_any(ItemVisitor)
    }
}

/// Declares [`FileOptions`]: scalar keys keep the YAML text as written (`scale: +2` stays
/// `"+2"`, which a YAML integer would turn into 2), list keys are [`StringList`]s.
macro_rules! file_options {
    (scalars: [$($scalar:ident),* $(,)?], lists: [$($list:ident),* $(,)?]) => {
        /// The options of `docker-flow.yml`, as written. `null` values count as absent.
        #[derive(Debug, Default, Deserialize)]
        pub struct FileOptions {
            $(
                #[doc = concat!("The `", stringify!($scalar), "` key, as written.")]
                pub $scalar: Option<String>,
            )*
            $(
                #[doc = concat!("The `", stringify!($list), "` list.")]
                pub $list: Option<StringList>,
            )*
        }

        impl FileOptions {
            /// Every key the file may hold.
            pub const KEYS: &'static [&'static str] =
                &[$(stringify!($scalar),)* $(stringify!($list),)*];

            /// The text of the scalar option `key`, when the file sets it.
            pub fn scalar(&self, key: &str) -> Option<&str> {
                match key {
                    $(stringify!($scalar) => self.$scalar.as_deref(),)*
                    _ => None,
                }
            }

            /// The items of the list option `key`, when the file sets it.
            pub fn list(&self, key: &str) -> Option<&[String]> {
                match key {
                    $(stringify!($list) => self.$list.as_ref().map(|l| l.0.as_slice()),)*
                    _ => None,
                }
            }
        }
    };
}

file_options! {
    scalars: [
        target, blue_green, scale, compose_path, project, host, cert_path, consul_address,
        proxy_host, proxy_reconf_port, proxy_docker_host, proxy_docker_cert_path,
        pull_side_targets, consul_template_fe_path, consul_template_be_path, servicename,
        health_path, port, health_timeout, health_fail_fast, drain_timeout, pull, service_domain,
        path_type, proxy_token, advertise_addr, registry, dry_run, json, context, quiet, verbose,
        build, no_build,
    ],
    lists: [side_targets, flow, service_path]
}

/// `docker-flow.yml` parsed: its options, the keys it has that docker-flow does not know,
/// and the line each top-level key is on (for error messages about its value).
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// The options.
    pub options: FileOptions,
    /// Top-level keys docker-flow does not know (1.x ignored them; we warn).
    pub unknown_keys: Vec<String>,
    /// The 1-based line of each top-level key.
    pub lines: BTreeMap<String, usize>,
}

impl ParsedFile {
    /// Parses the text of `docker-flow.yml`. An empty file (or one with only comments) has
    /// no options. The error names the key and line of a wrong type.
    pub fn parse(text: &str) -> Result<ParsedFile, serde_norway::Error> {
        let keys: Option<BTreeMap<String, IgnoredAny>> = serde_norway::from_str(text)?;
        let Some(keys) = keys else {
            return Ok(ParsedFile::default());
        };
        let options: FileOptions = serde_norway::from_str(text)?;
        let unknown_keys = keys
            .into_keys()
            .filter(|key| !FileOptions::KEYS.contains(&key.as_str()))
            .collect();
        Ok(ParsedFile {
            options,
            unknown_keys,
            lines: top_level_key_lines(text),
        })
    }
}

/// Finds the line of each top-level `key:` (YAML keeps no positions after parsing).
fn top_level_key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        if let Some((key, _)) = line.split_once(':') {
            let key = key.trim().trim_matches(['"', '\'']);
            lines.entry(key.to_string()).or_insert(index + 1);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("docker-flow").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn release_flags_parse_without_subcommand() {
        let cli = parse(&[
            "-t",
            "app",
            "-b",
            "-F",
            "deploy,stop-old",
            "-F",
            "proxy",
            "-s",
            "-1",
        ]);
        assert!(cli.command.is_none());
        assert_eq!(cli.release.target.as_deref(), Some("app"));
        assert_eq!(cli.release.blue_green.as_deref(), Some("true"));
        assert_eq!(cli.release.flow, ["deploy", "stop-old", "proxy"]);
        assert_eq!(cli.release.scale.as_deref(), Some("-1"));
    }

    #[test]
    fn boolean_flags_take_an_optional_value() {
        let cli = parse(&["--blue-green=false", "-S", "--dry-run", "--json=no"]);
        assert_eq!(cli.release.blue_green.as_deref(), Some("false"));
        assert_eq!(cli.release.pull_side_targets.as_deref(), Some("true"));
        assert_eq!(cli.release.dry_run.as_deref(), Some("true"));
        assert_eq!(cli.release.json.as_deref(), Some("no"));
        let cli = parse(&["-b", "-t", "app"]);
        assert_eq!(cli.release.blue_green.as_deref(), Some("true"));
        assert_eq!(cli.release.target.as_deref(), Some("app"));
    }

    #[test]
    fn service_paths_are_not_split_on_commas() {
        let cli = parse(&["--service-path", "/a{1,2}", "--service-path", "/b"]);
        assert_eq!(cli.release.service_path, ["/a{1,2}", "/b"]);
    }

    #[test]
    fn subcommands_parse() {
        let cli = parse(&[
            "proxy",
            "serve",
            "--bind",
            "127.0.0.1:81",
            "--bind",
            "127.0.0.1:82",
        ]);
        let Some(CommandArgs::Proxy {
            command: ProxyCommandArgs::Serve(flags),
        }) = cli.command
        else {
            panic!("expected proxy serve, got {:?}", cli.command);
        };
        assert_eq!(flags.bind, ["127.0.0.1:81", "127.0.0.1:82"]);
        let cli = parse(&["registrator", "--registry", "consul://127.0.0.1:8500"]);
        assert!(matches!(cli.command, Some(CommandArgs::Registrator(_))));
    }

    #[test]
    fn rollback_and_status_take_the_release_flags_before_or_after_the_word() {
        let cli = parse(&["rollback", "-t", "app", "-b", "-F", "stop-old"]);
        let Some(CommandArgs::Rollback(flags)) = cli.command else {
            panic!("expected rollback, got {:?}", cli.command);
        };
        assert_eq!(flags.target.as_deref(), Some("app"));
        assert_eq!(flags.flow, ["stop-old"]);
        let cli = parse(&["-t", "app", "-b", "status", "--json"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.word.as_deref(), Some("status"));
        assert_eq!(cli.release.target.as_deref(), Some("app"));
        assert_eq!(cli.release.json.as_deref(), Some("true"));
        let cli = parse(&["status", "-t", "app"]);
        assert!(matches!(cli.command, Some(CommandArgs::Status(_))));
    }

    #[test]
    fn release_flags_conflict_with_subcommands() {
        let result = Cli::try_parse_from(["docker-flow", "-t", "app", "proxy", "serve"]);
        assert!(
            result.is_err(),
            "release flags before a subcommand must be refused"
        );
    }

    #[test]
    fn file_keeps_scalar_text_and_accepts_single_item_lists() {
        let file = ParsedFile::parse(
            "target: app\nscale: +2\nblue_green: true\nport: 8080\nflow: deploy\nside_targets: [db, 5]\n",
        )
        .unwrap();
        assert_eq!(file.options.scalar("scale"), Some("+2"));
        assert_eq!(file.options.scalar("blue_green"), Some("true"));
        assert_eq!(file.options.scalar("port"), Some("8080"));
        assert_eq!(file.options.list("flow"), Some(&["deploy".to_string()][..]));
        assert_eq!(
            file.options.list("side_targets"),
            Some(&["db".to_string(), "5".to_string()][..])
        );
        assert_eq!(file.lines["scale"], 2);
        assert!(file.unknown_keys.is_empty());
    }

    #[test]
    fn file_reports_unknown_keys_and_accepts_empty_text() {
        let file = ParsedFile::parse("# nothing\n").unwrap();
        assert!(file.unknown_keys.is_empty());
        let file = ParsedFile::parse("target: app\ncolour: red\n").unwrap();
        assert_eq!(file.unknown_keys, ["colour"]);
    }

    #[test]
    fn file_wrong_type_names_key_and_line() {
        let error = ParsedFile::parse("target: app\nscale: [1]\n").unwrap_err();
        assert!(error.to_string().starts_with("scale: "), "{error}");
        assert_eq!(error.location().map(|l| l.line()), Some(2));
        let error = ParsedFile::parse("flow: {a: 1}\n").unwrap_err();
        assert!(
            error.to_string().contains("a string or a list of strings"),
            "{error}"
        );
    }
}
