//! Copy-on-write maps for the hot path: a read is one `ArcSwap` load and one
//! hash lookup with a borrowed key; a miss (once per new label tuple) copies
//! the map under a writer lock.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

/// The hasher of the label maps: foldhash with a fixed seed. Keys are bounded
/// label values chosen by configuration, so flooding resistance is not needed.
type Build = foldhash::fast::FixedState;

/// A `HashMap` with the label hasher.
pub(crate) type LabelMap<K, V> = HashMap<K, V, Build>;

/// A map read without locks and written copy-on-write.
pub(crate) struct CowMap<K, V> {
    map: ArcSwap<HashMap<K, V, Build>>,
    write: Mutex<()>,
}

impl<K, V> fmt::Debug for CowMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CowMap")
            .field("len", &self.map.load().len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::default()),
            write: Mutex::new(()),
        }
    }

    #[inline]
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.load().get(key).cloned()
    }

    /// The value of `key`, inserting `make()` if absent. `make` runs under the
    /// writer lock, at most once per key.
    pub(crate) fn get_or_insert_with<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V)) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.get(key) {
            return v;
        }
        let _w = self.write.lock();
        let current = self.map.load_full();
        if let Some(v) = current.get(key) {
            return v.clone();
        }
        let (k, v) = make();
        let mut next = HashMap::clone(&current);
        next.insert(k, v.clone());
        self.map.store(Arc::new(next));
        v
    }

    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_once_and_reads_borrowed() {
        let m: CowMap<String, u32> = CowMap::new();
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get_or_insert_with("a", || ("a".to_owned(), 1)), 1);
        assert_eq!(m.get_or_insert_with("a", || ("a".to_owned(), 2)), 1);
        assert_eq!(m.get("a"), Some(1));
        assert_eq!(m.len(), 1);
    }
}
