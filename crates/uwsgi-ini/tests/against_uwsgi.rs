//! The substitutions, held to the real thing: the same probe file through Debian's uWSGI
//! (`uwsgi --ini FILE:probe --show-config`, which prints every key after its substitutions) and
//! through `substituted()`. uWSGI comes with scripts/setup.sh (package `uwsgi`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use uwsgi_ini::{substituted, Context};

/// Placeholder keys only (none is a uWSGI option, so uWSGI acts on none of them), in a section
/// other than the default, after a section that must be skipped.
const PROBE: &str = "\
[uwsgi]
p-skipped = from the wrong section
[probe]
p-dir = %d
p-path = %p
p-name = %n
p-ext = %e
p-file = %s
p-parent = %c
p-origin = %o
p-section = %x
p-first = %0
p-cpus = %k
p-host = %h
p-cwd = %v
p-ids = %u/%g
p-percent = 100%% sure
p-env = $(RWSGI_INI_PROBE)/x
p-project = mysite
p-base = /srv/%(p-project)
p-src = %(p-base)/src
p-twice = %(%k * 2)
p-sum = %(p-cpus + 1)
p-incr = %(p-cpus ++)
p-concat = %(p-project p-base)
p-later = %(p-defined-after)
p-defined-after = yes
p-project = second, ignored by %(p-project)
p-spaces =   padded   value\t
p-comment = a ; b # c
p-no-value
\t  p-indented=1
";

#[test]
fn substitutions_match_uwsgi_show_config() {
    let dir = std::env::temp_dir().join(format!("protocols-uwsgi-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.ini");
    std::fs::write(&file, PROBE).unwrap();
    let spec = format!("{}:probe", file.display());

    let theirs = uwsgi_show_config(&spec, &dir);
    let mut ctx = Context::from_process(&spec).unwrap();
    ctx.cwd = dir.clone();
    ctx.env
        .insert("RWSGI_INI_PROBE".into(), "probe-value".into());
    let ours = substituted(PROBE, &ctx).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(ours.len(), 29, "{ours:?}");
    let theirs: Vec<(String, String)> = theirs
        .into_iter()
        .filter(|(k, _)| k.starts_with("p-"))
        .collect();
    assert_eq!(ours, theirs);
    // And a few spelled out, so a change in both would still show.
    let get = |key: &str| ours.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(get("p-src"), Some("/srv/mysite/src"));
    assert_eq!(get("p-percent"), Some("100% sure"));
    assert_eq!(get("p-env"), Some("probe-value/x"));
    assert_eq!(get("p-section"), Some("probe"));
}

/// Runs uWSGI on `spec` and returns the `key = value` lines it prints; uWSGI then stops by
/// itself (no socket is configured).
fn uwsgi_show_config(spec: &str, cwd: &Path) -> Vec<(String, String)> {
    let uwsgi = Path::new("/usr/bin/uwsgi");
    assert!(
        uwsgi.exists(),
        "Debian's uwsgi is needed (scripts/setup.sh installs it)"
    );
    let mut child = Command::new(uwsgi)
        .args(["--ini", spec, "--show-config"])
        .current_dir(cwd)
        .env("RWSGI_INI_PROBE", "probe-value")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    let section = text
        .split(";uWSGI instance configuration\n[uwsgi]\n")
        .nth(1)
        .and_then(|rest| rest.split(";end of configuration").next())
        .unwrap_or_else(|| panic!("no --show-config output from uwsgi:\n{text}"));
    section
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
