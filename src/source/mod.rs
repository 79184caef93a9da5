//! Firmware sources.
