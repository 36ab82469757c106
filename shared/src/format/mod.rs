//! How a source's messages are read: JSON, Avro and Protobuf (a fixed schema from a file, or
//! the Confluent wire format with schemas from a registry), and log lines (syslog, logfmt, a
//! regex with named captures).
//!
//! - `registry`: the schema registry client (blocking HTTP, schemas cached by id).
//! - `avro`, `proto`: the schemas and field paths over their values.
//! - `lines`: log line parsers and time layouts.
//! - `encode`: writing the generator's events in a format.

pub mod avro;
pub mod encode;
pub mod lines;
pub mod proto;
pub mod registry;

use std::sync::Arc;

use prost_reflect::MessageDescriptor;

pub use avro::AvroSchema;
pub use proto::ProtoSchema;
pub use registry::{Registry, RegistrySettings, Unavailable};

/// Where an Avro or Protobuf source's writer schemas come from.
#[derive(Debug, Clone)]
pub enum Schemas<T> {
    /// One schema, read from `schema_file`: messages are bare (no wire-format header).
    Fixed(T),
    /// The registry: messages carry the Confluent header naming their schema.
    Registry(Arc<Registry>),
}

/// A source's reader: its format and what that format needs.
#[derive(Debug, Clone, Default)]
pub enum Reader {
    #[default]
    Json,
    Avro(Schemas<Arc<AvroSchema>>),
    Protobuf(Schemas<MessageDescriptor>),
    Lines(Arc<lines::LineFormat>),
}

/// Readers are equal when they read the same way: the same schema objects, pattern or format.
impl PartialEq for Reader {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Json, Self::Json) => true,
            (Self::Avro(a), Self::Avro(b)) => match (a, b) {
                (Schemas::Fixed(a), Schemas::Fixed(b)) => Arc::ptr_eq(a, b),
                (Schemas::Registry(a), Schemas::Registry(b)) => Arc::ptr_eq(a, b),
                _ => false,
            },
            (Self::Protobuf(a), Self::Protobuf(b)) => match (a, b) {
                (Schemas::Fixed(a), Schemas::Fixed(b)) => a == b,
                (Schemas::Registry(a), Schemas::Registry(b)) => Arc::ptr_eq(a, b),
                _ => false,
            },
            (Self::Lines(a), Self::Lines(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Reader {}

impl Reader {
    /// The registry this reader asks, if any.
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        match self {
            Self::Avro(Schemas::Registry(r)) | Self::Protobuf(Schemas::Registry(r)) => Some(r),
            _ => None,
        }
    }
}

/// The Confluent wire format's header: magic byte 0 and a 4-byte big-endian schema id.
pub(crate) enum Header<'a> {
    Framed {
        id: u32,
        rest: &'a [u8],
    },
    /// The first byte is not the magic byte.
    BadMagic(u8),
    /// Fewer than 5 bytes.
    Short(usize),
}

pub(crate) fn header(bytes: &[u8]) -> Header<'_> {
    match bytes {
        [0, a, b, c, d, rest @ ..] => Header::Framed {
            id: u32::from_be_bytes([*a, *b, *c, *d]),
            rest,
        },
        [magic, ..] if *magic != 0 => Header::BadMagic(*magic),
        _ => Header::Short(bytes.len()),
    }
}

/// Reads the Protobuf message-index list that follows the header: a zig-zag varint count,
/// then that many zig-zag varint indexes; a count of 0 stands for `[0]`, the first message.
pub(crate) fn message_indexes(mut bytes: &[u8]) -> Result<(Vec<i64>, &[u8]), String> {
    let count = read_varint(&mut bytes)?;
    if count == 0 {
        return Ok((vec![0], bytes));
    }
    if count < 0 || count as usize > bytes.len() {
        return Err(format!("message-index count {count} exceeds the message"));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        indexes.push(read_varint(&mut bytes)?);
    }
    Ok((indexes, bytes))
}

fn read_varint(bytes: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = bytes.split_first() else {
            return Err("the message-index list is cut short".to_owned());
        };
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("a message index is longer than 10 bytes".to_owned())
}

/// Writes a Confluent header (and, for Protobuf, the index list of the first message):
/// what producers put before a serialised message.
pub fn frame(id: u32, protobuf: bool, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    if protobuf {
        out.push(0);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_index_lists_are_read() {
        assert!(matches!(
            header(&[0, 0, 0, 1, 2, 9]),
            Header::Framed { id: 258, rest: [9] }
        ));
        assert!(matches!(header(&[7, 0, 0, 0, 1]), Header::BadMagic(7)));
        assert!(matches!(header(&[0, 0]), Header::Short(2)));
        assert!(matches!(header(&[]), Header::Short(0)));
        assert_eq!(message_indexes(&[0, 42]).unwrap(), (vec![0], &[42u8][..]));
        // Count 2 (zig-zag 4), indexes 1 (2) and 3 (6).
        assert_eq!(
            message_indexes(&[4, 2, 6, 9]).unwrap(),
            (vec![1, 3], &[9u8][..])
        );
        assert!(message_indexes(&[]).is_err());
        assert!(message_indexes(&[0x80]).is_err());
        assert!(message_indexes(&[100, 1]).is_err());
        assert!(message_indexes(&[1]).is_err());
        assert!(message_indexes(&[0xff; 12]).is_err());
    }
}
