//! Protobuf: message descriptors compiled from `.proto` text (a file or a registry's schema)
//! with `protox`, messages read with `prost-reflect`. Field paths walk messages by field name,
//! maps by key and repeated fields by index; `google.protobuf.Timestamp` reads as epoch
//! milliseconds and the wrapper types as the value they wrap.

use std::borrow::Cow;
use std::path::Path;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, FileDescriptor, Kind, MapKey,
    MessageDescriptor, ReflectMessage, Value,
};

use crate::event::{Found, Tree};
use crate::path::Step;

/// A compiled `.proto` file.
#[derive(Debug)]
pub struct ProtoSchema {
    file: FileDescriptor,
}

/// `.proto` sources held in memory, by import name.
struct Memory {
    files: Vec<(String, String)>,
}

impl protox::file::FileResolver for Memory {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.files.iter().find(|(n, _)| n == name) {
            Some((name, source)) => match serialized(name, source) {
                Some(file) => Ok(file),
                None => protox::file::File::from_source(name, source),
            },
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A schema in the registry's serialized form: a base64 `FileDescriptorProto`, as some
/// producers register it (`.proto` text is never valid base64: it has spaces and `;`).
fn serialized(name: &str, source: &str) -> Option<protox::file::File> {
    use base64::Engine as _;
    use prost_reflect::prost::Message as _;
    let text = source.trim();
    if text.is_empty() || text.contains([' ', ';', '\n']) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let mut file =
        prost_reflect::prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok()?;
    file.name = Some(name.to_owned());
    Some(protox::file::File::from_file_descriptor_proto(file))
}

impl ProtoSchema {
    /// Compiles `.proto` source text; it may import the well-known types.
    pub fn parse(name: &str, source: &str) -> Result<Self, String> {
        Self::parse_with(name, source, Vec::new())
    }

    /// Compiles `.proto` source text that may also import `imports` (import name, source).
    pub fn parse_with(
        name: &str,
        source: &str,
        mut imports: Vec<(String, String)>,
    ) -> Result<Self, String> {
        let mut resolver = protox::file::ChainFileResolver::new();
        imports.push((name.to_owned(), source.to_owned()));
        resolver.add(Memory { files: imports });
        resolver.add(protox::file::GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.open_file(name).map_err(|e| e.to_string())?;
        Self::from_pool(&compiler.descriptor_pool(), name)
    }

    /// Compiles a `.proto` file; its imports are found beside it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut compiler = protox::Compiler::new([dir]).map_err(|e| e.to_string())?;
        compiler.open_file(path).map_err(|e| e.to_string())?;
        let name = compiler
            .files()
            .find(|f| !f.is_import())
            .map(|f| f.name().to_owned())
            .ok_or_else(|| "the file defines nothing".to_owned())?;
        Self::from_pool(&compiler.descriptor_pool(), &name)
    }

    fn from_pool(pool: &DescriptorPool, name: &str) -> Result<Self, String> {
        let file = pool
            .get_file_by_name(name)
            .ok_or_else(|| format!("{name} was not compiled"))?;
        Ok(Self { file })
    }

    /// The message named `name` (full name, `shop.Payment`), or the names there are.
    pub fn message(&self, name: &str) -> Result<MessageDescriptor, String> {
        self.file
            .parent_pool()
            .get_message_by_name(name)
            .ok_or_else(|| {
                format!(
                    "no message {name:?}; the file defines {}",
                    self.names().join(", ")
                )
            })
    }

    /// Every message the file defines, by full name.
    pub fn names(&self) -> Vec<String> {
        fn add(message: &MessageDescriptor, names: &mut Vec<String>) {
            names.push(message.full_name().to_owned());
            for child in message.child_messages() {
                if !child.is_map_entry() {
                    add(&child, names);
                }
            }
        }
        let mut names = Vec::new();
        for message in self.file.messages() {
            add(&message, &mut names);
        }
        names
    }

    /// The message a Confluent message-index list names: the first index among the file's
    /// top-level messages, each next among the nested messages of the one before.
    pub fn indexed(&self, indexes: &[i64]) -> Option<MessageDescriptor> {
        let (first, rest) = indexes.split_first()?;
        let mut message = self.file.messages().nth(usize::try_from(*first).ok()?)?;
        for index in rest {
            let child = message
                .child_messages()
                .nth(usize::try_from(*index).ok()?)?;
            message = child;
        }
        Some(message)
    }

    /// The compiled file and everything it imports, as a `FileDescriptorSet` (dependencies
    /// first): what other Protobuf libraries build message types from.
    pub fn descriptor_set(&self) -> Vec<u8> {
        self.file.parent_pool().encode_to_vec()
    }

    /// The first message of the file (what an empty index list names).
    pub fn first(&self) -> Option<MessageDescriptor> {
        self.file.messages().next()
    }
}

/// Whether `steps` can name a value of `message`; if not, the names that could have been meant
/// at the step that fails.
pub fn check_path(message: &MessageDescriptor, steps: &[Step]) -> Result<(), Vec<String>> {
    let Some((first, rest)) = steps.split_first() else {
        return Ok(());
    };
    let Step::Key(name) = first else {
        return Err(Vec::new());
    };
    let Some(field) = message.get_field_by_name(name) else {
        return Err(message.fields().map(|f| f.name().to_owned()).collect());
    };
    let mut kind = field.kind();
    let mut rest = rest;
    if field.is_map() {
        let Some((Step::Key(_), after)) = rest.split_first() else {
            return if rest.is_empty() {
                Ok(())
            } else {
                Err(Vec::new())
            };
        };
        if let Kind::Message(entry) = &kind {
            kind = entry.map_entry_value_field().kind();
        }
        rest = after;
    } else if field.is_list() {
        let Some((Step::Index(_), after)) = rest.split_first() else {
            return if rest.is_empty() {
                Ok(())
            } else {
                Err(Vec::new())
            };
        };
        rest = after;
    }
    match kind {
        Kind::Message(inner) if !rest.is_empty() => check_path(&inner, rest),
        _ if rest.is_empty() => Ok(()),
        _ => Err(Vec::new()),
    }
}

/// A place in a decoded message.
pub(crate) enum ProtoAt<'a> {
    Message(&'a DynamicMessage),
    /// A field's value, with its field (its kind is looked up only where needed: enums are
    /// read by name, maps by their entry's value field).
    Value(&'a Value, FieldDescriptor),
    /// An unset field without presence: its default.
    Default(Value, FieldDescriptor),
}

impl<'a> ProtoAt<'a> {
    fn of(value: &'a Value, field: FieldDescriptor) -> Self {
        match value {
            Value::Message(message) => Self::Message(message),
            _ => Self::Value(value, field),
        }
    }
}

fn wrapped(message: &DynamicMessage) -> Option<Found<'_>> {
    let descriptor = message.descriptor();
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            let seconds = message.get_field_by_name("seconds")?.as_i64()?;
            let nanos = message.get_field_by_name("nanos")?.as_i32()?;
            Some(Found::Int(
                seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(nanos) / 1_000_000),
            ))
        }
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => {
            let field = message.descriptor().get_field_by_name("value")?;
            Some(match message.get_field(&field) {
                Cow::Borrowed(value) => scalar(value, &field),
                Cow::Owned(value) => scalar(&value, &field).into_owned(),
            })
        }
        _ => None,
    }
}

fn scalar<'a>(value: &'a Value, field: &FieldDescriptor) -> Found<'a> {
    match value {
        Value::Bool(b) => Found::Bool(*b),
        Value::I32(i) => Found::Int(i64::from(*i)),
        Value::I64(i) => Found::Int(*i),
        Value::U32(i) => Found::Int(i64::from(*i)),
        Value::U64(i) => i64::try_from(*i).map_or(Found::Float(*i as f64), Found::Int),
        Value::F32(f) => Found::number(f64::from(*f)),
        Value::F64(f) => Found::number(*f),
        Value::String(s) => Found::Str(Cow::Borrowed(s)),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(text) => Found::Str(Cow::Borrowed(text)),
            Err(_) => Found::Unusable(format!("{} bytes that are not UTF-8 text", b.len())),
        },
        Value::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => Found::Str(Cow::Owned(v.name().to_owned())),
                None => Found::Int(i64::from(*n)),
            },
            _ => Found::Int(i64::from(*n)),
        },
        Value::Message(m) => wrapped(m).unwrap_or(Found::Object),
        Value::List(_) => Found::Array,
        Value::Map(_) => Found::Object,
    }
}

impl<'a> Tree<'a> for ProtoAt<'a> {
    fn member(&self, name: &str) -> Option<Self> {
        match self {
            Self::Message(message) => {
                let field = message.descriptor().get_field_by_name(name)?;
                if field.supports_presence() && !message.has_field(&field) {
                    return None;
                }
                match message.get_field(&field) {
                    Cow::Borrowed(value) => Some(Self::of(value, field)),
                    // Unset, without presence: a scalar's default (an unset message has
                    // presence, and lists and maps are never owned defaults worth walking).
                    Cow::Owned(value) => Some(Self::Default(value, field)),
                }
            }
            Self::Value(Value::Map(entries), field) => {
                let Kind::Message(entry) = field.kind() else {
                    return None;
                };
                let key = entries.keys().find(|key| map_key_is(key, name))?;
                Some(Self::of(&entries[key], entry.map_entry_value_field()))
            }
            _ => None,
        }
    }

    fn element(&self, index: usize) -> Option<Self> {
        match self {
            Self::Value(Value::List(items), kind) => {
                Some(Self::of(items.get(index)?, kind.clone()))
            }
            _ => None,
        }
    }

    fn found(&self) -> Found<'a> {
        match self {
            Self::Message(message) => wrapped(message).unwrap_or(Found::Object),
            Self::Value(value, field) => scalar(value, field),
            Self::Default(value, field) => scalar(value, field).into_owned(),
        }
    }
}

fn map_key_is(key: &MapKey, name: &str) -> bool {
    match key {
        MapKey::String(s) => s == name,
        MapKey::Bool(b) => name == if *b { "true" } else { "false" },
        MapKey::I32(i) => name.parse() == Ok(*i),
        MapKey::I64(i) => name.parse() == Ok(*i),
        MapKey::U32(i) => name.parse() == Ok(*i),
        MapKey::U64(i) => name.parse() == Ok(*i),
    }
}

/// Decodes one message of `descriptor`.
pub fn decode(descriptor: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage, String> {
    DynamicMessage::decode(descriptor.clone(), bytes).map_err(|e| e.to_string())
}
