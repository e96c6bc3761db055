//! `cargo run --release --no-default-features --example bench_convert -- BODY_FILE`: time the
//! conversion alone (no Python), in microseconds per span.
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: bench_convert BODY_FILE");
    let body = std::fs::read(path).expect("read body");
    let mut spans = 0usize;
    let mut docs = Vec::new();
    let start = Instant::now();
    let iters: usize = std::env::args().nth(2).map_or(200, |s| s.parse().unwrap());
    for _ in 0..iters {
        match _otlp_native::convert_body(&body, &mut docs).expect("decode") {
            _otlp_native::Outcome::Rows(rows, _) => spans += rows.len(),
            _otlp_native::Outcome::Punt(why) => panic!("punt: {why}"),
        }
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / spans as f64;
    println!("{spans} spans, {us:.3} us/span");
}
