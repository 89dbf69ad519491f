//! Request tracing (cqlsh's `TRACING ON`): a request whose parameters ask for a trace runs
//! inside [`traced`], and the coordinator code it reaches records its steps with [`event`].
//!
//! The recorder is found through a thread-local that [`traced`]'s future sets around each of
//! its polls, so the code in between needs no extra parameter, and an untraced request pays
//! one thread-local read per step. Tasks the request spawns (a replica's send) are polled on
//! their own and record nothing; the steps they report back are recorded where the request
//! receives them.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use wire::protocol::{TraceEvent, MAX_TRACE_EVENTS};

struct Recorder {
    started: Instant,
    source: String,
    events: RefCell<Vec<TraceEvent>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Recorder>>> = const { RefCell::new(None) };
}

/// Records one step of the traced request being polled, if any: `activity` is only called
/// when a trace is recording.
pub fn event(activity: impl FnOnce() -> String) {
    CURRENT.with(|current| {
        if let Some(recorder) = current.borrow().as_ref() {
            let mut events = recorder.events.borrow_mut();
            if events.len() < MAX_TRACE_EVENTS - 1 {
                let elapsed_us = recorder.started.elapsed().as_micros() as u64;
                events.push(TraceEvent { activity: activity(), source: recorder.source.clone(), elapsed_us });
            }
        }
    });
}

/// Runs `request` with a trace recording, the events attributed to `source` (this node), and
/// returns its output with the trace, ended by "Request complete".
pub async fn traced<T>(source: String, request: impl Future<Output = T>) -> (T, Vec<TraceEvent>) {
    let recorder = Rc::new(Recorder { started: Instant::now(), source, events: RefCell::default() });
    let output = WithTrace { recorder: recorder.clone(), inner: Box::pin(request) }.await;
    let mut events = recorder.events.take();
    let elapsed_us = recorder.started.elapsed().as_micros() as u64;
    events.push(TraceEvent { activity: "Request complete".into(), source: recorder.source.clone(), elapsed_us });
    (output, events)
}

/// A future that makes its recorder the current one while it is polled.
struct WithTrace<F> {
    recorder: Rc<Recorder>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for WithTrace<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Puts the previous recorder back even if the poll panics.
        struct Restore(Option<Rc<Recorder>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|current| *current.borrow_mut() = self.0.take());
            }
        }
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.recorder.clone()));
        let _restore = Restore(previous);
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn only_the_traced_request_records_and_the_trace_ends_complete() {
        event(|| panic!("no trace is recording: the activity is never built"));
        let (answer, events) = block_on(traced("127.0.0.1:9470".into(), async {
            event(|| "first".into());
            futures_lite::future::yield_now().await;
            event(|| "second".into());
            42
        }));
        assert_eq!(answer, 42);
        let activities: Vec<&str> = events.iter().map(|e| e.activity.as_str()).collect();
        assert_eq!(activities, ["first", "second", "Request complete"]);
        assert!(events.iter().all(|e| e.source == "127.0.0.1:9470"));
        assert!(events.windows(2).all(|w| w[0].elapsed_us <= w[1].elapsed_us), "{events:?}");
        // Nothing records once the request is done.
        event(|| panic!("the trace ended"));
    }

    #[test]
    fn interleaved_requests_keep_their_own_traces() {
        let a = traced("a".into(), async {
            event(|| "a1".into());
            futures_lite::future::yield_now().await;
            event(|| "a2".into());
        });
        let b = traced("b".into(), async {
            event(|| "b1".into());
            futures_lite::future::yield_now().await;
            event(|| "b2".into());
        });
        let (((), ta), ((), tb)) = block_on(futures_lite::future::zip(a, b));
        let names = |t: &[TraceEvent]| t.iter().map(|e| e.activity.clone()).collect::<Vec<_>>();
        assert_eq!(names(&ta), ["a1", "a2", "Request complete"]);
        assert_eq!(names(&tb), ["b1", "b2", "Request complete"]);
    }

    #[test]
    fn a_trace_never_holds_more_than_the_protocol_allows() {
        let ((), events) = block_on(traced("n".into(), async {
            for i in 0..MAX_TRACE_EVENTS + 10 {
                event(|| format!("step {i}"));
            }
        }));
        assert_eq!(events.len(), MAX_TRACE_EVENTS);
        assert_eq!(events.last().map(|e| e.activity.as_str()), Some("Request complete"));
    }
}
