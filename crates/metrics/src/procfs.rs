//! What the region needs from /proc: is a pid still the process that claimed a slot, and how
//! much memory it holds.

/// The fields of `/proc/PID/stat` we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Process state letter (`R`, `S`, `Z`...).
    pub(crate) state: u8,
    /// Start time after boot, in clock ticks (field 22).
    pub(crate) start: u64,
    /// Resident set size in pages (field 24).
    pub(crate) rss_pages: u64,
}

impl Stat {
    /// Alive and not a zombie waiting to be reaped.
    pub(crate) fn running(&self) -> bool {
        !matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Reads `/proc/<pid>/stat` (`None`: no such process, or unreadable).
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The stat line of this process.
pub(crate) fn own_stat() -> Option<Stat> {
    parse_stat(&std::fs::read("/proc/self/stat").ok()?)
}

/// Parses a stat line. The command name (field 2) is in parentheses and may itself hold spaces
/// and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(line: &[u8]) -> Option<Stat> {
    let close = line.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(&line[close + 1..]).ok()?;
    // rest starts at field 3 (state); field N is rest's word N - 3.
    let words: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(Stat {
        state: *words.first()?.as_bytes().first()?,
        start: words.get(22 - 3)?.parse().ok()?,
        rss_pages: words.get(24 - 3)?.parse().ok()?,
    })
}

/// Bytes per page.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_strange_name() {
        let line = b"4242 (wsgi: a) (b)) S 1 4242 4242 0 -1 4194368 100 0 0 0 5 3 0 0 20 0 3 0 \
                     777 123456789 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.state, s.start, s.rss_pages), (b'S', 777, 321));
        assert!(s.running());
        assert_eq!(parse_stat(b"1 (x"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let me = own_stat().unwrap();
        assert!(me.running() && me.rss_pages > 0);
        assert_eq!(stat(std::process::id()).map(|s| s.start), Some(me.start));
    }
}
