//! Proof that `std` and `alloc` stay out of the firmware library.
//!
//! Integration tests link the library as it is built for a board: *without*
//! `cfg(test)`, so `#![no_std]` is in force and any `std::`/`alloc::` use would
//! already have failed that build. This test adds a source scan, so that an
//! `extern crate std;` or `extern crate alloc;` (which would make such paths
//! compile again) is caught too, and checks the crate attribute itself.

use std::fs;
use std::path::Path;

/// Files that are only ever compiled under `cfg(test)` (included by `#[cfg(test)] #[path]`).
const TEST_ONLY: [&str; 2] = ["logic_tests.rs", "node_tests.rs"];

#[test]
fn library_is_no_std_outside_tests() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("#![cfg_attr(not(test), no_std)]"),
        "lib.rs must be no_std outside tests"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut scanned = 0;
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".rs") || TEST_ONLY.contains(&name.as_str()) {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        // Everything from the first `#[cfg(test)]` on is test code (each file keeps its tests last).
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (i, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for banned in [
                "std::",
                "alloc::",
                "extern crate",
                "Box<",
                "String::from",
                "format!",
                "vec!",
                "println!",
            ] {
                assert!(
                    !line.contains(banned),
                    "{name}:{}: `{banned}` outside cfg(test): {line}",
                    i + 1
                );
            }
        }
        scanned += 1;
    }
    assert!(scanned >= 8, "scanned only {scanned} files");
}

#[test]
fn the_library_links_without_cfg_test() {
    // Uses the library from outside: this crate was compiled with `#![no_std]` in force.
    let cfg = firmware::Config::for_model(protocol::message::Model::Toilet);
    assert_eq!(cfg.heater_setpoint_mc, 38_000);
}
