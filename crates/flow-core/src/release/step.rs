//! The steps of an invocation (`--flow`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One step of an invocation, run in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Start the target in the idle colour (or as fresh instances without blue-green),
    /// health-gate it, switch the proxy when one is configured, and commit.
    Deploy,
    /// Scale the live group to the computed count (a no-op after a `deploy` of the same
    /// invocation, which already started that many).
    Scale,
    /// Stop (keep) the previous colour's instances, draining them first when a proxy is set.
    StopOld,
    /// Point the proxy at the live colour.
    Proxy,
    /// Make the previous release live again: its instances health-checked (restarted when
    /// stopped, recreated from its stored spec when gone), the proxy switched, the state
    /// committed. The release it replaces keeps running until `stop-old`.
    Rollback,
}

/// A `--flow` value that names no step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown step {value:?}: use deploy, scale, stop-old, proxy or rollback")]
pub struct UnknownStep {
    /// The rejected text.
    pub value: String,
}

impl Step {
    /// Every step, in the order the help lists them.
    pub const ALL: [Step; 5] = [
        Step::Deploy,
        Step::Scale,
        Step::StopOld,
        Step::Proxy,
        Step::Rollback,
    ];

    /// The step's name as written in `--flow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Deploy => "deploy",
            Step::Scale => "scale",
            Step::StopOld => "stop-old",
            Step::Proxy => "proxy",
            Step::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Step {
    type Err = UnknownStep;

    /// Case-insensitive, as 1.x users wrote `-F Deploy` at times; unknown names are refused
    /// (1.x ignored them silently).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "deploy" => Ok(Step::Deploy),
            "scale" => Ok(Step::Scale),
            "stop-old" | "stop_old" => Ok(Step::StopOld),
            "proxy" => Ok(Step::Proxy),
            "rollback" => Ok(Step::Rollback),
            _ => Err(UnknownStep {
                value: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_case_insensitively_and_refuse_unknown_names() {
        assert_eq!("Deploy".parse(), Ok(Step::Deploy));
        assert_eq!("STOP-OLD".parse(), Ok(Step::StopOld));
        assert_eq!(" proxy ".parse(), Ok(Step::Proxy));
        let error = "deploi".parse::<Step>().unwrap_err();
        assert!(error
            .to_string()
            .contains("deploy, scale, stop-old, proxy or rollback"));
        for step in Step::ALL {
            assert_eq!(step.to_string().parse(), Ok(step));
        }
    }

    #[test]
    fn steps_serialize_as_flow_spells_them() {
        for step in Step::ALL {
            let json = serde_json::to_string(&step).unwrap();
            assert_eq!(json, format!("\"{}\"", step.as_str()));
            assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), step);
        }
    }
}
