//! openraft's own storage test suite (`openraft::testing::log::Suite`), run
//! against our log store and state machine together, each time on a fresh
//! database in a temporary folder. It checks the contract openraft relies on
//! (what is read back after appends, truncations and purges, the initial state
//! a restart sees, snapshots built and installed), which the process tests
//! only reach through whole replicas.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::StorageError;

use super::{open, Identity, LogStore, StateMachine, LAYOUT_VERSION};
use crate::types::TypeConfig;

struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FreshStore {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let failed = |e: &dyn std::fmt::Display| {
            StorageError::from_io_error(
                ErrorSubject::Store,
                ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        };
        let dir = tempfile::tempdir().map_err(|e| failed(&e))?;
        let identity = Identity {
            layout: LAYOUT_VERSION,
            replica_id: 1,
            cluster_id: "conformance".into(),
        };
        let db = open(dir.path(), &identity).map_err(|e| failed(&e))?;
        let log = LogStore::new(db.clone()).map_err(|e| failed(&e))?;
        let (state_machine, _reader) = StateMachine::open(db).map_err(|e| failed(&e))?;
        Ok((dir, log, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_passes_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(FreshStore).await {
        panic!("openraft's storage suite failed: {e}");
    }
}
