//! Host network peer for the `ping` experiments (being written).
