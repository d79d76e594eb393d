//! The contract of the basket service (being written).
