//! Node events: what the local API's event stream reports to apps.
//!
//! Every component that changes what a user would want to see (a peer
//! connected, a member discovered, later: sync progress, new bundles,
//! conflicts) publishes a [`NodeEvent`] on the [`EventBus`]. The bus is a
//! tokio broadcast channel: publishing never blocks, and a subscriber that
//! falls behind is told how many events it missed instead of stalling the node.

use serde::Serialize;
use tokio::sync::broadcast;

/// How many events a slow subscriber may lag before it starts missing some.
/// "Asset received" events go out together when their bytes are flushed
/// (up to [`crate::blob_flush::MAX_DELAY`] of them: about 1,500 at the
/// rate small assets arrive on a laptop), so the buffer holds several such
/// bursts.
pub const EVENT_BUFFER: usize = 8192;

/// Something that happened in the node, as the event stream reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node accepts connections on `addr`.
    Listening {
        /// A listen multiaddr.
        addr: String,
    },
    /// A connection to a peer is up (the first one, if there are several).
    PeerConnected {
        /// libp2p peer id.
        peer_id: String,
        /// The same key as an actor id, when it is an ed25519 key.
        actor_id: Option<String>,
        /// The remote address of that connection.
        addr: String,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// libp2p peer id.
        peer_id: String,
    },
    /// An mDNS advertisement was seen. `member` says whether it carried a tag
    /// for one of our workspaces; only then is the peer dialled.
    PeerDiscovered {
        /// libp2p peer id.
        peer_id: String,
        /// Whether it shares at least one workspace with us.
        member: bool,
    },
    /// A connected peer does not speak this node's sync protocol: it runs
    /// another version of Troupe, and nothing syncs with it until both
    /// devices run the same version. Sent once until it speaks this one.
    PeerOtherVersion {
        /// libp2p peer id.
        peer_id: String,
    },
    /// A dial failed; the dialler retries with backoff.
    DialFailed {
        /// The address dialled.
        addr: String,
        /// Why, in words.
        error: String,
    },
    /// A connected peer proved membership of a workspace; sync of it starts.
    SyncStarted {
        /// libp2p peer id.
        peer_id: String,
        /// Workspace id (hex).
        workspace: String,
    },
    /// Bundles received from a peer so far in this session versus asked for.
    /// Published at most every [`crate::sync_core::PROGRESS_EVERY`] per
    /// peer and workspace, and always once everything asked for has come.
    SyncProgress {
        /// libp2p peer id.
        peer_id: String,
        /// Workspace id (hex).
        workspace: String,
        /// Committed so far.
        received: u64,
        /// Asked for so far.
        expected: u64,
    },
    /// This node holds everything the peer said it holds in the workspace.
    UpToDate {
        /// libp2p peer id.
        peer_id: String,
        /// Workspace id (hex).
        workspace: String,
    },
    /// Bundles from a peer were committed (new data to show).
    BundlesReceived {
        /// Workspace id (hex).
        workspace: String,
        /// libp2p peer id of the sender.
        from: String,
        /// How many.
        bundles: u64,
    },
    /// Fields that now hold more than one value (a conflict to resolve).
    Conflicts {
        /// Workspace id (hex).
        workspace: String,
        /// Field paths, `type/id/field`.
        fields: Vec<String>,
    },
    /// An asset's bytes arrived from a member and verified.
    AssetReceived {
        /// Workspace id (hex).
        workspace: String,
        /// Blob hash (hex).
        asset: String,
    },
    /// No connected member has an asset's bytes (never had them, or removed
    /// them); asked again when new data references it.
    AssetUnavailable {
        /// Workspace id (hex).
        workspace: String,
        /// Blob hash (hex).
        asset: String,
    },
    /// A peer sent something invalid; it was refused and the peer blamed.
    PeerBlamed {
        /// libp2p peer id.
        peer_id: String,
        /// What was wrong.
        reason: String,
    },
    /// This device may have lost bundles it sent (restored, copied or
    /// salvaged) and now signs with a new actor key, so it never reuses a
    /// sequence number.
    NewIncarnation {
        /// The actor it signed with until now (hex).
        previous: String,
        /// The actor it signs with from now on (hex).
        current: String,
        /// Why, in words.
        reason: String,
    },
}

/// The sending side of the event stream; clone it into every component.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<NodeEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with [`EVENT_BUFFER`] slots.
    pub fn new() -> Self {
        EventBus {
            tx: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Publishes an event. Having no subscribers is normal and not an error.
    pub fn publish(&self, event: NodeEvent) {
        tracing::debug!(?event, "event");
        let _ = self.tx.send(event);
    }

    /// A receiver that sees every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_a_type_tag() {
        let e = NodeEvent::PeerDisconnected {
            peer_id: "p".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"peer_disconnected","peer_id":"p"}"#
        );
    }

    #[tokio::test]
    async fn subscribers_see_events_published_after_subscribing() {
        let bus = EventBus::new();
        bus.publish(NodeEvent::Listening {
            addr: "early".into(),
        });
        let mut rx = bus.subscribe();
        bus.publish(NodeEvent::Listening {
            addr: "late".into(),
        });
        assert_eq!(
            rx.recv().await.unwrap(),
            NodeEvent::Listening {
                addr: "late".into()
            }
        );
    }
}
