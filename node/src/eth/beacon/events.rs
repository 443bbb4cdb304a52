//! Server-sent events of `GET /eth/v1/events`.

use serde::{Deserialize, Serialize};

use crate::eth::types::{
    from_json_str, Attestation, Epoch, Preset, Root, SignedVoluntaryExit, Slot,
};

/// `head` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadEvent {
    /// Head slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Head block root.
    pub block: Root,
    /// Head state root.
    pub state: Root,
    /// Whether the head crossed an epoch boundary.
    pub epoch_transition: bool,
    /// Dependent root of the previous epoch's duties.
    pub previous_duty_dependent_root: Root,
    /// Dependent root of the current epoch's duties.
    pub current_duty_dependent_root: Root,
    /// Whether the head is optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// `block` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEvent {
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Block root.
    pub block: Root,
    /// Whether the block is optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// `finalized_checkpoint` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedCheckpointEvent {
    /// Finalized block root.
    pub block: Root,
    /// Finalized state root.
    pub state: Root,
    /// Finalized epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub epoch: Epoch,
    /// Whether optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// `chain_reorg` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReorgEvent {
    /// Slot of the new head.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Reorg depth in slots.
    #[serde(with = "serde_utils::quoted_u64")]
    pub depth: u64,
    /// Old head block.
    pub old_head_block: Root,
    /// New head block.
    pub new_head_block: Root,
    /// Old head state.
    pub old_head_state: Root,
    /// New head state.
    pub new_head_state: Root,
    /// Epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub epoch: Epoch,
    /// Whether optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// Topics of `GET /eth/v1/events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventTopic {
    /// New head.
    Head,
    /// New block imported.
    Block,
    /// Attestation received (gossip or API).
    Attestation,
    /// Voluntary exit received.
    VoluntaryExit,
    /// Finalized checkpoint changed.
    FinalizedCheckpoint,
    /// Chain reorganisation.
    ChainReorg,
    /// Sync committee contribution received.
    ContributionAndProof,
}

impl EventTopic {
    /// The topic name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventTopic::Head => "head",
            EventTopic::Block => "block",
            EventTopic::Attestation => "attestation",
            EventTopic::VoluntaryExit => "voluntary_exit",
            EventTopic::FinalizedCheckpoint => "finalized_checkpoint",
            EventTopic::ChainReorg => "chain_reorg",
            EventTopic::ContributionAndProof => "contribution_and_proof",
        }
    }
}

/// A decoded server-sent event.
#[derive(Clone, Debug, PartialEq)]
pub enum BeaconEvent<P: Preset> {
    /// `head`.
    Head(HeadEvent),
    /// `block`.
    Block(BlockEvent),
    /// `attestation`.
    Attestation(Box<Attestation<P>>),
    /// `voluntary_exit`.
    VoluntaryExit(SignedVoluntaryExit),
    /// `finalized_checkpoint`.
    FinalizedCheckpoint(FinalizedCheckpointEvent),
    /// `chain_reorg`.
    ChainReorg(ChainReorgEvent),
    /// Any other event (e.g. `contribution_and_proof`), undecoded.
    Other {
        /// Event name.
        event: String,
        /// Event data.
        data: serde_json::Value,
    },
}

impl<P: Preset> BeaconEvent<P> {
    /// Decodes the `data` of an SSE event named `event`.
    pub fn decode(event: &str, data: &str) -> Result<Self, String> {
        let err = |e: crate::eth::types::JsonError| format!("`{event}` event: {e}");
        Ok(match event {
            "head" => BeaconEvent::Head(from_json_str(data).map_err(err)?),
            "block" => BeaconEvent::Block(from_json_str(data).map_err(err)?),
            "attestation" => BeaconEvent::Attestation(Box::new(from_json_str(data).map_err(err)?)),
            "voluntary_exit" => BeaconEvent::VoluntaryExit(from_json_str(data).map_err(err)?),
            "finalized_checkpoint" => {
                BeaconEvent::FinalizedCheckpoint(from_json_str(data).map_err(err)?)
            }
            "chain_reorg" => BeaconEvent::ChainReorg(from_json_str(data).map_err(err)?),
            other => BeaconEvent::Other {
                event: other.to_string(),
                data: from_json_str(data).map_err(err)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::types::Minimal;
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    use serde_json::json;

    #[tokio::test]
    async fn lodestar_sse_sample_decodes() {
        let raw = include_str!("../testdata/sse.txt");
        // Split the body at awkward places, as TCP may.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            raw.as_bytes().chunks(97).map(|c| Ok(c.to_vec())).collect();
        let events: Vec<BeaconEvent<Minimal>> = futures::stream::iter(chunks)
            .eventsource()
            .map(|e| {
                let e = e.unwrap();
                BeaconEvent::decode(&e.event, &e.data).unwrap()
            })
            .collect()
            .await;
        assert_eq!(events.len(), 6);
        let BeaconEvent::Block(block) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!(block.slot, 29);
        let BeaconEvent::Attestation(att) = &events[1] else {
            panic!("{:?}", events[1])
        };
        assert_eq!(att.data.slot, 28);
        let BeaconEvent::Head(head) = &events[2] else {
            panic!("{:?}", events[2])
        };
        assert_eq!(head.block, block.block);
        assert!(!head.epoch_transition);
    }

    #[test]
    fn bad_events_are_errors_naming_event_and_field() {
        let err = BeaconEvent::<Minimal>::decode("head", r#"{"slot":"x"}"#).unwrap_err();
        assert!(
            err.contains("`head` event") && err.contains("slot"),
            "{err}"
        );
        let other = BeaconEvent::<Minimal>::decode("contribution_and_proof", r#"{"a":1}"#).unwrap();
        assert_eq!(
            other,
            BeaconEvent::Other {
                event: "contribution_and_proof".into(),
                data: json!({"a": 1})
            }
        );
    }
}
