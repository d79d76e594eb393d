//! The basket service (being written).
