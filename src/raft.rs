//! The Raft handle: openraft typed by our configuration (`types.rs`) and our
//! state machine (`store/state_machine.rs`). openraft 0.10 types the handle by
//! the state machine, so it is named here, above both, rather than in
//! `types.rs`, which the store itself uses.

use crate::store::StateMachine;
use crate::types::TypeConfig;

pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// openraft's figures for a replica (role, term, indexes, membership),
/// followed as they change.
pub type MetricsWatch = <<<TypeConfig as openraft::RaftTypeConfig>::AsyncRuntime as openraft::AsyncRuntime>::Watch as openraft::async_runtime::watch::Watch>::Receiver<openraft::RaftMetrics<TypeConfig>>;
