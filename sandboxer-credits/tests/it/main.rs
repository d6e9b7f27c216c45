//! One integration test binary for sandboxer-credits.

mod layer;
mod ledger;
