//! The in-flight queue: batches whose writes run concurrently but which leave
//! strictly oldest first.
//!
//! A batch enters with [`InFlight::push`] (it gets a [`BatchId`]); its write may end
//! in any order, recorded with [`InFlight::record`]; and [`InFlight::pop_written`] is
//! the only way out: it hands over the oldest batch, and only once that batch's write
//! has ended. So a later batch that is written first waits for every earlier one, and
//! acknowledgements keep arrival order. Pure data: no I/O, no clock.

use std::collections::VecDeque;

/// Names a batch in the queue (increasing in arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(u64);

#[derive(Debug)]
struct Entry<T, O> {
    id: BatchId,
    batch: T,
    written: Option<O>,
}

/// Batches in flight, oldest first; `T` is the batch, `O` what its write ended with.
#[derive(Debug)]
pub struct InFlight<T, O> {
    next: u64,
    entries: VecDeque<Entry<T, O>>,
}

impl<T, O> Default for InFlight<T, O> {
    fn default() -> Self {
        InFlight {
            next: 0,
            entries: VecDeque::new(),
        }
    }
}

impl<T, O> InFlight<T, O> {
    /// Adds the newest batch, whose write is starting.
    pub fn push(&mut self, batch: T) -> BatchId {
        let id = BatchId(self.next);
        self.next += 1;
        self.entries.push_back(Entry {
            id,
            batch,
            written: None,
        });
        id
    }

    /// Records that the write of batch `id` ended with `outcome`. Returns false (and
    /// drops `outcome`) if no such batch waits for its write.
    pub fn record(&mut self, id: BatchId, outcome: O) -> bool {
        // Ids increase along the queue.
        match self.entries.binary_search_by_key(&id, |e| e.id) {
            Ok(i) if self.entries[i].written.is_none() => {
                self.entries[i].written = Some(outcome);
                true
            }
            _ => false,
        }
    }

    /// The oldest batch and its write's outcome, if that write has ended: the only
    /// way a batch leaves the queue.
    pub fn pop_written(&mut self) -> Option<(T, O)> {
        // Not written yet: everything behind it waits too.
        self.entries.front()?.written.as_ref()?;
        let e = self.entries.pop_front()?;
        e.written.map(|o| (e.batch, o))
    }

    /// Batches in the queue.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_leave_oldest_first_whatever_order_their_writes_end_in() {
        let mut q: InFlight<&str, u32> = InFlight::default();
        let a = q.push("a");
        let b = q.push("b");
        let c = q.push("c");
        assert!(q.pop_written().is_none(), "nothing written yet");
        assert!(q.record(c, 3));
        assert!(q.record(b, 2));
        assert!(q.pop_written().is_none(), "b and c wait for a");
        assert!(!q.record(b, 9), "a write ends once");
        assert!(q.record(a, 1));
        assert_eq!(q.pop_written(), Some(("a", 1)));
        assert_eq!(q.pop_written(), Some(("b", 2)));
        assert_eq!(q.pop_written(), Some(("c", 3)));
        assert!(q.is_empty());
        assert!(!q.record(a, 1), "gone");
        let d = q.push("d");
        assert!(d > c);
        assert_eq!(q.len(), 1);
    }
}
