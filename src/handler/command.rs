//! The command handler.
