//! The engine against a reference computed in the test: three sensors, readings out of order
//! within `max_delay_ms`, one late; a checkpoint taken mid-stream and restored gives the same
//! results as an uninterrupted run; an idle source closes its last windows.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{pipeline, Output, Pipeline, TimeSpec};

const BASE: i64 = 1_700_000_000_000;

fn job() -> Pipeline {
    let steps = pipeline(&json!([
        { "filter": "temp > -50.0" },
        { "map": { "temp_f": "temp * 1.8 + 32.0" } },
        { "key_by": "sensor" },
        { "window": { "type": "tumbling", "size_ms": 10000 },
          "aggregate": { "mean": { "mean": "temp" }, "n": { "count": "*" }, "hi": { "max": "temp_f" } } }
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    Pipeline::new(
        "job-1",
        TimeSpec {
            field: Some("ts".into()),
            max_delay_ms: 2_000,
            idle_ms: Some(5_000),
        },
        steps,
    )
}

/// Readings: (sensor, ms after BASE, temp), in arrival order.
fn readings() -> Vec<(&'static str, i64, f64)> {
    let mut r = Vec::new();
    for i in 0..30i64 {
        for (s, off) in [("s1", 0.0), ("s2", 10.0), ("s3", -5.0)] {
            r.push((s, i * 1_000 + 100, off + (i % 7) as f64));
        }
        if i == 12 {
            // Out of order within max_delay (1.5 s behind the newest): counted.
            r.push(("s1", i * 1_000 - 1_400, 100.0));
        }
        if i == 25 {
            // 25.1 s seen: the watermark is at 23.1 s, window [10 s, 20 s) closed: late.
            r.push(("s2", 15_000, 55.0));
        }
    }
    // Filtered (too cold) and malformed (no temp; not an object; no time).
    r.push(("s3", 29_500, -80.0));
    r
}

fn run(p: &mut Pipeline, rs: &[(&str, i64, f64)], out: &mut Vec<Output>) {
    for (s, t, v) in rs {
        p.push(
            json!({ "sensor": s, "ts": BASE + t, "temp": v }),
            BASE + t + 50,
            out,
        );
    }
}

/// (sensor, window start offset) → (count, mean, max °F), computed directly.
fn reference(rs: &[(&str, i64, f64)]) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    let mut acc: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for (s, t, v) in rs {
        let late = *s == "s2" && *t == 15_000 && *v == 55.0;
        if *v <= -50.0 || late {
            continue;
        }
        acc.entry((s.to_string(), t.div_euclid(10_000) * 10_000))
            .or_default()
            .push(*v);
    }
    acc.into_iter()
        .map(|(k, vs)| {
            let n = vs.len() as f64;
            let mean = vs.iter().sum::<f64>() / n;
            let hi = vs.iter().cloned().fold(f64::MIN, f64::max) * 1.8 + 32.0;
            (k, (vs.len() as u64, mean, hi))
        })
        .collect()
}

fn table(out: &[Output]) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    out.iter()
        .map(|o| {
            let v = &o.value;
            (
                (
                    v["key"].as_str().unwrap_or("").to_string(),
                    v["window_start"].as_i64().unwrap_or(0) - BASE,
                ),
                (
                    v["n"].as_u64().unwrap_or(0),
                    v["mean"].as_f64().unwrap_or(f64::NAN),
                    v["hi"].as_f64().unwrap_or(f64::NAN),
                ),
            )
        })
        .collect()
}

fn same(
    a: &BTreeMap<(String, i64), (u64, f64, f64)>,
    b: &BTreeMap<(String, i64), (u64, f64, f64)>,
) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, x) in a {
        let y = &b[k];
        assert!(
            x.0 == y.0 && (x.1 - y.1).abs() < 1e-9 && (x.2 - y.2).abs() < 1e-9,
            "{k:?}: {x:?} != {y:?}"
        );
    }
}

#[test]
fn three_sensors_through_a_tumbling_window_equal_the_reference() {
    let rs = readings();
    let mut p = job();
    let mut out = Vec::new();
    run(&mut p, &rs, &mut out);
    p.push(
        json!({ "sensor": "s1", "ts": BASE + 29_000 }),
        BASE + 29_600,
        &mut out,
    );
    p.push(json!([1, 2]), BASE + 29_600, &mut out);
    p.push(
        json!({ "sensor": "s1", "temp": 3.0 }),
        BASE + 29_600,
        &mut out,
    );
    // Only windows the watermark (29.1 s − 2 s) passed: [0, 10 s) and [10 s, 20 s).
    assert!(out
        .iter()
        .all(|o| o.value["window_end"].as_i64() <= Some(BASE + 20_000)));
    // Silent for idle_ms: the last windows close.
    p.tick(BASE + 29_600 + 4_000, &mut out);
    assert_eq!(out.len(), 6, "before idle_ms");
    p.tick(BASE + 29_600 + 20_000, &mut out);
    assert_eq!(out.len(), 9);
    let want = reference(&rs);
    same(&table(&out), &want);
    let c = p.counters();
    assert_eq!((c.late, c.filtered, c.malformed), (1, 1, 3), "{c:?}");
    assert_eq!(c.records_out, 9);
    assert_eq!(c.records_in, rs.len() as u64 + 3);
    // Each result's id is its window's: distinct, and the same in any run.
    let ids: std::collections::BTreeSet<&str> = out.iter().map(|o| o.result_id.as_str()).collect();
    assert_eq!(ids.len(), 9);
    let mut again = Vec::new();
    let mut q = job();
    run(&mut q, &rs, &mut again);
    q.tick(BASE + 60_000, &mut again);
    assert_eq!(
        again.iter().map(|o| &o.result_id).collect::<Vec<_>>(),
        out.iter().map(|o| &o.result_id).collect::<Vec<_>>()
    );
}

#[test]
fn a_restored_checkpoint_goes_on_exactly_as_an_uninterrupted_run() {
    let rs = readings();
    let cut = rs.len() / 2;
    let mut whole = Vec::new();
    let mut p = job();
    run(&mut p, &rs, &mut whole);
    p.tick(BASE + 90_000, &mut whole);

    let mut first = Vec::new();
    let mut a = job();
    run(&mut a, &rs[..cut], &mut first);
    let cp = a.checkpoint();
    drop(a);
    let mut b = job();
    b.restore(&cp).unwrap_or_else(|e| panic!("{e}"));
    let mut rest = Vec::new();
    run(&mut b, &rs[cut..], &mut rest);
    b.tick(BASE + 90_000, &mut rest);
    first.extend(rest);
    assert_eq!(
        first
            .iter()
            .map(|o| (&o.result_id, &o.value))
            .collect::<Vec<_>>(),
        whole
            .iter()
            .map(|o| (&o.result_id, &o.value))
            .collect::<Vec<_>>()
    );
    assert_eq!(b.counters(), p.counters());

    // Another job's checkpoint, or a damaged one, is refused.
    let mut other = Pipeline::new("job-2", TimeSpec::default(), Vec::new());
    assert!(other.restore(&cp).is_err());
    assert!(b.restore(&cp[..cp.len() / 2]).is_err());
}

#[test]
fn a_job_without_a_window_passes_records_through_numbered() {
    let steps = pipeline(&json!([{ "filter": "v > 1.0" }, { "map": { "w": "v * 2.0" } }]))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut p = Pipeline::new("j", TimeSpec::default(), steps);
    let mut out = Vec::new();
    for v in [1, 2, 3] {
        p.push(json!({ "v": v }), 1_000 + v, &mut out);
    }
    let got: Vec<(&str, Value)> = out
        .iter()
        .map(|o| (o.result_id.as_str(), o.value["w"].clone()))
        .collect();
    assert_eq!(got, vec![("j:1", json!(4.0)), ("j:2", json!(6.0))]);
}

#[test]
fn hostile_records_are_malformed_never_a_panic() {
    let mut p = job();
    let mut out = Vec::new();
    for ts in [
        json!(i64::MAX),
        json!(i64::MIN),
        json!(1e300),
        json!(-1e300),
        json!("not a time"),
        json!(true),
        json!(null),
    ] {
        p.push(
            json!({ "sensor": "s1", "ts": ts, "temp": 1.0 }),
            1,
            &mut out,
        );
    }
    for rec in [
        json!({ "sensor": null, "ts": BASE, "temp": 1.0 }),
        json!({ "sensor": "s1", "ts": BASE, "temp": "warm" }),
        json!({ "sensor": "s1", "ts": BASE, "temp": [1, 2] }),
        json!("just text"),
    ] {
        p.push(rec, 1, &mut out);
    }
    // RFC 3339 text is a time; a key of another type is its JSON text.
    p.push(
        json!({ "sensor": 7, "ts": "2023-11-14T22:13:20Z", "temp": 1.0 }),
        1,
        &mut out,
    );
    p.tick(i64::MAX, &mut out);
    let c = p.counters();
    assert_eq!(c.malformed, 11, "{c:?}");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value["key"], "7");
    assert_eq!(out[0].value["window_start"], json!(BASE));
}

#[test]
fn a_window_kernel_gets_the_windows_values_and_they_survive_a_checkpoint() {
    let steps = |kernel: &str| {
        pipeline(&json!([
            { "key_by": "s" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" } },
              "kernel": { "name": kernel, "field": "v", "as": "k" } }
        ]))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let time = TimeSpec {
        field: Some("ts".into()),
        max_delay_ms: 0,
        idle_ms: None,
    };
    let mut p = Pipeline::new("j", time.clone(), steps("stats"));
    let mut out = Vec::new();
    for (i, v) in [3.0, 1.0, 2.0].iter().enumerate() {
        p.push(json!({"s": "a", "ts": 100 + i as i64, "v": v}), 0, &mut out);
    }
    // A checkpoint with values kept, restored elsewhere, then the window closes.
    let mut q = Pipeline::new("j", time.clone(), steps("stats"));
    q.restore(&p.checkpoint()).unwrap_or_else(|e| panic!("{e}"));
    q.push(json!({"s": "a", "ts": 1500, "v": 9.0}), 0, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    let call = out[0]
        .kernel
        .clone()
        .unwrap_or_else(|| panic!("no kernel call"));
    assert_eq!(call.kernel, "stats");
    assert_eq!(call.output, "k");
    assert_eq!(
        call.input,
        json!({"values": [3.0, 1.0, 2.0]}),
        "arrival order"
    );
    // fft gets a power of two (zero-padded); window_agg the points and the window's length.
    let mut f = Pipeline::new("j", time.clone(), steps("fft"));
    let mut out = Vec::new();
    for (i, v) in [1.0, 2.0, 3.0].iter().enumerate() {
        f.push(json!({"s": "a", "ts": i as i64, "v": v}), 0, &mut out);
    }
    f.push(json!({"s": "a", "ts": 2000, "v": 0.0}), 0, &mut out);
    let input = out[0].kernel.as_ref().map(|k| k.input.clone());
    assert_eq!(input, Some(json!({"values": [1.0, 2.0, 3.0, 0.0]})));
    let mut w = Pipeline::new("j", time, steps("window_agg"));
    let mut out = Vec::new();
    w.push(json!({"s": "a", "ts": 5, "v": 4.0}), 0, &mut out);
    w.push(json!({"s": "a", "ts": 1005, "v": 0.0}), 0, &mut out);
    let input = out[0].kernel.as_ref().map(|k| k.input.clone());
    assert_eq!(
        input,
        Some(
            json!({"points": [[5, 4.0]], "window_ms": 1000, "aggs": ["count", "mean", "anomaly"]})
        )
    );
    // A bad kernel step names its field.
    let e = pipeline(&json!([{ "window": { "type": "tumbling", "size_ms": 1000 },
        "aggregate": { "n": { "count": "*" } }, "kernel": { "name": "matmul", "field": "v" } }]));
    assert_eq!(
        e.map(|_| ()).map_err(|e| e.field),
        Err("pipeline[0].kernel.name".into())
    );
}
