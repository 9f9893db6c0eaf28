//! The endpoint over a plain socket, for rwsgi-worker's `--metrics` (nginx and Apache serve it
//! through their own HTTP stacks), and fetching it, for `rwsgi top`.
//!
//! Deliberately small: one request per connection (`Connection: close`), GET or HEAD of
//! `/metrics` (or `/`), a head of at most 8 KiB; everything else gets a 4xx.

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::{scrape, BuildInfo, Format};

/// Longest request head accepted.
const MAX_HEAD: usize = 8192;

/// The parts of a request head the endpoint looks at.
#[derive(Debug, PartialEq, Eq)]
struct RequestHead {
    method: String,
    path: String,
    accept: Vec<u8>,
}

fn parse_head(head: &[u8]) -> Option<RequestHead> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = std::str::from_utf8(lines.next()?).ok()?;
    let mut parts = first.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut accept = Vec::new();
    for line in lines {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if line[..colon].eq_ignore_ascii_case(b"accept") {
                accept.extend_from_slice(line[colon + 1..].trim_ascii());
            }
        }
    }
    Some(RequestHead {
        method,
        path,
        accept,
    })
}

/// Reads until the blank line that ends the head; `None` on EOF, error or an oversized head.
fn read_head(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Some(buf);
        }
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            buf.truncate(end);
            return Some(buf);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Answers one connection: the scrape for `GET /metrics`, an error otherwise. I/O errors (a
/// client that went away) are returned for the caller to ignore.
pub fn serve_connection<S: Read + Write>(mut stream: S, build: &BuildInfo) -> io::Result<()> {
    let Some(head) = read_head(&mut stream).as_deref().and_then(parse_head) else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            b"bad request\n",
            false,
        );
    };
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD only\n",
            false,
        );
    }
    if head.path != "/metrics" && head.path != "/" {
        return respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"try /metrics\n",
            head_only,
        );
    }
    let format = Format::from_accept(&head.accept);
    let body = scrape(build, format);
    respond(
        &mut stream,
        "200 OK",
        format.content_type(),
        body.as_bytes(),
        head_only,
    )
}

fn respond(
    stream: &mut impl Write,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// Where an endpoint is: `http://HOST:PORT/PATH`, `HOST:PORT` (path `/metrics`), or
/// `unix:/PATH/TO/SOCKET` (path `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp { addr: String, path: String },
    Unix { socket: String, path: String },
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Some(socket) = s.strip_prefix("unix:") {
            if socket.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Target::Unix {
                socket: socket.to_owned(),
                path: "/metrics".into(),
            });
        }
        let rest = s.strip_prefix("http://").unwrap_or(s);
        if s.starts_with("https://") {
            return Err("https is not supported: scrape the server locally over http".into());
        }
        let (addr, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        if !addr.contains(':') {
            return Err(format!(
                "expected HOST:PORT, http://HOST:PORT/PATH or unix:PATH, got {s:?}"
            ));
        }
        Ok(Target::Tcp {
            addr: addr.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// GETs the endpoint (text format 0.0.4); returns the body of a 200 response.
pub fn fetch(target: &Target, timeout: Duration) -> Result<String, String> {
    let (host, path) = match target {
        Target::Tcp { addr, path } => (addr.as_str(), path.as_str()),
        Target::Unix { path, .. } => ("localhost", path.as_str()),
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain;version=0.0.4\r\nUser-Agent: rwsgi-top\r\n\r\n"
    );
    let response = match target {
        Target::Tcp { addr, .. } => {
            let stream = connect_tcp(addr, timeout)?;
            exchange(stream, timeout, &request)
        }
        Target::Unix { socket, .. } => {
            let stream = std::os::unix::net::UnixStream::connect(socket)
                .map_err(|e| format!("{socket}: {e}"))?;
            stream.set_read_timeout(Some(timeout)).ok();
            stream.set_write_timeout(Some(timeout)).ok();
            exchange(stream, timeout, &request)
        }
    }?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP response head")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.lines().next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("the endpoint answered {status:?}"));
    }
    Ok(String::from_utf8_lossy(&response[split + 4..]).into_owned())
}

fn connect_tcp(addr: &str, timeout: Duration) -> Result<std::net::TcpStream, String> {
    use std::net::ToSocketAddrs;
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let stream = std::net::TcpStream::connect_timeout(&resolved, timeout)
        .map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    Ok(stream)
}

fn exchange(
    mut s: impl Read + Write,
    _timeout: Duration,
    request: &str,
) -> Result<Vec<u8>, String> {
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let h = parse_head(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT:  application/openmetrics-text \r\n",
        )
        .unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/metrics"));
        assert_eq!(h.accept, b"application/openmetrics-text");
        assert_eq!(parse_head(b""), None);
    }

    fn serve(request: &[u8]) -> String {
        struct Duplex(io::Cursor<Vec<u8>>, Vec<u8>);
        impl Read for Duplex {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0.read(b)
            }
        }
        impl Write for Duplex {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1.write(b)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut d = Duplex(io::Cursor::new(request.to_vec()), Vec::new());
        let build = BuildInfo {
            version: "1".into(),
            python: "3".into(),
            server: "rwsgi-worker".into(),
        };
        serve_connection(&mut d, &build).unwrap();
        String::from_utf8(d.1).unwrap()
    }

    #[test]
    fn answers() {
        let ok = serve(b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.contains("rwsgi_build_info"));
        let om = serve(b"GET / HTTP/1.0\r\nAccept: application/openmetrics-text\r\n\r\n");
        assert!(om.ends_with("# EOF\n"));
        let head = serve(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"));
        assert!(serve(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(serve(b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(serve(b"GET /metrics HTTP/1.1\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("127.0.0.1:9100"),
            Ok(Target::Tcp {
                addr: "127.0.0.1:9100".into(),
                path: "/metrics".into()
            })
        );
        assert_eq!(
            Target::parse("http://localhost:8080/wsgi-metrics"),
            Ok(Target::Tcp {
                addr: "localhost:8080".into(),
                path: "/wsgi-metrics".into()
            })
        );
        assert!(matches!(
            Target::parse("unix:/run/m.sock"),
            Ok(Target::Unix { .. })
        ));
        assert!(Target::parse("localhost").is_err());
        assert!(Target::parse("https://x:1/").is_err());
    }
}
