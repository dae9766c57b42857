//! Domain types shared by every port and by the release engine.
//!
//! They carry no I/O and validate on construction, so an adapter that receives a
//! [`ServiceName`] or a [`ScaleSpec`] never has to re-check it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One of the two slots of a blue-green release.
///
/// The stored colour names the live slot; a release always goes into the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// The first colour released for a new service.
    Blue,
    /// The colour an absent stored colour stands for (so the first release is blue).
    Green,
}

impl Color {
    /// The other colour.
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// The colour the next blue-green release goes into, given the live one.
    ///
    /// Docker Flow 1.x treated an absent colour as green, so the first release is blue;
    /// we keep that so state written by 1.x is taken over unchanged.
    pub fn next_after(live: Option<Color>) -> Color {
        live.unwrap_or(Color::Green).other()
    }

    /// `"blue"` or `"green"`, as stored under `docker-flow/<service>/color`.
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not `blue` or `green`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a colour: expected \"blue\" or \"green\"")]
pub struct ParseColorError {
    /// The rejected text.
    pub value: String,
}

impl FromStr for Color {
    type Err = ParseColorError;

    /// Accepts exactly `blue` or `green` (surrounding white space is ignored, as 1.x wrote a
    /// trailing newline at times). Anything else is an error, never a silent default.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            _ => Err(ParseColorError {
                value: s.to_string(),
            }),
        }
    }
}

/// The name a service is known by in the registry and the proxy: `<project>-<target>`.
///
/// Restricted to ASCII letters, digits, `-`, `_` and `.`, so it is safe as a registry key
/// segment, a container-name prefix and an HAProxy identifier without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

/// A service name with characters that are not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid service name {value:?}: use 1 to 200 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit")]
pub struct InvalidServiceName {
    /// The rejected text.
    pub value: String,
}

impl ServiceName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidServiceName> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 200
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(ServiceName(name))
        } else {
            Err(InvalidServiceName { value: name })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The registry name of one colour's instances: `<service>-<color>` (1.x's `SERVICE_NAME`).
    pub fn colored(&self, color: Color) -> String {
        format!("{}-{}", self.0, color)
    }

    /// The registry name of a group's instances: coloured in blue-green mode, plain otherwise.
    pub fn instance_name(&self, color: Option<Color>) -> String {
        match color {
            Some(color) => self.colored(color),
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidServiceName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ServiceName::new(value)
    }
}

impl From<ServiceName> for String {
    fn from(value: ServiceName) -> Self {
        value.0
    }
}

/// How many instances a step should leave running: `N`, `+N` or `-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleSpec {
    /// Exactly this many (a result below 1 becomes 1).
    Absolute(u32),
    /// This many more (or fewer) than the stored scale, which defaults to 1.
    Relative(i64),
}

/// A `--scale` value that is not `N`, `+N` or `-N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scale {value:?}: use a whole number N (absolute), +N or -N (relative to the stored scale), e.g. --scale=3 or --scale=+2")]
pub struct InvalidScale {
    /// The rejected text.
    pub value: String,
}

impl ScaleSpec {
    /// The instance count this spec asks for, given the stored scale.
    ///
    /// Relative specs start from the stored scale (1 when none is stored); the result is
    /// never below 1 and saturates at `u32::MAX`.
    pub fn apply(self, stored: Option<u32>) -> u32 {
        let wanted = match self {
            ScaleSpec::Absolute(n) => i64::from(n),
            ScaleSpec::Relative(delta) => i64::from(stored.unwrap_or(1)).saturating_add(delta),
        };
        wanted.clamp(1, i64::from(u32::MAX)) as u32
    }
}

impl FromStr for ScaleSpec {
    type Err = InvalidScale;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidScale {
            value: s.to_string(),
        };
        let digits_only = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        let text = s.trim();
        if let Some(rest) = text.strip_prefix('+') {
            if !digits_only(rest) {
                return Err(invalid());
            }
            rest.parse::<i64>()
                .map(ScaleSpec::Relative)
                .map_err(|_| invalid())
        } else if let Some(rest) = text.strip_prefix('-') {
            if !digits_only(rest) {
                return Err(invalid());
            }
            rest.parse::<i64>()
                .map(|n| ScaleSpec::Relative(-n))
                .map_err(|_| invalid())
        } else if digits_only(text) {
            text.parse::<u32>()
                .map(ScaleSpec::Absolute)
                .map_err(|_| invalid())
        } else {
            Err(invalid())
        }
    }
}

impl fmt::Display for ScaleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleSpec::Absolute(n) => write!(f, "{n}"),
            ScaleSpec::Relative(d) if *d >= 0 => write!(f, "+{d}"),
            ScaleSpec::Relative(d) => write!(f, "{d}"),
        }
    }
}

/// What the registry keeps per service.
///
/// `color` and `scale` are Docker Flow 1.x's keys (`docker-flow/<S>/color`,
/// `docker-flow/<S>/scale`); `last_release` and `previous_release` are ours. A state without
/// them (written by 1.x) still loads: the engine then reads the live spec back from the
/// running instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseState {
    /// The live colour (blue-green services only). `None`: nothing released in colour yet.
    pub color: Option<Color>,
    /// The instance count of the live group. `None`: never stored (counts as 1).
    pub scale: Option<u32>,
    /// The last committed release (the live one), when one was made by this tool.
    pub last_release: Option<ReleaseRecord>,
    /// The release that was live before `last_release` (blue-green: the idle colour's), which
    /// a rollback makes live again.
    #[serde(default)]
    pub previous_release: Option<ReleaseRecord>,
}

/// What a committed release leaves on record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The colour released into (`None` without blue-green).
    pub color: Option<Color>,
    /// The image reference the release started.
    pub image: String,
    /// How many instances it left running.
    pub scale: u32,
    /// When it was committed (stored as RFC 3339 UTC text).
    #[serde(with = "crate::time::rfc3339_serde")]
    pub released_at: SystemTime,
    /// Who committed it (the lock holder text).
    pub released_by: String,
    /// What its instances run. `None` in records written before specs were stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ReleaseSpec>,
}

/// What every instance of a release runs: the image by content id and the resolved container
/// configuration, with a digest of both.
///
/// A colour runs exactly one spec: `scale`, a restart of stopped instances and `rollback`
/// start the stored spec, never what the Compose file resolves to now, so a version changes
/// only by a deploy. The configuration is the orchestrator's own (for Docker, the Compose
/// service after interpolation, key by key), kept opaque here so that this crate needs no
/// knowledge of it beyond comparing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    /// The image reference as written (`web:v2`), for people and for registrations.
    pub image: String,
    /// The image's content id (`sha256:…`): what instances are created from, so that a tag
    /// moved since the release does not change what runs.
    pub image_id: String,
    /// The resolved configuration, by key (`command`, `environment`, `ports`, …).
    pub config: BTreeMap<String, serde_json::Value>,
    /// `sha256:` and the hex SHA-256 of the image id and the configuration.
    pub digest: String,
}

impl ReleaseSpec {
    /// The spec of `image` (content id `image_id`) with `config`, its digest computed.
    pub fn new(
        image: impl Into<String>,
        image_id: impl Into<String>,
        config: BTreeMap<String, serde_json::Value>,
    ) -> ReleaseSpec {
        let image_id = image_id.into();
        let digest = spec_digest(&image_id, &config);
        ReleaseSpec {
            image: image.into(),
            image_id,
            config,
            digest,
        }
    }

    /// Whether the digest matches the image id and configuration (a stored spec edited by
    /// hand or truncated does not).
    pub fn is_intact(&self) -> bool {
        self.digest == spec_digest(&self.image_id, &self.config)
    }

    /// The configuration keys whose values differ between `self` and `other` (present in
    /// one only, or with different values), sorted.
    pub fn changed_keys(&self, other: &BTreeMap<String, serde_json::Value>) -> Vec<String> {
        let keys: BTreeSet<&String> = self.config.keys().chain(other.keys()).collect();
        keys.into_iter()
            .filter(|key| self.config.get(*key) != other.get(*key))
            .cloned()
            .collect()
    }
}

/// The digest of a spec: SHA-256 over the image id and the configuration's JSON (keys sorted
/// by the `BTreeMap`, so the same spec always gives the same text).
fn spec_digest(image_id: &str, config: &BTreeMap<String, serde_json::Value>) -> String {
    let text = serde_json::to_string(&(image_id, config)).expect("a spec serializes");
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A backend's token for compare-and-swap: the version of a stored value.
///
/// Opaque to the engine, which only hands back what it loaded. [`Revision::NONE`] means
/// "nothing stored yet" and makes a store create-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Revision(pub u64);

impl Revision {
    /// Nothing stored yet.
    pub const NONE: Revision = Revision(0);
}

/// A value together with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision, to hand back to a compare-and-swap write.
    pub revision: Revision,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn colours_alternate_and_absent_means_green() {
        assert_eq!(Color::next_after(None), Color::Blue);
        assert_eq!(Color::next_after(Some(Color::Blue)), Color::Green);
        assert_eq!(Color::next_after(Some(Color::Green)), Color::Blue);
        assert_eq!("green\n".parse::<Color>(), Ok(Color::Green));
        assert!("Blue".parse::<Color>().is_err());
        assert!("<html>"
            .parse::<Color>()
            .unwrap_err()
            .to_string()
            .contains("\"blue\" or \"green\""));
    }

    #[test]
    fn service_names_reject_what_would_break_keys_or_configs() {
        assert!(ServiceName::new("demo-app_1.2").is_ok());
        for bad in [
            "",
            "-app",
            "a b",
            "a/b",
            "a#b",
            "a\"b",
            "a\nb",
            &"x".repeat(201),
        ] {
            assert!(ServiceName::new(bad).is_err(), "{bad:?} accepted");
        }
        let name = ServiceName::new("demo-app").unwrap();
        assert_eq!(name.colored(Color::Blue), "demo-app-blue");
        assert_eq!(name.instance_name(None), "demo-app");
    }

    #[test]
    fn scale_specs_parse_and_refuse_clearly() {
        assert_eq!("3".parse(), Ok(ScaleSpec::Absolute(3)));
        assert_eq!("+2".parse(), Ok(ScaleSpec::Relative(2)));
        assert_eq!("-10".parse(), Ok(ScaleSpec::Relative(-10)));
        for bad in [
            "",
            "+",
            "-",
            "two",
            "+-1",
            "1.5",
            "3x",
            "++1",
            "99999999999",
        ] {
            let error = bad.parse::<ScaleSpec>().unwrap_err();
            assert!(error.to_string().contains("+N or -N"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn scale_examples_from_the_reference() {
        assert_eq!(ScaleSpec::Relative(2).apply(None), 3);
        assert_eq!(ScaleSpec::Relative(-10).apply(Some(3)), 1);
        assert_eq!(ScaleSpec::Absolute(0).apply(Some(5)), 1);
        assert_eq!(ScaleSpec::Absolute(4).apply(Some(9)), 4);
    }

    proptest! {
        #[test]
        fn scale_is_never_below_one(spec in any_spec(), stored in proptest::option::of(0u32..10_000)) {
            prop_assert!(spec.apply(stored) >= 1);
        }

        #[test]
        fn relative_scale_adds_to_the_stored_scale(delta in -20_000i64..20_000, stored in proptest::option::of(1u32..10_000)) {
            let expected = (i64::from(stored.unwrap_or(1)) + delta).max(1);
            prop_assert_eq!(i64::from(ScaleSpec::Relative(delta).apply(stored)), expected);
        }

        #[test]
        fn absolute_scale_ignores_the_stored_scale(n in 1u32..100_000, stored in proptest::option::of(any::<u32>())) {
            prop_assert_eq!(ScaleSpec::Absolute(n).apply(stored), n);
        }

        #[test]
        fn display_parses_back(spec in any_spec()) {
            prop_assert_eq!(spec.to_string().parse::<ScaleSpec>(), Ok(spec));
        }

        #[test]
        fn relative_extremes_saturate(delta in any::<i64>(), stored in proptest::option::of(any::<u32>())) {
            let result = ScaleSpec::Relative(delta).apply(stored);
            prop_assert!(result >= 1);
        }
    }

    fn any_spec() -> impl Strategy<Value = ScaleSpec> {
        prop_oneof![
            any::<u32>().prop_map(ScaleSpec::Absolute),
            (-1_000_000_000i64..1_000_000_000).prop_map(ScaleSpec::Relative),
        ]
    }
}
