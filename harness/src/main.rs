//! The `qdiff` binary: everything lives in the `harness` library so tests can drive it in process.

fn main() -> std::process::ExitCode {
    harness::main()
}
