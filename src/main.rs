//! The `miaudit` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    miaudit::cli::main()
}
