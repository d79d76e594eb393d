//! The contract of the identity service (being written).
