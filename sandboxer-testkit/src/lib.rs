//! Test fixtures shared by sandboxer's crates: the extension conformance
//! suite every extension and layer runs ([`conformance`]), and discovery of
//! the real components the testbed script started ([`testbed`]).

pub mod conformance;
pub mod e2b_sdk;
pub mod home;
pub mod net;
pub mod pg;
pub mod stats;
pub mod testbed;
pub mod wait;
