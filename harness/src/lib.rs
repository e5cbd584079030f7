//! The `qdiff` command line (cli.md is the contract): argument parsing, the commands, and the
//! exit-code discipline (0 ran clean, 1 something fell short, 2 could not run).

pub mod bench;
pub mod casefile;
pub mod cases;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod exec;
pub mod fuzz;
pub mod meta;
pub mod modeleval;
pub mod selection;
pub mod tensor_io;
pub mod worst;

use std::process::ExitCode;

/// Exit codes of cli.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Ran; nothing fell short.
    Clean = 0,
    /// Ran; something fell short (a mismatch, a crash, a regression).
    FellShort = 1,
    /// Could not run: bad arguments or input.
    CouldNotRun = 2,
}

/// Parse `std::env::args`, run, print any error as one line on stderr, and map to an exit code.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    ExitCode::from(run(&args, &mut out, &mut err) as u8)
}

/// Run the command line `args` (including the program name), writing results to `out` and
/// diagnostics to `err` (an error is one line: `qdiff: error: ...`).
pub fn run(args: &[String], out: &mut dyn std::io::Write, err: &mut dyn std::io::Write) -> Exit {
    use clap::Parser;
    let parsed = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let (code, text) = if e.use_stderr() {
                (Exit::CouldNotRun, e.render().to_string())
            } else {
                (Exit::Clean, e.render().to_string())
            };
            if code == Exit::Clean {
                let _ = write!(out, "{text}");
            } else {
                let _ = write!(err, "{text}");
            }
            return code;
        }
    };
    match commands::dispatch(parsed, out) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => Exit::Clean,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(err, "qdiff: error: {msg}");
            Exit::CouldNotRun
        }
    }
}

/// A closed stdout (`qdiff ... | head`) is not an error worth a message.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
