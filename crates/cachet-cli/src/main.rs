//! The `cachet` binary: a thin shell over [`cachet_cli::run`].

fn main() -> std::process::ExitCode {
    cachet_cli::main_with_args(std::env::args_os())
}
