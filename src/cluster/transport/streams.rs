//! Stream ids of one peer connection: which requests wait for an answer, and which were given
//! up (timed out) and must keep their id until their late answer arrives, so that it can never
//! be delivered to a newer request. Pure bookkeeping: no I/O, no glommio.

use std::collections::{HashMap, HashSet};

/// Most requests a connection keeps waiting at once (the upper bound of the per-peer setting).
pub const MAX_STREAMS_IN_FLIGHT: usize = 16 * 1024;

/// Abandoned (timed-out) requests a connection keeps reserving ids for. Past this many the
/// peer is not answering: the connection is closed and reopened, which frees them all.
pub const MAX_ABANDONED_STREAMS: usize = 16 * 1024;

// Stream 0 is reserved for connection-level messages; every other id must stay available.
const _: () = assert!(MAX_STREAMS_IN_FLIGHT + MAX_ABANDONED_STREAMS < u16::MAX as usize);

/// What an answer's stream id refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion<T> {
    /// A request still waiting: its waiter, now removed.
    Waiting(T),
    /// A request whose caller gave up: the answer is dropped and the id is free again.
    Abandoned,
    /// No request has this id: the peer broke the protocol.
    Unknown,
}

/// The stream ids in use on one connection, each with its waiter `T`.
#[derive(Debug)]
pub struct Streams<T> {
    waiting: HashMap<u16, T>,
    abandoned: HashSet<u16>,
    /// Where the search for a free id starts: ids are handed out in rotation, so a freed id is
    /// reused as late as possible.
    next: u16,
    max_waiting: usize,
}

impl<T> Streams<T> {
    /// `max_waiting` is clamped to 1..=[`MAX_STREAMS_IN_FLIGHT`].
    pub fn new(max_waiting: usize) -> Streams<T> {
        Streams {
            waiting: HashMap::new(),
            abandoned: HashSet::new(),
            next: 1,
            max_waiting: max_waiting.clamp(1, MAX_STREAMS_IN_FLIGHT),
        }
    }

    /// Reserves a free stream id (never 0) for `waiter`; `None` when `max_waiting` requests
    /// are already waiting (or the abandoned ones fill the id space; see [`Streams::abandon`]).
    pub fn insert(&mut self, waiter: T) -> Option<u16> {
        if self.waiting.len() >= self.max_waiting || self.reserved() >= MAX_STREAMS_IN_FLIGHT + MAX_ABANDONED_STREAMS {
            return None;
        }
        // Fewer than u16::MAX - 1 ids are reserved (the checks above and the const assertion),
        // so this finds a free one within one rotation.
        loop {
            let stream = self.next;
            self.next = self.next.checked_add(1).unwrap_or(1);
            if !self.waiting.contains_key(&stream) && !self.abandoned.contains(&stream) {
                self.waiting.insert(stream, waiter);
                return Some(stream);
            }
        }
    }

    /// The answer for `stream` arrived.
    pub fn complete(&mut self, stream: u16) -> Completion<T> {
        if let Some(waiter) = self.waiting.remove(&stream) {
            return Completion::Waiting(waiter);
        }
        match self.abandoned.remove(&stream) {
            true => Completion::Abandoned,
            false => Completion::Unknown,
        }
    }

    /// The caller of `stream` gave up. If it was still waiting, its id stays reserved until
    /// the answer arrives (else this does nothing). Returns true when more than
    /// [`MAX_ABANDONED_STREAMS`] are abandoned: the connection should be closed (new requests
    /// are refused by [`Streams::insert`] once the id space is full).
    pub fn abandon(&mut self, stream: u16) -> bool {
        if self.waiting.remove(&stream).is_some() {
            self.abandoned.insert(stream);
        }
        self.abandoned.len() > MAX_ABANDONED_STREAMS
    }

    /// Removes every waiter (the connection ended) and frees every id.
    pub fn take_all(&mut self) -> Vec<T> {
        self.abandoned.clear();
        self.waiting.drain().map(|(_, waiter)| waiter).collect()
    }

    /// Requests waiting for an answer.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests given up whose answers have not arrived.
    pub fn abandoned(&self) -> usize {
        self.abandoned.len()
    }

    fn reserved(&self) -> usize {
        self.waiting.len() + self.abandoned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answers_reach_their_own_waiter_in_any_order() {
        let mut streams = Streams::new(8);
        let ids: Vec<u16> = (0..5).map(|i| streams.insert(i).unwrap()).collect();
        assert!(!ids.contains(&0));
        for (i, &id) in ids.iter().enumerate().rev() {
            assert_eq!(streams.complete(id), Completion::Waiting(i));
        }
        assert_eq!(streams.waiting(), 0);
        assert_eq!(streams.complete(ids[0]), Completion::Unknown);
    }

    #[test]
    fn the_waiting_bound_refuses_at_once_and_frees_on_completion() {
        let mut streams = Streams::new(2);
        let a = streams.insert('a').unwrap();
        streams.insert('b').unwrap();
        assert_eq!(streams.insert('c'), None);
        assert_eq!(streams.complete(a), Completion::Waiting('a'));
        assert!(streams.insert('c').is_some());
    }

    #[test]
    fn an_abandoned_id_is_not_reused_until_its_late_answer_arrives() {
        let mut streams = Streams::new(1);
        let first = streams.insert(1).unwrap();
        assert!(!streams.abandon(first));
        assert_eq!(streams.abandoned(), 1);
        // Many requests later (a full rotation of ids), the abandoned id is still skipped.
        for i in 0..70_000 {
            let id = streams.insert(i).unwrap();
            assert_ne!(id, first);
            assert_eq!(streams.complete(id), Completion::Waiting(i));
        }
        assert_eq!(streams.complete(first), Completion::Abandoned);
        assert_eq!(streams.complete(first), Completion::Unknown);
    }

    #[test]
    fn too_many_abandoned_asks_for_a_new_connection_and_take_all_frees_everything() {
        let mut streams = Streams::new(MAX_STREAMS_IN_FLIGHT);
        let mut over = false;
        for i in 0..=MAX_ABANDONED_STREAMS {
            let id = streams.insert(i).unwrap();
            over = streams.abandon(id);
        }
        assert!(over);
        let waiting: Vec<u16> = (0..3).map(|_| streams.insert(7).unwrap()).collect();
        assert_eq!(waiting.len(), 3);
        assert_eq!(streams.take_all(), vec![7, 7, 7]);
        assert_eq!((streams.waiting(), streams.abandoned()), (0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert,
        Complete(usize),
        Abandon(usize),
    }

    proptest! {
        /// Against a model: ids are unique among reserved ones and never 0, and every answer
        /// goes to the request that was sent with its id.
        #[test]
        fn ids_are_unique_and_answers_match_their_requests(
            ops in proptest::collection::vec(
                prop_oneof![Just(Op::Insert), (0usize..64).prop_map(Op::Complete), (0usize..64).prop_map(Op::Abandon)],
                1..400,
            ),
        ) {
            let mut streams = Streams::new(32);
            let mut waiting: Vec<(u16, u32)> = Vec::new();
            let mut abandoned: Vec<u16> = Vec::new();
            let mut next_request = 0u32;
            for op in ops {
                match op {
                    Op::Insert => match streams.insert(next_request) {
                        Some(id) => {
                            prop_assert_ne!(id, 0);
                            prop_assert!(waiting.iter().all(|&(w, _)| w != id) && !abandoned.contains(&id));
                            waiting.push((id, next_request));
                            next_request += 1;
                        }
                        None => prop_assert_eq!(waiting.len(), 32),
                    },
                    Op::Complete(i) if !waiting.is_empty() => {
                        let (id, request) = waiting.remove(i % waiting.len());
                        prop_assert_eq!(streams.complete(id), Completion::Waiting(request));
                    }
                    Op::Complete(i) if !abandoned.is_empty() => {
                        let id = abandoned.remove(i % abandoned.len());
                        prop_assert_eq!(streams.complete(id), Completion::Abandoned);
                    }
                    Op::Abandon(i) if !waiting.is_empty() => {
                        let (id, _) = waiting.remove(i % waiting.len());
                        streams.abandon(id);
                        abandoned.push(id);
                    }
                    _ => {}
                }
                prop_assert_eq!(streams.waiting(), waiting.len());
                prop_assert_eq!(streams.abandoned(), abandoned.len());
            }
        }
    }
}
