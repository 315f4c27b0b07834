use clap::Parser;

fn main() -> std::process::ExitCode {
    purposegate::cli::run(purposegate::cli::Cli::parse())
}
