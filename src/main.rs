//! The `handler` binary: everything lives in the library so tests run the same code.

fn main() -> std::process::ExitCode {
    report_handler::cli::main()
}
