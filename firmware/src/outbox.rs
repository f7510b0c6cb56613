//! A bounded offline queue of encoded messages, for when the network is down.
//!
//! # Policy when full
//! Messages are classed [`Class::Telemetry`] < [`Class::Session`] < [`Class::Fault`]
//! by how much is lost if one is dropped. Telemetry is cumulative, so dropping an
//! old telemetry message only lowers the time resolution; a session event is one
//! usage record; a fault event is an alarm. When a message arrives and the queue is full:
//!
//! 1. the **oldest telemetry** is dropped, if there is any;
//! 2. else, if the new message is telemetry, the new message is dropped;
//! 3. else the **oldest session event** is dropped, if there is any;
//! 4. else (the queue holds only faults) a new session event is dropped, and a new
//!    fault replaces the oldest fault.
//!
//! So a fault is never dropped while any telemetry or session event is queued.
//! The order of the messages that stay is unchanged. Every drop is counted.

use heapless::Vec;
use protocol::topic::Channel;

/// Largest encoded message the queue stores, bytes.
pub const MAX_MESSAGE: usize = 640;

/// How much a message matters when the queue is full (higher is kept longer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Periodic telemetry.
    Telemetry,
    /// A usage session.
    Session,
    /// A fault raised or cleared.
    Fault,
}

/// One queued message: its channel, class, sequence number and JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Which topic channel it goes on.
    pub channel: Channel,
    /// Its class.
    pub class: Class,
    /// Its `seq` (for logs and tests).
    pub seq: u32,
    /// The encoded payload.
    pub payload: Vec<u8, MAX_MESSAGE>,
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, nothing dropped.
    Queued,
    /// Queued after dropping an older message of this class.
    Evicted(Class),
    /// The new message itself was dropped.
    Rejected,
}

/// A FIFO of at most `N` messages with the drop policy above.
#[derive(Debug, Clone)]
pub struct Outbox<const N: usize> {
    queue: Vec<Message, N>,
    dropped: [u32; 3],
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Outbox {
            queue: Vec::new(),
            dropped: [0; 3],
        }
    }
}

impl<const N: usize> Outbox<N> {
    /// Queues `msg`, applying the drop policy when full.
    pub fn push(&mut self, msg: Message) -> Pushed {
        if !self.queue.is_full() {
            let _ = self.queue.push(msg);
            return Pushed::Queued;
        }
        let oldest = |q: &Vec<Message, N>, c: Class| q.iter().position(|m| m.class == c);
        let victim = match (oldest(&self.queue, Class::Telemetry), msg.class) {
            (Some(i), _) => Some(i),
            (None, Class::Telemetry) => None,
            (None, Class::Session) => oldest(&self.queue, Class::Session),
            (None, Class::Fault) => {
                oldest(&self.queue, Class::Session).or_else(|| oldest(&self.queue, Class::Fault))
            }
        };
        match victim {
            Some(i) => {
                let class = self.queue.remove(i).class;
                self.dropped[class as usize] += 1;
                let _ = self.queue.push(msg);
                Pushed::Evicted(class)
            }
            None => {
                self.dropped[msg.class as usize] += 1;
                Pushed::Rejected
            }
        }
    }

    /// The oldest message, to send next.
    pub fn front(&self) -> Option<&Message> {
        self.queue.first()
    }

    /// Removes and returns the oldest message (after the broker acknowledged it).
    pub fn pop(&mut self) -> Option<Message> {
        if self.queue.is_empty() {
            None
        } else {
            Some(self.queue.remove(0))
        }
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Messages dropped so far, by class.
    pub fn dropped(&self, class: Class) -> u32 {
        self.dropped[class as usize]
    }

    /// The queued messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Message> {
        self.queue.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(class: Class, seq: u32) -> Message {
        let channel = if class == Class::Telemetry {
            Channel::Telemetry
        } else {
            Channel::Event
        };
        Message {
            channel,
            class,
            seq,
            payload: Vec::new(),
        }
    }

    fn seqs<const N: usize>(o: &Outbox<N>) -> std::vec::Vec<u32> {
        o.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn fifo_until_full() {
        let mut o = Outbox::<3>::default();
        for i in 0..3 {
            assert_eq!(o.push(msg(Class::Telemetry, i)), Pushed::Queued);
        }
        assert_eq!(o.pop().map(|m| m.seq), Some(0));
        assert_eq!(o.front().map(|m| m.seq), Some(1));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn full_queue_drops_oldest_telemetry_first() {
        let mut o = Outbox::<4>::default();
        o.push(msg(Class::Fault, 0));
        o.push(msg(Class::Telemetry, 1));
        o.push(msg(Class::Session, 2));
        o.push(msg(Class::Telemetry, 3));
        assert_eq!(
            o.push(msg(Class::Fault, 4)),
            Pushed::Evicted(Class::Telemetry)
        );
        assert_eq!(seqs(&o), [0, 2, 3, 4]);
        assert_eq!(
            o.push(msg(Class::Telemetry, 5)),
            Pushed::Evicted(Class::Telemetry)
        );
        assert_eq!(seqs(&o), [0, 2, 4, 5]);
        assert_eq!(o.dropped(Class::Telemetry), 2);
    }

    #[test]
    fn with_no_telemetry_new_telemetry_is_rejected_and_sessions_go_before_faults() {
        let mut o = Outbox::<3>::default();
        o.push(msg(Class::Session, 0));
        o.push(msg(Class::Fault, 1));
        o.push(msg(Class::Session, 2));
        assert_eq!(o.push(msg(Class::Telemetry, 3)), Pushed::Rejected);
        assert_eq!(
            o.push(msg(Class::Fault, 4)),
            Pushed::Evicted(Class::Session)
        );
        assert_eq!(
            o.push(msg(Class::Fault, 5)),
            Pushed::Evicted(Class::Session)
        );
        assert_eq!(seqs(&o), [1, 4, 5]);
        // Only faults left: a session is rejected, a fault replaces the oldest fault.
        assert_eq!(o.push(msg(Class::Session, 6)), Pushed::Rejected);
        assert_eq!(o.push(msg(Class::Fault, 7)), Pushed::Evicted(Class::Fault));
        assert_eq!(seqs(&o), [4, 5, 7]);
        assert_eq!(
            (
                o.dropped(Class::Telemetry),
                o.dropped(Class::Session),
                o.dropped(Class::Fault)
            ),
            (1, 3, 1)
        );
    }

    #[test]
    fn a_fault_is_never_dropped_while_lesser_messages_are_queued() {
        let mut o = Outbox::<8>::default();
        for i in 0..200u32 {
            let class = match i % 5 {
                0 => Class::Fault,
                1 | 2 => Class::Session,
                _ => Class::Telemetry,
            };
            o.push(msg(class, i));
            if o.dropped(Class::Fault) > 0 {
                assert!(o.iter().all(|m| m.class == Class::Fault));
            }
        }
    }
}
