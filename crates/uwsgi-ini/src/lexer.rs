//! Splitting an ini file into the entries of one section, by uWSGI's rules (core/ini.c):
//!
//! - lines end at `\n`; spaces, tabs and `\r` around a line, a key and a value are stripped;
//! - a line starting with `[` opens a section: its name is the rest of the line minus the last
//!   character (the `]`);
//! - a line starting with `;` or `#` is a comment; there are no comments after a value
//!   (`socket = a.sock ; x` is the value `a.sock ; x`);
//! - any other line is `key = value`, split at the first `=`; a line without `=` is a key with
//!   an empty value (`master` alone means `master = true`);
//! - keys are case-sensitive and may repeat: every occurrence counts, in order.

/// One `key = value` line of the selected section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    pub key: String,
    pub value: String,
}

impl Entry {
    /// A problem on this line.
    pub fn problem(&self, message: String) -> crate::Problem {
        crate::Problem {
            line: self.line,
            key: self.key.clone(),
            message,
        }
    }
}

/// The entries of `section`, in file order, and whether the section appeared at all.
pub fn section_entries(text: &str, section: &str) -> (Vec<Entry>, bool) {
    let mut current: Option<&str> = None;
    let mut found = false;
    let mut entries = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = strip(raw);
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            // uWSGI drops the last character whatever it is; so do we.
            let mut chars = rest.chars();
            chars.next_back();
            current = Some(chars.as_str());
            found |= current == Some(section);
            continue;
        }
        if current != Some(section) {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        entries.push(Entry {
            line: index + 1,
            key: strip(key).to_owned(),
            value: strip(value).to_owned(),
        });
    }
    (entries, found)
}

/// uWSGI strips exactly these three: space, tab, carriage return.
fn strip(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str, section: &str) -> Vec<(usize, String, String)> {
        let (entries, _) = section_entries(text, section);
        entries
            .into_iter()
            .map(|e| (e.line, e.key, e.value))
            .collect()
    }

    #[test]
    fn sections_comments_and_values() {
        let text = "[other]\nsocket = /x\r\n[uwsgi]\n; c\n  # c\n\tsocket =  /tmp/a.sock ; not a comment \r\n\
                    master\nenv = A=B=C\n=orphan\n[uwsgi2]\nprocesses = 9\n[uwsgi]\nthreads=2";
        assert_eq!(
            keys(text, "uwsgi"),
            vec![
                (6, "socket".into(), "/tmp/a.sock ; not a comment".into()),
                (7, "master".into(), "".into()),
                (8, "env".into(), "A=B=C".into()),
                (9, "".into(), "orphan".into()),
                (13, "threads".into(), "2".into()),
            ]
        );
        assert_eq!(
            keys(text, "uwsgi2"),
            vec![(11, "processes".into(), "9".into())]
        );
        assert_eq!(section_entries(text, "prod"), (vec![], false));
        assert!(
            section_entries("[empty]\n", "empty").1,
            "an empty section is still found"
        );
        assert!(
            keys("socket = /x\n", "uwsgi").is_empty(),
            "lines before any section belong to none"
        );
    }
}
