//! Loading: parse deploy.toml and the environment overlay, merge, interpolate, validate.
