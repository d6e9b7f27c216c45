//! Host transports (being written).
