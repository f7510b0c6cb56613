//! Test harness for end-to-end tests (services started on free loopback ports).
