//! Integration tests: the real library and the real binary against the simulator on loopback.
//! One test binary (each file in tests/ would be another crate to link).

mod architecture;
mod blast_radius;
mod cli;
mod crash;
mod credentials;
mod cry_wolf;
mod daemon;
mod exposure;
mod faults;
mod helpers;
mod hostile;
mod hostile_azure;
mod kql;
mod notify;
mod paging;
mod rules;
mod streaming;
mod suppressions;
mod tickets;
mod verdicts;
mod web;
