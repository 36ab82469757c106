//! Avro: a writer schema (from a file or a registry) and its datums, read with `apache-avro`;
//! field paths walk records by field name, maps by key and arrays by index.

use std::borrow::Cow;
use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;
use apache_avro::types::Value;

use crate::event::{Found, Tree};
use crate::path::Step;

/// A writer schema and the named types it defines.
#[derive(Debug)]
pub struct AvroSchema {
    schema: Schema,
    names: HashMap<Name, Schema>,
}

/// Largest allocation a datum may ask for (a string or array length read from the message):
/// no message may claim more than the largest message a source takes.
const MAX_ALLOCATION_BYTES: usize = 64 * 1024 * 1024;

impl AvroSchema {
    /// Parses an Avro schema document (`.avsc` JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let schema = Schema::parse_str(text).map_err(|e| e.to_string())?;
        let names = apache_avro::schema::ResolvedSchema::try_from(&schema)
            .map_err(|e| e.to_string())?
            .get_names()
            .iter()
            .map(|(name, schema)| (name.clone(), (*schema).clone()))
            .collect();
        Ok(Self { schema, names })
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    pub(crate) fn resolved<'a>(&'a self, schema: &'a Schema) -> &'a Schema {
        resolve(schema, &self.names)
    }

    /// Decodes one datum; every byte must belong to it.
    pub fn decode(&self, mut bytes: &[u8]) -> Result<Value, String> {
        let value = apache_avro::from_avro_datum(&self.schema, &mut bytes, None)
            .map_err(|e| e.to_string())?;
        if !bytes.is_empty() {
            return Err(format!("{} bytes follow the datum", bytes.len()));
        }
        Ok(value)
    }

    /// The value at the top of a datum, for walking.
    pub(crate) fn at<'a>(&'a self, value: &'a Value) -> AvroAt<'a> {
        AvroAt {
            value,
            schema: &self.schema,
            names: &self.names,
        }
    }

    /// Whether `steps` can name a value of this schema; if not, the names that could have
    /// been meant at the step that fails.
    pub fn check_path(&self, steps: &[Step]) -> Result<(), Vec<String>> {
        check(&self.schema, &self.names, steps)
    }
}

fn resolve<'a>(mut schema: &'a Schema, names: &'a HashMap<Name, Schema>) -> &'a Schema {
    while let Schema::Ref { name } = schema {
        match names.get(name) {
            Some(next) => schema = next,
            None => break,
        }
    }
    schema
}

fn check(
    schema: &Schema,
    names: &HashMap<Name, Schema>,
    steps: &[Step],
) -> Result<(), Vec<String>> {
    let Some((first, rest)) = steps.split_first() else {
        return Ok(());
    };
    match (resolve(schema, names), first) {
        (Schema::Union(union), _) => {
            let mut near = Vec::new();
            for variant in union.variants() {
                match check(variant, names, steps) {
                    Ok(()) => return Ok(()),
                    Err(names) => near.extend(names),
                }
            }
            Err(near)
        }
        (Schema::Record(record), Step::Key(key)) => match record.lookup.get(key) {
            Some(&at) => check(&record.fields[at].schema, names, rest),
            None => Err(record.fields.iter().map(|f| f.name.clone()).collect()),
        },
        (Schema::Map(map), Step::Key(_)) => check(&map.types, names, rest),
        (Schema::Array(array), Step::Index(_)) => check(&array.items, names, rest),
        _ => Err(Vec::new()),
    }
}

/// A place in a datum, with its schema (decimals need their scale).
#[derive(Clone, Copy)]
pub(crate) struct AvroAt<'a> {
    value: &'a Value,
    schema: &'a Schema,
    names: &'a HashMap<Name, Schema>,
}

impl<'a> AvroAt<'a> {
    /// Past unions and references: the value itself.
    fn plain(self) -> Self {
        let mut at = self;
        loop {
            let schema = resolve(at.schema, at.names);
            match (at.value, schema) {
                (Value::Union(index, inner), Schema::Union(union)) => {
                    match union.variants().get(*index as usize) {
                        Some(variant) => {
                            at = AvroAt {
                                value: inner,
                                schema: variant,
                                names: at.names,
                            };
                        }
                        None => return at,
                    }
                }
                _ => {
                    return AvroAt { schema, ..at };
                }
            }
        }
    }
}

impl<'a> Tree<'a> for AvroAt<'a> {
    fn member(&self, name: &str) -> Option<Self> {
        let at = self.plain();
        match (at.value, at.schema) {
            (Value::Record(fields), Schema::Record(record)) => {
                let i = *record.lookup.get(name)?;
                let (_, value) = fields.get(i)?;
                Some(AvroAt {
                    value,
                    schema: &record.fields.get(i)?.schema,
                    names: at.names,
                })
            }
            (Value::Map(entries), Schema::Map(map)) => Some(AvroAt {
                value: entries.get(name)?,
                schema: &map.types,
                names: at.names,
            }),
            _ => None,
        }
    }

    fn element(&self, index: usize) -> Option<Self> {
        let at = self.plain();
        match (at.value, at.schema) {
            (Value::Array(items), Schema::Array(array)) => Some(AvroAt {
                value: items.get(index)?,
                schema: &array.items,
                names: at.names,
            }),
            _ => None,
        }
    }

    fn found(&self) -> Found<'a> {
        let at = self.plain();
        match at.value {
            Value::Null => Found::Null,
            Value::Boolean(b) => Found::Bool(*b),
            Value::Date(days) => date(*days),
            Value::Int(i) | Value::TimeMillis(i) => Found::Int(i64::from(*i)),
            Value::Long(i) | Value::TimeMicros(i) => Found::Int(*i),
            Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => Found::Int(*ms),
            Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
                Found::Int(us.div_euclid(1_000))
            }
            Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
                Found::Int(ns.div_euclid(1_000_000))
            }
            Value::Float(f) => Found::number(f64::from(*f)),
            Value::Double(f) => Found::number(*f),
            Value::String(s) | Value::Enum(_, s) => Found::Str(Cow::Borrowed(s)),
            Value::Uuid(u) => Found::Str(Cow::Owned(u.to_string())),
            Value::Bytes(b) | Value::Fixed(_, b) => match std::str::from_utf8(b) {
                Ok(text) => Found::Str(Cow::Borrowed(text)),
                Err(_) => Found::Unusable(format!("{} bytes that are not UTF-8 text", b.len())),
            },
            Value::Decimal(decimal) => {
                let scale = match at.schema {
                    Schema::Decimal(d) => d.scale,
                    _ => 0,
                };
                match Vec::<u8>::try_from(decimal) {
                    Ok(bytes) => Found::number(unscaled(&bytes) / 10f64.powi(scale as i32)),
                    Err(e) => Found::Unusable(format!("a decimal that cannot be read ({e})")),
                }
            }
            Value::BigDecimal(big) => match big.to_string().parse::<f64>() {
                Ok(f) => Found::number(f),
                Err(_) => Found::Unusable(format!("decimal {big}")),
            },
            Value::Duration(_) => Found::Unusable("an Avro duration".to_owned()),
            Value::Record(_) | Value::Map(_) => Found::Object,
            Value::Array(_) => Found::Array,
            Value::Union(_, _) => Found::Unusable("a union of an unknown branch".to_owned()),
        }
    }
}

/// A date (days since 1970-01-01) as `YYYY-MM-DD`.
fn date(days: i32) -> Found<'static> {
    match chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
    {
        Some(day) => Found::Str(Cow::Owned(day.format("%Y-%m-%d").to_string())),
        None => Found::Unusable(format!("date {days} days from 1970")),
    }
}

/// A big-endian two's-complement integer as a float (exact up to 2^53).
fn unscaled(bytes: &[u8]) -> f64 {
    if bytes.len() <= 16 {
        let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut wide = [fill; 16];
        wide[16 - bytes.len()..].copy_from_slice(bytes);
        return i128::from_be_bytes(wide) as f64;
    }
    let negative = bytes[0] & 0x80 != 0;
    let magnitude = bytes.iter().fold(0f64, |acc, &b| {
        acc * 256.0 + f64::from(if negative { !b } else { b })
    });
    if negative {
        -(magnitude + 1.0)
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscaled_reads_twos_complement() {
        assert_eq!(unscaled(&[0x01, 0x00]), 256.0);
        assert_eq!(unscaled(&[0xff]), -1.0);
        assert_eq!(unscaled(&[0xff, 0x00]), -256.0);
        assert_eq!(unscaled(&[]), 0.0);
        let mut long = vec![0u8; 20];
        long[19] = 5;
        assert_eq!(unscaled(&long), 5.0);
        let negative = vec![0xffu8; 20];
        assert_eq!(unscaled(&negative), -1.0);
    }
}
