//! `--reload-on-change`: notice when a .py file of the app changes.
//!
//! Polling, once a second, like mod_wsgi-express's monitor: it needs nothing from the kernel
//! beyond stat(2), works on every file system (bind mounts, NFS, editors that replace files by
//! renaming) and costs a few hundred stats per second for a typical project. The watched trees
//! are the app's own sys.path entries; the virtualenv, VCS metadata and caches are skipped.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// More files than this and we stop looking further (and say so once): a watch root that is a
/// home or a whole file system is a mistake, not a project.
const MAX_FILES: usize = 20_000;

/// Directory names never descended into.
const SKIP_DIRS: &[&str] = &[
    "__pycache__",
    "node_modules",
    "site-packages",
    "dist-packages",
];

type Stamp = (SystemTime, u64);

/// The .py files under some roots and their modification stamps.
pub struct Watcher {
    roots: Vec<PathBuf>,
    skip: Vec<PathBuf>,
    files: HashMap<PathBuf, Stamp>,
    pub truncated: bool,
}

impl Watcher {
    /// Starts watching `roots`, never looking inside `skip` (the virtualenv).
    pub fn new(roots: Vec<PathBuf>, skip: Vec<PathBuf>) -> Watcher {
        let mut w = Watcher {
            roots,
            skip,
            files: HashMap::new(),
            truncated: false,
        };
        w.files = w.scan();
        w
    }

    /// How many files are watched.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The files changed, added or removed since the last call (sorted; empty when none).
    pub fn changes(&mut self) -> Vec<PathBuf> {
        let now = self.scan();
        let mut changed: Vec<PathBuf> = now
            .iter()
            .filter(|(p, stamp)| self.files.get(*p) != Some(stamp))
            .map(|(p, _)| p.clone())
            .chain(self.files.keys().filter(|p| !now.contains_key(*p)).cloned())
            .collect();
        changed.sort();
        self.files = now;
        changed
    }

    fn scan(&mut self) -> HashMap<PathBuf, Stamp> {
        let mut out = HashMap::new();
        let mut stack: Vec<PathBuf> = self.roots.clone();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if !self.skipped(&path) {
                        stack.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "py") {
                    if out.len() >= MAX_FILES {
                        self.truncated = true;
                        return out;
                    }
                    if let Ok(meta) = entry.metadata() {
                        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        out.insert(path, (mtime, meta.len()));
                    }
                }
            }
        }
        out
    }

    fn skipped(&self, dir: &Path) -> bool {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.starts_with('.')
            || SKIP_DIRS.contains(&name)
            || dir.join("pyvenv.cfg").exists()
            || self.skip.iter().any(|s| dir.starts_with(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_edits_additions_and_removals_of_py_files_only() {
        let root = std::env::temp_dir().join(format!("rwsgi-watch-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
        fs::create_dir_all(root.join("venv")).unwrap();
        fs::write(root.join("venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        fs::write(root.join("pkg/a.py"), "a = 1\n").unwrap();
        fs::write(root.join("pkg/notes.txt"), "x").unwrap();
        let mut w = Watcher::new(vec![root.clone()], vec![]);
        assert_eq!(w.len(), 1);
        assert!(w.changes().is_empty());
        fs::write(root.join("pkg/a.py"), "a = 22\n").unwrap(); // size differs: seen at once
        fs::write(root.join("pkg/notes.txt"), "yy").unwrap();
        fs::write(root.join("pkg/__pycache__/a.py"), "").unwrap();
        fs::write(root.join("venv/x.py"), "").unwrap();
        assert_eq!(w.changes(), vec![root.join("pkg/a.py")]);
        fs::write(root.join("pkg/b.py"), "").unwrap();
        fs::remove_file(root.join("pkg/a.py")).unwrap();
        assert_eq!(
            w.changes(),
            vec![root.join("pkg/a.py"), root.join("pkg/b.py")]
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
