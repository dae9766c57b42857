//! Docker Flow 1.x's key layout, shared by every key-value [`Registry`](crate::Registry)
//! backend (Consul, etcd).
//!
//! Release state of service `S` lives under the prefix `docker-flow/S/`:
//!
//! | key | value |
//! |---|---|
//! | `docker-flow/S/color` | `blue` / `green`, plain text |
//! | `docker-flow/S/scale` | decimal instance count, plain text |
//! | `docker-flow/S/release` | JSON of [`ReleaseState::last_release`](crate::ReleaseState) |
//! | `docker-flow/S/previous-release` | JSON of [`ReleaseState::previous_release`](crate::ReleaseState) |
//! | `docker-flow/S/revision` | a fixed note; only the backend's modification index matters |
//! | `docker-flow/S/lock` | JSON [`LockRecord`] `{holder, since_ms, expires_ms}` |
//!
//! `color` and `scale` are exactly what Docker Flow 1.x writes, so a service released by 1.x
//! is read as its current state and taken over by the next release; every key-value backend
//! uses this one layout so that the same keys mean the same thing whichever registry holds
//! them. An absent key is an absent field; a present value that cannot be read back is
//! [`RegistryError::Corrupt`] naming the key, never a default.
//!
//! This module does no I/O: it names the keys and encodes and decodes their values; each
//! backend reads and writes them with its own transactions.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Color, LockHolder, RegistryError, ReleaseRecord, ReleaseState, ServiceName};

/// The keys of one service's release state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKeys {
    /// `docker-flow/S/`, the prefix of every key below.
    pub prefix: String,
    /// `docker-flow/S/color`: the live colour.
    pub color: String,
    /// `docker-flow/S/scale`: the instance count.
    pub scale: String,
    /// `docker-flow/S/release`: the last release record.
    pub release: String,
    /// `docker-flow/S/previous-release`: the record of the release before it.
    pub previous_release: String,
    /// `docker-flow/S/revision`: the key whose modification index is the state's revision.
    pub revision: String,
    /// `docker-flow/S/lock`: the deploy lock.
    pub lock: String,
}

impl ServiceKeys {
    /// The keys of `service`.
    pub fn new(service: &ServiceName) -> ServiceKeys {
        let prefix = format!("docker-flow/{service}/");
        ServiceKeys {
            color: format!("{prefix}color"),
            scale: format!("{prefix}scale"),
            release: format!("{prefix}release"),
            previous_release: format!("{prefix}previous-release"),
            revision: format!("{prefix}revision"),
            lock: format!("{prefix}lock"),
            prefix,
        }
    }

    /// What storing `state` writes: the `color`, `scale`, `release` and `previous-release`
    /// keys, in that order, each with its value, or `None` where the field is absent and the
    /// key is to be deleted.
    pub fn values_of(&self, state: &ReleaseState) -> [(&str, Option<String>); 4] {
        let record = |record: &Option<ReleaseRecord>| {
            record
                .as_ref()
                .map(|record| serde_json::to_string(record).expect("a release record serializes"))
        };
        [
            (
                &self.color,
                state.color.map(|color| color.as_str().to_string()),
            ),
            (&self.scale, state.scale.map(|scale| scale.to_string())),
            (&self.release, record(&state.last_release)),
            (&self.previous_release, record(&state.previous_release)),
        ]
    }

    /// The inverse of [`ServiceKeys::values_of`]: reads the value stored at `key` into `state`
    /// when `key` is the `color`, `scale`, `release` or `previous-release` key, and leaves
    /// `state` alone for any other key. `text` gives the stored value; it is asked for only for
    /// those four keys,
    /// so a backend decodes no other value.
    pub fn read_into(
        &self,
        state: &mut ReleaseState,
        key: &str,
        text: impl FnOnce() -> Result<String, RegistryError>,
    ) -> Result<(), RegistryError> {
        if key == self.color {
            state.color = Some(parse_color(key, &text()?)?);
        } else if key == self.scale {
            state.scale = Some(parse_scale(key, &text()?)?);
        } else if key == self.release {
            state.last_release = Some(parse_record(key, &text()?)?);
        } else if key == self.previous_release {
            state.previous_release = Some(parse_record(key, &text()?)?);
        }
        Ok(())
    }
}

/// [`RegistryError::Corrupt`] for the `value` found at `key`, saying what is wrong with it.
pub fn corrupt(key: &str, value: &str, reason: impl fmt::Display) -> RegistryError {
    RegistryError::Corrupt {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The value of the lock key: who holds the lock, since when, and until when.
///
/// The times are wall-clock milliseconds since the Unix epoch. `expires_ms` is the lease's
/// own deadline: backends' native expiry (Consul sessions, etcd leases) is coarser or later
/// than the [`Registry`](crate::Registry) contract allows, so a lock past this deadline counts
/// as lost whatever the backend still says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Who holds the lock, as given to `lock`.
    pub holder: String,
    /// When the lock was taken.
    pub since_ms: u64,
    /// When the lock ends unless renewed before.
    pub expires_ms: u64,
}

impl LockRecord {
    /// The record of a lock `holder` took at `acquired_at`, ending `ttl` from now.
    pub fn new(holder: &str, acquired_at: SystemTime, ttl: Duration) -> LockRecord {
        LockRecord {
            holder: holder.to_string(),
            since_ms: unix_ms(acquired_at),
            expires_ms: deadline_ms(ttl),
        }
    }

    /// The same lock, renewed: it now ends `ttl` from now.
    pub fn renewed(self, ttl: Duration) -> LockRecord {
        LockRecord {
            expires_ms: deadline_ms(ttl),
            ..self
        }
    }

    /// When the lock was taken.
    pub fn since(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.since_ms)
    }

    /// Whether the lock's deadline has passed.
    pub fn expired(&self) -> bool {
        unix_ms(SystemTime::now()) >= self.expires_ms
    }

    /// Who holds the lock, or `None` once its deadline has passed (a holder that stopped
    /// renewing holds nothing).
    pub fn live_holder(self) -> Option<LockHolder> {
        (!self.expired()).then(|| LockHolder {
            since: self.since(),
            holder: self.holder,
        })
    }

    /// The record as stored in the lock key (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a lock record serializes")
    }
}

/// Reads the lock record stored at `key`.
pub fn parse_lock(key: &str, text: &str) -> Result<LockRecord, RegistryError> {
    serde_json::from_str(text).map_err(|e| corrupt(key, text, e))
}

/// Reads the colour stored at `key` (`blue` or `green`).
pub fn parse_color(key: &str, text: &str) -> Result<Color, RegistryError> {
    text.parse::<Color>().map_err(|e| corrupt(key, text, e))
}

/// Reads the instance count stored at `key` (decimal text; surrounding whitespace is
/// ignored, as 1.x may write a newline after it).
pub fn parse_scale(key: &str, text: &str) -> Result<u32, RegistryError> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| corrupt(key, text, "not a whole number of instances"))
}

/// Reads the release record stored at `key` (JSON).
pub fn parse_record(key: &str, text: &str) -> Result<ReleaseRecord, RegistryError> {
    serde_json::from_str(text).map_err(|e| corrupt(key, text, e))
}

/// Milliseconds since the Unix epoch (0 for a time before it).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wall-clock deadline `ttl` from now, in [`unix_ms`].
fn deadline_ms(ttl: Duration) -> u64 {
    unix_ms(SystemTime::now()).saturating_add(ttl.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt_key(error: RegistryError) -> String {
        match error {
            RegistryError::Corrupt { key, .. } => key,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn keys_follow_docker_flow_1_layout() {
        let keys = ServiceKeys::new(&ServiceName::new("shop-web").unwrap());
        assert_eq!(keys.prefix, "docker-flow/shop-web/");
        assert_eq!(keys.color, "docker-flow/shop-web/color");
        assert_eq!(keys.scale, "docker-flow/shop-web/scale");
        assert_eq!(keys.release, "docker-flow/shop-web/release");
        assert_eq!(keys.revision, "docker-flow/shop-web/revision");
        assert_eq!(keys.lock, "docker-flow/shop-web/lock");
    }

    #[test]
    fn stored_values_read_back_and_absent_fields_delete_their_keys() {
        let keys = ServiceKeys::new(&ServiceName::new("shop-web").unwrap());
        let state = ReleaseState {
            color: Some(Color::Blue),
            scale: Some(2),
            last_release: None,
            previous_release: None,
        };
        let [color, scale, release, previous] = keys.values_of(&state);
        assert_eq!(color, (keys.color.as_str(), Some("blue".to_string())));
        assert_eq!(scale, (keys.scale.as_str(), Some("2".to_string())));
        assert_eq!(release, (keys.release.as_str(), None));
        assert_eq!(previous, (keys.previous_release.as_str(), None));
        assert_eq!(
            parse_color(color.0, &color.1.unwrap()).unwrap(),
            Color::Blue
        );
        assert_eq!(parse_scale(scale.0, &scale.1.unwrap()).unwrap(), 2);
    }

    #[test]
    fn values_written_by_1x_are_read() {
        assert_eq!(parse_color("k", "green").unwrap(), Color::Green);
        assert_eq!(parse_scale("k", "3\n").unwrap(), 3);
    }

    #[test]
    fn unreadable_values_are_corrupt_naming_the_key() {
        assert_eq!(corrupt_key(parse_color("c", "purple").unwrap_err()), "c");
        assert_eq!(corrupt_key(parse_scale("s", "-1").unwrap_err()), "s");
        assert_eq!(corrupt_key(parse_record("r", "{").unwrap_err()), "r");
        assert_eq!(corrupt_key(parse_lock("l", "null").unwrap_err()), "l");
    }

    #[test]
    fn lock_records_keep_their_stored_field_names() {
        let stored = r#"{"holder":"ci","since_ms":5,"expires_ms":7}"#;
        let record = parse_lock("l", stored).unwrap();
        assert_eq!(record.holder, "ci");
        assert_eq!(record.since(), UNIX_EPOCH + Duration::from_millis(5));
        assert!(record.expired());
        assert_eq!(record.to_json(), stored);
    }

    #[test]
    fn a_new_lock_lives_until_its_ttl_and_a_renewal_keeps_holder_and_since() {
        let acquired_at = SystemTime::now();
        let record = LockRecord::new("ci", acquired_at, Duration::from_secs(60));
        assert!(!record.expired());
        assert_eq!(record.since_ms, unix_ms(acquired_at));
        let renewed = record.clone().renewed(Duration::ZERO);
        assert!(renewed.expired());
        assert_eq!(
            (renewed.holder, renewed.since_ms),
            (record.holder, record.since_ms)
        );
    }

    #[test]
    fn read_into_reads_back_what_values_of_writes_and_ignores_other_keys() {
        let keys = ServiceKeys::new(&ServiceName::new("shop-web").unwrap());
        let written = ReleaseState {
            color: Some(crate::Color::Green),
            scale: Some(3),
            last_release: None,
            previous_release: Some(crate::ReleaseRecord {
                color: Some(crate::Color::Blue),
                image: "web:1".into(),
                scale: 2,
                released_at: UNIX_EPOCH + Duration::from_secs(5),
                released_by: "ci".into(),
                spec: Some(crate::ReleaseSpec::new(
                    "web:1",
                    "sha256:1",
                    Default::default(),
                )),
            }),
        };
        let mut read = ReleaseState::default();
        for (key, value) in keys.values_of(&written) {
            if let Some(value) = value {
                keys.read_into(&mut read, key, || Ok(value.clone()))
                    .unwrap();
            }
        }
        assert_eq!(read, written);
        // The lock and revision keys are not state: their values are never asked for.
        for other in [&keys.lock, &keys.revision] {
            keys.read_into(&mut read, other, || panic!("{other} was decoded"))
                .unwrap();
        }
        let error = keys
            .read_into(&mut read, &keys.color, || Ok("purple".into()))
            .unwrap_err();
        assert!(matches!(error, RegistryError::Corrupt { ref key, .. } if *key == keys.color));
    }
}
