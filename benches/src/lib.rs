//! Shoal's load benchmarks: the `host` binary measured from the outside,
//! beside a native hyper server and `wasmtime serve` on the same machine and
//! in the same run.
//!
//! `benches/run` builds everything and starts the `bench` binary, which runs
//! the sections one after the other and writes `benches/results.md`:
//! 1. [`throughput`]: warm requests per second and latency under `wrk`;
//! 2. [`cold_start`]: request-to-first-byte of a function scaled to zero;
//! 3. [`density`]: start-up time and memory with up to 10,000 functions;
//! 4. [`reload`]: from a rebuilt component file to its first answer;
//! 5. [`upload`]: from an upload to the admin API to its first answer;
//! 6. [`idle`]: a host at rest, its CPU and wake-ups, and its first answer
//!    after a quiet spell, beside native hyper;
//! 7. [`targets`]: the project's targets beside what was measured.
//!
//! Servers run pinned to one CPU ([`plan::SERVER_CPU`]); load generators and
//! this harness run on the other ([`plan::CLIENT_CPU`]).
#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod cold_start;
pub mod density;
pub mod idle;
pub mod machine;
pub mod manifest;
pub mod native;
pub mod plan;
pub mod proc_stats;
pub mod process;
pub mod reload;
pub mod report;
pub mod section;
pub mod servers;
pub mod stats;
pub mod targets;
pub mod throughput;
pub mod upload;
pub mod wrk;
