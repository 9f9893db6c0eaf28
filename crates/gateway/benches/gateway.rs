//! Parse costs for what nginx 1.22 really sends (tests/captures: a GET with `scgi_params` /
//! `fastcgi_params` and a browser-like set of headers), and the cost of a Django response head.
//! Run with `cargo bench -p gateway`; compare with `cargo bench -p uwsgi` for the same request.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

use gateway::fastcgi::{encode_stdout, parse_params, Event, Responder};
use gateway::{cgi, scgi, Status, EMPTY_VAR};

const NGINX_SCGI_GET: &[u8] = include_bytes!("../tests/captures/nginx-scgi-get.bin");
const NGINX_FASTCGI_POST: &[u8] = include_bytes!("../tests/captures/nginx-fastcgi-post.bin");

/// What the test Django project answers (as uWSGI relayed it): a typical framework head.
const RESPONSE_HEADERS: &[(&[u8], &[u8])] = &[
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"Vary", b"Cookie"),
    (b"Content-Length", b"337"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"same-origin"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (
        b"Set-Cookie",
        b"csrftoken=8rR7RcXGv8ihgCzLhwgmqb4EO8Cg12m3; Max-Age=31449600; Path=/; SameSite=Lax",
    ),
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
    group.bench_function("encode_django_head_as_stdout", |b| {
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
