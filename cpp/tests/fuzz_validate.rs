//! Hostile kernel input: any JSON (or not) for any kernel name is validated to an error or
//! accepted, never a crash. Bounded case count (CI time).

use edgerun_cpp::{CppKernels, Kernels};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("values".to_string()),
                    Just("a".to_string()),
                    Just("b".to_string()),
                    Just("image".to_string()),
                    Just("kernel".to_string()),
                    Just("points".to_string()),
                    Just("window_ms".to_string()),
                    Just("data_b64".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_input_to_any_kernel_is_checked_without_a_crash(
        kernel in prop_oneof![Just("stats"), Just("matmul"), Just("conv2d"), Just("sobel"), Just("fft"),
                              Just("window_agg"), Just("sha256"), Just("sort"), Just("nope")],
        input in json_value(),
        raw in "\\PC{0,64}",
    ) {
        let k = CppKernels;
        let text = input.to_string();
        if k.validate(kernel, &text).is_ok() {
            // What validates also runs to a result or an error.
            let _ = k.run(kernel, &text);
        }
        let _ = k.validate(kernel, &raw);
    }
}
