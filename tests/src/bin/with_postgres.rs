//! `with-postgres -- <command> [args…]`: starts a throw-away PostgreSQL 15 on a free loopback
//! port (as the `postgres` user, in a temporary directory; `e2e_tests::cluster::Postgres`),
//! runs the command with `MAINTENANCE_TEST_POSTGRES` set to its URL, stops the server and exits
//! with the command's status. `scripts/test` uses it to run the maintenance crate's own tests
//! on PostgreSQL: `with-postgres -- cargo test -p maintenance`.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use e2e_tests::cluster::Postgres;

fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1).skip_while(|a| a == "--");
    let Some(program) = args.next() else {
        bail!("usage: with-postgres -- <command> [args…]");
    };
    let pg = Postgres::start().context("starting PostgreSQL (is postgresql 15 installed?)")?;
    eprintln!(
        "[with-postgres] PostgreSQL on {}; running {program}",
        pg.url()
    );
    let status = Command::new(&program)
        .args(args)
        .env("MAINTENANCE_TEST_POSTGRES", pg.url())
        .status()
        .with_context(|| format!("running {program}"))?;
    drop(pg);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
