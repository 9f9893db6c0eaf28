//! `rwsgi serve`: one command that serves a WSGI app inside nginx with the rwsgi module, like
//! mod_wsgi-express does with Apache (see docs/rwsgi-serve.md).
//!
//! Modules: `cli` (the command line), `site` (resolved against the machine), `conf` (the nginx
//! configuration text), `setup` (writing it, `nginx -t`, `--setup-only`'s nginxctl),
//! `preflight` (checks with a sentence each), `users` (the worker user's file access),
//! `run` (the foreground server), `procs` (signals, starting and reaping), `watch`
//! (`--reload-on-change`); `top` is the other command, `rwsgi top` (a metrics view).

mod cli;
mod conf;
mod preflight;
mod procs;
mod run;
mod setup;
mod site;
mod top;
mod users;
mod watch;

use std::io::Write;
use std::process::ExitCode;

use cli::Command;
use site::Site;

/// One line of our own output, on stdout (the URL is what a user, or a script, looks for).
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "rwsgi serve: {line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("rwsgi {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Serve(opts)) => opts,
        Ok(Command::TopHelp) => {
            print!("{}", top::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Top(opts)) => {
            return match top::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("rwsgi top: {msg}");
                    ExitCode::from(1)
                }
            }
        }
        Err(msg) => {
            eprintln!("rwsgi serve: {msg}");
            return ExitCode::from(2);
        }
    };
    let result = std::env::current_dir()
        .map_err(|e| format!("cannot read the current directory: {e}"))
        .and_then(|cwd| {
            let site = Site::resolve(&opts, &cwd)?;
            match &opts.setup_only {
                Some(dir) => run::setup_only(&site, &cwd.join(dir)),
                None => run::serve(&site),
            }
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("rwsgi serve: {msg}");
            ExitCode::from(1)
        }
    }
}
