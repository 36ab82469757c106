//! Checkpoint file framing: `BRAIDCKP` magic, a format version byte, the payload and the xxh3-64
//! of the payload. What the payload holds is the speed layer's business; a torn or foreign file
//! is detected here, never trusted.

const MAGIC: &[u8; 8] = b"BRAIDCKP";
const SUM_LEN: usize = 8;

/// Frames `payload` as a checkpoint of format `version`.
pub fn frame(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + payload.len() + SUM_LEN);
    out.extend_from_slice(MAGIC);
    out.push(version);
    out.extend_from_slice(payload);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out
}

/// Why framed bytes are not a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unframed {
    #[error("not a Braid checkpoint")]
    Foreign,
    #[error("checksum mismatch")]
    Damaged,
}

/// The format version and payload of a framed checkpoint.
pub fn unframe(bytes: &[u8]) -> Result<(u8, &[u8]), Unframed> {
    if bytes.len() < MAGIC.len() + 1 + SUM_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Unframed::Foreign);
    }
    let version = bytes[MAGIC.len()];
    let (payload, sum) = bytes[MAGIC.len() + 1..].split_at(bytes.len() - MAGIC.len() - 1 - SUM_LEN);
    let mut expected = [0u8; SUM_LEN];
    expected.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(payload) != u64::from_le_bytes(expected) {
        return Err(Unframed::Damaged);
    }
    Ok((version, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_and_foreign_frames_are_detected() {
        let framed = frame(2, b"state");
        assert_eq!(unframe(&framed), Ok((2, &b"state"[..])));
        assert_eq!(unframe(&framed[..framed.len() - 1]), Err(Unframed::Damaged));
        let mut flipped = framed.clone();
        flipped[10] ^= 1;
        assert_eq!(unframe(&flipped), Err(Unframed::Damaged));
        assert_eq!(unframe(b"PAR1 not ours at all"), Err(Unframed::Foreign));
        assert_eq!(unframe(b""), Err(Unframed::Foreign));
    }
}
