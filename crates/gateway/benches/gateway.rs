//! Parse costs for what nginx 1.22 really sends (tests/captures: a GET with `scgi_params` /
//! `fastcgi_params` and a browser-like set of headers), and the cost of a response head.
//! Run with `cargo bench -p gateway`; compare with `cargo bench -p uwsgi` for the same request.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

use gateway::fastcgi::{encode_stdout, parse_params, Event, Responder};
use gateway::{cgi, scgi, Status, EMPTY_VAR};

const NGINX_SCGI_GET: &[u8] = include_bytes!("../tests/captures/nginx-scgi-get.bin");
const NGINX_FASTCGI_POST: &[u8] = include_bytes!("../tests/captures/nginx-fastcgi-post.bin");

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

fn scgi(c: &mut Criterion) {
    let mut group = c.benchmark_group("scgi");
    group.throughput(Throughput::Bytes(NGINX_SCGI_GET.len() as u64));
    group.bench_function("parse_nginx_get", |b| {
        b.iter(|| {
            let mut storage = [EMPTY_VAR; 64];
            let mut req = scgi::Request::new(&mut storage);
            let status = req.parse(black_box(NGINX_SCGI_GET));
            black_box((status, req.get(b"REQUEST_URI")))
        })
    });
    group.finish();
}

fn fastcgi(c: &mut Criterion) {
    let mut group = c.benchmark_group("fastcgi");
    group.throughput(Throughput::Bytes(NGINX_FASTCGI_POST.len() as u64));
    // Records -> events -> params buffer -> vars, as a worker does it.
    let mut params = Vec::with_capacity(4096);
    group.bench_function("serve_nginx_post", |b| {
        b.iter(|| {
            params.clear();
            let mut responder = Responder::default();
            let (mut pos, mut body) = (0, 0);
            let input = black_box(NGINX_FASTCGI_POST);
            while let Ok(Status::Complete((event, n))) = responder.feed(&input[pos..]) {
                match event {
                    Event::Params(chunk) => params.extend_from_slice(chunk),
                    Event::Stdin(chunk) => body += chunk.len(),
                    _ => {}
                }
                pos += n;
            }
            let mut storage = [EMPTY_VAR; 64];
            black_box((parse_params(&params, &mut storage), body))
        })
    });
    group.finish();
}

fn response(c: &mut Criterion) {
    let mut group = c.benchmark_group("cgi_head");
    let (mut head, mut records) = (Vec::with_capacity(512), Vec::with_capacity(512));
    group.bench_function("encode_6_headers_as_stdout", |b| {
        b.iter(|| {
            head.clear();
            records.clear();
            let headers = black_box(RESPONSE_HEADERS).iter().copied();
            let encoded = cgi::encode_head(b"200 OK", headers, &mut head);
            encode_stdout(1, &head, &mut records);
            black_box((encoded, records.len()))
        })
    });
    group.finish();
}

criterion_group!(benches, scgi, fastcgi, response);
criterion_main!(benches);
