//! A group's shared secret: proof that a packet comes from the group's own front end.
//!
//! A TCP socket is open to every local user (and a unix socket to every process running as the
//! front end's user, the group's own apps included): anyone who can connect could send a packet
//! that sets `REMOTE_USER`, `HTTPS` or any other variable the app trusts. So the front end sends
//! the group's secret in every packet as `RWSGI_SECRET` (`uwsgi::contract::SECRET`) and the
//! workers refuse a packet without it, as mod_wsgi checks its per-start `mod_wsgi.magic` token.
//!
//! The web server modules make a random one per group ([`Secret::generate`]) and hand it to the
//! supervisor at fork, in memory (never on a command line or in the environment, where `ps` and
//! /proc would show it). `rwsgi-worker --secret-file FILE` reads one for a stock front end
//! (`uwsgi_param RWSGI_SECRET "...";`).

use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Random bytes in a generated secret (sent as twice as many hex digits).
const RANDOM_BYTES: usize = 32;
/// Shortest secret read from a file: anything shorter is guessable.
const MIN_LEN: usize = 16;
/// Longest secret read from a file (it travels in every packet).
const MAX_LEN: usize = 1024;

/// A group's secret. Compared in constant time; never printed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A fresh random secret (getrandom(2)), as 64 hex digits.
    pub fn generate() -> io::Result<Secret> {
        let mut raw = [0u8; RANDOM_BYTES];
        let mut filled = 0;
        while filled < raw.len() {
            // SAFETY: the pointer and length describe the unfilled tail of `raw`.
            let n = unsafe {
                libc::getrandom(raw[filled..].as_mut_ptr().cast(), raw.len() - filled, 0)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        let hex = raw.iter().flat_map(|b| {
            let digit = |n: u8| b"0123456789abcdef"[usize::from(n)];
            [digit(b >> 4), digit(b & 15)]
        });
        Ok(Secret(hex.collect()))
    }

    /// The first line of `path`, which only its owner may read or write (as ssh wants of a
    /// private key): 16 to 1,024 visible ASCII characters.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} is accessible by group or others (mode {mode:04o}): chmod 600 it"
            ));
        }
        let text = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Secret::new(line.to_vec()).map_err(|e| format!("{shown}: {e}"))
    }

    /// A secret given as bytes: 16 to 1,024 visible ASCII characters (it must survive a
    /// server's configuration syntax, e.g. nginx's `uwsgi_param`).
    pub fn new(bytes: Vec<u8>) -> Result<Secret, String> {
        if !(MIN_LEN..=MAX_LEN).contains(&bytes.len()) {
            return Err(format!(
                "a secret must be {MIN_LEN} to {MAX_LEN} characters long"
            ));
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err("a secret must be visible ASCII characters, without spaces".into());
        }
        Ok(Secret(bytes))
    }

    /// The value a front end sends as `RWSGI_SECRET`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when `candidate` is this secret; the time taken does not depend on where they
    /// differ (only on the length of ours).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mut diff = u8::from(candidate.len() != self.0.len());
        for (i, &mine) in self.0.iter().enumerate() {
            diff |= mine ^ candidate.get(i).copied().unwrap_or(!mine);
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_random_hex() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_eq!(a.as_bytes().len(), 64);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Secret(..)");
    }

    #[test]
    fn matching() {
        let s = Secret::new(b"correct-horse-battery".to_vec()).unwrap();
        assert!(s.matches(b"correct-horse-battery"));
        assert!(!s.matches(b"correct-horse-batterx"));
        assert!(!s.matches(b"correct-horse-battery!"));
        assert!(!s.matches(b"correct-horse"));
        assert!(!s.matches(b""));
        assert!(Secret::new(b"short".to_vec()).is_err());
        assert!(Secret::new(b"has a space in it".to_vec()).is_err());
    }

    #[test]
    fn files_must_be_private() {
        let dir = std::env::temp_dir().join(format!("rwsgi-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "s3cret-for-the-test\nignored\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secret::from_file(&path).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secret::from_file(&path).unwrap();
        assert!(s.matches(b"s3cret-for-the-test"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
