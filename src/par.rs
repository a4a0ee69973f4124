//! A parallel map over a slice on scoped threads (one per core, at most one per item),
//! results in the items' order. Items are taken one at a time, so uneven items balance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// A worker thread panicked (a bug): reported as an error rather than passed on.
#[derive(Debug, thiserror::Error)]
#[error("a worker thread panicked")]
pub struct WorkerPanicked;

/// `f` applied to every item on up to `available_parallelism` threads; results in order.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Result<Vec<R>, WorkerPanicked> {
    let workers = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let parts: Option<Vec<Vec<(usize, R)>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return out;
                        };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let mut all: Vec<(usize, R)> = parts.ok_or(WorkerPanicked)?.into_iter().flatten().collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_the_items_order() {
        let items: Vec<u64> = (0..1000).collect();
        let out = super::map(&items, |&x| {
            // Uneven work, so that threads finish out of order.
            if x % 7 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            x * x
        });
        assert_eq!(
            out.unwrap(),
            items.iter().map(|x| x * x).collect::<Vec<_>>()
        );
        assert!(super::map(&[] as &[u8], |_| 0).unwrap().is_empty());
        let panicky = super::map(&items, |&x| if x == 500 { panic!("bug") } else { x });
        assert!(panicky.is_err());
    }
}
