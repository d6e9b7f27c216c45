//! Testbed discovery (being written).
