//! The `docker-flow` command line: parsing and validating what the user asked for.
//!
//! Arguments go through two stages, so that every rule about options lives in one place:
//!
//! 1. [`args`] holds the raw inputs as given: clap's flags and the text values of
//!    `docker-flow.yml`. Nothing is interpreted there.
//! 2. [`config`] layers them with the environment (defaults < yml < env < flags), parses
//!    every value with one parser per type, checks the combinations, and returns either a
//!    validated [`config::Command`] or a [`config::ConfigError`] that names the option and
//!    the fix.
//!
//! The binary only has to call [`config::load`] and run the command it gets.

#![deny(missing_docs)]

pub mod args;
pub mod compose_config;
pub mod config;
pub mod diagnostics;
pub mod exit;
pub mod json;
pub mod manual;
pub mod output;
pub mod progress;
pub mod release;
pub mod serve;
pub mod status;
pub mod timed;
pub mod version;
