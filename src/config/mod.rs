//! Configuration: the typed schema and the loader that merges, interpolates and validates it.

pub mod load;
pub mod schema;

pub use schema::*;
