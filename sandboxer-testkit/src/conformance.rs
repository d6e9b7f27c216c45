//! The extension conformance suite (being written).
