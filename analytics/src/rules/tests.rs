//! Unit tests of the fault rules: hand-made message sequences.
