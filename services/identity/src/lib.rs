//! The identity service (being written).
