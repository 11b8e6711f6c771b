//! The stream engine: what a stream job computes, without I/O (no sockets, no Raft, no clock),
//! like `model/` for tasks — so that it is tested and benchmarked alone. Sources, sinks and the
//! runner that places, checkpoints and moves a job live in `actors`.
//!
//! # Layout
//! - [`spec`]: the pipeline as users write it (API.md "Stream jobs"), checked into steps;
//!   errors name the field.
//! - [`expr`]: `filter` and `map` expressions in CEL.
//! - [`job`]: a whole job definition (source, time, pipeline, sink, checkpoint interval), checked;
//!   file paths confined to the node's stream directory.
//! - [`agg`]: incremental aggregates (count … p99) and their accumulators.
//! - [`window`]: tumbling, sliding and session windows per key, closed by the watermark.
//! - [`engine`]: [`Pipeline`], records in, results out, checkpoints.
//! - `tests` (private): a sensor run against a reference computed by hand.

pub mod agg;
pub mod engine;
pub mod expr;
pub mod job;
pub mod spec;
pub mod window;

pub use engine::{CheckpointError, Counters, Output, Pipeline};
pub use job::{JobDef, SinkDef, SourceDef};
pub use spec::{pipeline, SpecError, Step, TimeSpec};

#[cfg(test)]
mod tests;
