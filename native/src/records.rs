//! A group's records by key: the (key, record) pairs in one dense list, found through a hash
//! table of their positions.
//!
//! A hash map holding the pairs themselves leaves a third of its slots empty on average, and
//! each empty slot costs a whole pair (48 bytes). Here an empty slot costs a position (4 bytes
//! and a control byte), and the list holds no gaps (its spare capacity, once it is large, is
//! address space the process never touches). At a bank's scale (millions of keys in each
//! group) that is about 85 bytes of memory per active customer.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::store::{Key, Record};

fn hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

#[derive(Default)]
pub struct Records {
    /// Positions in ``entries``, hashed by their key.
    index: HashTable<u32>,
    entries: Vec<(Key, Record)>,
    /// The position last found: an event reads and updates several states of its key in a
    /// group, and a restore's rows come a record at a time, so most lookups are the last one
    /// again (checked by its key, so a stale hint costs one comparison). Atomic only so the
    /// core stays ``Sync``; one thread uses it.
    hint: AtomicU32,
}

impl Records {
    fn hinted(&self, key: &str) -> Option<usize> {
        let hinted = self.hint.load(Relaxed) as usize;
        self.entries
            .get(hinted)
            .is_some_and(|(k, _)| k == key)
            .then_some(hinted)
    }

    fn position(&self, key: &str) -> Option<usize> {
        if let Some(at) = self.hinted(key) {
            return Some(at);
        }
        let at = *self
            .index
            .find(hash(key), |&i| self.entries[i as usize].0 == key)?;
        self.hint.store(at, Relaxed);
        Some(at as usize)
    }

    pub fn get(&self, key: &str) -> Option<&Record> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Record> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// The record of ``key``, created empty if missing (the key is cloned only then).
    pub fn get_or_insert(&mut self, key: &Key) -> &mut Record {
        if let Some(at) = self.hinted(key) {
            return &mut self.entries[at].1;
        }
        let entries = &self.entries;
        let at = match self.index.entry(
            hash(key),
            |&i| entries[i as usize].0 == *key,
            |&i| hash(&entries[i as usize].0),
        ) {
            Entry::Occupied(found) => *found.get() as usize,
            Entry::Vacant(slot) => {
                let at = self.entries.len();
                // 2**32 records of one group would take hundreds of GB: not a limit to reach
                slot.insert(u32::try_from(at).expect("at most 2**32 records a group"));
                self.entries.push((key.clone(), Record::default()));
                at
            }
        };
        self.hint.store(at as u32, Relaxed);
        &mut self.entries[at].1
    }

    /// Drop ``key``'s record; the last record takes its place in the list.
    pub fn remove(&mut self, key: &str) {
        let entries = &self.entries;
        let Ok(found) = self
            .index
            .find_entry(hash(key), |&i| entries[i as usize].0 == key)
        else {
            return;
        };
        let at = found.remove().0 as usize;
        let last = self.entries.len() - 1;
        self.entries.swap_remove(at);
        if at != last {
            let moved = hash(&self.entries[at].0);
            let i = self
                .index
                .find_mut(moved, |&i| i as usize == last)
                .expect("every record's position is indexed");
            *i = at as u32;
        }
    }

    /// The record at place ``at`` of the list, if there is one.
    pub fn at(&self, at: usize) -> Option<(&Key, &Record)> {
        self.entries.get(at).map(|(k, r)| (k, r))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Record)> {
        self.entries.iter().map(|(k, r)| (k, r))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Key, &mut Record)> {
        self.entries.iter_mut().map(|(k, r)| (&*k, r))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_found_after_others_are_removed() {
        let mut records = Records::default();
        let keys: Vec<Key> = (0..1000)
            .map(|i| Key::from(format!("key-{i:04}-of-a-long-name")))
            .collect();
        for k in &keys {
            records.get_or_insert(k);
        }
        for k in keys.iter().step_by(3) {
            records.remove(k);
        }
        records.remove("never there");
        assert_eq!(records.len(), 1000 - 334);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(records.get(k).is_some(), i % 3 != 0, "{k}");
        }
        for at in 0..records.len() {
            let (k, _) = records.at(at).expect("a record at each place below len");
            assert!(records.get(k).is_some(), "{k} found by its key");
        }
        assert!(records.at(records.len()).is_none());
        let mut listed: Vec<&Key> = records.keys().collect();
        listed.sort();
        let mut kept: Vec<&Key> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| k)
            .collect();
        kept.sort();
        assert_eq!(listed, kept);
        records.get_or_insert(&keys[1]);
        assert_eq!(
            records.len(),
            666,
            "an existing record is found, not made anew"
        );
    }
}
