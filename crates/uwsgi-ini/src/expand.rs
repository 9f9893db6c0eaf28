//! The substitutions uWSGI makes in config values, in its order (core/uwsgi.c, `configure:`):
//!
//! 1. magic variables `%d`, `%n`, `%k`... while reading the file (core/utils.c `magic_sub`);
//! 2. `$(NAME)`: the environment variable (`$(NAME:-default)` and `$(NAME-default)` as newer
//!    uWSGI releases read them);
//! 3. `@(file)`: a file's content (refused here: it runs outside the config's sight);
//! 4. `%(key)`: the value of the first `key =` line of the section (any key: an option or a
//!    made-up "placeholder"), and `%(a + b)`-style arithmetic (core/config.c
//!    `uwsgi_manage_placeholder`).
//!
//! Where uWSGI silently does something surprising, this reports a problem instead: an unknown
//! `%X` (uWSGI replaces it with nothing), an unset `$(NAME)` or undefined `%(key)` (uWSGI leaves
//! the text as it is, to fail later), a `%(key)` loop (uWSGI never finishes).

use std::collections::HashSet;

use crate::lexer::Entry;
use crate::Context;

/// Each entry's value after all substitutions (or why it could not be computed), and the keys
/// that some `%(key)` refers to (placeholders, which need not be options).
pub struct Expanded {
    pub values: Vec<Result<String, String>>,
    pub referenced: HashSet<String>,
}

/// Runs the four passes over every entry of the section.
pub fn expand_all(entries: &[Entry], ctx: &Context) -> Expanded {
    let early: Vec<Result<String, String>> = entries
        .iter()
        .map(|e| {
            let value = magic(&e.value, ctx)?;
            let value = environment(&value, ctx)?;
            refuse_file_includes(&value)?;
            Ok(value)
        })
        .collect();
    let mut resolver = Resolver {
        entries,
        early: &early,
        done: vec![None; entries.len()],
        stack: Vec::new(),
        referenced: HashSet::new(),
    };
    let values = (0..entries.len()).map(|i| resolver.resolve(i)).collect();
    Expanded {
        values,
        referenced: resolver.referenced,
    }
}

/// Pass 1: `%X` magic variables.
fn magic(value: &str, ctx: &Context) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => {
                return Err(
                    "a `%` ends the value (uWSGI would drop it together with the line \
                            end after it); write `%%` for a percent sign"
                        .into(),
                )
            }
            // `%(` is left for the placeholder pass, `%%` is a percent sign.
            Some('(') => out.push_str("%("),
            Some('%') => out.push('%'),
            Some(var) => out.push_str(&magic_var(var, ctx)?),
        }
    }
    Ok(out)
}

/// The value of one magic variable, as uWSGI fills its table (core/uwsgi.c).
fn magic_var(var: char, ctx: &Context) -> Result<String, String> {
    let dir = ctx
        .file
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = ctx
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) => (stem.to_owned(), ext.to_owned()),
        None => (name.clone(), String::new()),
    };
    let components: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    Ok(match var {
        // The config file: its directory (with a trailing slash), full path, name, name
        // without extension, extension, directory name; the capitals are uWSGI's "first
        // config" versions, the same file here.
        'd' | 'D' => format!("{}/", dir.trim_end_matches('/')),
        'p' | 'P' => ctx.file.to_string_lossy().into_owned(),
        's' | 'S' => name,
        'n' | 'N' => stem,
        'e' | 'E' => ext,
        'c' | 'C' => components.last().copied().unwrap_or_default().to_owned(),
        'o' | 'O' => ctx.given.clone(),
        'x' | 'X' => ctx.section_given.clone().unwrap_or_default(),
        '0'..='9' => {
            let index = usize::from(var as u8 - b'0');
            components
                .get(index)
                .copied()
                .unwrap_or_default()
                .to_owned()
        }
        'k' => ctx.cpus.to_string(),
        'h' => ctx.hostname.clone(),
        'v' => ctx.cwd.to_string_lossy().into_owned(),
        'u' => ctx.uid.to_string(),
        'g' => ctx.gid.to_string(),
        'U' | 'G' | 't' | 'T' | 'V' | 'b' | 'j' | 'J' | 'i' | 'I' | '[' => {
            return Err(format!(
                "magic variable %{var} is not supported by rwsgi-worker"
            ))
        }
        other => {
            return Err(format!(
                "unknown magic variable %{other} (uWSGI replaces it with nothing); write `%%` \
                 for a percent sign"
            ))
        }
    })
}

/// Finds `open` + `(` ... matching `)` from `from`; returns (start of `open`, inside, end).
fn find_group(value: &str, open: char, from: usize) -> Option<(usize, &str, usize)> {
    let rest = value.get(from..)?;
    let pattern = [open, '('].iter().collect::<String>();
    let start = from + rest.find(&pattern)?;
    let inner_start = start + 2;
    let mut depth = 0usize;
    for (offset, c) in value[inner_start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                let end = inner_start + offset;
                return Some((start, &value[inner_start..end], end + 1));
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Pass 2: `$(NAME)`, `$(NAME:-default)` (unset or empty), `$(NAME-default)` (unset).
fn environment(value: &str, ctx: &Context) -> Result<String, String> {
    let mut out = String::new();
    let mut pos = 0;
    while let Some((start, inner, end)) = find_group(value, '$', pos) {
        out.push_str(&value[pos..start]);
        let (name, default, empty_counts) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default), true),
            None => match inner.split_once('-') {
                Some((name, default)) => (name, Some(default), false),
                None => (inner, None, false),
            },
        };
        let found = ctx
            .env
            .get(name)
            .filter(|v| !(empty_counts && v.is_empty()));
        match (found, default) {
            (Some(v), _) => out.push_str(v),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (uWSGI would leave `$({name})` in \
                     the value)"
                ))
            }
        }
        pos = end;
    }
    out.push_str(&value[pos..]);
    Ok(out)
}

/// Pass 3: `@(file)` reads a file (or URL) into the value; rwsgi-worker does not.
fn refuse_file_includes(value: &str) -> Result<(), String> {
    match find_group(value, '@', 0) {
        Some((_, inner, _)) => Err(format!(
            "`@({inner})` (a value read from a file) is not supported; write the value itself"
        )),
        None => Ok(()),
    }
}

/// Pass 4: `%(key)` and `%(a op b ...)`, resolved recursively with loop detection.
struct Resolver<'e> {
    entries: &'e [Entry],
    early: &'e [Result<String, String>],
    done: Vec<Option<Result<String, String>>>,
    stack: Vec<usize>,
    referenced: HashSet<String>,
}

impl Resolver<'_> {
    fn resolve(&mut self, index: usize) -> Result<String, String> {
        if let Some(done) = &self.done[index] {
            return done.clone();
        }
        let result = match &self.early[index] {
            Err(e) => Err(e.clone()),
            Ok(value) => {
                self.stack.push(index);
                let substituted = self.substitute(&value.clone());
                self.stack.pop();
                substituted
            }
        };
        self.done[index] = Some(result.clone());
        result
    }

    fn substitute(&mut self, value: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut pos = 0;
        while let Some((start, inner, end)) = find_group(value, '%', pos) {
            out.push_str(&value[pos..start]);
            out.push_str(&self.placeholder(inner)?);
            pos = end;
        }
        out.push_str(&value[pos..]);
        Ok(out)
    }

    /// `%(key)`, or uWSGI's pipeline: tokens separated by spaces, numbers and keys are values,
    /// `+ - * /` apply to the next value, `++`/`--` change the running value by one, two values
    /// in a row are concatenated.
    fn placeholder(&mut self, inner: &str) -> Result<String, String> {
        if !inner.contains(' ') {
            return self.lookup(inner);
        }
        let mut current: Option<String> = None;
        let mut op: Option<char> = None;
        for token in inner.split(' ').filter(|t| !t.is_empty()) {
            let value = match token {
                "+" | "-" | "*" | "/" => {
                    op = token.chars().next();
                    continue;
                }
                "++" | "--" => {
                    let n = leading_int(current.as_deref().unwrap_or("0"));
                    let delta = if token == "++" { 1 } else { -1 };
                    current = Some(n.saturating_add(delta).to_string());
                    continue;
                }
                _ if token.parse::<i64>().is_ok() => token.to_owned(),
                _ => self.lookup(token)?,
            };
            let left = current.take().unwrap_or_default();
            let (a, b) = (leading_int(&left), leading_int(&value));
            current = Some(match op.take() {
                None => left + &value,
                Some('+') => a.saturating_add(b).to_string(),
                Some('-') => a.saturating_sub(b).to_string(),
                Some('*') => a.saturating_mul(b).to_string(),
                // uWSGI answers 0 to a division by zero.
                _ => a.checked_div(b).unwrap_or(0).to_string(),
            });
        }
        Ok(current.unwrap_or_default())
    }

    /// The first `key =` (or `set-placeholder = key=...`) of the section, fully substituted.
    fn lookup(&mut self, key: &str) -> Result<String, String> {
        self.referenced.insert(key.to_owned());
        let defines = |e: &Entry| {
            e.key == key
                || (is_set_placeholder(&e.key)
                    && e.value
                        .split_once('=')
                        .is_some_and(|(name, _)| name.trim() == key))
        };
        let Some(index) = self.entries.iter().position(defines) else {
            return Err(format!(
                "%({key}) is not defined in this section (uWSGI would leave `%({key})` in the value)"
            ));
        };
        if self.stack.contains(&index) || self.stack.len() > 64 {
            return Err(format!(
                "%({key}) refers to itself (uWSGI would never finish)"
            ));
        }
        let value = self.resolve(index).map_err(|e| {
            let line = self.entries[index].line;
            format!("%({key}) cannot be computed: line {line}: {e}")
        })?;
        if is_set_placeholder(&self.entries[index].key) {
            return Ok(value
                .split_once('=')
                .map_or(value.as_str(), |(_, v)| v)
                .to_owned());
        }
        Ok(value)
    }
}

/// `set-placeholder = name=value` (alias `set-ph`) defines `%(name)` and nothing else.
pub fn is_set_placeholder(key: &str) -> bool {
    matches!(key, "set-placeholder" | "set-ph")
}

/// strtoll's reading: optional sign and leading digits, 0 when there are none.
fn leading_int(s: &str) -> i64 {
    let s = s.trim_start();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().map(|n| sign * n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::section_entries;
    use std::collections::HashMap;
    use std::path::PathBuf;

    pub(crate) fn ctx() -> Context {
        Context {
            file: PathBuf::from("/srv/mysite/deploy/uwsgi.ini"),
            given: "deploy/uwsgi.ini".into(),
            section: "uwsgi".into(),
            section_given: None,
            cwd: PathBuf::from("/srv/mysite"),
            cpus: 4,
            hostname: "web1".into(),
            uid: 33,
            gid: 33,
            env: HashMap::from([
                ("HOME".into(), "/home/app".into()),
                ("EMPTY".into(), String::new()),
            ]),
        }
    }

    fn expand(text: &str) -> Vec<Result<String, String>> {
        let (entries, _) = section_entries(text, "uwsgi");
        expand_all(&entries, &ctx()).values
    }

    fn ok(values: &[&str]) -> Vec<Result<String, String>> {
        values.iter().map(|v| Ok((*v).to_owned())).collect()
    }

    #[test]
    fn magic_variables() {
        let text =
            "[uwsgi]\na = %d|%p|%s|%n|%e|%c|%o|%x|%0|%1|%3|%9\nb = %k %h %v %u %g 100%% %(\n";
        let got = expand(&text.replace(" %(", ""));
        assert_eq!(
            got,
            ok(&[
                "/srv/mysite/deploy/|/srv/mysite/deploy/uwsgi.ini|uwsgi.ini|uwsgi|ini|deploy|deploy/uwsgi.ini||srv|mysite||",
                "4 web1 /srv/mysite 33 33 100%",
            ])
        );
        for bad in ["%z", "%U", "50%", "%t"] {
            let got = expand(&format!("[uwsgi]\na = {bad}\n"));
            assert!(got[0].is_err(), "{bad}: {got:?}");
        }
    }

    #[test]
    fn environment_variables() {
        let got = expand(
            "[uwsgi]\na = $(HOME)/venv\nb = $(NOPE:-/opt)|$(EMPTY:-d)|$(EMPTY-d)|$(NOPE-x)\nc = $(NOPE)\nd = $(unclosed\n",
        );
        assert_eq!(got[0], Ok("/home/app/venv".into()));
        assert_eq!(got[1], Ok("/opt|d||x".into()));
        assert!(got[2]
            .as_ref()
            .is_err_and(|e| e.contains("NOPE is not set")));
        assert_eq!(got[3], Ok("$(unclosed".into()), "left alone, as uWSGI does");
        assert!(expand("[uwsgi]\na = @(/etc/secret)\n")[0].is_err());
    }

    #[test]
    fn placeholders_and_arithmetic() {
        let text = "[uwsgi]\nproject = mysite\nbase = /srv/%(project)\nchdir = %(base)/src\n\
                    workers = %(%k * 2)\nmore = %(workers + 1 ++)\nboth = %(project base)\n\
                    later = %(defined_after)\ndefined_after = yes\nproject = ignored\n\
                    zero = %(8 / 0)\n";
        assert_eq!(
            expand(text),
            ok(&[
                "mysite",
                "/srv/mysite",
                "/srv/mysite/src",
                "8",
                "10",
                "mysite/srv/mysite",
                "yes",
                "yes",
                "ignored",
                "0"
            ])
        );
        let got = expand("[uwsgi]\na = %(b)\nb = %(a)\nc = %(nothere)\nd = %(c)\n");
        assert!(
            got[0]
                .as_ref()
                .is_err_and(|e| e.contains("refers to itself")),
            "{got:?}"
        );
        assert!(got[2].as_ref().is_err_and(|e| e.contains("not defined")));
        assert!(
            got[3].as_ref().is_err_and(|e| e.contains("line 4")),
            "{got:?}"
        );
        let (entries, _) = section_entries("[uwsgi]\nx = %(name)\nname = 1\n", "uwsgi");
        assert!(expand_all(&entries, &ctx()).referenced.contains("name"));
    }
}
