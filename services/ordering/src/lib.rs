//! The ordering service (being written).
