//! The dev backend's invoice book: preimage and settle state per payment hash, bounded.
//!
//! Owns only the data structure (no locking, no I/O). Beyond its capacity the oldest
//! invoices are forgotten, so a long-running dev proxy cannot grow without bound; a
//! forgotten invoice then pays as "unknown".

use std::collections::{HashMap, VecDeque};

struct Entry {
    preimage: [u8; 32],
    /// 0 while open; the settle index once paid.
    settle_index: u64,
}

/// Result of settling a known invoice.
pub(super) struct Settled {
    pub preimage: [u8; 32],
    /// False when the invoice was already settled (a repeated payment).
    pub newly_settled: bool,
}

pub(super) struct InvoiceStore {
    map: HashMap<[u8; 32], Entry>,
    /// Insertion order, for dropping the oldest entry at capacity.
    order: VecDeque<[u8; 32]>,
    cap: usize,
}

impl InvoiceStore {
    pub(super) fn new(cap: usize) -> Self {
        InvoiceStore {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(super) fn insert(&mut self, hash: [u8; 32], preimage: [u8; 32]) {
        if self.map.contains_key(&hash) {
            return; // a 2^-256 collision; keep the first preimage
        }
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.map.insert(
            hash,
            Entry {
                preimage,
                settle_index: 0,
            },
        );
        self.order.push_back(hash);
    }

    /// Marks `hash` settled with `settle_index` unless it already is; `None` if unknown.
    pub(super) fn settle(&mut self, hash: &[u8; 32], settle_index: u64) -> Option<Settled> {
        let entry = self.map.get_mut(hash)?;
        let newly_settled = entry.settle_index == 0;
        if newly_settled {
            entry.settle_index = settle_index;
        }
        Some(Settled {
            preimage: entry.preimage,
            newly_settled,
        })
    }

    /// 0 while open, the settle index once paid; `None` if unknown.
    pub(super) fn settle_index(&self, hash: &[u8; 32]) -> Option<u64> {
        self.map.get(hash).map(|e| e.settle_index)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_once_and_evicts_oldest() {
        let mut s = InvoiceStore::new(2);
        s.insert([1; 32], [11; 32]);
        s.insert([2; 32], [22; 32]);
        let first = s.settle(&[1; 32], 1).unwrap();
        assert!(first.newly_settled);
        assert_eq!(first.preimage, [11; 32]);
        let again = s.settle(&[1; 32], 2).unwrap();
        assert!(!again.newly_settled);
        assert_eq!(again.preimage, [11; 32]);
        s.insert([3; 32], [33; 32]);
        assert_eq!(s.len(), 2);
        assert!(s.settle(&[1; 32], 3).is_none(), "oldest forgotten");
        assert!(s.settle(&[2; 32], 3).is_some());
        assert!(s.settle(&[9; 32], 3).is_none());
    }
}
