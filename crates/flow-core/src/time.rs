//! Small helpers for times and durations as text, without a date crate: RFC 3339 instants,
//! human durations for people, Go durations for configuration ([`go_duration`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod go_duration;

/// `2026-11-28T04:48:51Z (12s ago)`-style text for a past instant.
pub fn describe(at: SystemTime) -> String {
    let ago = SystemTime::now()
        .duration_since(at)
        .map(|d| format!(" ({} ago)", human(d)))
        .unwrap_or_default();
    format!("{}{}", rfc3339(at), ago)
}

/// A short human duration: `850ms`, `12.3s`, `4m05s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// UTC RFC 3339 text of an instant, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses the UTC form [`rfc3339`] writes (`2026-11-28T04:48:51Z`, optional fraction).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time_parts = time.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (
        time_parts.next()??,
        time_parts.next()??,
        time_parts.next()??,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(9).collect();
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    let days = u64::try_from(days_from_civil(y, m as u32, d as u32)).ok()?;
    Some(UNIX_EPOCH + Duration::new(days * 86_400 + hh * 3600 + mm * 60 + ss, nanos))
}

/// Serde for [`SystemTime`] as RFC 3339 UTC text, so stored records read well in a file,
/// `etcdctl get` or Consul's UI.
pub mod rfc3339_serde {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `at` as RFC 3339 UTC text, with as many fraction digits as it needs (none for a
    /// whole second, up to nanoseconds), so that every instant reads back exactly.
    pub fn serialize<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let nanos = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let text = super::rfc3339(*at);
        let text = if nanos == 0 {
            text
        } else {
            let fraction = format!("{nanos:09}");
            format!(
                "{}.{}Z",
                text.trim_end_matches('Z'),
                fraction.trim_end_matches('0')
            )
        };
        serializer.serialize_str(&text)
    }

    /// Reads RFC 3339 UTC text.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_rfc3339(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not an RFC 3339 UTC time (2026-11-28T04:48:51Z)"
            ))
        })
    }
}

/// A civil date to days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_engine_timestamps() {
        // The engine writes nanoseconds, and the zero time for "never started".
        let parsed = parse_rfc3339("2026-11-28T05:01:02.123456789Z").unwrap();
        let since_epoch = parsed.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(since_epoch.as_secs(), 1_795_842_062);
        assert_eq!(since_epoch.subsec_nanos(), 123_456_789);
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_841_331)),
            "2026-11-28T04:48:51Z"
        );
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
    }

    #[test]
    fn serde_round_trips_every_instant_exactly() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Record {
            #[serde(with = "rfc3339_serde")]
            at: SystemTime,
        }
        for at in [
            UNIX_EPOCH + Duration::new(1_795_841_331, 0),
            UNIX_EPOCH + Duration::new(1_795_841_331, 842_810_423),
            UNIX_EPOCH + Duration::new(1_795_841_331, 250_000_000),
            SystemTime::now(),
        ] {
            let record = Record { at };
            let text = serde_json::to_string(&record).unwrap();
            assert_eq!(
                serde_json::from_str::<Record>(&text).unwrap(),
                record,
                "{text}"
            );
        }
        let text = serde_json::to_string(&Record {
            at: UNIX_EPOCH + Duration::new(1_795_841_331, 250_000_000),
        })
        .unwrap();
        assert_eq!(text, r#"{"at":"2026-11-28T04:48:51.25Z"}"#);
    }

    #[test]
    fn parses_what_it_writes() {
        for secs in [0u64, 951_782_400, 1_795_841_331, 4_102_444_799] {
            let at = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(at)), Some(at), "{}", rfc3339(at));
        }
        assert_eq!(
            parse_rfc3339("2026-11-28T04:48:51.250Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_795_841_331_250))
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T04:48:51",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
