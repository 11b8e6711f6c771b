//! `filter` and `map` expressions in CEL (Common Expression Language, the `cel` crate: the
//! language of Kubernetes' validation rules and Envoy; a parser with positions in its errors,
//! compiled once per job, evaluated per record).
//!
//! A record's top-level fields are the variables. Every JSON number is a CEL `double`, as in
//! cel-go's JSON mapping: `temp * 1.8 + 32.0` works on `20` as on `20.5` (CEL does not mix
//! `int` and `double` in arithmetic; integer literals in an expression are written `1.0`).
//! A field the expression reads that a record lacks, or an operation its values do not
//! support, is an evaluation error for that record (the job counts it as malformed).

use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program, Value};

/// Why an expression does not compile: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at line {line}, column {column}: {message}")]
pub struct ExprError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A compiled expression and the record fields it reads.
pub struct Expr {
    source: String,
    program: Program,
    vars: Vec<String>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

fn env() -> Arc<Env> {
    // Built once: the standard library's functions (a Context::default() would rebuild it).
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// A JSON value as CEL sees it (numbers as doubles).
fn to_cel(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        serde_json::Value::Object(o) => {
            let m: std::collections::HashMap<String, Value> =
                o.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            Value::from(m)
        }
    }
}

impl Expr {
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        let program = env().compile(source).map_err(|e| {
            let first = e.errors.first();
            ExprError {
                line: first.map_or(1, |p| p.pos.0.max(1) as usize),
                column: first.map_or(1, |p| p.pos.1.max(1) as usize),
                message: first.map_or_else(|| e.to_string(), |p| p.msg.clone()),
            }
        })?;
        let vars = program
            .references()
            .variables()
            .into_iter()
            .map(String::from)
            .collect();
        Ok(Expr {
            source: source.to_string(),
            program,
            vars,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn run(&self, record: &serde_json::Map<String, serde_json::Value>) -> Result<Value, String> {
        let mut ctx = Context::with_env(env());
        for n in &self.vars {
            if let Some(v) = record.get(n) {
                ctx.add_variable_from_value(n.as_str(), to_cel(v));
            }
        }
        self.program.execute(&ctx).map_err(|e| e.to_string())
    }

    /// A filter's verdict: true keeps the record. A result that is not a bool is an error.
    pub fn test(
        &self,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, String> {
        match self.run(record)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("{} is {other:?}, not true or false", self.source)),
        }
    }

    /// A map's value, as JSON.
    pub fn eval(
        &self,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let v = self.run(record)?;
        match v {
            Value::Float(f) => Ok(serde_json::Number::from_f64(f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)),
            other => other
                .json()
                .map_err(|e| format!("{}: the result has no JSON form: {e}", self.source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn filters_and_maps_read_the_record_with_numbers_as_doubles() {
        let f = Expr::compile("temp > -50.0 && sensor != 'bad'").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.test(&rec(json!({"temp": 20, "sensor": "a"}))), Ok(true));
        assert_eq!(
            f.test(&rec(json!({"temp": -60.5, "sensor": "a"}))),
            Ok(false)
        );
        assert_eq!(f.test(&rec(json!({"temp": 1, "sensor": "bad"}))), Ok(false));
        let m = Expr::compile("temp * 1.8 + 32.0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.eval(&rec(json!({"temp": 20}))), Ok(json!(68.0)));
        assert_eq!(m.eval(&rec(json!({"temp": 100.0}))), Ok(json!(212.0)));
        // Strings and nested fields work too.
        let s = Expr::compile("meta.site + '/' + sensor").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.eval(&rec(json!({"sensor": "t1", "meta": {"site": "a"}}))),
            Ok(json!("a/t1"))
        );
    }

    #[test]
    fn a_bad_expression_says_where_and_a_bad_record_is_an_error_not_a_panic() {
        let e = Expr::compile("temp > > 3.0")
            .err()
            .unwrap_or_else(|| panic!("compiled"));
        assert_eq!(e.line, 1);
        assert!(e.column >= 6 && e.column <= 8, "{e}");
        let e = Expr::compile("temp >\n  (3.0")
            .err()
            .unwrap_or_else(|| panic!("compiled"));
        assert_eq!(e.line, 2, "{e}");
        let f = Expr::compile("temp > 3.0").unwrap_or_else(|e| panic!("{e}"));
        assert!(f.test(&rec(json!({"other": 1}))).is_err());
        assert!(f.test(&rec(json!({"temp": "hot"}))).is_err());
        let not_bool = Expr::compile("temp + 1.0").unwrap_or_else(|e| panic!("{e}"));
        assert!(not_bool.test(&rec(json!({"temp": 1}))).is_err());
    }
}
