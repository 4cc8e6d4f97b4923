//! The demo catalog service.
