//! Metric expressions: `count`, `sum(f)`, `min(f)`, `max(f)`, `avg(f)`, `approx_distinct(f)`,
//! `quantile(f, q)`, `top_k(f, k)`. Parse errors point at the column where the text went wrong.

use std::fmt;

use serde::Serialize;

/// Largest `k` accepted by `top_k`.
pub const MAX_TOP_K: u32 = 1000;

/// A parsed metric expression. The field names are not yet resolved against a source.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricExpr {
    Count,
    Sum { field: String },
    Min { field: String },
    Max { field: String },
    Avg { field: String },
    ApproxDistinct { field: String },
    Quantile { field: String, q: f64 },
    TopK { field: String, k: u32 },
}

impl MetricExpr {
    /// The event field the metric reads, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Count => None,
            Self::Sum { field }
            | Self::Min { field }
            | Self::Max { field }
            | Self::Avg { field }
            | Self::ApproxDistinct { field }
            | Self::Quantile { field, .. }
            | Self::TopK { field, .. } => Some(field),
        }
    }

    /// Whether the metric needs a numeric field (as opposed to any scalar).
    pub fn needs_number(&self) -> bool {
        matches!(
            self,
            Self::Sum { .. }
                | Self::Min { .. }
                | Self::Max { .. }
                | Self::Avg { .. }
                | Self::Quantile { .. }
        )
    }

    /// Whether the metric's answer is an approximation (a sketch).
    pub fn is_approximate(&self) -> bool {
        matches!(
            self,
            Self::ApproxDistinct { .. } | Self::Quantile { .. } | Self::TopK { .. }
        )
    }
}

impl fmt::Display for MetricExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count => f.write_str("count"),
            Self::Sum { field } => write!(f, "sum({field})"),
            Self::Min { field } => write!(f, "min({field})"),
            Self::Max { field } => write!(f, "max({field})"),
            Self::Avg { field } => write!(f, "avg({field})"),
            Self::ApproxDistinct { field } => write!(f, "approx_distinct({field})"),
            Self::Quantile { field, q } => write!(f, "quantile({field}, {q})"),
            Self::TopK { field, k } => write!(f, "top_k({field}, {k})"),
        }
    }
}

/// Where and why a metric expression failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricParseError {
    pub input: String,
    /// Byte offset of the problem in `input`.
    pub position: usize,
    pub message: String,
}

impl fmt::Display for MetricParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.input[..self.position.min(self.input.len())]
            .chars()
            .count();
        write!(
            f,
            "{} at column {}\n      {}\n      {}^",
            self.message,
            column + 1,
            self.input,
            " ".repeat(column)
        )
    }
}

impl std::error::Error for MetricParseError {}

impl std::str::FromStr for MetricExpr {
    type Err = MetricParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Parser { input, pos: 0 }.expression()
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn expression(mut self) -> Result<MetricExpr, MetricParseError> {
        self.skip_spaces();
        let name_at = self.pos;
        let name = self.identifier(
            "a metric function (count, sum, min, max, avg, approx_distinct, quantile, top_k)",
        )?;
        let expr = match name {
            "count" => {
                self.skip_spaces();
                if self.peek() == Some('(') {
                    self.pos += 1;
                    self.skip_spaces();
                    self.expect(')', "`)`: count takes no argument")?;
                }
                MetricExpr::Count
            }
            "sum" | "min" | "max" | "avg" | "approx_distinct" => {
                let field = self.open_with_field()?;
                self.expect(')', "`)`")?;
                match name {
                    "sum" => MetricExpr::Sum { field },
                    "min" => MetricExpr::Min { field },
                    "max" => MetricExpr::Max { field },
                    "avg" => MetricExpr::Avg { field },
                    _ => MetricExpr::ApproxDistinct { field },
                }
            }
            "quantile" => {
                let field = self.open_with_field()?;
                self.expect(',', "`,` and a quantile such as 0.99")?;
                let (at, q) = self.number()?;
                if !(q > 0.0 && q < 1.0) {
                    return Err(self.error_at(
                        at,
                        format!("quantile must be between 0 and 1 (exclusive), got {q}"),
                    ));
                }
                self.expect(')', "`)`")?;
                MetricExpr::Quantile { field, q }
            }
            "top_k" => {
                let field = self.open_with_field()?;
                self.expect(',', "`,` and a count such as 5")?;
                let (at, k) = self.number()?;
                if k.fract() != 0.0 || k < 1.0 || k > f64::from(MAX_TOP_K) {
                    return Err(self.error_at(
                        at,
                        format!("top_k needs a whole number from 1 to {MAX_TOP_K}, got {k}"),
                    ));
                }
                self.expect(')', "`)`")?;
                // Checked above: a whole number from 1 to MAX_TOP_K.
                MetricExpr::TopK { field, k: k as u32 }
            }
            other => {
                return Err(self.error_at(
                    name_at,
                    format!("unknown metric function `{other}` (expected count, sum, min, max, avg, approx_distinct, quantile or top_k)"),
                ));
            }
        };
        self.skip_spaces();
        if self.pos < self.input.len() {
            return Err(self.error_at(self.pos, "unexpected text after the expression".to_owned()));
        }
        Ok(expr)
    }

    fn open_with_field(&mut self) -> Result<String, MetricParseError> {
        self.skip_spaces();
        self.expect('(', "`(` and a field name")?;
        self.skip_spaces();
        let field = self.path()?.to_owned();
        self.skip_spaces();
        Ok(field)
    }

    fn identifier(&mut self, what: &str) -> Result<&'a str, MetricParseError> {
        let start = self.pos;
        let input: &'a str = self.input;
        let rest = &input[start..];
        let len = rest
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(rest.len());
        let ident = &rest[..len];
        if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.error_at(start, format!("expected {what}")));
        }
        self.pos += len;
        Ok(ident)
    }

    /// A field path (`amount`, `amount.value`, `items[0].price`).
    fn path(&mut self) -> Result<&'a str, MetricParseError> {
        let start = self.pos;
        let input: &'a str = self.input;
        let len = crate::path::prefix_len(&input[start..]);
        if len == 0 {
            return Err(self.error_at(start, "expected a field name".to_owned()));
        }
        if let Err(e) = crate::path::parse(&input[start..start + len]) {
            return Err(self.error_at(start + e.at, e.message));
        }
        self.pos += len;
        Ok(&input[start..start + len])
    }

    fn number(&mut self) -> Result<(usize, f64), MetricParseError> {
        self.skip_spaces();
        let start = self.pos;
        let rest = &self.input[start..];
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
            .unwrap_or(rest.len());
        let text = &rest[..len];
        let value: f64 = text
            .parse()
            .map_err(|_| self.error_at(start, "expected a number".to_owned()))?;
        if !value.is_finite() {
            return Err(self.error_at(start, "expected a finite number".to_owned()));
        }
        self.pos += len;
        self.skip_spaces();
        Ok((start, value))
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), MetricParseError> {
        self.skip_spaces();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            self.skip_spaces();
            Ok(())
        } else {
            Err(self.error_at(self.pos, format!("expected {what}")))
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn skip_spaces(&mut self) {
        let rest = &self.input[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn error_at(&self, position: usize, message: String) -> MetricParseError {
        MetricParseError {
            input: self.input.to_owned(),
            position,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetricExpr, MetricParseError> {
        text.parse()
    }

    #[test]
    fn fields_are_paths() {
        assert_eq!(
            parse("sum(amount.value)"),
            Ok(MetricExpr::Sum {
                field: "amount.value".into()
            })
        );
        assert_eq!(
            parse("top_k(items[0].sku, 3)"),
            Ok(MetricExpr::TopK {
                field: "items[0].sku".into(),
                k: 3
            })
        );
        let error = parse("sum(amount.)").unwrap_err();
        assert_eq!(error.position, 10, "{error}");
        let error = parse("sum(items[999999])").unwrap_err();
        assert!(error.to_string().contains("array index"), "{error}");
    }

    #[test]
    fn parses_every_kind() {
        assert_eq!(parse("count"), Ok(MetricExpr::Count));
        assert_eq!(parse(" count() "), Ok(MetricExpr::Count));
        assert_eq!(
            parse("sum(amount)"),
            Ok(MetricExpr::Sum {
                field: "amount".into()
            })
        );
        assert_eq!(
            parse("min( amount )"),
            Ok(MetricExpr::Min {
                field: "amount".into()
            })
        );
        assert_eq!(
            parse("max(amount)"),
            Ok(MetricExpr::Max {
                field: "amount".into()
            })
        );
        assert_eq!(
            parse("avg(amount)"),
            Ok(MetricExpr::Avg {
                field: "amount".into()
            })
        );
        assert_eq!(
            parse("approx_distinct(merchant_id)"),
            Ok(MetricExpr::ApproxDistinct {
                field: "merchant_id".into()
            })
        );
        assert_eq!(
            parse("quantile(amount, 0.99)"),
            Ok(MetricExpr::Quantile {
                field: "amount".into(),
                q: 0.99
            })
        );
        assert_eq!(
            parse("top_k(merchant_id,5)"),
            Ok(MetricExpr::TopK {
                field: "merchant_id".into(),
                k: 5
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "count",
            "sum(a)",
            "quantile(a, 0.5)",
            "top_k(m, 3)",
            "approx_distinct(x)",
        ] {
            let expr = parse(text).unwrap();
            assert_eq!(parse(&expr.to_string()).unwrap(), expr);
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        let err = parse("quantile(amount, 1.5)").unwrap_err();
        assert_eq!(err.position, 17);
        assert!(err.message.contains("between 0 and 1"), "{err}");
        assert!(err.to_string().contains("column 18"), "{err}");

        let err = parse("sum(amount").unwrap_err();
        assert_eq!(err.position, 10);
        assert!(err.message.contains("`)`"));

        let err = parse("median(amount)").unwrap_err();
        assert_eq!(err.position, 0);
        assert!(err.message.contains("unknown metric function `median`"));

        for bad in [
            "",
            "sum()",
            "sum(1x)",
            "top_k(m, 0)",
            "top_k(m, 2.5)",
            "top_k(m, 5000)",
            "quantile(a)",
            "quantile(a, nan)",
            "count(x)",
            "sum(a) + 1",
            "sum(a,)",
            "sümme(a)",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
