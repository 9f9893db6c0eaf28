//! Reads the `[uwsgi]` section of a uWSGI ini file the way uWSGI does, and turns it into the
//! options of an rwsgi-worker: `rwsgi-worker --ini app.ini` for users migrating from uWSGI.
//!
//! uWSGI's reading is followed closely (core/ini.c, core/config.c, plugins/python): the same
//! line syntax, `file.ini:section` selection, repeated keys, flags (`true`/`1`/empty are true,
//! `false`/`off`/`no`/`0` false), magic variables (`%d`, `%n`, `%k`...), `$(ENV)` and
//! `%(placeholder)` substitutions, relative paths taken from `chdir`. Where uWSGI is silent
//! about something that cannot work (an unknown `%X`, an undefined `%(key)`, a misspelt option,
//! which it takes for a placeholder), this reader reports it.
//!
//! Every option is mapped, accepted as a no-op (it asks for what rwsgi-worker always does), or
//! reported: [`IniError::Unsupported`] lists every line rwsgi-worker cannot honour, with the
//! reason, in one error. Nothing is silently ignored. `docs/migrating-from-uwsgi.md` is the
//! user's version of the table in `options.rs`.
//!
//! ```
//! use uwsgi_ini::{parse, AppSource, Context};
//!
//! let ini = "[uwsgi]\nchdir = /srv/mysite\nmodule = mysite.wsgi:application\n\
//!            socket = /run/mysite.sock\nprocesses = 4\nmaster = true\n";
//! let ctx = Context::for_file("/etc/uwsgi/mysite.ini", None, "/");
//! let config = parse(ini, &ctx)?;
//! assert_eq!(config.processes, 4);
//! assert_eq!(config.apps[0].source, AppSource::Module("mysite.wsgi".into()));
//! # Ok::<(), uwsgi_ini::IniError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod appref;
mod expand;
mod lexer;
mod options;
mod values;

pub use appref::{is_identifier, ModuleSpec};

/// The protocol a socket speaks to the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `socket =`, `uwsgi-socket =` (nginx `uwsgi_pass`, Apache `mod_proxy_uwsgi`).
    Uwsgi,
    /// `scgi-socket =`, or `socket =` with `protocol = scgi`.
    Scgi,
    /// `fastcgi-socket =`, or `socket =` with `protocol = fastcgi`.
    FastCgi,
}

/// Where to listen; the same two forms as rwsgi-worker's `--socket` (supervisor's `SocketSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket path, absolute (relative ones were resolved against `chdir`).
    Unix(PathBuf),
    /// `HOST:PORT`; uWSGI's `:PORT` is `0.0.0.0:PORT` (every interface).
    Tcp(String),
}

/// The socket line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub protocol: Protocol,
    pub address: Address,
}

/// Where an application comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// A file executed as a module (`wsgi-file`, or a `.py`/`.wsgi` mount): rwsgi's `--script`.
    Script(PathBuf),
    /// A module imported by its dotted name (`module = mysite.wsgi`): rwsgi's `--module`.
    Module(String),
}

/// One application, as supervisor's `AppConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub source: AppSource,
    /// The callable's name: `module = m:NAME`, else `callable =`, else `application`.
    pub callable: String,
    /// The URL prefix (`mount = /PREFIX=...`), without a trailing slash; `None` = `/`.
    pub mount: Option<String>,
}

/// What the section asks of a worker. Field names follow supervisor's `GroupConfig`; an `Option`
/// left `None` means "rwsgi-worker's default" (the file did not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniConfig {
    pub socket: Option<Socket>,
    /// `chmod-socket`: permission bits of a unix socket.
    pub socket_mode: Option<u32>,
    /// `chown-socket`: owner of a unix socket.
    pub socket_owner: Option<String>,
    /// `listen`.
    pub listen_backlog: Option<u32>,
    /// `module`/`wsgi-file` (mounted at `/`), then every `mount`, in file order.
    pub apps: Vec<App>,
    /// `processes`/`workers`; uWSGI's default is 1, and so is this.
    pub processes: u32,
    /// `threads`; uWSGI's default is 1 (an app that ran single-threaded stays so), and so is this.
    pub threads: u32,
    /// `home`/`virtualenv`/`venv`/`pyhome`.
    pub python_home: Option<PathBuf>,
    /// `pythonpath` lines, in order.
    pub python_path: Vec<PathBuf>,
    /// `uid`.
    pub user: Option<String>,
    /// `gid`.
    pub group: Option<String>,
    /// `max-requests`; 0 = never.
    pub maximum_requests: u64,
    /// `harakiri` (0 = none).
    pub request_timeout: Option<Duration>,
    /// `worker-reload-mercy`, else `reload-mercy`.
    pub graceful_timeout: Option<Duration>,
    /// `socket-timeout`.
    pub socket_timeout: Option<Duration>,
    /// `chdir`: the directory to change to before loading the apps (absolute).
    pub chdir: Option<PathBuf>,
    /// `env` lines: variables set before the apps load, in order.
    pub env: Vec<(String, String)>,
    /// Keys accepted as no-ops (`master`, `vacuum`...), for a log line saying so.
    pub accepted: Vec<String>,
}

impl Default for IniConfig {
    fn default() -> Self {
        IniConfig {
            socket: None,
            socket_mode: None,
            socket_owner: None,
            listen_backlog: None,
            apps: Vec::new(),
            processes: 1,
            threads: 1,
            python_home: None,
            python_path: Vec::new(),
            user: None,
            group: None,
            maximum_requests: 0,
            request_timeout: None,
            graceful_timeout: None,
            socket_timeout: None,
            chdir: None,
            env: Vec::new(),
            accepted: Vec::new(),
        }
    }
}

/// What the substitutions see: the file, the environment, the machine. [`Context::from_process`]
/// fills it from the running process; tests build it by hand.
#[derive(Debug, Clone)]
pub struct Context {
    /// The ini file, absolute (`%p`, `%d`, `%n`...).
    pub file: PathBuf,
    /// The file as given on the command line, without `:section` (`%o`).
    pub given: String,
    /// The section to read.
    pub section: String,
    /// The section if one was given (`%x`, empty otherwise, as in uWSGI).
    pub section_given: Option<String>,
    /// The directory rwsgi-worker was started in (`%v`, and the base of relative paths).
    pub cwd: PathBuf,
    /// CPUs available (`%k`).
    pub cpus: usize,
    /// Host name (`%h`).
    pub hostname: String,
    /// Real user and group ids (`%u`, `%g`).
    pub uid: u32,
    pub gid: u32,
    /// Environment variables (`$(NAME)`).
    pub env: HashMap<String, String>,
}

impl Context {
    /// A context for `file` (made absolute against `cwd`) and `section`, with an empty
    /// environment, 1 CPU, no host name and ids 0; set the fields a test needs.
    pub fn for_file(file: impl AsRef<Path>, section: Option<&str>, cwd: impl AsRef<Path>) -> Self {
        let given = file.as_ref().to_string_lossy().into_owned();
        Context {
            file: cwd.as_ref().join(file.as_ref()),
            given,
            section: section.unwrap_or("uwsgi").to_owned(),
            section_given: section.map(str::to_owned),
            cwd: cwd.as_ref().to_path_buf(),
            cpus: 1,
            hostname: String::new(),
            uid: 0,
            gid: 0,
            env: HashMap::new(),
        }
    }

    /// The context of this process for `spec` (`file.ini` or `file.ini:section`, split at the
    /// last `:` as uWSGI does): its environment, directory, CPUs, host name and ids.
    pub fn from_process(spec: &str) -> std::io::Result<Self> {
        let (file, section) = split_spec(spec);
        let cwd = std::env::current_dir()?;
        let mut ctx = Context::for_file(file, section, &cwd);
        // uWSGI resolves the path (realpath) unless the file itself is a symlink.
        if !std::fs::symlink_metadata(&ctx.file).is_ok_and(|m| m.file_type().is_symlink()) {
            if let Ok(real) = std::fs::canonicalize(&ctx.file) {
                ctx.file = real;
            }
        }
        ctx.env = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        ctx.cpus = online_cpus()
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        ctx.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        // The real ids, as uWSGI's getuid()/getgid(): the first number of /proc/self/status's
        // Uid:/Gid: lines (no libc call needed).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let id = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        ctx.uid = id("Uid:");
        ctx.gid = id("Gid:");
        Ok(ctx)
    }
}

/// CPUs online, as uWSGI counts them for `%k` (`sysconf(_SC_NPROCESSORS_ONLN)`, which reads
/// this file): "0-3,6" is 5. Not the affinity- or quota-limited count.
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut count = 0;
    for range in text.trim().split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
        count += last.checked_sub(first)? + 1;
    }
    (count > 0).then_some(count)
}

/// `file.ini:section` -> (`file.ini`, `Some("section")`); a trailing `:` means the default.
fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((file, "")) => (file, None),
        Some((file, section)) if !file.is_empty() => (file, Some(section)),
        _ => (spec, None),
    }
}

/// One line rwsgi-worker cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Why a file cannot configure a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IniError {
    /// The file could not be read (or is not UTF-8).
    Read { file: PathBuf, error: String },
    /// The file has no such section (uWSGI only warns, then runs with no options at all).
    NoSection { file: PathBuf, section: String },
    /// Lines rwsgi-worker cannot honour: every one of them, in file order.
    Unsupported {
        file: PathBuf,
        section: String,
        problems: Vec<Problem>,
    },
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IniError::Read { file, error } => write!(f, "{}: {error}", file.display()),
            IniError::NoSection { file, section } => {
                write!(f, "{}: no [{section}] section", file.display())
            }
            IniError::Unsupported {
                file,
                section,
                problems,
            } => {
                let n = problems.len();
                let lines = if n == 1 { "line" } else { "lines" };
                write!(
                    f,
                    "{} [{section}]: {n} {lines} rwsgi-worker cannot honour:",
                    file.display()
                )?;
                for p in problems {
                    write!(f, "\n  line {}: {}: {}", p.line, p.key, p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for IniError {}

/// Reads `spec` (`file.ini` or `file.ini:section`) in this process's context.
pub fn read(spec: &str) -> Result<IniConfig, IniError> {
    let ctx = Context::from_process(spec).map_err(|e| IniError::Read {
        file: PathBuf::from(spec),
        error: e.to_string(),
    })?;
    let text = std::fs::read(&ctx.file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned()))
        .map_err(|error| IniError::Read {
            file: ctx.file.clone(),
            error,
        })?;
    parse(&text, &ctx)
}

/// The section's `key = value` lines after uWSGI's substitutions, in file order: what
/// `uwsgi --ini FILE --show-config` prints for them. Fails as [`parse`] does on a value whose
/// substitutions cannot be made.
pub fn substituted(text: &str, ctx: &Context) -> Result<Vec<(String, String)>, IniError> {
    let (entries, expanded) = read_section(text, ctx)?;
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for (entry, value) in entries.iter().zip(expanded.values) {
        match value {
            Ok(value) => lines.push((entry.key.clone(), value)),
            Err(message) => problems.push(entry.problem(message)),
        }
    }
    unsupported(ctx, problems).map(|()| lines)
}

/// Parses the text of an ini file in `ctx`.
pub fn parse(text: &str, ctx: &Context) -> Result<IniConfig, IniError> {
    let (entries, expanded) = read_section(text, ctx)?;
    // The last `chdir` is the one uWSGI uses.
    let chdir = entries
        .iter()
        .zip(&expanded.values)
        .rev()
        .filter(|(entry, _)| entry.key == "chdir")
        .find_map(|(_, value)| value.as_deref().ok());
    let mut builder = options::Builder::new(&ctx.cwd, chdir);
    let mut problems = Vec::new();
    for (entry, value) in entries.iter().zip(&expanded.values) {
        let meaning = match value {
            Err(e) => Err(e.clone()),
            // `set-placeholder = name=value` defines a %(name) and nothing else.
            Ok(_) if expand::is_set_placeholder(&entry.key) => continue,
            Ok(value) => builder.apply(entry.line, &entry.key, value),
        };
        let message = match meaning {
            Ok(options::Meaning::Mapped | options::Meaning::Accepted) => continue,
            // A made-up key that some %(key) uses is a placeholder, which uWSGI allows.
            Ok(options::Meaning::Refused(_))
                if is_placeholder(&entry.key, &expanded.referenced) =>
            {
                continue
            }
            Ok(options::Meaning::Refused(why)) => why,
            Err(e) => e,
        };
        problems.push(entry.problem(message));
    }
    let (config, more) = builder.finish();
    problems.extend(
        more.into_iter()
            .map(|(line, key, message)| Problem { line, key, message }),
    );
    problems.sort_by_key(|p| p.line);
    unsupported(ctx, problems).map(|()| config)
}

/// The section's lines and their substituted values; `NoSection` if the file has no such section.
fn read_section(
    text: &str,
    ctx: &Context,
) -> Result<(Vec<lexer::Entry>, expand::Expanded), IniError> {
    let (entries, found) = lexer::section_entries(text, &ctx.section);
    if !found {
        return Err(IniError::NoSection {
            file: ctx.file.clone(),
            section: ctx.section.clone(),
        });
    }
    let expanded = expand::expand_all(&entries, ctx);
    Ok((entries, expanded))
}

/// `Ok` without problems, else the one error that lists them all.
fn unsupported(ctx: &Context, problems: Vec<Problem>) -> Result<(), IniError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(IniError::Unsupported {
        file: ctx.file.clone(),
        section: ctx.section.clone(),
        problems,
    })
}

/// A key used as `%(key)` that is not an option uWSGI acts on. A refused *option* (say
/// `pidfile`) stays refused even when referenced: uWSGI would still write the pid file.
fn is_placeholder(key: &str, referenced: &std::collections::HashSet<String>) -> bool {
    referenced.contains(key) && options::is_placeholder_name(key)
}
