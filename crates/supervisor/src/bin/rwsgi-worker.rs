//! `rwsgi-worker`: a standalone uwsgi WSGI server (see docs/rwsgi-worker.md).

use std::process::ExitCode;

use supervisor::cli::{self, Command};

fn main() -> ExitCode {
    // A web server module's daemon group, handed over across exec (hosted.rs).
    if let Some(code) = supervisor::hosted::run_if_handed_over() {
        return ExitCode::from(code as u8);
    }
    match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("rwsgi-worker {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Run {
            cfg,
            lifetime_fd,
            ini_note,
        }) => match start(&cfg, lifetime_fd, ini_note) {
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

fn start(
    cfg: &supervisor::GroupConfig,
    lifetime_fd: Option<i32>,
    ini_note: Option<String>,
) -> Result<(), supervisor::Error> {
    if let Some(note) = ini_note {
        supervisor::log::set_name(cfg.log_name());
        supervisor::rwlog!("RW012", "{note}");
    }
    let Some(fd) = lifetime_fd else {
        return supervisor::run(cfg);
    };
    // SAFETY: fcntl(F_GETFD) only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(supervisor::Error::Config(supervisor::ConfigError::new(
            "lifetime-fd",
            format!("descriptor {fd} is not open"),
        )));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this process for exactly
    // this use; it stays open for the whole run, which the borrow does not outlive.
    let lifetime = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    supervisor::run_with_lifetime(cfg, lifetime)
}
