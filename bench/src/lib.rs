//! Shared pieces of EnigmaDB's benchmark programs (`src/bin/*`): latency histograms and their
//! summaries, CPU and disk counters of the machine, a description of the machine, and JSON
//! report writing.
//!
//! Benchmarks print numbers and write reports; nothing here asserts a performance figure.

/// The benchmark programs allocate like the server they measure (src/main.rs): with mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod latency;
pub mod machine;
pub mod pipeline;
pub mod rendezvous;
pub mod report;
pub mod server;
pub mod surge;
pub mod usage;
