//! Field paths, the way every field is named in the config and in queries: `amount` (a
//! top-level field), `card.id` (a member of an object), `items[0].sku` (an element of an array,
//! by index from 0). Each name is letters, digits and `_`, starting with a letter or `_`.

use std::fmt;

/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 256;
/// Most steps (names and indices) in one path.
pub const MAX_STEPS: usize = 32;
/// Largest array index a path may name.
pub const MAX_INDEX: usize = 100_000;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// A member of an object, by name.
    Key(String),
    /// An element of an array, by index.
    Index(usize),
}

/// A path that does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// Byte offset of the problem.
    pub at: usize,
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.at + 1)
    }
}

/// The steps of `text`, or why it is not a path.
pub fn parse(text: &str) -> Result<Vec<Step>, PathError> {
    let len = prefix_len(text);
    if len < text.len() {
        return Err(PathError {
            at: len,
            message: format!(
                "unexpected {:?} in a field path",
                text[len..].chars().next().unwrap_or(' ')
            ),
        });
    }
    steps(text)
}

/// Whether `text` is a path.
pub fn is_path(text: &str) -> bool {
    parse(text).is_ok()
}

/// Length of the path at the start of `text` (0 when none starts there): the longest prefix
/// that is a whole path, for expression parsers reading a field name.
pub fn prefix_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let name = |from: usize| {
        let mut end = from;
        while end < bytes.len() && (bytes[end] == b'_' || bytes[end].is_ascii_alphanumeric()) {
            end += 1;
        }
        let starts_well = end > from && !bytes[from].is_ascii_digit();
        starts_well.then_some(end)
    };
    let Some(mut end) = name(0) else {
        return 0;
    };
    loop {
        match bytes.get(end) {
            Some(b'.') => match name(end + 1) {
                Some(next) => end = next,
                None => return end,
            },
            Some(b'[') => {
                let digits = bytes[end + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 || bytes.get(end + 1 + digits) != Some(&b']') {
                    return end;
                }
                end += digits + 2;
            }
            _ => return end,
        }
    }
}

fn steps(text: &str) -> Result<Vec<Step>, PathError> {
    if text.is_empty() {
        return Err(PathError {
            at: 0,
            message: "empty field path".to_owned(),
        });
    }
    if text.len() > MAX_PATH_LEN {
        return Err(PathError {
            at: MAX_PATH_LEN,
            message: format!("a field path is at most {MAX_PATH_LEN} bytes"),
        });
    }
    let mut steps = Vec::new();
    let mut rest = text;
    let mut at = 0;
    while !rest.is_empty() {
        let (step, used) = if let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']').unwrap_or(inner.len());
            let index = inner[..close]
                .parse::<usize>()
                .ok()
                .filter(|i| *i <= MAX_INDEX)
                .ok_or_else(|| PathError {
                    at: at + 1,
                    message: format!("array index {:?} is not 0 to {MAX_INDEX}", &inner[..close]),
                })?;
            (Step::Index(index), close + 2)
        } else {
            let body = if steps.is_empty() {
                rest
            } else {
                rest.strip_prefix('.').unwrap_or(rest)
            };
            let skipped = rest.len() - body.len();
            let end = body.find(['.', '[']).unwrap_or(body.len());
            (Step::Key(body[..end].to_owned()), skipped + end)
        };
        steps.push(step);
        rest = &rest[used.min(rest.len())..];
        at += used;
        if steps.len() > MAX_STEPS {
            return Err(PathError {
                at,
                message: format!("a field path has at most {MAX_STEPS} steps"),
            });
        }
    }
    Ok(steps)
}

/// Writes steps back as a path.
pub fn format(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(name) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(name);
            }
            Step::Index(i) => {
                use fmt::Write as _;
                let _ = write!(text, "[{i}]");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Step {
        Step::Key(name.to_owned())
    }

    #[test]
    fn paths_name_members_and_elements() {
        assert_eq!(parse("amount").unwrap(), vec![key("amount")]);
        assert_eq!(parse("card.id").unwrap(), vec![key("card"), key("id")]);
        assert_eq!(
            parse("items[0].sku").unwrap(),
            vec![key("items"), Step::Index(0), key("sku")]
        );
        assert_eq!(
            parse("m[2][10]._x1").unwrap(),
            vec![key("m"), Step::Index(2), Step::Index(10), key("_x1")]
        );
        for text in ["amount", "card.id", "items[0].sku", "m[2][10]._x1"] {
            assert_eq!(format(&parse(text).unwrap()), text);
        }
    }

    #[test]
    fn broken_paths_say_where() {
        for (text, at) in [
            ("", 0),
            ("card.", 4),
            (".card", 0),
            ("card..id", 4),
            ("items[", 5),
            ("items[x]", 5),
            ("items[0", 5),
            ("1abc", 0),
            ("card id", 4),
            ("card.id-x", 7),
            ("a[]", 1),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.at, at, "{text:?}: {error}");
        }
        assert!(parse(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
        assert!(parse(&vec!["a"; MAX_STEPS + 1].join(".")).is_err());
        assert!(parse("a[100001]").is_err());
        assert!(parse("a[99999999999999999999999]").is_err());
    }

    #[test]
    fn a_path_prefix_stops_where_the_path_does() {
        assert_eq!(prefix_len("amount.value)"), 12);
        assert_eq!(prefix_len("items[0].sku > 3"), 12);
        assert_eq!(prefix_len("card. x"), 4);
        assert_eq!(prefix_len("items[x]"), 5);
        assert_eq!(prefix_len("(x"), 0);
        assert_eq!(prefix_len("9lives"), 0);
    }
}
