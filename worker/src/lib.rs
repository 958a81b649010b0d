//! ferry worker role
