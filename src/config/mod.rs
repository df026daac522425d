//! Configuration: the typed schema and the loader that merges, interpolates and validates it.

pub mod schema;

pub use schema::*;
