//! ferry api role
