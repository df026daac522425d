//! `Engine` over bollard.

/// Connection to a Docker Engine.
pub struct DockerEngine {}
