//! `rwsgi-worker`: a standalone uwsgi WSGI server (see docs/rwsgi-worker.md).

use std::process::ExitCode;

use supervisor::cli::{self, Command};

fn main() -> ExitCode {
    match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("rwsgi-worker {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Run(cfg)) => match supervisor::run(&cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(supervisor::Error::Config(e)) => {
                eprintln!("rwsgi-worker: --{e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("rwsgi-worker: {e}");
                ExitCode::from(1)
            }
        },
        Err(msg) => {
            eprintln!("rwsgi-worker: {msg}");
            ExitCode::from(2)
        }
    }
}
