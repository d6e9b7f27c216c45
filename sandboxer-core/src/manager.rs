//! The manager (being written).
