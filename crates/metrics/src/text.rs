//! Reading text format 0.0.4 back into samples (for `rwsgi top`): comments skipped, label values
//! unescaped. Only what our own exposition writes needs to parse; a line that does not is
//! skipped rather than failing the whole scrape.

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key` (`""` when absent, as Prometheus treats it).
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Parses every sample line of `text`.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",...}` and returns the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(',').trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.push((key, value));
        s = &s[end?..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        let text = "# HELP x y\n# TYPE x counter\nx_total 3\n\
                    rwsgi_requests_total{app=\"/a\\\"b\\\\\",group=\"\",code_class=\"2xx\"} 12\n\
                    h_bucket{le=\"+Inf\"} 4\nbad line\ng 1.5e-3\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].name.as_str(), s[0].value), ("x_total", 3.0));
        assert_eq!(s[1].label("app"), "/a\"b\\");
        assert_eq!(s[1].label("group"), "");
        assert_eq!(s[1].label("code_class"), "2xx");
        assert_eq!(s[2].label("le"), "+Inf");
        assert_eq!(s[3].value, 0.0015);
    }
}
