//! The update engine.
