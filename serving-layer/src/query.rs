//! The parameters of `GET /v1/views/{view}`, checked against the view: every mistake is a 400
//! that names the parameter.

use std::collections::BTreeSet;

use braid_shared::config::{format_duration, parse_duration};
use braid_shared::text::format_time;
use braid_shared::view::FieldKind;
use braid_shared::{SourceDef, Value, ViewDef};

use crate::error::ApiError;
use braid_merge::answer::{OrderBy, ViewQuery};

/// Parameters with a meaning of their own; every other one filters a group-by field.
pub const RESERVED: [&str; 7] = [
    "from", "to", "step", "group_by", "order_by", "limit", "as_of",
];

/// A query string's pairs, read once for every route that takes parameters: unreadable text is
/// a 400 `invalid_query`, a name given twice a 400 naming it.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("the query string cannot be read: {e}"),
                )
            })?;
        check_unique(&pairs)?;
        Ok(Self(pairs))
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        get(&self.0, name)
    }

    /// Refuses every parameter not in `allowed`, naming it.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            None => Ok(()),
            Some((name, _)) => Err(ApiError::parameter(
                name,
                format!(
                    "is not a parameter of this endpoint (only {})",
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// `limit`, 1 to `max`, or `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        self.get("limit")
            .map_or(Ok(default), |text| parse_limit(text, max))
    }
}

fn check_unique(params: &[(String, String)]) -> Result<(), ApiError> {
    let mut seen = BTreeSet::new();
    for (name, _) in params {
        if !seen.insert(name.as_str()) {
            return Err(ApiError::parameter(name, "is given more than once"));
        }
    }
    Ok(())
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Parses the query string's pairs for `view`. `now_ms` resolves `now[-duration]`.
pub fn parse(
    view: &ViewDef,
    source: &SourceDef,
    params: &[(String, String)],
    now_ms: i64,
    max_rows: usize,
) -> Result<ViewQuery, ApiError> {
    check_unique(params)?;
    let get = |name: &str| get(params, name);
    let (from_ms, to_ms) = parse_range(get("from"), get("to"), now_ms)?;
    let step_ms = match get("step") {
        None => None,
        Some(text) => Some(parse_step(text, view.granularity_ms)?),
    };
    let group_by = match get("group_by") {
        None => (0..view.group_by.len()).collect(),
        Some(list) => parse_group_by(view, list)?,
    };
    let mut filters = Vec::new();
    for (name, text) in params {
        if RESERVED.contains(&name.as_str()) {
            continue;
        }
        let Some(index) = view.group_by.iter().position(|f| &f.name == name) else {
            let fields: Vec<&str> = view.group_by.iter().map(|f| f.name.as_str()).collect();
            return Err(ApiError::parameter(
                name,
                format!(
                    "is not a parameter of this endpoint nor a group-by field of view {:?} (filters apply to: {})",
                    view.name,
                    if fields.is_empty() {
                        "none".to_owned()
                    } else {
                        fields.join(", ")
                    }
                ),
            ));
        };
        let kind = source
            .fields
            .get(view.group_by[index].slot)
            .map_or(FieldKind::Scalar, |f| f.kind);
        filters.push((index, parse_value(name, text, kind)?));
    }
    let order_by = match get("order_by") {
        None => None,
        Some(text) => Some(parse_order_by(view, text)?),
    };
    let limit = match get("limit") {
        None => None,
        Some(text) => Some(parse_limit(text, max_rows)?),
    };
    Ok(ViewQuery {
        from_ms,
        to_ms,
        step_ms,
        filters,
        group_by,
        order_by,
        limit,
    })
}

/// `from` and `to`, a non-empty half-open range.
pub fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    now_ms: i64,
) -> Result<(i64, i64), ApiError> {
    let from_ms = parse_time("from", from, now_ms)?;
    let to_ms = parse_time("to", to, now_ms)?;
    if from_ms >= to_ms {
        return Err(ApiError::parameter(
            "from",
            format!(
                "{} must be before to ({}); the range is [from, to)",
                format_time(from_ms),
                format_time(to_ms)
            ),
        ));
    }
    Ok((from_ms, to_ms))
}

/// RFC 3339, epoch milliseconds, `now`, or `now-<duration>` / `now+<duration>`.
pub fn parse_time(name: &str, text: Option<&str>, now_ms: i64) -> Result<i64, ApiError> {
    let text = text.ok_or_else(|| {
        ApiError::parameter(
            name,
            "is required (RFC 3339, epoch milliseconds, or now[-duration] such as now-1h)",
        )
    })?;
    let bad = || {
        ApiError::parameter(
            name,
            format!(
                "{text:?} is not a time (RFC 3339 such as 2026-01-31T12:00:00Z, epoch milliseconds, or now[-duration] such as now-1h)"
            ),
        )
    };
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let (sign, duration) = match rest.split_at(1) {
            ("-", d) => (-1, d),
            ("+", d) => (1, d),
            _ => return Err(bad()),
        };
        let ms = parse_duration(duration)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .ok_or_else(bad)?;
        return now_ms.checked_add(sign * ms).ok_or_else(bad);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return text.parse::<i64>().map_err(|_| bad());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}

fn parse_step(text: &str, granularity_ms: i64) -> Result<i64, ApiError> {
    let step = parse_duration(text)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            ApiError::parameter(
                "step",
                format!("{text:?} is not a duration such as 5m or 1h"),
            )
        })?;
    if step % granularity_ms != 0 {
        let granularity = std::time::Duration::from_millis(granularity_ms.unsigned_abs());
        return Err(ApiError::parameter(
            "step",
            format!(
                "{text} is not a multiple of the view's granularity {}",
                format_duration(granularity)
            ),
        ));
    }
    Ok(step)
}

fn parse_group_by(view: &ViewDef, list: &str) -> Result<Vec<usize>, ApiError> {
    let mut kept = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let index = view
            .group_by
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| {
                let fields: Vec<&str> = view.group_by.iter().map(|f| f.name.as_str()).collect();
                ApiError::parameter(
                    "group_by",
                    format!(
                        "{name:?} is not a group-by field of view {:?} (fields: {})",
                        view.name,
                        fields.join(", ")
                    ),
                )
            })?;
        if kept.contains(&index) {
            return Err(ApiError::parameter(
                "group_by",
                format!("{name:?} is listed twice"),
            ));
        }
        kept.push(index);
    }
    kept.sort_unstable();
    Ok(kept)
}

/// A filter value, read as the field's type.
pub(crate) fn parse_value(name: &str, text: &str, kind: FieldKind) -> Result<Value, ApiError> {
    let wrong = |what: &str| ApiError::parameter(name, format!("{text:?} is not {what}"));
    match kind {
        FieldKind::String => Ok(Value::Str(text.into())),
        FieldKind::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| wrong("an integer")),
        FieldKind::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            // -0.0 is stored as 0.0.
            .map(|f| Value::Float(f + 0.0))
            .ok_or_else(|| wrong("a finite number")),
        FieldKind::Bool => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        // Undeclared fields hold whatever JSON scalar the events had: a JSON literal is read
        // as such (`42`, `4.5`, `true`, `"42"`), anything else as a string.
        FieldKind::Number | FieldKind::Scalar => {
            Ok(match braid_columnar::columns::parse_literal(text) {
                Some(Value::Null) | None => Value::Str(text.into()),
                Some(Value::Float(f)) => Value::Float(f + 0.0),
                Some(value) => value,
            })
        }
    }
}

fn parse_order_by(view: &ViewDef, text: &str) -> Result<OrderBy, ApiError> {
    let (name, descending) = match text.rsplit_once(':') {
        Some((name, "desc")) => (name, true),
        Some((name, "asc")) => (name, false),
        Some((_, other)) => {
            return Err(ApiError::parameter(
                "order_by",
                format!("direction {other:?} is neither asc nor desc"),
            ));
        }
        None => (text, true),
    };
    let metric = view
        .metrics
        .iter()
        .position(|m| m.name == name)
        .ok_or_else(|| {
            let metrics: Vec<&str> = view.metrics.iter().map(|m| m.name.as_str()).collect();
            ApiError::parameter(
                "order_by",
                format!(
                    "{name:?} is not a metric of view {:?} (metrics: {})",
                    view.name,
                    metrics.join(", ")
                ),
            )
        })?;
    if matches!(
        view.metrics[metric].expr,
        braid_shared::MetricExpr::TopK { .. }
    ) {
        return Err(ApiError::parameter(
            "order_by",
            format!("{name:?} is a top-k list, not a number"),
        ));
    }
    Ok(OrderBy { metric, descending })
}

pub fn parse_limit(text: &str, max_rows: usize) -> Result<usize, ApiError> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 && n <= max_rows => Ok(n),
        _ => Err(ApiError::parameter(
            "limit",
            format!("{text:?} is not a whole number from 1 to {max_rows}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_shared::Config;

    const CONFIG: &str = r#"
[[source]]
name = "payments"
topic = "payments"
event_time = "ts"
[source.fields]
card_id = "string"
country = "string"
amount = "float"
ts = "string"
qty = "int"

[[view]]
name = "spend"
source = "payments"
group_by = ["card_id", "country"]
granularity = "1m"
[view.metrics]
tx = "count"
amount = "sum(amount)"
top = "top_k(card_id, 3)"
"#;

    fn run(query: &str) -> Result<ViewQuery, ApiError> {
        let config = Config::from_toml(CONFIG).unwrap();
        let view = config.view("spend").unwrap();
        let source = config.source("payments").unwrap();
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        parse(view, source, &params, 1_800_000_000_000, 1000)
    }

    fn message(query: &str) -> String {
        let error = run(query).unwrap_err();
        assert_eq!(
            error.status(),
            axum::http::StatusCode::BAD_REQUEST,
            "{query}"
        );
        error.message
    }

    #[test]
    fn parses_every_parameter() {
        let q = run("from=2026-01-01T00:00:00Z&to=1767229200000&step=5m&country=DE&group_by=country&order_by=amount:asc&limit=10").unwrap();
        assert_eq!(q.from_ms, 1_767_225_600_000);
        assert_eq!(q.to_ms, 1_767_229_200_000);
        assert_eq!(q.step_ms, Some(300_000));
        assert_eq!(q.filters, vec![(1, Value::Str("DE".into()))]);
        assert_eq!(q.group_by, vec![1]);
        let config = Config::from_toml(CONFIG).unwrap();
        let amount = config
            .view("spend")
            .unwrap()
            .metrics
            .iter()
            .position(|m| m.name == "amount");
        assert_eq!(
            q.order_by,
            Some(OrderBy {
                metric: amount.unwrap(),
                descending: false
            })
        );
        assert_eq!(q.limit, Some(10));
        let q = run("from=now-1h&to=now&group_by=").unwrap();
        assert_eq!(q.to_ms - q.from_ms, 3_600_000);
        assert!(q.group_by.is_empty());
        assert_eq!(run("from=now-1h&to=now").unwrap().group_by, vec![0, 1]);
    }

    #[test]
    fn every_mistake_names_its_parameter() {
        let cases = [
            ("to=now", "from: is required"),
            ("from=yesterday&to=now", "from: \"yesterday\" is not a time"),
            ("from=now&to=now-1h", "from: "),
            ("from=now&to=now", "must be before to"),
            ("from=now-1h&to=now&step=90s", "step: 90s is not a multiple"),
            ("from=now-1h&to=now&step=0s", "step: "),
            ("from=now-1h&to=now&step=fast", "step: \"fast\""),
            (
                "from=now-1h&to=now&merchant=m1",
                "merchant: is not a parameter",
            ),
            (
                "from=now-1h&to=now&group_by=merchant",
                "group_by: \"merchant\"",
            ),
            (
                "from=now-1h&to=now&group_by=country,country",
                "listed twice",
            ),
            (
                "from=now-1h&to=now&order_by=nope",
                "order_by: \"nope\" is not a metric",
            ),
            ("from=now-1h&to=now&order_by=top", "top-k list"),
            ("from=now-1h&to=now&order_by=tx:up", "direction \"up\""),
            ("from=now-1h&to=now&limit=0", "limit: \"0\""),
            ("from=now-1h&to=now&limit=1001", "limit: \"1001\""),
            ("from=now-1h&to=now&limit=-3", "limit: "),
            (
                "from=now-1h&to=now&from=now",
                "from: is given more than once",
            ),
            ("from=now-1h&to=now-99999999999999999999y", "to: "),
            ("from=now~1h&to=now", "from: "),
        ];
        for (query, expected) in cases {
            let got = message(query);
            assert!(
                got.contains(expected),
                "{query}: {got:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn filter_values_take_the_field_type() {
        let config = Config::from_toml(CONFIG).unwrap();
        let source = config.source("payments").unwrap();
        let qty = source.fields[source.slot("qty").unwrap()].kind;
        assert_eq!(parse_value("qty", "7", qty).unwrap(), Value::Int(7));
        assert!(
            parse_value("qty", "7.5", qty)
                .unwrap_err()
                .message
                .contains("qty: \"7.5\" is not an integer")
        );
        assert_eq!(
            parse_value("x", "42", FieldKind::Scalar).unwrap(),
            Value::Int(42)
        );
        assert_eq!(
            parse_value("x", "\"42\"", FieldKind::Scalar).unwrap(),
            Value::Str("42".into())
        );
        assert_eq!(
            parse_value("x", "abc", FieldKind::Scalar).unwrap(),
            Value::Str("abc".into())
        );
        assert_eq!(
            parse_value("x", "-0", FieldKind::Float).unwrap(),
            Value::Float(0.0)
        );
        assert!(parse_value("x", "NaN", FieldKind::Float).is_err());
    }
}

/// Where a page ordered by (partition, offset) ended: the last one listed. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub partition: i32,
    pub offset: i64,
}

impl Cursor {
    /// The cursor as text, tagged with `kind` (which endpoint issued it).
    pub fn encode(&self, kind: &str) -> String {
        hex::encode(format!("{kind}{}:{}", self.partition, self.offset))
    }

    /// A cursor `kind`'s endpoint issued; a 400 naming `cursor` otherwise.
    pub fn decode(kind: &str, text: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::parameter("cursor", "is not a cursor this endpoint issued");
        let bytes = hex::decode(text).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (partition, offset) = text
            .strip_prefix(kind)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(bad)?;
        Ok(Self {
            partition: partition.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }
}
