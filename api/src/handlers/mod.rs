//! One module per resource.

pub mod cluster;
pub mod debug;
pub mod events;
pub mod jobs;
pub mod system;
pub mod tasks;
