//! One module per resource.

pub mod admin;
pub mod cluster;
pub mod dashboard;
pub mod debug;
pub mod events;
pub mod jobs;
pub mod modules;
pub mod streams;
pub mod system;
pub mod tasks;
