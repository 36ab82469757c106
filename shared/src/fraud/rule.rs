//! The rule language of `[[fraud.rule]] when`: numbers, feature names, `event.<field>`,
//! `+ - * /`, comparisons, `and`/`or`/`not` and parentheses.
//!
//! A rule parses into a [`Rule`] whose names are still text; [`Rule::resolve`] binds them to
//! feature indices and event slots. Evaluation never panics: a missing value, a division by zero
//! or a non-finite result makes the comparison it feeds false.

use std::fmt;

use crate::metric::MetricParseError;

/// A parsed rule: a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule(Cond);

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Compare(Num, CmpOp, Num),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
enum Num {
    Literal(f64),
    /// A feature, by name, then by index once resolved.
    Feature(Name),
    /// An event field, by name, then by slot once resolved.
    Field(Name),
    Neg(Box<Num>),
    Binary(Box<Num>, ArithOp, Box<Num>),
}

#[derive(Debug, Clone, PartialEq)]
struct Name {
    text: String,
    /// Byte offset in the rule text.
    at: usize,
    index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// What a rule's names were bound to, or which name is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub name: String,
    /// `"feature"` or `"event field"`.
    pub what: &'static str,
}

/// The values a rule reads: features by index, event fields by slot (`None`: missing).
pub trait Inputs {
    fn feature(&self, index: usize) -> Option<f64>;
    fn field(&self, slot: usize) -> Option<f64>;
}

impl Rule {
    pub fn parse(input: &str) -> Result<Self, MetricParseError> {
        let mut parser = Parser { input, pos: 0 };
        let cond = parser.or()?;
        parser.skip_spaces();
        if parser.pos < input.len() {
            return Err(parser.error("an operator (and, or, a comparison, + - * /) or the end"));
        }
        Ok(Self(cond))
    }

    /// The event fields the rule reads, in order of appearance.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.0.names(&mut |name, is_field| {
            if is_field {
                out.push(name.text.as_str());
            }
        });
        out
    }

    /// Binds feature names and event fields; the first unknown name is reported.
    pub fn resolve(
        &mut self,
        feature: impl Fn(&str) -> Option<usize>,
        field: impl Fn(&str) -> Option<usize>,
    ) -> Result<(), UnknownName> {
        let mut unknown = None;
        self.0.names_mut(&mut |name, is_field| {
            let found = if is_field {
                field(&name.text)
            } else {
                feature(&name.text)
            };
            match found {
                Some(index) => name.index = index,
                None => {
                    unknown.get_or_insert_with(|| UnknownName {
                        name: name.text.clone(),
                        what: if is_field { "event field" } else { "feature" },
                    });
                }
            }
        });
        unknown.map_or(Ok(()), Err)
    }

    /// Whether the rule fires for these inputs.
    pub fn fires(&self, inputs: &dyn Inputs) -> bool {
        self.0.eval(inputs)
    }
}

impl Cond {
    fn eval(&self, inputs: &dyn Inputs) -> bool {
        match self {
            Self::Compare(a, op, b) => match (a.eval(inputs), b.eval(inputs)) {
                (Some(a), Some(b)) => match op {
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Ge => a >= b,
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                },
                _ => false,
            },
            Self::And(a, b) => a.eval(inputs) && b.eval(inputs),
            Self::Or(a, b) => a.eval(inputs) || b.eval(inputs),
            Self::Not(a) => !a.eval(inputs),
        }
    }

    fn names<'a>(&'a self, visit: &mut dyn FnMut(&'a Name, bool)) {
        match self {
            Self::Compare(a, _, b) => {
                a.names(visit);
                b.names(visit);
            }
            Self::And(a, b) | Self::Or(a, b) => {
                a.names(visit);
                b.names(visit);
            }
            Self::Not(a) => a.names(visit),
        }
    }

    fn names_mut(&mut self, visit: &mut dyn FnMut(&mut Name, bool)) {
        match self {
            Self::Compare(a, _, b) => {
                a.names_mut(visit);
                b.names_mut(visit);
            }
            Self::And(a, b) | Self::Or(a, b) => {
                a.names_mut(visit);
                b.names_mut(visit);
            }
            Self::Not(a) => a.names_mut(visit),
        }
    }
}

impl Num {
    fn eval(&self, inputs: &dyn Inputs) -> Option<f64> {
        let value = match self {
            Self::Literal(n) => *n,
            Self::Feature(name) => inputs.feature(name.index)?,
            Self::Field(name) => inputs.field(name.index)?,
            Self::Neg(a) => -a.eval(inputs)?,
            Self::Binary(a, op, b) => {
                let (a, b) = (a.eval(inputs)?, b.eval(inputs)?);
                match op {
                    ArithOp::Add => a + b,
                    ArithOp::Sub => a - b,
                    ArithOp::Mul => a * b,
                    ArithOp::Div if b == 0.0 => return None,
                    ArithOp::Div => a / b,
                }
            }
        };
        value.is_finite().then_some(value)
    }

    fn names<'a>(&'a self, visit: &mut dyn FnMut(&'a Name, bool)) {
        match self {
            Self::Literal(_) => {}
            Self::Feature(name) => visit(name, false),
            Self::Field(name) => visit(name, true),
            Self::Neg(a) => a.names(visit),
            Self::Binary(a, _, b) => {
                a.names(visit);
                b.names(visit);
            }
        }
    }

    fn names_mut(&mut self, visit: &mut dyn FnMut(&mut Name, bool)) {
        match self {
            Self::Literal(_) => {}
            Self::Feature(name) => visit(name, false),
            Self::Field(name) => visit(name, true),
            Self::Neg(a) => a.names_mut(visit),
            Self::Binary(a, _, b) => {
                a.names_mut(visit);
                b.names_mut(visit);
            }
        }
    }
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.name)
    }
}

/// Words that are operators, never names.
const KEYWORDS: &[&str] = &["and", "or", "not", "event"];

/// Either side of a parenthesis: a condition or a number.
enum Term {
    Cond(Cond),
    Num(Num),
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn or(&mut self) -> Result<Cond, MetricParseError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, MetricParseError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            let right = self.not()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Cond, MetricParseError> {
        if self.keyword("not") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        match self.comparison()? {
            Term::Cond(cond) => Ok(cond),
            Term::Num(_) => {
                self.skip_spaces();
                Err(self.error("a comparison (<, <=, >, >=, ==, !=)"))
            }
        }
    }

    /// A comparison, or a lone number (which only a parenthesis or arithmetic may use).
    fn comparison(&mut self) -> Result<Term, MetricParseError> {
        let left = match self.sum()? {
            Term::Cond(cond) => return Ok(Term::Cond(cond)),
            Term::Num(num) => num,
        };
        self.skip_spaces();
        let rest = &self.input[self.pos..];
        let op = [
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ]
        .into_iter()
        .find(|(text, _)| rest.starts_with(text));
        let Some((text, op)) = op else {
            return Ok(Term::Num(left));
        };
        self.pos += text.len();
        let right = self.number("a number, feature or event field after the comparison")?;
        Ok(Term::Cond(Cond::Compare(left, op, right)))
    }

    fn sum(&mut self) -> Result<Term, MetricParseError> {
        let mut left = match self.product()? {
            Term::Cond(cond) => return Ok(Term::Cond(cond)),
            Term::Num(num) => num,
        };
        loop {
            let op = match self.peek() {
                Some('+') => ArithOp::Add,
                Some('-') => ArithOp::Sub,
                _ => return Ok(Term::Num(left)),
            };
            self.pos += 1;
            let right = self.factor_number()?;
            left = Num::Binary(Box::new(left), op, Box::new(right));
        }
    }

    fn product(&mut self) -> Result<Term, MetricParseError> {
        let mut left = match self.unary()? {
            Term::Cond(cond) => return Ok(Term::Cond(cond)),
            Term::Num(num) => num,
        };
        loop {
            let op = match self.peek() {
                Some('*') => ArithOp::Mul,
                Some('/') => ArithOp::Div,
                _ => return Ok(Term::Num(left)),
            };
            self.pos += 1;
            let right = self.unary_number()?;
            left = Num::Binary(Box::new(left), op, Box::new(right));
        }
    }

    /// The right side of `+`/`-`: a product of numbers.
    fn factor_number(&mut self) -> Result<Num, MetricParseError> {
        let at = self.at();
        match self.product()? {
            Term::Num(num) => Ok(num),
            Term::Cond(_) => Err(self.error_at(at, "a number, not a condition")),
        }
    }

    fn unary_number(&mut self) -> Result<Num, MetricParseError> {
        let at = self.at();
        match self.unary()? {
            Term::Num(num) => Ok(num),
            Term::Cond(_) => Err(self.error_at(at, "a number, not a condition")),
        }
    }

    /// A whole arithmetic expression that must be a number.
    fn number(&mut self, expected: &str) -> Result<Num, MetricParseError> {
        let at = self.at();
        if self.peek().is_none() {
            return Err(self.error(expected));
        }
        match self.sum()? {
            Term::Num(num) => Ok(num),
            Term::Cond(_) => Err(self.error_at(at, "a number, not a condition")),
        }
    }

    fn unary(&mut self) -> Result<Term, MetricParseError> {
        if self.peek() == Some('-') {
            self.pos += 1;
            return Ok(Term::Num(Num::Neg(Box::new(self.unary_number()?))));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Term, MetricParseError> {
        let expected = "a number, a feature name, event.<field>, `not` or `(`";
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                let inner = self.parenthesized()?;
                self.skip_spaces();
                if self.peek() != Some(')') {
                    return Err(self.error("`)`"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                Ok(Term::Num(Num::Literal(self.literal()?)))
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let at = self.pos;
                let word = self.word();
                if word == "event" {
                    if self.input[self.pos..].starts_with('.') {
                        self.pos += 1;
                        let field_at = self.pos;
                        let len = crate::path::prefix_len(&self.input[field_at..]);
                        if len == 0 {
                            return Err(self.error("a field name after `event.`"));
                        }
                        let field = &self.input[field_at..field_at + len];
                        if let Err(e) = crate::path::parse(field) {
                            return Err(self.error_at(
                                field_at + e.at,
                                &format!("a field path ({})", e.message),
                            ));
                        }
                        self.pos += len;
                        return Ok(Term::Num(Num::Field(Name {
                            text: field.to_owned(),
                            at: field_at,
                            index: 0,
                        })));
                    }
                    return Err(self.error("`.` and a field name after `event`"));
                }
                if KEYWORDS.contains(&word) {
                    return Err(self.error_at(at, expected));
                }
                Ok(Term::Num(Num::Feature(Name {
                    text: word.to_owned(),
                    at,
                    index: 0,
                })))
            }
            _ => Err(self.error(expected)),
        }
    }

    /// Inside parentheses: a whole condition, or an arithmetic expression.
    fn parenthesized(&mut self) -> Result<Term, MetricParseError> {
        self.skip_spaces();
        if self.peek_keyword("not") {
            let cond = self.or()?;
            return Ok(Term::Cond(cond));
        }
        let first = self.comparison()?;
        let Term::Cond(mut cond) = first else {
            return Ok(first);
        };
        // `(a > 1 and b < 2 or ...)`: continue the condition inside the parentheses.
        loop {
            if self.keyword("and") {
                let right = self.not()?;
                cond = Cond::And(Box::new(cond), Box::new(right));
            } else if self.keyword("or") {
                let right = self.and()?;
                cond = Cond::Or(Box::new(cond), Box::new(right));
            } else {
                return Ok(Term::Cond(cond));
            }
        }
    }

    fn literal(&mut self) -> Result<f64, MetricParseError> {
        let start = self.pos;
        let bytes = self.input.as_bytes();
        while self.pos < bytes.len()
            && (bytes[self.pos].is_ascii_digit() || bytes[self.pos] == b'.')
        {
            self.pos += 1;
        }
        let text = &self.input[start..self.pos];
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| self.error_at(start, "a number such as 8 or 0.5"))
    }

    fn word(&mut self) -> &str {
        let start = self.pos;
        let bytes = self.input.as_bytes();
        while self.pos < bytes.len()
            && (bytes[self.pos].is_ascii_alphanumeric() || bytes[self.pos] == b'_')
        {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// Consumes `word` when it comes next as a whole word.
    fn keyword(&mut self, word: &str) -> bool {
        if self.peek_keyword(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn peek_keyword(&mut self, word: &str) -> bool {
        self.skip_spaces();
        let rest = &self.input[self.pos..];
        rest.starts_with(word)
            && !rest[word.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_spaces();
        self.input[self.pos..].chars().next()
    }

    fn at(&mut self) -> usize {
        self.skip_spaces();
        self.pos
    }

    fn skip_spaces(&mut self) {
        while self.input[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.input[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    fn error(&self, expected: &str) -> MetricParseError {
        self.error_at(self.pos, expected)
    }

    fn error_at(&self, position: usize, expected: &str) -> MetricParseError {
        let found = self.input[position.min(self.input.len())..]
            .chars()
            .next()
            .map_or_else(|| "the end".to_owned(), |c| format!("{c:?}"));
        MetricParseError {
            input: self.input.to_owned(),
            position,
            message: format!("expected {expected}, found {found}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Values {
        features: Vec<Option<f64>>,
        fields: Vec<Option<f64>>,
    }

    impl Inputs for Values {
        fn feature(&self, index: usize) -> Option<f64> {
            self.features.get(index).copied().flatten()
        }
        fn field(&self, slot: usize) -> Option<f64> {
            self.fields.get(slot).copied().flatten()
        }
    }

    /// Features `a`, `b`, `c` (indices 0, 1, 2) and the event field `amount` (slot 0).
    fn rule(text: &str) -> Rule {
        let mut rule = Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        rule.resolve(
            |name| ["a", "b", "c"].iter().position(|n| *n == name),
            |name| (name == "amount").then_some(0),
        )
        .unwrap();
        rule
    }

    fn fires(text: &str, features: &[Option<f64>], amount: Option<f64>) -> bool {
        rule(text).fires(&Values {
            features: features.to_vec(),
            fields: vec![amount],
        })
    }

    #[test]
    fn arithmetic_binds_tighter_than_comparison_and_and_tighter_than_or() {
        let f = [Some(2.0), Some(3.0), Some(10.0)];
        assert!(fires("a + b * 2 == 8", &f, None));
        assert!(fires("(a + b) * 2 == 10", &f, None));
        assert!(fires("c - a - b == 5", &f, None), "left associative");
        assert!(fires("c / a / 5 == 1", &f, None));
        assert!(fires("-a + c == 8", &f, None));
        assert!(fires("a > 5 and b > 5 or c > 5", &f, None));
        assert!(!fires("a > 5 and (b > 5 or c > 5)", &f, None));
        assert!(fires("not a > 5", &f, None));
        assert!(fires("not (a > 5 or b > 5)", &f, None));
        assert!(fires("(a > 1 and b > 1) and c >= 10", &f, None));
        assert!(fires("event.amount > 5 * a and c >= 3", &f, Some(10.5)));
        assert!(!fires("event.amount > 5 * a and c >= 3", &f, Some(10.0)));
        assert!(fires("a != b and a <= 2 and b < 3.5 and 0.5 < a", &f, None));
    }

    #[test]
    fn missing_values_and_division_by_zero_make_the_comparison_false() {
        let f = [Some(0.0), None, Some(1.0)];
        assert!(!fires("c / a > 0", &f, None));
        assert!(!fires("c / a <= 0", &f, None));
        assert!(!fires("b >= 0", &f, None));
        assert!(!fires("event.amount > 0", &f, None));
        assert!(fires("b >= 0 or c == 1", &f, None));
        assert!(fires("not b >= 0", &f, None), "not of a false comparison");
        let huge = [Some(1e308), Some(1e308), None];
        assert!(!fires("a * b > 0", &huge, None), "an overflow is no number");
    }

    #[test]
    fn event_fields_are_paths() {
        let rule = Rule::parse("event.amount.value > 10 and event.items[0].qty >= 2").unwrap();
        assert_eq!(rule.fields(), vec!["amount.value", "items[0].qty"]);
        let error = Rule::parse("event.items[100001] > 1").unwrap_err();
        assert!(error.to_string().contains("array index"), "{error}");
    }

    #[test]
    fn parse_errors_show_where() {
        for (text, column, says) in [
            ("tx_10m >=", 10, "after the comparison"),
            ("tx_10m", 7, "a comparison"),
            ("a > 1 and", 10, "a number, a feature name"),
            ("a > 1 b", 7, "an operator"),
            ("(a > 1", 7, "`)`"),
            ("event. > 1", 7, "a field name"),
            ("a > 1..2", 5, "a number such as"),
            ("a + (b > 1) > 2", 5, "not a condition"),
            ("a > 1 + (b > 2)", 9, "not a condition"),
            ("and > 1", 1, "a number, a feature name"),
            ("a $ 1", 3, "a comparison"),
            ("", 1, "a number, a feature name"),
        ] {
            let error = Rule::parse(text).expect_err(text);
            let shown = error.to_string();
            assert!(
                shown.contains(&format!("at column {column}")) && shown.contains(says),
                "{text:?}: {shown}"
            );
        }
    }

    #[test]
    fn unknown_names_are_reported_with_what_they_are() {
        let mut rule = Rule::parse("a > 1 and event.colour == 2").unwrap();
        assert_eq!(rule.fields(), vec!["colour"]);
        let error = rule
            .resolve(|n| (n == "a").then_some(0), |_| None)
            .unwrap_err();
        assert_eq!(error.to_string(), "unknown event field \"colour\"");
        let mut rule = Rule::parse("nope > 1").unwrap();
        let error = rule.resolve(|_| None, |_| Some(0)).unwrap_err();
        assert_eq!(error.to_string(), "unknown feature \"nope\"");
    }
}
