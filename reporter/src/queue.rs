//! The bounded buffer between `record()` and the workers.
//!
//! Records are appended to an open batch under a short mutex (O(1): a
//! move into a pre-allocated vector and a few counters). A batch that
//! reaches `batch_size` is sealed and one idle worker is woken; workers
//! take whole batches, so the lock is never held while records are copied,
//! encoded or sent. `held` counts every record from acceptance until its
//! worker has sent or lost it, so `buffer_size` bounds them all.

use std::collections::VecDeque;
use std::mem;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub(crate) struct Queue<R> {
    state: Mutex<State<R>>,
    /// A batch was sealed, or the queue closed.
    pub ready: Notify,
    /// Room was freed, or the queue closed (for `record_wait`).
    pub room: Notify,
    capacity: usize,
    batch_size: usize,
    flush_interval: Duration,
    max_flush_interval: Duration,
    /// Emptied batch vectors kept for reuse, at most this many: as many as
    /// a full buffer needs, so a buffer that has filled once never
    /// allocates (or page-faults) again.
    spare_limit: usize,
}

struct State<R> {
    sealed: VecDeque<Vec<R>>,
    open: Vec<R>,
    /// When the first record joined `open`.
    open_since: Option<Instant>,
    /// Bumped whenever `open` is sealed or taken.
    open_gen: u64,
    /// A worker's last look at `open`, to tell when it went quiet.
    seen: Option<Seen>,
    held: usize,
    accepted: u64,
    /// Accepted since a worker last published the metric.
    accepted_unpublished: u64,
    closed: bool,
    spare: Vec<Vec<R>>,
}

#[derive(Clone, Copy)]
struct Seen {
    gen: u64,
    len: usize,
    at: Instant,
}

pub(crate) enum Push<R> {
    Accepted,
    Full(R),
    Closed(R),
}

pub(crate) enum Take<R> {
    Batch(Vec<R>),
    /// Nothing due: wait for `ready` or until then.
    Wait(Instant),
    /// Closed and empty.
    Done,
}

impl<R> Queue<R> {
    pub fn new(
        capacity: usize,
        batch_size: usize,
        flush_interval: Duration,
        max_flush_interval: Duration,
        workers: usize,
    ) -> Self {
        Queue {
            state: Mutex::new(State {
                sealed: VecDeque::new(),
                open: Vec::new(),
                open_since: None,
                open_gen: 0,
                seen: None,
                held: 0,
                accepted: 0,
                accepted_unpublished: 0,
                closed: false,
                spare: Vec::new(),
            }),
            ready: Notify::new(),
            room: Notify::new(),
            capacity,
            batch_size,
            flush_interval,
            max_flush_interval,
            spare_limit: capacity.div_ceil(batch_size) + workers + 1,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // Nothing panics while the lock is held; a poisoned lock is still
        // consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts `r` if there is room. Never waits.
    pub fn push(&self, r: R) -> Push<R> {
        let mut st = self.lock();
        if st.closed {
            return Push::Closed(r);
        }
        if st.held >= self.capacity {
            return Push::Full(r);
        }
        st.held += 1;
        st.accepted += 1;
        st.accepted_unpublished += 1;
        if st.open.is_empty() {
            st.open_since = Some(Instant::now());
            if st.open.capacity() == 0 {
                st.open = st
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(self.batch_size.min(self.capacity)));
            }
        }
        st.open.push(r);
        if st.open.len() >= self.batch_size {
            let batch = mem::take(&mut st.open);
            st.sealed.push_back(batch);
            st.open_since = None;
            st.open_gen += 1;
            drop(st);
            self.ready.notify_one();
        }
        Push::Accepted
    }

    /// The next batch due for sending, and the records accepted since the
    /// last call (for the metric).
    pub fn take(&self, now: Instant) -> (Take<R>, u64) {
        let mut st = self.lock();
        let accepted = mem::take(&mut st.accepted_unpublished);
        (self.take_locked(&mut st, now), accepted)
    }

    fn take_locked(&self, st: &mut State<R>, now: Instant) -> Take<R> {
        if let Some(batch) = st.sealed.pop_front() {
            return Take::Batch(batch);
        }
        if st.open.is_empty() {
            return if st.closed {
                Take::Done
            } else {
                Take::Wait(now + self.flush_interval)
            };
        }
        let forced = st.open_since.unwrap_or(now) + self.max_flush_interval;
        if st.closed || now >= forced {
            return Take::Batch(Self::take_open(st));
        }
        let (gen, len) = (st.open_gen, st.open.len());
        match st.seen {
            Some(s) if s.gen == gen && s.len == len => {
                let quiet = s.at + self.flush_interval;
                if now >= quiet {
                    Take::Batch(Self::take_open(st))
                } else {
                    Take::Wait(quiet.min(forced))
                }
            }
            _ => {
                st.seen = Some(Seen { gen, len, at: now });
                Take::Wait((now + self.flush_interval).min(forced))
            }
        }
    }

    fn take_open(st: &mut State<R>) -> Vec<R> {
        st.open_since = None;
        st.open_gen += 1;
        mem::take(&mut st.open)
    }

    /// A worker is done with `n` records (sent or lost) and returns the
    /// emptied vector of their batch. Returns the records still held.
    pub fn release(&self, n: usize, mut emptied: Vec<R>) -> usize {
        let mut st = self.lock();
        st.held -= n;
        if st.spare.len() < self.spare_limit && emptied.capacity() > 0 {
            emptied.clear();
            st.spare.push(emptied);
        }
        let held = st.held;
        drop(st);
        self.room.notify_waiters();
        held
    }

    /// Stops accepting; wakes the workers (to flush everything) and anyone
    /// waiting for room (to fail with `Closed`).
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
        self.room.notify_waiters();
    }

    /// `(accepted, held)` so far.
    pub fn counts(&self) -> (u64, usize) {
        let st = self.lock();
        (st.accepted, st.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn queue(capacity: usize, batch: usize) -> Queue<u32> {
        Queue::new(capacity, batch, 100 * MS, 1000 * MS, 2)
    }

    fn batch(t: Take<u32>) -> Vec<u32> {
        match t {
            Take::Batch(b) => b,
            Take::Wait(_) => panic!("expected a batch, got Wait"),
            Take::Done => panic!("expected a batch, got Done"),
        }
    }

    #[test]
    fn full_batches_are_sealed_and_the_bound_counts_records_in_flight() {
        let q = queue(5, 2);
        for i in 0..5 {
            assert!(matches!(q.push(i), Push::Accepted));
        }
        assert!(matches!(q.push(5), Push::Full(5)));
        let now = Instant::now();
        let (t, accepted) = q.take(now);
        assert_eq!(accepted, 5);
        let b = batch(t);
        assert_eq!(b, [0, 1]);
        // Taken but not yet released: still held.
        assert!(matches!(q.push(6), Push::Full(6)));
        assert_eq!(q.release(2, b), 3);
        assert!(matches!(q.push(6), Push::Accepted));
        assert_eq!(batch(q.take(now).0), [2, 3]);
        assert_eq!(q.counts(), (6, 4));
    }

    #[test]
    fn a_partial_batch_goes_when_quiet_or_when_too_old() {
        let q = queue(1000, 1000);
        let t0 = Instant::now();
        q.push(1);
        // First look: remember its size, come back a flush interval later.
        assert!(matches!(q.take(t0).0, Take::Wait(w) if w == t0 + 100 * MS));
        q.push(2);
        // It grew: not quiet yet.
        assert!(matches!(q.take(t0 + 100 * MS).0, Take::Wait(_)));
        assert_eq!(batch(q.take(t0 + 200 * MS).0), [1, 2]);

        // A steady trickle never goes quiet, but the forced interval sends it.
        q.push(3);
        let start = Instant::now();
        let mut now = start;
        loop {
            q.push(4);
            match q.take(now).0 {
                Take::Batch(b) => {
                    assert!(now >= start + 1000 * MS, "sent after {:?}", now - start);
                    assert_eq!(b[0], 3);
                    break;
                }
                Take::Wait(_) => now += 50 * MS,
                Take::Done => unreachable!(),
            }
        }
    }

    #[test]
    fn closing_flushes_the_partial_batch_then_reports_done() {
        let q = queue(100, 10);
        q.push(1);
        q.close();
        assert!(matches!(q.push(2), Push::Closed(2)));
        let b = batch(q.take(Instant::now()).0);
        assert_eq!(b, [1]);
        assert!(matches!(q.take(Instant::now()).0, Take::Done));
        assert_eq!(q.release(1, b), 0);
    }
}
