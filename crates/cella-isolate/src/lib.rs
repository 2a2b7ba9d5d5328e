//! Kernel primitives for isolation.
