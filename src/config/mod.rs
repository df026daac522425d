//! Configuration: the typed schema and the loader that merges, interpolates and validates it.

mod de;
mod envfile;
mod interpolate;
mod listen;
pub mod load;
mod located;
mod notify;
mod rules;
pub mod schema;
mod tree;
mod units;
mod validate;

pub use load::*;
pub use schema::*;
