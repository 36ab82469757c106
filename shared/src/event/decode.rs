//! Decoding driven by a source definition. Only the fields a source needs are materialised,
//! found by their paths (`card.id`, `items[0].sku`): JSON in one pass over the message with
//! everything else skipped without allocation; Avro, Protobuf and log lines through their
//! format's reader (`crate::format`), then the same paths over what it read.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Event, RejectReason, Value};
use crate::format::lines::TimeLayout;
use crate::format::registry::Known;
use crate::format::{Header, Reader, Schemas, Unavailable};
use crate::path::Step;
use crate::view::{FieldKind, SourceDef};

/// Latest event time accepted: 9999-12-31T23:59:59.999Z.
const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// How much of an offending value a rejection reason quotes.
const QUOTE_LIMIT: usize = 64;

/// Decodes one source's messages. Build once per source and reuse.
#[derive(Debug, Clone)]
pub struct Decoder {
    event_time: String,
    fields: Vec<(String, FieldKind)>,
    /// Per slot, whether its value is kept; the others are only checked against their kind.
    kept: Vec<bool>,
    /// Where each field and the event time are found in a message.
    root: Node,
    max_bytes: usize,
    reader: Reader,
    layout: TimeLayout,
}

/// One place in a message that some path reaches: the field it is (a slot, the event time or
/// both), or the members and elements below it that paths go on to.
#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    slot: Option<usize>,
    time: bool,
    pub(super) members: Vec<(String, Node)>,
    /// Member positions by name, once there are many.
    by_name: Option<FxHashMap<String, usize>>,
    pub(super) elements: Vec<(usize, Node)>,
}

impl Node {
    pub(super) fn is_branch(&self) -> bool {
        !self.members.is_empty() || !self.elements.is_empty()
    }

    /// The member `name`: a linear scan (objects have few wanted members), unless there are
    /// many.
    fn member(&self, name: &str) -> Option<&Node> {
        let at = match &self.by_name {
            Some(map) => *map.get(name)?,
            None => self
                .members
                .iter()
                .position(|(n, _)| n.len() == name.len() && n == name)?,
        };
        Some(&self.members[at].1)
    }

    fn element(&self, index: usize) -> Option<&Node> {
        self.elements
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, node)| node)
    }

    /// The node at `steps`, made on the way.
    fn reach(&mut self, steps: &[Step]) -> &mut Node {
        let Some((first, rest)) = steps.split_first() else {
            return self;
        };
        let next = match first {
            Step::Key(name) => match self.members.iter().position(|(n, _)| n == name) {
                Some(at) => at,
                None => {
                    self.members.push((name.clone(), Node::default()));
                    self.members.len() - 1
                }
            },
            Step::Index(index) => {
                let at = match self.elements.iter().position(|(i, _)| i == index) {
                    Some(at) => at,
                    None => {
                        self.elements.push((*index, Node::default()));
                        self.elements.len() - 1
                    }
                };
                return self.elements[at].1.reach(rest);
            }
        };
        self.members[next].1.reach(rest)
    }

    /// Indexes members by name wherever there are many.
    fn index(&mut self) {
        if self.members.len() > 16 {
            self.by_name = Some(
                self.members
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _))| (name.clone(), i))
                    .collect(),
            );
        }
        let members = self.members.iter_mut().map(|(_, node)| node);
        for node in members.chain(self.elements.iter_mut().map(|(_, node)| node)) {
            node.index();
        }
    }
}

/// Where a path points (a path that does not parse names a member by its whole text, so a
/// source built without validation still decodes flat messages).
fn steps_of(path: &str) -> Vec<Step> {
    crate::path::parse(path).unwrap_or_else(|_| vec![Step::Key(path.to_owned())])
}

impl Decoder {
    /// A decoder keeping every field's value.
    pub fn new(source: &SourceDef) -> Self {
        Self::keeping(source, |_| true)
    }

    /// A decoder keeping the values of the slots `kept` selects. The other fields are checked
    /// as [`Decoder::new`] checks them (a message is rejected for the same reasons) but come out
    /// as [`Value::Null`], without building their values.
    pub fn keeping(source: &SourceDef, kept: impl Fn(usize) -> bool) -> Self {
        let mut root = Node::default();
        root.reach(&steps_of(&source.event_time)).time = true;
        for (i, field) in source.fields.iter().enumerate() {
            root.reach(&steps_of(&field.name)).slot = Some(i);
        }
        root.index();
        Self {
            event_time: source.event_time.clone(),
            fields: source
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.kind))
                .collect(),
            kept: (0..source.fields.len()).map(kept).collect(),
            root,
            max_bytes: source.max_event_bytes,
            reader: source.reader.clone(),
            layout: source.time_layout.clone(),
        }
    }

    /// Makes sure the schema `bytes` names is at hand (fetched from the registry if need be),
    /// so that [`Decoder::decode`] can read it. An error only when the registry cannot be
    /// asked now: the caller waits and tries again, and rejects nothing meanwhile.
    pub fn resolve(&self, bytes: &[u8]) -> Result<(), Unavailable> {
        let Some(registry) = self.reader.registry() else {
            return Ok(());
        };
        match crate::format::header(bytes) {
            Header::Framed { id, .. } => registry.schema(id).map(|_| ()),
            // Rejected when decoded.
            Header::BadMagic(_) | Header::Short(_) => Ok(()),
        }
    }

    /// Decodes one message. Never panics; every failure is a [`RejectReason`].
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, RejectReason> {
        let mut event = Event {
            time_ms: 0,
            values: Vec::new(),
        };
        self.decode_into(bytes, &mut event).map(|()| event)
    }

    /// [`Decoder::decode`] into `event`, reusing its buffer: a consumer decoding message after
    /// message into the same events allocates nothing per message. On failure `event` holds
    /// no meaningful values.
    pub fn decode_into(&self, bytes: &[u8], event: &mut Event) -> Result<(), RejectReason> {
        if bytes.len() > self.max_bytes {
            return Err(RejectReason::Oversized {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        event.values.clear();
        event.values.resize(self.fields.len(), Value::Null);
        let mut raw = Raw {
            time: None,
            values: &mut event.values,
            seen: Seen::new(self.fields.len()),
            problem: None,
        };
        match &self.reader {
            Reader::Json => self.read_json(bytes, &mut raw)?,
            Reader::Avro(schemas) => {
                let (schema, datum) = match schemas {
                    Schemas::Fixed(schema) => (std::sync::Arc::clone(schema), bytes),
                    Schemas::Registry(registry) => {
                        let (id, rest) = framed(bytes, "avro")?;
                        match registry.schema(id).map_err(unavailable)? {
                            Known::Avro(schema) => (schema, rest),
                            Known::Protobuf(_) => return Err(not_kind(id, "Avro", "Protobuf")),
                            Known::Missing(message) => {
                                return Err(RejectReason::UnknownSchemaId { id, message });
                            }
                        }
                    }
                };
                let value = schema
                    .decode(datum)
                    .map_err(|message| RejectReason::AvroDecode { message })?;
                self.walk(&self.root, &schema.at(&value), &mut raw);
            }
            Reader::Protobuf(schemas) => {
                let (descriptor, body) = match schemas {
                    Schemas::Fixed(descriptor) => (descriptor.clone(), bytes),
                    Schemas::Registry(registry) => {
                        let (id, rest) = framed(bytes, "protobuf")?;
                        let schema = match registry.schema(id).map_err(unavailable)? {
                            Known::Protobuf(schema) => schema,
                            Known::Avro(_) => return Err(not_kind(id, "Protobuf", "Avro")),
                            Known::Missing(message) => {
                                return Err(RejectReason::UnknownSchemaId { id, message });
                            }
                        };
                        let (indexes, body) = crate::format::message_indexes(rest)
                            .map_err(|message| RejectReason::ProtoDecode { message })?;
                        let descriptor =
                            schema
                                .indexed(&indexes)
                                .ok_or_else(|| RejectReason::ProtoDecode {
                                    message: format!(
                                        "schema {id} has no message at index list {indexes:?}"
                                    ),
                                })?;
                        (descriptor, body)
                    }
                };
                let message = crate::format::proto::decode(&descriptor, body)
                    .map_err(|message| RejectReason::ProtoDecode { message })?;
                self.walk(
                    &self.root,
                    &crate::format::proto::ProtoAt::Message(&message),
                    &mut raw,
                );
            }
            Reader::Lines(format) => {
                let line = format.read(bytes, &self.layout)?;
                self.walk(&self.root, &&line, &mut raw);
            }
        }
        if let Some(problem) = raw.problem {
            return Err(problem);
        }
        let time_ms = match raw.time {
            Some(Ok(ms)) => ms,
            Some(Err(reason)) => return Err(reason),
            None => {
                return Err(RejectReason::MissingEventTime {
                    field: self.event_time.clone(),
                });
            }
        };
        event.time_ms = time_ms;
        Ok(())
    }

    /// Reads a JSON message's paths into `raw`.
    fn read_json(&self, bytes: &[u8], raw: &mut Raw<'_>) -> Result<(), RejectReason> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let outcome = Visit {
            decoder: self,
            node: &self.root,
            raw,
        }
        .deserialize_root(&mut deserializer)
        .and_then(|()| deserializer.end());
        match outcome {
            Ok(()) => Ok(()),
            Err(e) if e.is_data() => Err(not_an_object(bytes)),
            Err(e) => Err(RejectReason::NotJson {
                message: e.to_string(),
            }),
        }
    }

    fn invalid_time(&self, value: String, problem: &str) -> RejectReason {
        RejectReason::InvalidEventTime {
            field: self.event_time.clone(),
            value,
            problem: problem.to_owned(),
        }
    }

    fn time_from_ms(&self, ms: i64) -> Result<i64, RejectReason> {
        if (0..=MAX_TIME_MS).contains(&ms) {
            Ok(ms)
        } else {
            Err(self.invalid_time(
                ms.to_string(),
                "epoch milliseconds must be between 0 and 253402300799999",
            ))
        }
    }

    fn time_from_text(&self, text: &str) -> Result<i64, RejectReason> {
        match self.layout.parse(text) {
            Ok(ms) if (0..=MAX_TIME_MS).contains(&ms) => Ok(ms),
            Ok(_) => Err(self.invalid_time(quote(text), "time is before 1970 or after 9999")),
            Err(problem) => Err(self.invalid_time(quote(text), &problem)),
        }
    }
}

/// The schema id and the rest of a wire-format message.
fn framed<'a>(bytes: &'a [u8], format: &str) -> Result<(u32, &'a [u8]), RejectReason> {
    match crate::format::header(bytes) {
        Header::Framed { id, rest } => Ok((id, rest)),
        Header::BadMagic(found) => Err(RejectReason::BadMagicByte { found }),
        Header::Short(len) => {
            let message = format!("{len} bytes, fewer than the 5-byte wire-format header");
            Err(match format {
                "avro" => RejectReason::AvroDecode { message },
                _ => RejectReason::ProtoDecode { message },
            })
        }
    }
}

fn unavailable(error: Unavailable) -> RejectReason {
    RejectReason::SchemaUnavailable {
        message: error.to_string(),
    }
}

fn not_kind(id: u32, wanted: &str, found: &str) -> RejectReason {
    RejectReason::UnknownSchemaId {
        id,
        message: format!("schema {id} is a {found} schema; this source reads {wanted}"),
    }
}

fn not_an_object(bytes: &[u8]) -> RejectReason {
    let found = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(_)) => "array",
        Ok(serde_json::Value::String(_)) => "string",
        Ok(serde_json::Value::Number(_)) => "number",
        Ok(serde_json::Value::Bool(_)) => "boolean",
        Ok(serde_json::Value::Null) => "null",
        Ok(serde_json::Value::Object(_)) => "object",
        Err(e) => {
            return RejectReason::NotJson {
                message: e.to_string(),
            };
        }
    };
    RejectReason::NotAnObject {
        found: found.to_owned(),
    }
}

pub(crate) fn quote(text: &str) -> String {
    if text.len() <= QUOTE_LIMIT {
        return format!("{text:?}");
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &text[..end])
}

/// A value as found in a message, before it is checked against a field's kind.
pub(crate) enum Found<'de> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'de, str>),
    /// Text from a log line: read as the field's kind asks (`"42"` is an int field's 42).
    Text(Cow<'de, str>),
    Object,
    Array,
    /// A value no field kind holds (bytes that are not text, a non-finite number), described.
    Unusable(String),
}

impl Found<'_> {
    /// A float, where only finite ones are values; `-0.0` is `0.0`.
    pub(crate) fn number(f: f64) -> Self {
        if f.is_finite() {
            Found::Float(if f == 0.0 { 0.0 } else { f })
        } else {
            Found::Unusable(format!("non-finite number {f}"))
        }
    }

    /// The same value, owning its text.
    pub(crate) fn into_owned(self) -> Found<'static> {
        match self {
            Found::Null => Found::Null,
            Found::Bool(b) => Found::Bool(b),
            Found::Int(i) => Found::Int(i),
            Found::Float(f) => Found::Float(f),
            Found::Str(s) => Found::Str(Cow::Owned(s.into_owned())),
            Found::Text(s) => Found::Text(Cow::Owned(s.into_owned())),
            Found::Object => Found::Object,
            Found::Array => Found::Array,
            Found::Unusable(what) => Found::Unusable(what),
        }
    }

    /// Log-line text as a field of `kind` reads it: a number or boolean where the kind is one
    /// and the text spells one, a string otherwise.
    fn typed(self, kind: FieldKind) -> Self {
        let Found::Text(text) = self else {
            return self;
        };
        let trimmed = text.trim();
        let number = || {
            trimmed
                .parse::<i64>()
                .map(Found::Int)
                .or_else(|_| trimmed.parse::<f64>().map(Found::number))
                .ok()
        };
        let parsed = match kind {
            FieldKind::Int | FieldKind::Float | FieldKind::Number => number(),
            FieldKind::Bool => match trimmed {
                "true" => Some(Found::Bool(true)),
                "false" => Some(Found::Bool(false)),
                _ => None,
            },
            FieldKind::String | FieldKind::Scalar => None,
        };
        parsed.unwrap_or(Found::Str(text))
    }
    fn describe(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Bool(b) => format!("boolean {b}"),
            Self::Int(i) => format!("integer {i}"),
            Self::Float(f) => format!("number {f}"),
            Self::Str(s) => format!("string {}", quote(s)),
            Self::Object => "an object".to_owned(),
            Self::Array => "an array".to_owned(),
            Self::Text(s) => format!("text {}", quote(s)),
            Self::Unusable(what) => what.clone(),
        }
    }

    /// Whether a field of `kind` can hold this, or why not.
    fn check(&self, name: &str, kind: FieldKind) -> Result<(), RejectReason> {
        use FieldKind::{Bool, Float, Int, Number, Scalar, String};
        let fits = matches!(
            (kind, self),
            (_, Found::Null)
                | (String | Scalar, Found::Str(_) | Found::Text(_))
                | (Int | Number | Scalar | Float, Found::Int(_))
                | (Float | Number | Scalar, Found::Float(_))
                | (Bool | Scalar, Found::Bool(_))
        );
        if fits {
            return Ok(());
        }
        Err(RejectReason::WrongType {
            field: name.to_owned(),
            expected: kind.describe().to_owned(),
            found: self.describe(),
        })
    }

    /// The value a field of `kind` holds, or why it cannot hold this.
    fn into_value(self, name: &str, kind: FieldKind) -> Result<Value, RejectReason> {
        let found = self.typed(kind);
        found.check(name, kind)?;
        Ok(match found {
            Found::Str(s) | Found::Text(s) => Value::Str(s.into()),
            Found::Int(i) if kind == FieldKind::Float => Value::Float(i as f64),
            Found::Int(i) => Value::Int(i),
            Found::Float(f) => Value::Float(f),
            Found::Bool(b) => Value::Bool(b),
            // These fit no kind: `check` refused them.
            Found::Null | Found::Object | Found::Array | Found::Unusable(_) => Value::Null,
        })
    }
}

pub(super) struct Raw<'a> {
    time: Option<Result<i64, RejectReason>>,
    values: &'a mut [Value],
    seen: Seen,
    /// The first problem found; parsing goes on so that broken JSON is still reported as such.
    problem: Option<RejectReason>,
}

impl<'de> de::Deserialize<'de> for Found<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FoundVisitor)
    }
}

struct FoundVisitor;

impl<'de> Visitor<'de> for FoundVisitor {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Found<'de>, E> {
        Ok(Found::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Found<'de>, E> {
        Ok(Found::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Found<'de>, E> {
        Ok(Found::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Found<'de>, E> {
        Ok(i64::try_from(v).map_or(Found::Float(v as f64), Found::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Found<'de>, E> {
        // JSON has no NaN or infinity; normalise -0.0 so equal numbers are equal keys.
        Ok(Found::Float(if v == 0.0 { 0.0 } else { v }))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Found<'de>, E> {
        Ok(Found::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Found<'de>, E> {
        Ok(Found::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Found<'de>, E> {
        Ok(Found::Str(Cow::Owned(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Found::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Found::Array)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The slots found so far in a message: a bit per slot, on the stack for up to 64 fields.
enum Seen {
    Few(u64),
    Many(Vec<bool>),
}

impl Seen {
    fn new(slots: usize) -> Self {
        if slots <= 64 {
            Self::Few(0)
        } else {
            Self::Many(vec![false; slots])
        }
    }

    /// Marks `slot` found; whether it was found before.
    fn mark(&mut self, slot: usize) -> bool {
        match self {
            Self::Few(bits) => {
                let bit = 1u64 << slot;
                let before = *bits & bit != 0;
                *bits |= bit;
                before
            }
            Self::Many(seen) => std::mem::replace(&mut seen[slot], true),
        }
    }
}

/// Reads the part of a message at `node`: a branch is walked (its wanted members and
/// elements read, the rest skipped), a leaf is read as a field.
struct Visit<'a, 'v> {
    decoder: &'a Decoder,
    node: &'a Node,
    raw: &'a mut Raw<'v>,
}

impl<'de> Visit<'_, '_> {
    /// The whole message, which must be an object.
    fn deserialize_root<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> DeserializeSeed<'de> for Visit<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.node.is_branch() {
            return deserializer.deserialize_any(self);
        }
        let found = <Found<'de> as de::Deserialize>::deserialize(deserializer)?;
        self.decoder.read_leaf(self.node, found, self.raw);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Visit<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (decoder, raw) = (self.decoder, self.raw);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.node.member(&key) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(node) => map.next_value_seed(Visit {
                    decoder,
                    node,
                    raw: &mut *raw,
                })?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (decoder, raw) = (self.decoder, self.raw);
        for index in 0.. {
            let more = match self.node.element(index) {
                None => seq.next_element::<IgnoredAny>()?.is_some(),
                Some(node) => seq
                    .next_element_seed(Visit {
                        decoder,
                        node,
                        raw: &mut *raw,
                    })?
                    .is_some(),
            };
            if !more {
                break;
            }
        }
        Ok(())
    }

    // A scalar where paths go on into an object or array: the fields below are absent.
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

impl Decoder {
    /// Takes the value found at a leaf: the event time, a field, or both.
    pub(super) fn read_leaf(&self, node: &Node, found: Found<'_>, raw: &mut Raw<'_>) {
        if raw.problem.is_some() {
            return;
        }
        if node.time {
            if raw.time.is_some() {
                raw.problem = Some(RejectReason::DuplicateField {
                    field: self.event_time.clone(),
                });
                return;
            }
            raw.time = match &found {
                Found::Null => None,
                Found::Int(ms) => Some(self.time_from_ms(*ms)),
                Found::Str(text) | Found::Text(text) => Some(self.time_from_text(text)),
                other => Some(Err(self.invalid_time(
                    other.describe(),
                    "expected an RFC 3339 string or integer epoch milliseconds",
                ))),
            };
        }
        let Some(i) = node.slot else {
            return;
        };
        let (name, kind) = &self.fields[i];
        if raw.seen.mark(i) {
            raw.problem = Some(RejectReason::DuplicateField {
                field: name.clone(),
            });
            return;
        }
        if node.time {
            // The event-time field, when also a decoded field, keeps its raw form; a bad time
            // is reported as such.
            if self.kept[i] {
                raw.values[i] = found
                    .into_value(name, FieldKind::Scalar)
                    .unwrap_or(Value::Null);
            }
            return;
        }
        if !self.kept[i] {
            if let Err(reason) = found.typed(*kind).check(name, *kind) {
                raw.problem = Some(reason);
            }
            return;
        }
        match found.into_value(name, *kind) {
            Ok(value) => raw.values[i] = value,
            Err(reason) => raw.problem = Some(reason),
        }
    }
}
