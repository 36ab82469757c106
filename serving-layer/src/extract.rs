//! What routes start with, extracted once: the view or source named in the path (404 naming it
//! when there is none) and the query string, checked for repeated parameters.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use braid_shared::{SourceDef, ViewDef};

use braid_shared::text::abbreviate;

use crate::error::ApiError;
use crate::query::Params;
use crate::state::AppState;

/// A view named in the path, its source, and the query string.
pub struct ViewRequest {
    pub view: Arc<ViewDef>,
    pub source: Arc<SourceDef>,
    pub params: Params,
}

impl FromRequestParts<AppState> for ViewRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let name = path_name(parts, state).await?;
        let config = &state.0.config;
        let view = config.view(&name).cloned().ok_or_else(|| {
            ApiError::not_found("unknown_view", format!("no view {:?}", abbreviate(&name)))
        })?;
        let source = config
            .source(&view.source)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("view {name:?} has no source")))?;
        Ok(Self {
            view,
            source,
            params: Params::parse(parts.uri.query())?,
        })
    }
}

/// A source named in the path, and the query string.
pub struct SourceRequest {
    pub source: Arc<SourceDef>,
    pub params: Params,
}

impl FromRequestParts<AppState> for SourceRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let name = path_name(parts, state).await?;
        Ok(Self {
            source: state.source(&name)?,
            params: Params::parse(parts.uri.query())?,
        })
    }
}

/// The one name the route's path holds.
async fn path_name(parts: &mut Parts, state: &AppState) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(name)| name)
        .map_err(|rejection| ApiError::for_status(rejection.status()))
}
