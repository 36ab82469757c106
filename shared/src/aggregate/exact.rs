//! Exact states: sums (integers exact, floats compensated), minima/maxima, averages.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::event::{Value, compare_numbers};

/// A sum. Integers add exactly (while the integer part stays within `i64`; beyond, it spills
/// into the float part); floats add with Neumaier compensation, so any order of additions and
/// merges agrees to far better than 1e-9 relative. A sum with no float part answers as an integer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SumState {
    pub int: i64,
    pub float: f64,
    pub compensation: f64,
}

impl SumState {
    pub fn add(&mut self, value: &Value) {
        match *value {
            Value::Int(i) => self.add_int(i),
            Value::Float(f) => self.add_float(f),
            _ => {}
        }
    }

    fn add_int(&mut self, i: i64) {
        match self.int.checked_add(i) {
            Some(sum) => self.int = sum,
            None => self.add_float(i as f64),
        }
    }

    fn add_float(&mut self, f: f64) {
        let t = self.float + f;
        if self.float.abs() >= f.abs() {
            self.compensation += (self.float - t) + f;
        } else {
            self.compensation += (f - t) + self.float;
        }
        self.float = t;
    }

    pub fn merge(&mut self, other: &Self) {
        self.add_int(other.int);
        self.add_float(other.float);
        self.compensation += other.compensation;
    }

    /// Whether the sum has a non-integer part (then it answers as a float).
    pub fn has_float(&self) -> bool {
        self.float != 0.0 || self.compensation != 0.0
    }

    /// The sum as a float.
    pub fn as_f64(&self) -> f64 {
        self.int as f64 + (self.float + self.compensation)
    }

    /// The sum as JSON: an integer when it has no float part.
    pub fn to_json(&self) -> serde_json::Value {
        if self.has_float() {
            serde_json::Value::from(self.as_f64())
        } else {
            serde_json::Value::from(self.int)
        }
    }
}

/// The smallest or largest numeric value seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extreme(pub Option<Value>);

impl Extreme {
    pub fn offer(&mut self, value: &Value, keep: Ordering) {
        if !matches!(value, Value::Int(_) | Value::Float(_)) {
            return;
        }
        match &self.0 {
            Some(current) if compare_numbers(value, current) != keep => {}
            _ => self.0 = Some(value.clone()),
        }
    }

    pub fn merge(&mut self, other: &Self, keep: Ordering) {
        if let Some(value) = &other.0 {
            self.offer(value, keep);
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        self.0
            .as_ref()
            .map_or(serde_json::Value::Null, Value::to_json)
    }
}

/// A mean: the sum and count of the non-null values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AvgState {
    pub sum: SumState,
    pub count: u64,
}

impl AvgState {
    pub fn add(&mut self, value: &Value) {
        if matches!(value, Value::Int(_) | Value::Float(_)) {
            self.sum.add(value);
            self.count += 1;
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.sum.merge(&other.sum);
        self.count += other.count;
    }

    pub fn to_json(&self) -> serde_json::Value {
        if self.count == 0 {
            serde_json::Value::Null
        } else {
            serde_json::Value::from(self.sum.as_f64() / self.count as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_sums_are_exact_beyond_f64_precision() {
        let mut sum = SumState::default();
        sum.add(&Value::Int(i64::MAX - 10));
        sum.add(&Value::Int(7));
        assert_eq!(sum.int, i64::MAX - 3);
        assert!(!sum.has_float());
        assert_eq!(sum.to_json(), serde_json::json!(i64::MAX - 3));
        // Past i64, the overflowing addend spills into the float part.
        sum.add(&Value::Int(i64::MAX));
        assert!(sum.has_float());
        assert!((sum.as_f64() - 2.0 * i64::MAX as f64).abs() < 1e4);
    }

    #[test]
    fn float_sums_are_compensated() {
        let mut sum = SumState::default();
        sum.add(&Value::Float(1e16));
        for _ in 0..1000 {
            sum.add(&Value::Float(1.0));
        }
        sum.add(&Value::Float(-1e16));
        assert_eq!(sum.as_f64(), 1000.0);
    }

    #[test]
    fn extremes_mix_ints_and_floats() {
        let mut min = Extreme::default();
        let mut max = Extreme::default();
        for v in [
            Value::Int(3),
            Value::Float(2.5),
            Value::Null,
            Value::Int(7),
            Value::Float(7.0),
        ] {
            min.offer(&v, Ordering::Less);
            max.offer(&v, Ordering::Greater);
        }
        assert_eq!(min.0, Some(Value::Float(2.5)));
        // 7 and 7.0 tie by value; the order puts the integer first, whatever the arrival order.
        assert_eq!(max.0, Some(Value::Float(7.0)));
        let mut max_reversed = Extreme::default();
        max_reversed.offer(&Value::Float(7.0), Ordering::Greater);
        max_reversed.offer(&Value::Int(7), Ordering::Greater);
        assert_eq!(max_reversed, max);
        assert_eq!(
            compare_numbers(&Value::Int(i64::MAX), &Value::Float(9.223372036854776e18)),
            Ordering::Less
        );
    }

    #[test]
    fn avg_ignores_nulls() {
        let mut avg = AvgState::default();
        for v in [Value::Int(1), Value::Null, Value::Float(2.0)] {
            avg.add(&v);
        }
        assert_eq!(avg.to_json(), serde_json::json!(1.5));
    }
}
