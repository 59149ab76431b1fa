//! Shared test support (work in progress).
