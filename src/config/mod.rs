//! Configuration: raw serde structs from TOML + `JOBWATCH_` env, validated
//! into a typed [`Config`].

/// A configuration error naming the offending key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
