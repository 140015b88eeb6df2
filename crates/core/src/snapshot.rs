//! The snapshot format of the entity state: a node saves its whole state at a log position, and
//! another node restores it and carries on as if it had applied every event itself.
//!
//! Layout, all of it covered by the trailing checksum:
//!
//! | bytes        | what                                                               |
//! |--------------|--------------------------------------------------------------------|
//! | 8            | magic `RFSTATE\0`: this is a Ringfence state snapshot              |
//! | 4            | format version, `u32` little endian ([`FORMAT_VERSION`])           |
//! | variable     | postcard: the [`StateConfig`] it was taken with                    |
//! | variable     | postcard: the [`EntityState`]                                      |
//! | 8            | SipHash-1-3 of everything before it, `u64` little endian           |
//!
//! The magic and version sit outside postcard at fixed offsets so that any later version can
//! still be recognised and refused by name. The config comes before the state so a mismatch is
//! refused before the (large) state is decoded: a different small amount, idle TTL, alert
//! window or label delay would make restored features differ from the ones the events produced.
//!
//! Postcard writes no field names and varint-encodes integers, so mostly-empty windows cost a
//! byte per bucket. Entity maps are written sorted by key: `HashMap` iteration order is random
//! per process, and snapshot -> restore -> snapshot must give identical bytes.
//!
//! The checksum catches truncation and accidental corruption; it is not a signature. A
//! snapshot is trusted input from another node, like the event log itself; structural checks
//! on the link graph still make sure a decodable but inconsistent one cannot hang `find`.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use crate::state::{EntityState, StateConfig};

/// Marks a Ringfence entity-state snapshot.
pub const MAGIC: [u8; 8] = *b"RFSTATE\0";
/// The snapshot format version this build writes and reads. Bump it whenever the serialized
/// shape of [`EntityState`] or anything inside it changes.
pub const FORMAT_VERSION: u32 = 4;

const HEADER_LEN: usize = MAGIC.len() + 4;
const CHECKSUM_LEN: usize = 8;

/// Why a snapshot could not be taken or restored. A failed restore leaves the state untouched.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic.
    #[error("not a Ringfence state snapshot: the format marker is missing")]
    NotASnapshot,
    /// Written by a build with another format version.
    #[error(
        "snapshot has format version {found}, this build reads only version {expected}: \
         rebuild the state from the event log instead"
    )]
    Version {
        /// Version in the snapshot.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The checksum does not match: truncated or altered in transit or storage.
    #[error("snapshot is corrupt: checksum mismatch over {len} bytes (truncated or altered)")]
    Checksum {
        /// Length of the bytes given.
        len: usize,
    },
    /// Taken with a state configuration other than this engine's.
    #[error(
        "snapshot was taken with a different state config ({}): restored features would \
         differ from the ones its events produced",
        describe_differences(.snapshot, .engine)
    )]
    ConfigMismatch {
        /// The config in the snapshot.
        snapshot: StateConfig,
        /// This engine's config.
        engine: StateConfig,
    },
    /// The checksum matched but the content does not decode into a consistent state.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    /// The state could not be encoded.
    #[error("cannot encode the state snapshot: {0}")]
    Encode(String),
}

/// The fields in which two state configs differ, as `name snapshot-value vs engine-value`;
/// empty when they are the same. Floats are compared bit for bit: restoring is only exact if
/// the features are computed with exactly the same numbers.
pub(crate) fn config_differences(snapshot: &StateConfig, engine: &StateConfig) -> Vec<String> {
    let mut out = Vec::new();
    if snapshot.small_amount.to_bits() != engine.small_amount.to_bits() {
        out.push(format!(
            "small_amount {} in the snapshot vs {} here",
            snapshot.small_amount, engine.small_amount
        ));
    }
    let ints = [
        ("idle_ttl_ms", snapshot.idle_ttl_ms, engine.idle_ttl_ms),
        (
            "alert_window_ms",
            snapshot.alert_window_ms,
            engine.alert_window_ms,
        ),
        (
            "label_delay_days",
            snapshot.label_delay_days,
            engine.label_delay_days,
        ),
    ];
    for (name, theirs, ours) in ints {
        if theirs != ours {
            out.push(format!("{name} {theirs} in the snapshot vs {ours} here"));
        }
    }
    out
}

fn describe_differences(snapshot: &StateConfig, engine: &StateConfig) -> String {
    config_differences(snapshot, engine).join(", ")
}

fn checksum(bytes: &[u8]) -> u64 {
    // Fixed keys: a checksum, not a MAC, and it must be the same on every node.
    let mut h = SipHasher13::new_with_keys(0x5246_5354_4154_4531, 0x736e_6170_7368_6f74);
    h.write(bytes);
    h.finish()
}

/// A copy of the entity state, to encode away from the engine's owner: cloning costs a
/// fraction of encoding, so a node holds its engine only for the clone.
#[derive(Clone, Debug)]
pub struct StateCopy(pub(crate) EntityState);

impl StateCopy {
    /// The snapshot bytes, identical to [`Engine::snapshot`](crate::engine::Engine::snapshot)
    /// at the moment of the copy.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        encode(&self.0)
    }
}

/// Encodes `state` (with its config) into a snapshot.
pub(crate) fn encode(state: &EntityState) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let out = postcard::to_extend(state.config(), out)
        .map_err(|e| SnapshotError::Encode(format!("config: {e}")))?;
    let mut out = postcard::to_extend(state, out)
        .map_err(|e| SnapshotError::Encode(format!("state: {e}")))?;
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Decodes a snapshot, refusing one of another format version or taken with a config other
/// than `expected`.
pub(crate) fn decode(bytes: &[u8], expected: &StateConfig) -> Result<EntityState, SnapshotError> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[MAGIC.len()..HEADER_LEN]);
    let found = u32::from_le_bytes(version);
    if found != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            found,
            expected: FORMAT_VERSION,
        });
    }
    let checksum_at = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .filter(|&at| at >= HEADER_LEN)
        .ok_or(SnapshotError::Checksum { len: bytes.len() })?;
    let (covered, stored) = bytes.split_at(checksum_at);
    let mut sum = [0u8; CHECKSUM_LEN];
    sum.copy_from_slice(stored);
    if u64::from_le_bytes(sum) != checksum(covered) {
        return Err(SnapshotError::Checksum { len: bytes.len() });
    }

    let body = &covered[HEADER_LEN..];
    let (config, body): (StateConfig, _) = postcard::take_from_bytes(body)
        .map_err(|e| SnapshotError::Corrupt(format!("config: {e}")))?;
    if !config_differences(&config, expected).is_empty() {
        return Err(SnapshotError::ConfigMismatch {
            snapshot: config,
            engine: *expected,
        });
    }
    let (state, rest): (EntityState, _) = postcard::take_from_bytes(body)
        .map_err(|e| SnapshotError::Corrupt(format!("state: {e}")))?;
    if !rest.is_empty() {
        return Err(SnapshotError::Corrupt(format!(
            "{} unexpected bytes after the state",
            rest.len()
        )));
    }
    if !config_differences(state.config(), &config).is_empty() {
        return Err(SnapshotError::Corrupt(
            "the state's own config differs from the header's".into(),
        ));
    }
    state.check_consistency().map_err(SnapshotError::Corrupt)?;
    Ok(state)
}

/// `serde(with)` for fixed-size arrays of any length (serde derives only up to 32 and not for
/// const-generic lengths): written as a tuple, so postcard stores no length; read back
/// checking that exactly `N` elements are there.
pub(crate) mod fixed_array {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserializer, Error, IgnoredAny, SeqAccess, Visitor};
    use serde::ser::{SerializeTuple, Serializer};
    use serde::{Deserialize, Serialize};

    /// Writes `a` as a tuple of `N` elements.
    pub fn serialize<S, T, const N: usize>(a: &[T; N], s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        T: Serialize,
    {
        let mut t = s.serialize_tuple(N)?;
        for x in a {
            t.serialize_element(x)?;
        }
        t.end()
    }

    /// Reads exactly `N` elements; fewer or more is an error, never a panic.
    pub fn deserialize<'de, D, T, const N: usize>(d: D) -> Result<[T; N], D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default + Copy,
    {
        struct ArrayOf<T, const N: usize>(PhantomData<T>);

        impl<'de, T, const N: usize> Visitor<'de> for ArrayOf<T, N>
        where
            T: Deserialize<'de> + Default + Copy,
        {
            type Value = [T; N];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of {N} elements")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[T; N], A::Error> {
                let mut out = [T::default(); N];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                // Self-describing formats (JSON) may carry more; postcard's tuple never does.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(N + 1, &self));
                }
                Ok(out)
            }
        }

        d.deserialize_tuple(N, ArrayOf::<T, N>(PhantomData))
    }
}

/// `serde(with)` for the entity maps: written sorted by key so the same state always gives the
/// same bytes (a `HashMap`'s iteration order differs from one process to the next).
pub(crate) mod sorted_map {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, Hash};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the entries in key order.
    pub fn serialize<S, K, V, H>(map: &HashMap<K, V, H>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize + Ord,
        V: Serialize,
    {
        let mut entries: Vec<(&K, &V)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        s.collect_map(entries)
    }

    /// Reads the entries back into a map.
    pub fn deserialize<'de, D, K, V, H>(d: D) -> Result<HashMap<K, V, H>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        H: BuildHasher + Default,
    {
        HashMap::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Wide {
        #[serde(with = "fixed_array")]
        a: [u16; 40],
    }

    #[test]
    fn arrays_longer_than_32_round_trip_and_wrong_lengths_are_errors() {
        let mut w = Wide { a: [0; 40] };
        w.a[39] = 7;
        let bytes = postcard::to_allocvec(&w).expect("encode");
        assert_eq!(bytes.len(), 40, "postcard writes no length for a tuple");
        assert_eq!(postcard::from_bytes::<Wide>(&bytes).expect("decode"), w);
        assert!(postcard::from_bytes::<Wide>(&bytes[..39]).is_err());

        let json = serde_json::to_string(&w).expect("json");
        assert_eq!(serde_json::from_str::<Wide>(&json).expect("json back"), w);
        let short = format!(r#"{{"a":[{}]}}"#, vec!["1"; 39].join(","));
        let err = serde_json::from_str::<Wide>(&short).expect_err("39 elements");
        assert!(err.to_string().contains("an array of 40 elements"), "{err}");
        let long = format!(r#"{{"a":[{}]}}"#, vec!["1"; 41].join(","));
        assert!(serde_json::from_str::<Wide>(&long).is_err());
    }

    #[test]
    fn a_valid_checksum_over_undecodable_content_is_reported_as_corrupt() {
        let state = EntityState::new(StateConfig::default());
        let good = encode(&state).expect("encode");
        // Cut the state short but re-seal it, as a buggy writer would.
        let mut bad = good[..good.len() - CHECKSUM_LEN - 3].to_vec();
        let sum = checksum(&bad);
        bad.extend_from_slice(&sum.to_le_bytes());
        match decode(&bad, &StateConfig::default()) {
            Err(SnapshotError::Corrupt(why)) => assert!(why.starts_with("state:"), "{why}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(decode(&good, &StateConfig::default()).is_ok());
    }

    #[test]
    fn config_mismatch_names_the_differing_fields() {
        let here = StateConfig::default();
        let there = StateConfig {
            idle_ttl_ms: 1,
            small_amount: 5.0,
            ..here
        };
        let err = SnapshotError::ConfigMismatch {
            snapshot: there,
            engine: here,
        }
        .to_string();
        assert!(
            err.contains("small_amount 5 in the snapshot vs 2 here"),
            "{err}"
        );
        assert!(
            err.contains("idle_ttl_ms 1 in the snapshot vs 3456000000 here"),
            "{err}"
        );
        assert!(!err.contains("label_delay_days"), "{err}");
    }
}
