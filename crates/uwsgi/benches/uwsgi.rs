//! Parse/encode costs for a typical nginx request: the stock `uwsgi_params` (14 vars) plus the
//! ten `HTTP_*` headers a browser sends, and a typical response head.
//! Run with `cargo bench -p uwsgi`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use uwsgi::{encode_request, encode_response_head, Request, ResponseHead, EMPTY_VAR};

const NGINX_VARS: &[(&[u8], &[u8])] = &[
    (b"QUERY_STRING", b"page=2&sort=desc"),
    (b"REQUEST_METHOD", b"GET"),
    (b"CONTENT_TYPE", b""),
    (b"CONTENT_LENGTH", b""),
    (b"REQUEST_URI", b"/articles/list?page=2&sort=desc"),
    (b"PATH_INFO", b"/articles/list"),
    (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    (b"REQUEST_SCHEME", b"http"),
    (b"REMOTE_ADDR", b"127.0.0.1"),
    (b"REMOTE_PORT", b"51234"),
    (b"SERVER_PORT", b"8080"),
    (b"SERVER_NAME", b"localhost"),
    (b"HTTP_HOST", b"localhost:8080"),
    (
        b"HTTP_USER_AGENT",
        b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        b"HTTP_ACCEPT",
        b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    (b"HTTP_ACCEPT_LANGUAGE", b"en-US,en;q=0.5"),
    (b"HTTP_ACCEPT_ENCODING", b"gzip, deflate, br, zstd"),
    (b"HTTP_CONNECTION", b"keep-alive"),
    (
        b"HTTP_COOKIE",
        b"sessionid=4f2a9c1e7b; csrftoken=Zx81kQ0pLm3nB7vC",
    ),
    (b"HTTP_UPGRADE_INSECURE_REQUESTS", b"1"),
    (
        b"HTTP_REFERER",
        b"http://localhost:8080/articles/list?page=1",
    ),
    (b"HTTP_CACHE_CONTROL", b"max-age=0"),
];

const RESPONSE_HEADERS: &[(&[u8], &[u8])] = &[
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"Content-Length", b"5120"),
    (b"Cache-Control", b"private, max-age=0"),
    (
        b"Set-Cookie",
        b"csrftoken=Zx81kQ0pLm3nB7vC; Path=/; SameSite=Lax",
    ),
    (b"X-Frame-Options", b"DENY"),
    (b"Vary", b"Cookie, Accept-Encoding"),
];

fn request(c: &mut Criterion) {
    let mut packet = Vec::new();
    let n = encode_request(0, 0, NGINX_VARS.iter().copied(), &mut packet).unwrap_or(0);
    assert_eq!(n, packet.len(), "fixture must encode");
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(packet.len() as u64));
    group.bench_function("parse_nginx_23_vars", |b| {
        b.iter(|| {
            let mut storage = [EMPTY_VAR; 64];
            let mut req = Request::new(&mut storage);
            let status = req.parse(black_box(&packet));
            let _ = black_box((status, req.get(b"PATH_INFO")));
        })
    });
    let mut out = Vec::with_capacity(packet.len());
    group.bench_function("encode_nginx_23_vars", |b| {
        b.iter(|| {
            out.clear();
            black_box(encode_request(
                0,
                0,
                black_box(NGINX_VARS).iter().copied(),
                &mut out,
            ))
        })
    });
    group.finish();
}

fn response(c: &mut Criterion) {
    let mut head = Vec::new();
    encode_response_head(b"200 OK", RESPONSE_HEADERS.iter().copied(), &mut head).unwrap_or(());
    assert!(!head.is_empty(), "fixture must encode");
    let mut group = c.benchmark_group("response_head");
    group.throughput(Throughput::Bytes(head.len() as u64));
    group.bench_function("parse_6_headers", |b| {
        b.iter(|| {
            let mut storage = [EMPTY_VAR; 32];
            let mut parsed = ResponseHead::new(&mut storage);
            black_box(parsed.parse(black_box(&head)))
        })
    });
    let mut out = Vec::with_capacity(head.len());
    group.bench_function("encode_6_headers", |b| {
        b.iter(|| {
            out.clear();
            black_box(encode_response_head(
                b"200 OK",
                black_box(RESPONSE_HEADERS).iter().copied(),
                &mut out,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, request, response);
criterion_main!(benches);
