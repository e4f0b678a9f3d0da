//! The machine without a disk, for unit tests: the whole state in a map.

use std::collections::BTreeMap;

use super::{apply_entry, read, record, Command, Entries, Reply, Space, SpaceMut};
use crate::command::{Bytes, Op, Queued};

/// The whole state in a map: enough to run the machine without a disk.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct MapSpace(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl Space for MapSpace {
    type Value = Vec<u8>;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(key).cloned())
    }
    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Entries, String> {
        Ok(self
            .0
            .range(from.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn flush_mark(&self, db: u8) -> Result<u64, String> {
        let stored = self.0.get(&record::flush_mark_key(db)[..]);
        Ok(record::decode_counter(stored.map(Vec::as_slice)))
    }
}

impl SpaceMut for MapSpace {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.insert(key, value);
    }
    fn remove(&mut self, key: Vec<u8>) {
        self.0.remove(&key);
    }
    fn set_flush_mark(&mut self, db: u8, mark: u64) {
        self.put(
            record::flush_mark_key(db).to_vec(),
            mark.to_be_bytes().to_vec(),
        );
    }
}

/// A state and the index of the last entry applied to it.
pub struct Machine {
    pub space: MapSpace,
    pub index: u64,
    /// The format of the entries it applies: this build's newest, unless a
    /// test plays an older one.
    pub format: u32,
}

impl Machine {
    pub fn new() -> Machine {
        Machine {
            space: MapSpace::default(),
            index: 0,
            format: crate::command::PROPOSAL_FORMAT,
        }
    }

    /// Applies one entry holding one command, at `time`.
    pub fn run(&mut self, time: u64, words: &[&str]) -> Reply {
        self.run_bytes(
            time,
            &words.iter().map(|w| w.as_bytes()).collect::<Vec<_>>(),
        )
    }

    pub fn run_bytes(&mut self, time: u64, words: &[&[u8]]) -> Reply {
        self.index += 1;
        let args = words.iter().map(|w| Bytes(w.to_vec())).collect();
        let op = Op::Run(Queued { db: 0, args });
        apply_entry(&mut self.space, self.index, time, self.format, vec![op])
            .expect("the map never fails")
            .remove(0)
    }

    /// Serves a read-only command at `time`.
    pub fn read(&self, time: u64, words: &[&str]) -> Reply {
        let command = Command::parse(words)
            .expect("a keyspace command")
            .expect("well formed");
        read(&self.space, 0, &command, time).expect("the map never fails")
    }
}
