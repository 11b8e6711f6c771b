//! Kernels against straightforward Rust references and published vectors, edge cases, and a
//! randomized check that no input crashes the process.

use base64::Engine;
use serde_json::{json, Value};

use crate::{CppKernels, KernelError, Kernels};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f64 {
        (self.next() % 20_000) as f64 / 1000.0 - 10.0
    }
}

fn run(kernel: &str, input: Value) -> Result<Value, KernelError> {
    CppKernels
        .run(kernel, &input.to_string())
        .map(|s| serde_json::from_str(&s).unwrap_or(Value::Null))
}

fn must(kernel: &str, input: Value) -> Value {
    run(kernel, input).unwrap_or_else(|e| panic!("{kernel}: {e}"))
}

fn invalid(kernel: &str, input: Value, needle: &str) {
    match run(kernel, input.clone()) {
        Err(KernelError::InvalidInput(m)) => assert!(
            m.contains(needle),
            "{kernel} {input}: {m:?} lacks {needle:?}"
        ),
        other => panic!("{kernel} {input}: expected invalid input, got {other:?}"),
    }
}

fn image(rng: &mut Rng, h: usize, w: usize) -> Vec<Vec<f32>> {
    (0..h)
        .map(|_| (0..w).map(|_| rng.f() as f32).collect())
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn ref_conv(img: &[Vec<f32>], k: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let (h, w, kh, kw) = (
        img.len() as i64,
        img[0].len() as i64,
        k.len() as i64,
        k[0].len() as i64,
    );
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| {
                    let mut s = 0f32;
                    for i in 0..kh {
                        for j in 0..kw {
                            let (yy, xx) = (y + i - kh / 2, x + j - kw / 2);
                            if yy >= 0 && yy < h && xx >= 0 && xx < w {
                                s += img[yy as usize][xx as usize] * k[i as usize][j as usize];
                            }
                        }
                    }
                    s
                })
                .collect()
        })
        .collect()
}

fn close_rows(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (x, y) in ra.iter().zip(rb) {
            assert!((x - y).abs() <= 1e-3 * y.abs().max(1.0), "{x} vs {y}");
        }
    }
}

#[test]
fn conv2d_and_sobel_match_references() {
    let mut rng = Rng(7);
    for (h, w, kh, kw) in [
        (1, 1, 1, 1),
        (5, 7, 3, 3),
        (9, 4, 5, 1),
        (16, 16, 7, 3),
        (3, 3, 5, 5),
    ] {
        let img = image(&mut rng, h, w);
        let k = image(&mut rng, kh, kw);
        let got = must("conv2d", json!({ "image": img, "kernel": k }));
        close_rows(&rows(&got["image"]), &ref_conv(&img, &k));
    }
    let img = image(&mut rng, 12, 9);
    let gx = vec![
        vec![-1.0, 0.0, 1.0],
        vec![-2.0, 0.0, 2.0],
        vec![-1.0, 0.0, 1.0],
    ];
    let gy = vec![
        vec![-1.0, -2.0, -1.0],
        vec![0.0, 0.0, 0.0],
        vec![1.0, 2.0, 1.0],
    ];
    let (x, y) = (ref_conv(&img, &gx), ref_conv(&img, &gy));
    let want: Vec<Vec<f32>> = x
        .iter()
        .zip(&y)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(p, q)| (p * p + q * q).sqrt())
                .collect()
        })
        .collect();
    close_rows(
        &rows(&must("sobel", json!({ "image": img }))["image"]),
        &want,
    );
    invalid(
        "conv2d",
        json!({ "image": [[1]], "kernel": [[1, 2]] }),
        "odd",
    );
    invalid(
        "conv2d",
        json!({ "image": [[1, 2], [3]], "kernel": [[1]] }),
        "ragged",
    );
    invalid("conv2d", json!({ "image": [[1]] }), "kernel");
    invalid("sobel", json!({ "image": [] }), "at least one row");
    invalid(
        "sobel",
        json!({ "image": [[1]], "kernel": [[1]] }),
        "kernel",
    );
}

#[test]
fn fft_matches_a_naive_dft() {
    let mut rng = Rng(11);
    for n in [2usize, 8, 64, 1024] {
        let x: Vec<f64> = (0..n).map(|_| rng.f()).collect();
        let got: Vec<f64> =
            serde_json::from_value(must("fft", json!({ "values": x }))["magnitude"].clone())
                .unwrap_or_default();
        assert_eq!(got.len(), n / 2 + 1);
        for (k, g) in got.iter().enumerate() {
            let (mut re, mut im) = (0f64, 0f64);
            for (t, v) in x.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (k * t) as f64 / n as f64;
                re += v * a.cos();
                im += v * a.sin();
            }
            let want = (re * re + im * im).sqrt();
            assert!(
                (g - want).abs() <= 1e-6 * want.max(1.0),
                "n={n} k={k}: {g} vs {want}"
            );
        }
    }
    // A pure tone lands in its bin.
    let tone: Vec<f64> = (0..64)
        .map(|t| (2.0 * std::f64::consts::PI * 5.0 * t as f64 / 64.0).cos())
        .collect();
    let m: Vec<f64> =
        serde_json::from_value(must("fft", json!({ "values": tone }))["magnitude"].clone())
            .unwrap_or_default();
    assert!((m[5] - 32.0).abs() < 1e-9 && m[4] < 1e-9);
    invalid("fft", json!({ "values": [1, 2, 3] }), "power of two");
    invalid("fft", json!({ "values": [1] }), "power of two");
    invalid("fft", json!({ "values": [] }), "empty");
}

#[test]
fn sha256_matches_nist_vectors() {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let cases: [(&[u8], &str); 3] = [
        (
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ];
    for (data, hex) in cases {
        assert_eq!(must("sha256", json!({ "data_b64": b64(data) }))["hex"], hex);
    }
    let million = vec![b'a'; 1_000_000];
    assert_eq!(
        crate::sha256_hex(&million).ok().as_deref(),
        Some("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    );
    // Padding boundaries: 55, 56, 63, 64 bytes all hash (lengths checked against each other's
    // block counts indirectly by the NIST 56-byte vector above).
    for n in [55usize, 56, 63, 64, 65, 119, 120] {
        assert_eq!(
            crate::sha256_hex(&vec![0u8; n]).map(|h| h.len()).ok(),
            Some(64)
        );
    }
    invalid("sha256", json!({ "data_b64": "not base64!" }), "data_b64");
}

#[test]
fn sort_and_series_forms() {
    let mut rng = Rng(3);
    let v: Vec<f64> = (0..1000).map(|_| rng.f()).collect();
    let mut want = v.clone();
    want.sort_by(|a, b| a.total_cmp(b));
    let got: Vec<f64> =
        serde_json::from_value(must("sort", json!({ "values": v }))["values"].clone())
            .unwrap_or_default();
    assert_eq!(got, want);
    // values_b64: little-endian f64s; NaN and inf are refused with their index.
    let le = |xs: &[f64]| {
        base64::engine::general_purpose::STANDARD
            .encode(xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
    };
    let got = must("sort", json!({ "values_b64": le(&[3.0, -1.0, 2.5]) }));
    assert_eq!(got["values"], json!([-1.0, 2.5, 3.0]));
    assert_eq!(
        must("stats", json!({ "values_b64": le(&[1.0, 3.0]) }))["mean"],
        2.0
    );
    invalid(
        "sort",
        json!({ "values_b64": le(&[1.0, f64::NAN]) }),
        "values[1]",
    );
    invalid(
        "stats",
        json!({ "values_b64": le(&[f64::INFINITY]) }),
        "finite",
    );
    invalid("sort", json!({ "values_b64": "AAAA" }), "whole number");
    invalid(
        "sort",
        json!({ "values": [1], "values_b64": le(&[1.0]) }),
        "not both",
    );
}

fn ref_windows(points: &[(i64, f64)], window: i64, slide: i64) -> Vec<(i64, u64, f64, f64, f64)> {
    let tmin = points.iter().map(|p| p.0).min().unwrap_or(0);
    let tmax = points.iter().map(|p| p.0).max().unwrap_or(0);
    let mut out = Vec::new();
    let mut start = (tmin - window).div_euclid(slide) * slide;
    while start <= tmax {
        let inside: Vec<f64> = points
            .iter()
            .filter(|p| p.0 >= start && p.0 < start + window)
            .map(|p| p.1)
            .collect();
        if !inside.is_empty() {
            let sum: f64 = inside.iter().sum();
            let mn = inside.iter().cloned().fold(f64::INFINITY, f64::min);
            let mx = inside.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            out.push((start, inside.len() as u64, sum, mn, mx));
        }
        start += slide;
    }
    out
}

#[test]
fn window_agg_matches_a_reference_and_finds_outliers() {
    let mut rng = Rng(5);
    let points: Vec<(i64, f64)> = (0..300)
        .map(|_| ((rng.next() % 10_000) as i64 - 2_000, rng.f()))
        .collect();
    let json_points: Vec<Value> = points
        .iter()
        .map(|(t, v)| json!({ "t": t, "v": v }))
        .collect();
    for (window, slide) in [(1000, 1000), (1000, 250), (300, 700)] {
        let got = must(
            "window_agg",
            json!({ "points": json_points, "window_ms": window, "slide_ms": slide }),
        );
        let want = ref_windows(&points, window, slide);
        let ws = got["windows"].as_array().cloned().unwrap_or_default();
        assert_eq!(ws.len(), want.len(), "window {window} slide {slide}");
        for (w, (start, count, sum, mn, mx)) in ws.iter().zip(want) {
            assert_eq!(w["start"].as_i64(), Some(start));
            assert_eq!(w["end"].as_i64(), Some(start + window));
            assert_eq!(w["count"].as_u64(), Some(count));
            assert!((w["sum"].as_f64().unwrap_or(f64::NAN) - sum).abs() < 1e-9);
            assert!((w["mean"].as_f64().unwrap_or(f64::NAN) - sum / count as f64).abs() < 1e-9);
            assert_eq!((w["min"].as_f64(), w["max"].as_f64()), (Some(mn), Some(mx)));
        }
    }
    // One spike among steady readings is the window's only anomaly.
    let mut steady: Vec<Value> = (0..50)
        .map(|i| json!({ "t": i * 10, "v": 20.0 + (i % 3) as f64 * 0.1 }))
        .collect();
    steady.push(json!({ "t": 255, "v": 95.0 }));
    let got = must(
        "window_agg",
        json!({ "points": steady, "window_ms": 1000, "aggs": ["count", "anomaly"] }),
    );
    let w = &got["windows"][0];
    assert_eq!(w["count"], 51);
    assert!(w.get("sum").is_none(), "only the asked aggregates");
    assert_eq!(w["anomalies"].as_array().map(|a| a.len()), Some(1), "{w}");
    assert_eq!(w["anomalies"][0]["t"], 255);
    assert_eq!(
        must("window_agg", json!({ "points": [], "window_ms": 10 }))["windows"],
        json!([])
    );
    invalid(
        "window_agg",
        json!({ "points": [], "window_ms": 0 }),
        "window_ms",
    );
    invalid(
        "window_agg",
        json!({ "points": [{ "t": 1, "v": 1 }], "window_ms": 10, "aggs": ["median"] }),
        "median",
    );
    invalid(
        "window_agg",
        json!({ "points": [{ "t": 0, "v": 1 }, { "t": 9_000_000_000_000i64, "v": 1 }], "window_ms": 10 }),
        "windows",
    );
}

/// Random JSON shaped like each kernel's input: the kernels answer Ok or Err, never crash.
#[test]
fn no_input_crashes_a_kernel() {
    let mut rng = Rng(0xdead_beef);
    let fields = [
        "values",
        "values_b64",
        "a",
        "b",
        "image",
        "kernel",
        "points",
        "window_ms",
        "slide_ms",
        "aggs",
        "data_b64",
        "t",
        "v",
        "z_threshold",
    ];
    fn value(rng: &mut Rng, depth: u32, fields: &[&str]) -> Value {
        match rng.next() % if depth > 3 { 5 } else { 8 } {
            0 => json!(null),
            1 => json!(rng.f()),
            2 => json!((rng.next() % 2_000_000) as i64 - 1_000_000),
            3 => json!(["AAAA", "////", "=", "not base64", ""][(rng.next() % 5) as usize]),
            4 => json!(rng.next().is_multiple_of(2)),
            5 | 6 => Value::Array(
                (0..rng.next() % 6)
                    .map(|_| value(rng, depth + 1, fields))
                    .collect(),
            ),
            _ => {
                let mut m = serde_json::Map::new();
                for _ in 0..rng.next() % 4 {
                    let k = fields[(rng.next() as usize) % fields.len()];
                    m.insert(k.to_string(), value(rng, depth + 1, fields));
                }
                Value::Object(m)
            }
        }
    }
    for i in 0..4000 {
        let kernel = crate::KERNEL_NAMES[i % crate::KERNEL_NAMES.len()];
        let input = value(&mut rng, 0, &fields);
        let _ = CppKernels.run(kernel, &input.to_string());
        let _ = CppKernels.validate(kernel, &input.to_string());
    }
}
