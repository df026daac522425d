//! Configuration: the typed schema and the loader that merges, interpolates and validates it.

mod interpolate;
pub mod load;
pub mod read;
pub mod schema;
mod tree;
mod validate;

pub use load::*;
pub use schema::*;
