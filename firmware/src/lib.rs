//! Fixture firmware core for smart toilets, water purifiers and thermostatic showers.
//!
//! `no_std`, no allocator, written against `embedded-hal` 1.0 traits only:
//!
//! - [`ads1115`]: register-level driver for the TI ADS1115 I2C ADC (temperature,
//!   pressure and TDS front ends hang off its four inputs).
//! - [`inputs`]: debounced digital inputs (seat, leak probe) and the flow-meter pulse counter.
//! - [`board`]: samples all inputs into one [`logic::Sample`] with retries, drives valve and heater pins.
//! - [`logic`]: per-model usage-session state machines, counters, heater control, fault detection.
//! - [`fault`]: raise/clear hysteresis.
//! - [`storage`]: counters and boot counter in a checksummed, wear-levelled record.
//! - [`outbox`]: bounded offline queue with a documented drop policy.
//! - [`node`]: identity, `boot_id`/`seq`, persistence, commands, encoding with `serde-json-core`.
//!
//! Time is always an argument (`now_ms`, UTC milliseconds); nothing reads a clock,
//! so the fleet simulator runs this exact code at any speed.
//!
//! # How `no_std` is proven on the host
//! The crate is `#![cfg_attr(not(test), no_std)]` and declares no `alloc`. A plain
//! `cargo build -p firmware` therefore compiles the library exactly as a board would,
//! against `core` only: any `std::` or `alloc::` path, `Vec`/`String`/`Box`/`format!`
//! outside `cfg(test)` fails that build. `tests/no_std_build.rs` (an integration test,
//! compiled without `cfg(test)` on the library) links the library and additionally
//! scans every source file for `std::`/`alloc::`/`extern crate` outside the test
//! modules, so `cargo test -p firmware` fails if either leaks in. The dependency
//! graph is `core`-only as well: `protocol` without its `std` feature, `heapless`,
//! `serde` without default features, `serde-json-core` without default features.
//! A cross build for a real target (`--target thumbv7em-none-eabihf`) would be the
//! final proof; the target is not installed on this machine.
#![cfg_attr(not(test), no_std)]

pub mod ads1115;
pub mod board;
pub mod fault;
pub mod inputs;
pub mod logic;
pub mod node;
pub mod outbox;
pub mod storage;

pub use logic::{Config, Demand, Fixture, Outputs, Sample};
pub use node::Node;
