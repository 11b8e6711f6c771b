//! Safe wrappers and input parsing for conv2d, sobel, fft, window_agg, sha256 and sort.
//!
//! Every input is checked here (shapes, sizes, finiteness, limits) before C++ runs; the C++
//! side still checks what it relies on and throws, which comes back as `KernelError::Failed`.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{ffi, KernelError, Matrix};

/// Largest series for fft and sort (and `values_b64`).
pub const MAX_VALUES: usize = 10_000_000;
/// Largest fft length.
pub const MAX_FFT: usize = 1 << 22;
/// Largest convolution kernel side.
pub const MAX_KERNEL_SIDE: usize = 31;
/// Most points and windows in one window_agg call.
pub const MAX_POINTS: usize = 1_000_000;
pub const MAX_WINDOWS: i64 = 1_000_000;
/// Largest sha256 payload (decoded).
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

fn bad(msg: impl Into<String>) -> KernelError {
    KernelError::InvalidInput(msg.into())
}

fn failed(e: cxx::Exception) -> KernelError {
    KernelError::Failed(e.what().to_string())
}

/// A series as JSON numbers or as base64 little-endian f64 (`values_b64`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Series {
    values: Option<Vec<f64>>,
    values_b64: Option<String>,
}

impl Series {
    /// The values: exactly one form, non-empty, within `max`, all finite.
    pub(crate) fn take(self, max: usize) -> Result<Vec<f64>, KernelError> {
        let v = match (self.values, self.values_b64) {
            (Some(v), None) => v,
            (None, Some(b)) => {
                if b.len() / 4 * 3 > max * 8 + 3 {
                    return Err(bad(format!("values_b64: more than {max} values")));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| bad(format!("values_b64: {e}")))?;
                if bytes.len() % 8 != 0 {
                    return Err(bad(format!(
                        "values_b64: {} bytes is not a whole number of little-endian f64s",
                        bytes.len()
                    )));
                }
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect()
            }
            (Some(_), Some(_)) => return Err(bad("give values or values_b64, not both")),
            (None, None) => return Err(bad("missing field `values` (or `values_b64`)")),
        };
        if v.is_empty() {
            return Err(bad("values must not be empty"));
        }
        if v.len() > max {
            return Err(bad(format!(
                "values has {} elements; at most {max}",
                v.len()
            )));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "values[{i}] is {}; only finite numbers are accepted",
                v[i]
            )));
        }
        Ok(v)
    }
}

pub(crate) fn check_fft_len(n: usize) -> Result<(), KernelError> {
    if !n.is_power_of_two() || n < 2 {
        return Err(bad(format!(
            "values has {n} elements; fft needs a power of two, at least 2"
        )));
    }
    if n > MAX_FFT {
        return Err(bad(format!(
            "values has {n} elements; fft takes at most {MAX_FFT}"
        )));
    }
    Ok(())
}

pub(crate) fn fft(values: &[f64]) -> Result<Value, KernelError> {
    let n = values.len();
    check_fft_len(n)?;
    let mut out = vec![0f64; n / 2 + 1];
    ffi::fft_magnitude(values, &mut out).map_err(failed)?;
    Ok(json!({ "magnitude": out }))
}

pub(crate) fn sort(mut values: Vec<f64>) -> Result<Value, KernelError> {
    ffi::sort_f64(&mut values).map_err(failed)?;
    Ok(json!({ "values": values }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sha256Input {
    data_b64: String,
}

pub(crate) fn sha256_input(i: Sha256Input) -> Result<Vec<u8>, KernelError> {
    if i.data_b64.len() / 4 * 3 > MAX_BYTES + 3 {
        return Err(bad(format!("data_b64: more than {MAX_BYTES} bytes")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(i.data_b64.as_bytes())
        .map_err(|e| bad(format!("data_b64: {e}")))
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> Result<String, KernelError> {
    let mut out = [0u8; 32];
    ffi::sha256(data, &mut out).map_err(failed)?;
    Ok(out.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageInput {
    image: Vec<Vec<f32>>,
    kernel: Option<Vec<Vec<f32>>>,
}

pub(crate) struct Image {
    pub img: Matrix,
    pub kernel: Option<Matrix>,
}

fn finite(name: &str, m: &Matrix) -> Result<(), KernelError> {
    match m.data.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(bad(format!(
            "{name}[{}][{}] is not a finite number",
            i / m.cols,
            i % m.cols
        ))),
        None => Ok(()),
    }
}

pub(crate) fn image_input(i: ImageInput, with_kernel: bool) -> Result<Image, KernelError> {
    let img = Matrix::from_rows("image", &i.image)?;
    finite("image", &img)?;
    let kernel = match (with_kernel, i.kernel) {
        (true, Some(k)) => {
            let k = Matrix::from_rows("kernel", &k)?;
            if k.rows % 2 == 0
                || k.cols % 2 == 0
                || k.rows > MAX_KERNEL_SIDE
                || k.cols > MAX_KERNEL_SIDE
            {
                return Err(bad(format!(
                    "kernel is {}x{}; sides must be odd and at most {MAX_KERNEL_SIDE}",
                    k.rows, k.cols
                )));
            }
            finite("kernel", &k)?;
            Some(k)
        }
        (true, None) => return Err(bad("missing field `kernel`")),
        (false, Some(_)) => {
            return Err(bad(
                "unknown field `kernel`: sobel uses its own 3x3 kernels",
            ))
        }
        (false, None) => None,
    };
    Ok(Image { img, kernel })
}

pub(crate) fn conv2d(img: &Matrix, k: &Matrix) -> Result<Value, KernelError> {
    let mut out = vec![0f32; img.rows * img.cols];
    ffi::conv2d(
        &img.data, img.rows, img.cols, &k.data, k.rows, k.cols, &mut out,
    )
    .map_err(failed)?;
    let m = Matrix {
        rows: img.rows,
        cols: img.cols,
        data: out,
    };
    Ok(json!({ "image": m.to_rows() }))
}

pub(crate) fn sobel(img: &Matrix) -> Result<Value, KernelError> {
    let mut out = vec![0f32; img.rows * img.cols];
    ffi::sobel(&img.data, img.rows, img.cols, &mut out).map_err(failed)?;
    let m = Matrix {
        rows: img.rows,
        cols: img.cols,
        data: out,
    };
    Ok(json!({ "image": m.to_rows() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Point {
    t: i64,
    v: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowInput {
    points: Vec<Point>,
    window_ms: i64,
    slide_ms: Option<i64>,
    aggs: Option<Vec<String>>,
    z_threshold: Option<f64>,
}

pub(crate) const AGGS: &[&str] = &["count", "sum", "mean", "min", "max", "anomaly"];

pub(crate) struct Windows {
    t: Vec<i64>,
    v: Vec<f64>,
    window: i64,
    slide: i64,
    aggs: Vec<String>,
    z: f64,
}

pub(crate) fn window_input(i: WindowInput) -> Result<Windows, KernelError> {
    if i.window_ms <= 0 {
        return Err(bad(format!(
            "window_ms is {}; it must be positive",
            i.window_ms
        )));
    }
    let slide = i.slide_ms.unwrap_or(i.window_ms);
    if slide <= 0 {
        return Err(bad(format!("slide_ms is {slide}; it must be positive")));
    }
    if i.points.len() > MAX_POINTS {
        return Err(bad(format!(
            "points has {} elements; at most {MAX_POINTS}",
            i.points.len()
        )));
    }
    let aggs = i.aggs.unwrap_or_else(|| {
        ["count", "sum", "mean", "min", "max"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    if let Some(a) = aggs.iter().find(|a| !AGGS.contains(&a.as_str())) {
        return Err(bad(format!(
            "aggs: {a:?} is not one of {}",
            AGGS.join(", ")
        )));
    }
    let z = i.z_threshold.unwrap_or(3.0);
    if !z.is_finite() || z <= 0.0 {
        return Err(bad(format!(
            "z_threshold is {z}; it must be a positive number"
        )));
    }
    if let Some(p) = i.points.iter().position(|p| !p.v.is_finite()) {
        return Err(bad(format!("points[{p}].v is not a finite number")));
    }
    let (t, v): (Vec<i64>, Vec<f64>) = i.points.into_iter().map(|p| (p.t, p.v)).unzip();
    if let (Some(lo), Some(hi)) = (t.iter().min(), t.iter().max()) {
        let span = (*hi as i128 - *lo as i128 + i.window_ms as i128) / slide as i128;
        if span > MAX_WINDOWS as i128 {
            return Err(bad(format!(
                "the points span {span} windows; at most {MAX_WINDOWS} (widen slide_ms)"
            )));
        }
    }
    Ok(Windows {
        t,
        v,
        window: i.window_ms,
        slide,
        aggs,
        z,
    })
}

pub(crate) fn window_agg(w: &Windows) -> Result<Value, KernelError> {
    let mut outliers = Vec::new();
    let windows =
        ffi::window_agg(&w.t, &w.v, w.window, w.slide, w.z, &mut outliers).map_err(failed)?;
    let want = |a: &str| w.aggs.iter().any(|x| x == a);
    let mut out: Vec<serde_json::Map<String, Value>> = windows
        .iter()
        .map(|x| {
            let mut m = serde_json::Map::new();
            m.insert("start".into(), json!(x.start));
            m.insert("end".into(), json!(x.end));
            for (name, val) in [
                ("count", json!(x.count)),
                ("sum", json!(x.sum)),
                ("mean", json!(x.mean)),
                ("min", json!(x.min)),
                ("max", json!(x.max)),
            ] {
                if want(name) {
                    m.insert(name.into(), val);
                }
            }
            if want("anomaly") {
                m.insert("anomalies".into(), json!([]));
            }
            m
        })
        .collect();
    if want("anomaly") {
        for o in outliers {
            if let Some(Value::Array(list)) = out
                .get_mut(o.window as usize)
                .and_then(|m| m.get_mut("anomalies"))
            {
                list.push(json!({ "t": o.t, "v": o.v, "z": o.z }));
            }
        }
    }
    Ok(json!({ "windows": out }))
}
