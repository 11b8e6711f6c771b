//! C++ kernels behind a safe Rust API.
//!
//! # Layout
//! - `ffi` (private): the `#[cxx::bridge]` to `src/kernels.cc`. Nothing else touches it.
//! - [`stats`], [`matmul`]: safe typed wrappers; shapes are checked here before C++ runs.
//! - `extra` (private): safe wrappers and input parsing for conv2d, sobel, fft, window_agg,
//!   sha256 and sort (tested in `extra_tests`).
//! - [`Kernels`] / [`CppKernels`]: the registry the Worker calls with a kernel name and the
//!   task's JSON input; [`catalog`] lists every kernel with its input and output schema.
//!
//! Failure policy: bad input is [`KernelError::InvalidInput`] (found in Rust, before any
//! C++ runs); a C++ exception comes back as [`KernelError::Failed`]. A kernel never aborts
//! the process.
//!
//! **Architecture Invariant:** this crate is a leaf: no tokio, no actors, no internal deps.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod extra;
#[cfg(test)]
mod extra_tests;
pub use extra::sha256_hex;

#[cxx::bridge(namespace = "edgerun")]
mod ffi {
    struct StatsOut {
        count: u64,
        mean: f64,
        min: f64,
        max: f64,
        std: f64,
        p50: f64,
        p90: f64,
        p99: f64,
    }

    struct WindowOut {
        start: i64,
        end: i64,
        count: u64,
        sum: f64,
        mean: f64,
        min: f64,
        max: f64,
        anomalies: u64,
    }

    struct Outlier {
        window: u64,
        t: i64,
        v: f64,
        z: f64,
    }

    unsafe extern "C++" {
        include!("edgerun-cpp/include/kernels.h");

        fn conv2d(
            img: &[f32],
            h: usize,
            w: usize,
            k: &[f32],
            kh: usize,
            kw: usize,
            out: &mut [f32],
        ) -> Result<()>;
        fn sobel(img: &[f32], h: usize, w: usize, out: &mut [f32]) -> Result<()>;
        fn fft_magnitude(x: &[f64], out: &mut [f64]) -> Result<()>;
        fn sha256(data: &[u8], out: &mut [u8]) -> Result<()>;
        fn sort_f64(values: &mut [f64]) -> Result<()>;
        fn window_agg(
            t: &[i64],
            v: &[f64],
            window: i64,
            slide: i64,
            z_threshold: f64,
            outliers: &mut Vec<Outlier>,
        ) -> Result<Vec<WindowOut>>;

        fn stats(values: &[f64]) -> Result<StatsOut>;
        fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize, c: &mut [f32]) -> Result<()>;
        fn release_free_memory() -> bool;
    }
}

/// Give the C allocator's free pages back to the operating system (glibc's `malloc_trim`).
///
/// Rust's allocations go through the C allocator here; after a burst (a backlog of pending
/// tasks, a snapshot) glibc keeps the freed pages inside its arenas, so a node that peaked at
/// 200 MB stays at 200 MB resident with a third of it in use. The Monitor calls this now and
/// then; it costs a walk over the free lists. Returns whether anything was released.
pub fn release_free_memory() -> bool {
    ffi::release_free_memory()
}

/// Largest `values` array `stats` accepts.
pub const MAX_STATS_VALUES: usize = 10_000_000;
/// Largest matrix side and element count `matmul` accepts.
pub const MAX_MATRIX_SIDE: usize = 4096;
pub const MAX_MATRIX_ELEMENTS: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("unknown kernel {0:?}; known kernels: {known}", known = KERNEL_NAMES.join(", "))]
    Unknown(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("kernel failed: {0}")]
    Failed(String),
}

impl KernelError {
    /// The stable snake_case code used in task errors and REST errors.
    pub fn code(&self) -> &'static str {
        match self {
            KernelError::Unknown(_) => "unknown_kernel",
            KernelError::InvalidInput(_) => "invalid_input",
            KernelError::Failed(_) => "kernel_error",
        }
    }
}

/// Summary statistics of a series (population standard deviation; percentiles by linear
/// interpolation between closest ranks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub std: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

pub fn stats(values: &[f64]) -> Result<Stats, KernelError> {
    if values.is_empty() {
        return Err(KernelError::InvalidInput("values must not be empty".into()));
    }
    if values.len() > MAX_STATS_VALUES {
        return Err(KernelError::InvalidInput(format!(
            "values has {} elements; at most {MAX_STATS_VALUES}",
            values.len()
        )));
    }
    let o = ffi::stats(values).map_err(|e| KernelError::Failed(e.what().to_string()))?;
    Ok(Stats {
        count: o.count,
        mean: o.mean,
        min: o.min,
        max: o.max,
        std: o.std,
        p50: o.p50,
        p90: o.p90,
        p99: o.p99,
    })
}

/// A dense row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// Build from nested rows, checking that it is non-empty, rectangular and within limits.
    pub fn from_rows(name: &str, rows: &[Vec<f32>]) -> Result<Matrix, KernelError> {
        let r = rows.len();
        let c = rows.first().map_or(0, |row| row.len());
        if r == 0 || c == 0 {
            return Err(KernelError::InvalidInput(format!(
                "{name} must have at least one row and one column"
            )));
        }
        if r > MAX_MATRIX_SIDE || c > MAX_MATRIX_SIDE || r * c > MAX_MATRIX_ELEMENTS {
            return Err(KernelError::InvalidInput(format!(
                "{name} is {r}x{c}; sides are limited to {MAX_MATRIX_SIDE} and size to {MAX_MATRIX_ELEMENTS} elements"
            )));
        }
        let mut data = Vec::with_capacity(r * c);
        for (i, row) in rows.iter().enumerate() {
            if row.len() != c {
                return Err(KernelError::InvalidInput(format!(
                    "{name} is ragged: row 0 has {c} columns, row {i} has {}",
                    row.len()
                )));
            }
            data.extend_from_slice(row);
        }
        Ok(Matrix {
            rows: r,
            cols: c,
            data,
        })
    }

    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.data
            .chunks(self.cols.max(1))
            .map(|c| c.to_vec())
            .collect()
    }
}

/// `a * b`.
pub fn matmul(a: &Matrix, b: &Matrix) -> Result<Matrix, KernelError> {
    if a.cols != b.rows {
        return Err(KernelError::InvalidInput(format!(
            "shapes do not chain: a is {}x{}, b is {}x{} (a's columns must equal b's rows)",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    if a.rows * b.cols > MAX_MATRIX_ELEMENTS {
        return Err(KernelError::InvalidInput(format!(
            "the result would be {}x{}; at most {MAX_MATRIX_ELEMENTS} elements",
            a.rows, b.cols
        )));
    }
    let mut c = vec![0f32; a.rows * b.cols];
    ffi::matmul(&a.data, &b.data, a.rows, a.cols, b.cols, &mut c)
        .map_err(|e| KernelError::Failed(e.what().to_string()))?;
    Ok(Matrix {
        rows: a.rows,
        cols: b.cols,
        data: c,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatmulInput {
    a: Vec<Vec<f32>>,
    b: Vec<Vec<f32>>,
}

/// Every kernel name, in catalog order.
pub const KERNEL_NAMES: &[&str] = &[
    "stats",
    "matmul",
    "conv2d",
    "sobel",
    "fft",
    "window_agg",
    "sha256",
    "sort",
];

/// A kernel as `GET /v1/kernels` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KernelInfo {
    pub name: &'static str,
    /// Bumped when the kernel's input or output changes meaning.
    pub version: u32,
    /// The same input always gives the same output: results may be cached.
    pub deterministic: bool,
    pub description: &'static str,
    pub input_schema: Value,
    pub output_schema: Value,
}

fn num_array() -> Value {
    json!({"type": "array", "items": {"type": "number"}})
}

/// `values` as JSON numbers, or `values_b64` as base64 little-endian f64s.
fn series(max: usize) -> Value {
    json!({"type": "object", "additionalProperties": false,
        "oneOf": [{"required": ["values"]}, {"required": ["values_b64"]}],
        "properties": {
            "values": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": max},
            "values_b64": {"type": "string", "contentEncoding": "base64", "description": "little-endian f64s"}}})
}

fn matrix() -> Value {
    json!({"type": "array", "items": num_array(), "minItems": 1})
}

pub fn catalog() -> Vec<KernelInfo> {
    let stat_props: serde_json::Map<String, Value> =
        ["count", "mean", "min", "max", "std", "p50", "p90", "p99"]
            .iter()
            .map(|k| (k.to_string(), json!({"type": "number"})))
            .collect();
    vec![
        KernelInfo {
            name: "stats",
            version: 1,
            deterministic: true,
            description: "count, mean, min, max, population std and p50/p90/p99 (linear interpolation) of a series",
            input_schema: series(MAX_STATS_VALUES),
            output_schema: json!({"type": "object", "properties": stat_props}),
        },
        KernelInfo {
            name: "matmul",
            version: 1,
            deterministic: true,
            description: "c = a x b for f32 matrices (a's columns = b's rows)",
            input_schema: json!({"type": "object", "required": ["a", "b"], "additionalProperties": false,
                "properties": {"a": matrix(), "b": matrix()}}),
            output_schema: json!({"type": "object", "properties": {"c": matrix()}}),
        },
        KernelInfo {
            name: "conv2d",
            version: 1,
            deterministic: true,
            description: "2-D cross-correlation of an f32 image with an odd-sided kernel (at most 31x31), zero padding, same size out",
            input_schema: json!({"type": "object", "required": ["image", "kernel"], "additionalProperties": false,
                "properties": {"image": matrix(), "kernel": matrix()}}),
            output_schema: json!({"type": "object", "properties": {"image": matrix()}}),
        },
        KernelInfo {
            name: "sobel",
            version: 1,
            deterministic: true,
            description: "Sobel edge magnitude sqrt(gx^2 + gy^2) of an f32 image, zero padding, same size out",
            input_schema: json!({"type": "object", "required": ["image"], "additionalProperties": false,
                "properties": {"image": matrix()}}),
            output_schema: json!({"type": "object", "properties": {"image": matrix()}}),
        },
        KernelInfo {
            name: "fft",
            version: 1,
            deterministic: true,
            description: "magnitude spectrum (bins 0..n/2) of a real series whose length is a power of two",
            input_schema: series(extra::MAX_FFT),
            output_schema: json!({"type": "object", "properties": {"magnitude": num_array()}}),
        },
        KernelInfo {
            name: "window_agg",
            version: 1,
            deterministic: true,
            description: "tumbling (slide_ms = window_ms, the default) or sliding windows over timestamped points; count, sum, mean, min, max and anomaly (points with |z| > z_threshold within their window)",
            input_schema: json!({"type": "object", "required": ["points", "window_ms"], "additionalProperties": false,
                "properties": {
                    "points": {"type": "array", "maxItems": extra::MAX_POINTS, "items": {"type": "object", "required": ["t", "v"], "properties": {"t": {"type": "integer"}, "v": {"type": "number"}}}},
                    "window_ms": {"type": "integer", "minimum": 1},
                    "slide_ms": {"type": "integer", "minimum": 1},
                    "aggs": {"type": "array", "items": {"enum": extra::AGGS}},
                    "z_threshold": {"type": "number", "exclusiveMinimum": 0, "default": 3.0}}}),
            output_schema: json!({"type": "object", "properties": {"windows": {"type": "array", "items": {"type": "object",
                "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}, "count": {"type": "integer"}, "sum": {"type": "number"},
                    "mean": {"type": "number"}, "min": {"type": "number"}, "max": {"type": "number"},
                    "anomalies": {"type": "array", "items": {"type": "object", "properties": {"t": {"type": "integer"}, "v": {"type": "number"}, "z": {"type": "number"}}}}}}}}}),
        },
        KernelInfo {
            name: "sha256",
            version: 1,
            deterministic: true,
            description: "SHA-256 of a base64 payload (at most 64 MiB decoded)",
            input_schema: json!({"type": "object", "required": ["data_b64"], "additionalProperties": false,
                "properties": {"data_b64": {"type": "string", "contentEncoding": "base64"}}}),
            output_schema: json!({"type": "object", "properties": {"hex": {"type": "string"}}}),
        },
        KernelInfo {
            name: "sort",
            version: 1,
            deterministic: true,
            description: "f64 values in ascending order",
            input_schema: series(extra::MAX_VALUES),
            output_schema: json!({"type": "object", "properties": {"values": num_array()}}),
        },
    ]
}

/// Runs kernels by name on JSON input. The Worker holds one; tests may supply another.
pub trait Kernels: Send + Sync + 'static {
    /// Check `input` against the kernel's schema without running it.
    fn validate(&self, kernel: &str, input: &str) -> Result<(), KernelError>;
    /// Run the kernel; returns the result as JSON text.
    fn run(&self, kernel: &str, input: &str) -> Result<String, KernelError>;
}

/// The built-in C++ kernels.
#[derive(Debug, Default, Clone, Copy)]
pub struct CppKernels;

enum Parsed {
    Stats(Vec<f64>),
    Matmul(Matrix, Matrix),
    Conv2d(extra::Image),
    Sobel(extra::Image),
    Fft(Vec<f64>),
    Windows(extra::Windows),
    Sha256(Vec<u8>),
    Sort(Vec<f64>),
}

fn parse(kernel: &str, input: &str) -> Result<Parsed, KernelError> {
    fn from<T: serde::de::DeserializeOwned>(input: &str) -> Result<T, KernelError> {
        serde_json::from_str(input).map_err(|e| KernelError::InvalidInput(e.to_string()))
    }
    match kernel {
        "stats" => Ok(Parsed::Stats(
            from::<extra::Series>(input)?.take(MAX_STATS_VALUES)?,
        )),
        "matmul" => {
            let i: MatmulInput = from(input)?;
            let a = Matrix::from_rows("a", &i.a)?;
            let b = Matrix::from_rows("b", &i.b)?;
            if a.cols != b.rows {
                return Err(KernelError::InvalidInput(format!(
                    "shapes do not chain: a is {}x{}, b is {}x{} (a's columns must equal b's rows)",
                    a.rows, a.cols, b.rows, b.cols
                )));
            }
            Ok(Parsed::Matmul(a, b))
        }
        "conv2d" => Ok(Parsed::Conv2d(extra::image_input(from(input)?, true)?)),
        "sobel" => Ok(Parsed::Sobel(extra::image_input(from(input)?, false)?)),
        "fft" => {
            let v = from::<extra::Series>(input)?.take(extra::MAX_FFT)?;
            extra::check_fft_len(v.len())?;
            Ok(Parsed::Fft(v))
        }
        "window_agg" => Ok(Parsed::Windows(extra::window_input(from(input)?)?)),
        "sha256" => Ok(Parsed::Sha256(extra::sha256_input(from(input)?)?)),
        "sort" => Ok(Parsed::Sort(
            from::<extra::Series>(input)?.take(extra::MAX_VALUES)?,
        )),
        other => Err(KernelError::Unknown(other.to_string())),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, KernelError> {
    serde_json::to_string(v).map_err(|e| KernelError::Failed(format!("encoding the result: {e}")))
}

impl Kernels for CppKernels {
    fn validate(&self, kernel: &str, input: &str) -> Result<(), KernelError> {
        parse(kernel, input).map(|_| ())
    }

    fn run(&self, kernel: &str, input: &str) -> Result<String, KernelError> {
        match parse(kernel, input)? {
            Parsed::Stats(v) => to_json(&stats(&v)?),
            Parsed::Matmul(a, b) => {
                let c = matmul(&a, &b)?;
                to_json(&json!({"c": c.to_rows()}))
            }
            Parsed::Conv2d(i) => match &i.kernel {
                Some(k) => to_json(&extra::conv2d(&i.img, k)?),
                None => Err(KernelError::InvalidInput("missing field `kernel`".into())),
            },
            Parsed::Sobel(i) => to_json(&extra::sobel(&i.img)?),
            Parsed::Fft(v) => to_json(&extra::fft(&v)?),
            Parsed::Windows(w) => to_json(&extra::window_agg(&w)?),
            Parsed::Sha256(d) => to_json(&json!({ "hex": sha256_hex(&d)? })),
            Parsed::Sort(v) => to_json(&extra::sort(v)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_matches_hand_computed_values() {
        let s = stats(&[4.0, 1.0, 3.0, 2.0]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.count, 4);
        assert_eq!(s.mean, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
        assert!((s.p50 - 2.5).abs() < 1e-12);
        assert!((s.p90 - 3.7).abs() < 1e-12);
    }

    #[test]
    fn matmul_2x2_and_rectangular() {
        let a = Matrix::from_rows("a", &[vec![1.0, 2.0], vec![3.0, 4.0]])
            .unwrap_or_else(|e| panic!("{e}"));
        let b = Matrix::from_rows("b", &[vec![5.0, 6.0], vec![7.0, 8.0]])
            .unwrap_or_else(|e| panic!("{e}"));
        let c = matmul(&a, &b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.to_rows(), vec![vec![19.0, 22.0], vec![43.0, 50.0]]);
        // 3x700 * 700x600 crosses the block sizes; compare to a naive product
        let (n, k, m) = (3, 700, 600);
        let a = Matrix {
            rows: n,
            cols: k,
            data: (0..n * k).map(|i| (i % 7) as f32 - 3.0).collect(),
        };
        let b = Matrix {
            rows: k,
            cols: m,
            data: (0..k * m).map(|i| (i % 5) as f32 * 0.5).collect(),
        };
        let c = matmul(&a, &b).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..n {
            for j in 0..m {
                let want: f32 = (0..k).map(|x| a.data[i * k + x] * b.data[x * m + j]).sum();
                assert!(
                    (c.data[i * m + j] - want).abs() <= 1e-3 * want.abs().max(1.0),
                    "c[{i}][{j}]"
                );
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_crash() {
        let k = CppKernels;
        let cases = [
            ("stats", r#"{"values": []}"#),
            ("stats", r#"{"values": "x"}"#),
            ("stats", r#"{"vals": [1]}"#),
            ("matmul", r#"{"a": [[1,2],[3]], "b": [[1],[2]]}"#),
            ("matmul", r#"{"a": [[1,2]], "b": [[1,2]]}"#),
            ("matmul", r#"{"a": [], "b": [[1]]}"#),
            ("stats", "not json"),
        ];
        for (kernel, input) in cases {
            match k.run(kernel, input) {
                Err(KernelError::InvalidInput(_)) => {}
                other => panic!("{kernel} {input}: expected invalid input, got {other:?}"),
            }
        }
        assert_eq!(
            k.run("nope", "{}"),
            Err(KernelError::Unknown("nope".into()))
        );
        // the C++ side's own checks surface as errors too
        let a = Matrix {
            rows: 2,
            cols: 2,
            data: vec![1.0; 3],
        };
        assert!(matches!(matmul(&a, &a), Err(KernelError::Failed(_))));
    }
}
