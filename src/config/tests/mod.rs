//! Tests of config parsing: valid files (defaults, paths) in `valid`, every kind of
//! error with its exact line and key in `errors`.

mod errors;
mod mcs;
mod thingsboard;
mod valid;

use std::path::Path;

use super::{Config, ConfigError};

const PATH: &str = "/etc/fota-agent/config.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:#?}\nfor:\n{text}"),
        Err(e) => e,
    }
}
