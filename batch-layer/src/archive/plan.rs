//! The archive's own check of a source: the columns it adds must not collide with fields.

use braid_shared::SourceDef;

use crate::error::{Error, Result};
use braid_columnar::columns::ARCHIVE_COLUMNS;

/// The archive adds its own columns; a source field of the same name would be overwritten.
pub(crate) fn check_field_names(source: &SourceDef) -> Result<()> {
    match source
        .fields
        .iter()
        .find(|f| ARCHIVE_COLUMNS.contains(&f.name.as_str()))
    {
        Some(field) => Err(Error::Shared(braid_shared::Error::ConfigInvalid(vec![
            braid_shared::ConfigIssue {
                key: format!("source[{}].fields.{}", source.name, field.name),
                message: format!(
                    "{:?} is a column the archive adds itself; rename the field",
                    field.name
                ),
            },
        ]))),
        None => Ok(()),
    }
}
