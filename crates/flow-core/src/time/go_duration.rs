//! Go duration text (`10s`, `1m30s`, `1.5s`, `250ms`): the form Consul uses for TTLs, check
//! intervals and timeouts in its JSON, Compose for its durations, and registrator's
//! `SERVICE_CHECK_*` variables and flags. One parser for all of them.

use std::time::Duration;

/// A text that is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a duration: expected a Go duration such as \"10s\", \"1m30s\" or \"250ms\""
)]
pub struct InvalidDuration {
    /// The rejected text.
    pub value: String,
}

/// Parses a Go duration (`time.ParseDuration`): one or more `<decimal><unit>` parts with units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; `0` alone is zero. Negative durations are rejected.
pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration {
        value: text.to_string(),
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total_nanos: f64 = 0.0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total_nanos += number * nanos_per_unit;
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Go duration text (Consul accepts it): whole seconds as `Ns`, anything finer as `Nms`.
pub fn format(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_consul_writes() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("").is_err());
        assert!(parse("10").is_err());
        assert!(parse("ten s").is_err());
        assert!(parse("-5s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for d in [Duration::from_secs(15), Duration::from_millis(1500)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
