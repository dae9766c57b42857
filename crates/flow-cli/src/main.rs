//! `docker-flow`: parses and validates the invocation (the run itself is wired next).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = flow_cli::args::Cli::parse();
    let loaded = flow_cli::config::Context::from_process()
        .and_then(|context| flow_cli::config::load(cli, &context));
    match loaded {
        Ok(command) => {
            println!("{command:#?}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("docker-flow: {error}");
            std::process::ExitCode::from(2)
        }
    }
}
