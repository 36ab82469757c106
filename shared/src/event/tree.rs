//! Field paths over decoded messages of any format: a format's values expose their members,
//! elements and scalars, and the decoder walks only the paths its source reads.

use super::Decoder;
use super::decode::{Found, Node, Raw};

/// A place in a decoded message.
pub(crate) trait Tree<'a>: Sized {
    /// The member `name` of an object (a record, message or map), if present.
    fn member(&self, name: &str) -> Option<Self>;
    /// The element `index` of an array, if present.
    fn element(&self, index: usize) -> Option<Self>;
    /// The value here, as a field reads it.
    fn found(&self) -> Found<'a>;
}

impl Decoder {
    /// Reads every path below `node` from `value`.
    pub(super) fn walk<'a, T: Tree<'a>>(&self, node: &Node, value: &T, raw: &mut Raw<'_>) {
        if !node.is_branch() {
            self.read_leaf(node, value.found(), raw);
            return;
        }
        for (name, child) in &node.members {
            if let Some(inner) = value.member(name) {
                self.walk(child, &inner, raw);
            }
        }
        for (index, child) in &node.elements {
            if let Some(inner) = value.element(*index) {
                self.walk(child, &inner, raw);
            }
        }
    }
}
