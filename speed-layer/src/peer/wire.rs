//! The speed tier's wire format: a JSON request, and a binary answer that starts with a magic
//! and a version byte, then per partition its status and the view state as checkpoints encode
//! it (which carries the view's fingerprint, so instances running different definitions of a
//! view are refused instead of merged).

use std::sync::Arc;

use braid_shared::{
    Config, Coverage, PartitionCells, PartitionStatus, TopicPartition, Value, ViewState,
};
use serde::{Deserialize, Serialize};

pub(crate) const CELLS_PATH: &str = "/internal/v1/speed/cells";
pub(crate) const STATUS_PATH: &str = "/internal/v1/speed/status";
/// What every answer of the endpoint starts with: magic, then the format version.
const MAGIC: &[u8; 4] = b"BRSP";
pub(crate) const VERSION: u8 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CellsRequest {
    pub view: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub filters: Vec<(usize, Value)>,
    pub coverage: Coverage,
}

#[derive(Debug, Serialize, Deserialize)]
struct WirePartition {
    topic: String,
    partition: i32,
    status: PartitionStatus,
    /// [`ViewState::encode`].
    state: Vec<u8>,
}

/// Encodes one speed instance's answer.
pub(crate) fn encode(parts: &[PartitionCells]) -> Vec<u8> {
    let wire: Vec<WirePartition> = parts
        .iter()
        .map(|p| WirePartition {
            topic: p.tp.topic.clone(),
            partition: p.tp.partition,
            status: p.status,
            state: p.state.encode(),
        })
        .collect();
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend(postcard::to_stdvec(&wire).unwrap_or_default());
    out
}

/// Decodes a speed instance's answer for `view`.
pub(crate) fn decode(
    config: &Config,
    view: &str,
    bytes: &[u8],
) -> Result<Vec<PartitionCells>, String> {
    let def = config
        .view(view)
        .ok_or_else(|| format!("no view {view:?}"))?;
    let payload = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a speed instance's answer (no magic)")?;
    let (&version, payload) = payload.split_first().ok_or("an empty answer")?;
    if version != VERSION {
        return Err(format!(
            "answer format version {version}; this instance reads version {VERSION}: run one Braid version"
        ));
    }
    let wire: Vec<WirePartition> =
        postcard::from_bytes(payload).map_err(|e| format!("a damaged answer: {e}"))?;
    wire.into_iter()
        .map(|w| {
            let state = ViewState::decode(Arc::clone(def), &w.state).map_err(|e| {
                format!("{e} (does the speed instance run the same definition of the view?)")
            })?;
            Ok(PartitionCells {
                tp: TopicPartition::new(w.topic, w.partition),
                status: w.status,
                state,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::test_support::{CONFIG, part};

    #[test]
    fn answers_round_trip_and_other_versions_or_views_are_refused() {
        let config = Config::from_toml(CONFIG).unwrap();
        let parts = vec![
            part(&config, 0, &[(60_000, "a"), (61_000, "b")]),
            part(&config, 3, &[(120_000, "a")]),
        ];
        let bytes = encode(&parts);
        let back = decode(&config, "cards", &bytes).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in parts.iter().zip(&back) {
            assert_eq!((&a.tp, a.status), (&b.tp, b.status));
            assert!(a.state.approx_eq(&b.state, 0.0).is_ok());
        }
        let mut other = bytes.clone();
        other[4] = VERSION + 1;
        assert!(
            decode(&config, "cards", &other)
                .unwrap_err()
                .contains("version")
        );
        assert!(decode(&config, "cards", b"nonsense").is_err());
        assert!(decode(&config, "cards", &bytes[..bytes.len() - 3]).is_err());
        // A speed instance running another definition of the view is refused.
        let changed = Config::from_toml(&CONFIG.replace("1m", "5m")).unwrap();
        assert!(decode(&changed, "cards", &bytes).is_err());
    }
}
