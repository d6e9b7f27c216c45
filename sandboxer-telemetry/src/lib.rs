//! Telemetry and canary (being written).
